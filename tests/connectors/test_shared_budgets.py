"""Eight processes spend one vendor window together through the shared budget, against the simulator.

Some windows count every tenant an integrator runs (reference ``README.md``, limits): Twinfield's credits
per client id, for all of its offices; Xero's app minute, for all of its organisations. The simulators
count them the same way. Eight processes on one such scope book as fast as they can for a few
time-scaled minutes: the simulator must refuse none of their calls (zero 429s) while they use at least
90 % of the window those minutes hold, on each store a case names (Redis, a SQLite file, PostgreSQL).
Without a shared store each process counts only its own calls and the eight overspend the window.

Which tools run is read from the descriptors (every tool with a ``scope="tool"`` window), so a new
tool-wide window without a case here fails :func:`test_every_tool_wide_window_has_a_case`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.fernet import Fernet

from invoice_sync.connectors.registry import DESCRIPTORS
from invoice_sync.connectors.twinfield.hook import TwinfieldHook, _list_offices
from invoice_sync.connectors.xero.hook import XeroHook
from invoice_sync.domain.ports import BudgetStore
from invoice_sync.store.budgets import RedisBudgetStore, SqlBudgetStore
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import RateWindowRow, SyncBase, TokenRow
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox import twinfield as twinfield_sandbox
from invoice_sync_dev.sandbox import twinfield_fixtures, xero_fixtures
from invoice_sync_dev.sandbox import xero as xero_sandbox
from invoice_sync_dev.sandbox.process import connection_env
from invoice_sync_dev.sandbox.server import start_in_thread
from invoice_sync_dev.sandbox.tools import BenchLimits, with_extra

PROCESSES = 8
TIME_SCALE = 20.0
MINUTE_S = 60.0 / TIME_SCALE
"""A vendor minute in real seconds at this time scale."""
LIMIT = 30
"""The shared window's units a minute, scaled down (Twinfield: 1,000 credits; Xero: 10,000 calls) so
eight processes could spend it many times over."""
MEASURED_MINUTES = 2
REDIS_URL = os.environ.get("INVOICE_SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""Keys go under a random prefix per test and expire one window after their last claim."""
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
XERO_CONN_ID = "shared_xero"
_XERO_TOKEN_KEY = Fernet.generate_key().decode()
"""Seals the Xero tokens the processes share (a key of Airflow's ``fernet_key`` kind)."""


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (required under CI=true)")
        pytest.skip(message)


def with_tables(url: str, *tables: Any) -> str:
    """``url`` with ``tables`` made, as a deployment's migration makes them: ``make_engine`` turns a SQLite
    file to WAL once, here, not in several processes at once (switching the journal takes a lock SQLite's
    busy wait does not cover: "database is locked" on connect, seen once in CI)."""
    engine = make_engine(url)
    SyncBase.metadata.create_all(engine, tables=tables)
    engine.dispose()
    return url


def open_store(backend: tuple[str, str]) -> BudgetStore:
    """The store a worker process counts in; made in the process itself (no connection crosses a fork)."""
    kind, where = backend
    if kind == "redis":
        import redis

        return RedisBudgetStore(redis.Redis.from_url(REDIS_URL), prefix=where)
    return SqlBudgetStore(make_engine(where))


@dataclass(frozen=True)
class Case:
    """How one tool's tool-wide window is driven.

    :param configure: the simulator's settings that scale its window down to :data:`LIMIT`.
    :param connections: the Airflow connections the processes read, by id, given the sandbox's URL.
    :param caller: in a worker process: a function that makes one call costing one unit, given the
        process's slot, its store and a per-test directory.
    :param prepare: in the test process, before the workers start: what a deployment has done before
        a night begins (given the per-test directory).
    :param backends: the stores it runs on (each run takes some 12 s of the suite).
    """

    tool: str
    configure: Mapping[str, Any]
    connections: Callable[[str], dict[str, dict[str, Any]]]
    caller: Callable[[int, BudgetStore | None, str], Callable[[], object]]
    prepare: Callable[[str], None] = lambda workdir: None
    backends: tuple[str, ...] = ("redis", "sqlite", "postgres")


def _twinfield_connections(url: str) -> dict[str, dict[str, Any]]:
    connection = twinfield_sandbox.bench_connection(url, 1, BenchLimits(MINUTE_S, LIMIT))
    return {twinfield_sandbox.BENCH_CONN_ID: connection}


def _twinfield_caller(slot: int, store: BudgetStore | None, _: str) -> Callable[[], object]:
    """One office per process under the bench client id; reading the office list costs one credit."""
    hook = TwinfieldHook(
        twinfield_conn_id=twinfield_sandbox.BENCH_CONN_ID,
        office=twinfield_fixtures.BENCH_OFFICES[slot],
        shared_budgets=store,
    )
    assert hook.budget.label  # reads the connection before the clock starts
    return lambda: hook.process_xml(_list_offices(), read=True)


def _xero_connections(url: str) -> dict[str, dict[str, Any]]:
    connection = xero_sandbox.bench_connection(url, 1, BenchLimits(MINUTE_S))
    return {XERO_CONN_ID: with_extra(connection, app_minute_limit=LIMIT)}


def _xero_vault(workdir: str) -> SqlTokenVault:
    return SqlTokenVault(make_engine(f"sqlite:///{workdir}/tokens.db"), keys=[_XERO_TOKEN_KEY])


def _xero_prepare(workdir: str) -> None:
    """The app's token in a vault every process reads, as a deployment has it from earlier nights: eight
    processes refreshing at once would queue on the vault's lock for seconds before their first call.
    Listing the connections spends no Xero limit."""
    with_tables(f"sqlite:///{workdir}/tokens.db", TokenRow.__table__)
    XeroHook(xero_conn_id=XERO_CONN_ID, vault=_xero_vault(workdir)).connections()


def _xero_caller(slot: int, store: BudgetStore | None, workdir: str) -> Callable[[], object]:
    """Half the processes on each of the app's two organisations (Xero allows five calls in flight per
    organisation), one token row shared by all through the vault as in a deployment; listing the tax
    rates is one call."""
    vault = _xero_vault(workdir)
    tenants = xero_fixtures.TENANT_IDS
    hook = XeroHook(
        xero_conn_id=XERO_CONN_ID, vault=vault, tenant_id=tenants[slot % len(tenants)], shared_budgets=store
    )
    assert hook.budget.label
    return lambda: hook.get_all("TaxRates", "TaxRates", {})


CASES = {
    case.tool: case
    for case in (
        Case(
            tool="twinfield",
            configure={"credits_per_minute": LIMIT},
            connections=_twinfield_connections,
            caller=_twinfield_caller,
        ),
        Case(
            tool="xero",
            configure={"app_minute_limit": LIMIT},
            connections=_xero_connections,
            caller=_xero_caller,
            prepare=_xero_prepare,
            # The SQL store's SQLite locking is proven by Twinfield's case; Xero's adds its hook.
            backends=("redis", "postgres"),
        ),
    )
}
TOOL_WIDE = [d.name for d in DESCRIPTORS if any(limit.scope == "tool" for limit in d.rate_limits)]


def test_every_tool_wide_window_has_a_case() -> None:
    assert sorted(CASES) == sorted(TOOL_WIDE)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str]]:
    """Where the eight processes count the shared window (``request.param``: redis, sqlite, postgres): a
    Redis key prefix of its own, or a database with the window table."""
    if request.param == "redis":
        _redis_or_skip()
        yield "redis", f"test:{uuid.uuid4().hex}:"
        return
    url = (
        f"sqlite:///{tmp_path / 'invoicing.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    yield "sql", with_tables(url, RateWindowRow.__table__)


def _worker(
    case: Case,
    slot: int,
    backend: tuple[str, str] | None,
    workdir: str,
    start_at: float,
    stop_at: float,
    out: Any,
) -> None:
    """Call until ``stop_at``; report when each call was answered."""
    call = case.caller(slot, open_store(backend) if backend is not None else None, workdir)
    time.sleep(max(0.0, start_at - time.time()))
    answered: list[float] = []
    while time.time() < stop_at:
        call()
        answered.append(time.time())
    out.put(answered)


def run_eight(
    case: Case, backend: tuple[str, str] | None, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, float, int]:
    """Eight processes on one tool-wide window for a few scaled minutes: (429s, utilisation, calls)."""
    handle = start_in_thread(time_scale=TIME_SCALE)
    try:
        sandbox = handle.simulator(case.tool)
        sandbox.configure(**case.configure)
        for name, value in connection_env(case.connections(handle.url)).items():
            monkeypatch.setenv(name, value)
        case.prepare(workdir)
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        start_at = time.time() + 1.5  # every process has started and read its connection
        stop_at = start_at + (MEASURED_MINUTES + 1) * MINUTE_S
        workers = [
            context.Process(target=_worker, args=(case, slot, backend, workdir, start_at, stop_at, out))
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
    # The measured minutes start with the first answer; every call in them costs one unit.
    first = answered[0]
    in_measured = sum(1 for t in answered if t <= first + MEASURED_MINUTES * MINUTE_S)
    return refused, in_measured / (MEASURED_MINUTES * LIMIT), len(answered)


@pytest.mark.parametrize(
    ("tool", "backend"),
    [
        pytest.param(tool, kind, marks=[pytest.mark.postgres] if kind == "postgres" else [])
        for tool in TOOL_WIDE
        for kind in CASES[tool].backends
    ],
    indirect=["backend"],
)
def test_eight_processes_share_a_tool_wide_window(
    tool: str, backend: tuple[str, str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused, utilisation, calls = run_eight(CASES[tool], backend, str(tmp_path), monkeypatch)
    print(f"{tool} on {backend[0]}: 429s={refused} utilisation={utilisation:.3f} calls={calls}")
    assert refused == 0
    assert utilisation >= 0.9
