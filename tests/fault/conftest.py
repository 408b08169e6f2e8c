"""Fixtures of the fault-injection suite: a simulator per tool harness, demo data, short leases and timeouts.

Every test runs once per :data:`harness.HARNESSES` entry. Timings are kept short on purpose (leases of about
a second, HTTP timeouts of one to three seconds) so the whole suite stays under a few minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from harness import HARNESSES, ToolHarness
from world import INVOICES, RUN_LEASE_S, World

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.repository import SyncStore


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """SQLite unless a test asks for PostgreSQL too (``indirect`` parametrization of ``db_url``)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=sorted(HARNESSES))
def tool(request: pytest.FixtureRequest) -> type[ToolHarness]:
    return HARNESSES[request.param]


@pytest.fixture
def make_world(
    tool: type[ToolHarness], db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    """``make_world(time_scale=1.0, persistent=False)``: start the tool's sandbox and seed the database."""
    started: list[World] = []

    def make(*, time_scale: float = 1.0, persistent: bool = False, invoices: int = INVOICES) -> World:
        harness = tool()
        harness.start(time_scale=time_scale, state_path=tmp_path / "sandbox.json" if persistent else None)
        engine = make_engine(db_url)
        prepare(engine)
        store = SyncStore(engine, lease=timedelta(seconds=RUN_LEASE_S))
        world = World(harness, store, db_url, harness.seed(engine, invoices=invoices), tmp_path, monkeypatch)
        world.connect()
        started.append(world)
        return world

    yield make
    for world in started:
        world.harness.stop()
        world.store.engine.dispose()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
