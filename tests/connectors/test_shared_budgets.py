"""Eight processes spend one vendor window together through the shared budget, against the simulator.

Twinfield counts credits per client id, for all of an integrator's offices (reference ``README.md``,
limits); the simulator counts them the same way. Eight processes, one office each under one client id,
book as fast as they can for three time-scaled minutes: the simulator must refuse none of their calls
(zero 429s) while they use at least 90 % of the credits those minutes hold. Each backend (Redis, SQLite
file, PostgreSQL) runs the same test; without a shared store each process counts only its own calls
and the eight overspend the window eightfold.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine

from invoice_sync.connectors.twinfield.hook import TwinfieldHook, _list_offices
from invoice_sync.domain.ports import BudgetStore
from invoice_sync.store.budgets import RedisBudgetStore, SqlBudgetStore
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import RateWindowRow, SyncBase
from invoice_sync_dev.sandbox import twinfield as twinfield_sandbox
from invoice_sync_dev.sandbox import twinfield_fixtures
from invoice_sync_dev.sandbox.process import connection_env
from invoice_sync_dev.sandbox.server import start_in_thread
from invoice_sync_dev.sandbox.tools import BenchLimits

PROCESSES = 8
TIME_SCALE = 20.0
MINUTE_S = 60.0 / TIME_SCALE
"""A Twinfield minute in real seconds at this time scale."""
CREDITS = 30
"""The client id's credits a minute, scaled down from 1,000 so eight processes spend them many times over."""
MEASURED_MINUTES = 3
REDIS_URL = os.environ.get("INVOICE_SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""Keys go under a random prefix per test and expire one window after their last claim."""
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (required under CI=true)")
        pytest.skip(message)


def open_store(backend: tuple[str, str]) -> BudgetStore:
    """The store a worker process counts in; made in the process itself (no connection crosses a fork)."""
    kind, where = backend
    if kind == "redis":
        import redis

        return RedisBudgetStore(redis.Redis.from_url(REDIS_URL), prefix=where)
    return SqlBudgetStore(make_engine(where))


@pytest.fixture(params=["redis", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str]]:
    """Where the eight processes count the shared window: a Redis key prefix of its own, or a database
    with the window table."""
    if request.param == "redis":
        _redis_or_skip()
        yield "redis", f"test:{uuid.uuid4().hex}:"
        return
    url = (
        f"sqlite:///{tmp_path / 'invoicing.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = create_engine(url)
    SyncBase.metadata.create_all(engine, tables=[RateWindowRow.__table__])
    engine.dispose()
    yield "sql", url


def _twinfield_worker(
    slot: int, backend: tuple[str, str] | None, start_at: float, stop_at: float, out: Any
) -> None:
    """Read the office list (one credit) until ``stop_at``; report when each call was answered."""
    store = open_store(backend) if backend is not None else None
    office = twinfield_fixtures.BENCH_OFFICES[slot]
    hook = TwinfieldHook(
        twinfield_conn_id=twinfield_sandbox.BENCH_CONN_ID, office=office, shared_budgets=store
    )
    assert hook.budget.label  # reads the connection before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    answered: list[float] = []
    while time.time() < stop_at:
        hook.process_xml(_list_offices(), read=True)
        answered.append(time.time())
    out.put(answered)


def run_eight(backend: tuple[str, str] | None) -> tuple[int, float, int]:
    """Eight processes on one client id for a few scaled minutes: (429s, utilisation, calls)."""
    handle = start_in_thread(time_scale=TIME_SCALE)
    try:
        sandbox = handle.simulator("twinfield")
        sandbox.configure(credits_per_minute=CREDITS)
        connection = twinfield_sandbox.bench_connection(handle.url, 1, BenchLimits(MINUTE_S, CREDITS))
        os.environ.update(connection_env({twinfield_sandbox.BENCH_CONN_ID: connection}))
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        start_at = time.time() + 1.5  # every process has started and read its connection
        stop_at = start_at + (MEASURED_MINUTES + 1) * MINUTE_S
        workers = [
            context.Process(target=_twinfield_worker, args=(slot, backend, start_at, stop_at, out))
            for slot in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        answered = sorted(t for _ in workers for t in out.get(timeout=60))
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        refused = sandbox.stats_snapshot()["rate_limited"]
    finally:
        handle.stop()
    # The measured minutes start with the first answer; every call in them costs one credit.
    first = answered[0]
    in_measured = sum(1 for t in answered if t <= first + MEASURED_MINUTES * MINUTE_S)
    return refused, in_measured / (MEASURED_MINUTES * CREDITS), len(answered)


def test_eight_processes_share_a_twinfield_client_ids_credits(backend: tuple[str, str]) -> None:
    refused, utilisation, calls = run_eight(backend)
    print(f"{backend[0]}: 429s={refused} utilisation={utilisation:.3f} calls={calls}")
    assert refused == 0
    assert utilisation >= 0.9
