"""The ``tenants`` scenario, and the tenant plumbing the limit scenarios share with it.

A production night syncs many tenants (integrations) at once: Airflow maps one task instance per
integration and its workers run them in parallel. Every tenant has rate windows of its own, so in theory
twenty tenants take as long as the slowest of them alone. The scenario measures how close we get:
``ratio`` = wall time of 20 tenants synced in parallel over the wall time of the slowest tenant alone
(ideal 1.0, target at most 1.3).

How it is run: the sandbox in its own process with a time scale (a sandbox minute lasts ``60 / scale``
real seconds) and every limit on; each tenant is synced by a process of its own, forked from this
(warmed-up) one the way a worker runs a mapped task instance, each with the real connector and engine on
one invoicing database. First one tenant of each tool alone (on tenant slots of their own, so their books
and windows are separate from the parallel ones), then the twenty together.

Rate windows per tenant:

- Exact Online counts per app and division, so each tenant is its own division (one consent over all of
  them, as one connection serves several administrations in production; the rotating refresh token is
  shared through the token vault).
- Yuki counts calls per domain, shared by every integration of that domain: each tenant has a domain and
  an access key (a connection) of its own. Tenants of one domain would share its day.
- Twinfield counts credits per client id, and an integrator has one client id for all its customers. So
  the tenants share one (the bench app's) and the credits of one minute: each tenant process counts its
  own spend only, which is safe while their sum stays below the client id's allowance. With batches of
  25 a tenant of a few hundred invoices spends a few dozen credits a minute of the 1,000, so the bench
  uses the real allowance and reports the simulator's 429 count to prove no tenant ever overspent.
- QuickBooks counts requests and batch calls per company: each tenant is a company of its own (with a
  consent, a refresh token, of its own).

The scenario runs over the tools whose simulators hold bench tenants (``SANDBOX.bench.slots`` above one).
The Xero sandbox holds one bench tenant (the demo organisation, ``SANDBOX.bench.demo_slot``), so it has
no tenants of its own to put beside the others; its pacing is measured alone, by ``limit_xero``.
"""

from __future__ import annotations

import inspect
import json
import math
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine

from invoice_sync.domain.ports import BudgetStore
from invoice_sync_dev.bench.common import (
    Sandbox,
    Tenant,
    fresh_dir,
    note,
    open_db,
    seed_tenants,
    sqlite_url,
)
from invoice_sync_dev.sandbox.process import connection_env
from invoice_sync_dev.sandbox.tools import (
    BenchLimits,
    DemoSlot,
    WindowsFromAnswers,
    WindowsFromBudget,
    sandbox_of,
    sandbox_tools,
)

TOOLS = tuple(sandbox.name for sandbox in sandbox_tools() if sandbox.bench.slots > 1)
"""The tools of the ``tenants`` scenario: those whose sandbox has bench tenants (``SANDBOX.bench.slots``)."""
TIME_SCALE = 10.0
"""Sandbox seconds per real second in the tenants scenario: an Exact minute lasts six real seconds.

Compressing time compresses the rate windows but not the CPU a sync needs, so the faster the scale, the
more twenty tenants on two cores become CPU-bound instead of limit-bound (at scale 30 the ratio is about
2); at production speed the same CPU is spread over minutes. Scale 10 keeps the run short while every
tenant still spends most of its time waiting for its own window, as it would at night."""
SLOTS = min(sandbox_of(tool).bench.slots for tool in TOOLS)
"""Bench tenants (divisions, Yuki domains, Twinfield offices) every tool of the scenario has."""

DEMO_SLOTS: dict[str, DemoSlot] = {
    sandbox.name: sandbox.bench.demo_slot for sandbox in sandbox_tools() if sandbox.bench.demo_slot
}
"""Tools with slot 1 only: their simulators know the demo's organisations or companies, no bench ones."""

TENANTS = 20
INVOICES_PER_TENANT = 120
"""Equal backlogs: a few Exact minutes each, the size of a busy night for a small company."""
QUICK_TENANTS = 6
QUICK_INVOICES_PER_TENANT = 15
WARM_UP_INVOICES = 3


def bench_tenant(integration_id: int, tool: str, slot: int, invoices: int) -> Tenant:
    """A tenant on bench slot ``slot`` (1-based) of ``tool``: its own division, domain or office
    (``SANDBOX.bench.slot``), or for a tool with one slot its demo organisation or company
    (:data:`DEMO_SLOTS`)."""
    demo = DEMO_SLOTS.get(tool)
    if demo is not None and slot != 1:
        raise ValueError(
            f"{tool} has one bench slot, 1 (the sandbox's demo {demo.what}), not {slot}: its simulator "
            f"has no bench {demo.what}s of its own"
        )
    knobs = sandbox_of(tool).bench
    if not 1 <= slot <= knobs.slots:
        raise ValueError(f"bench slot {slot} of {tool} out of range 1..{knobs.slots}")
    if demo is not None:
        settings, conn_id = dict(demo.settings), demo.conn_id
    elif knobs.slot is not None:
        bench_slot = knobs.slot(slot)
        settings, conn_id = dict(bench_slot.settings), bench_slot.conn_id
    else:
        raise ValueError(f"{tool}'s SANDBOX.bench names neither its bench slots (slot) nor its demo_slot")
    return Tenant(
        integration_id,
        tool,
        invoices,
        settings=settings,
        conn_id=conn_id,
        name=f"Bench {tool} tenant {slot:02d}",
        slot=slot,
    )


def bench_connections(
    sandbox_url: str, tenants: Sequence[Tenant], limits: BenchLimits
) -> dict[str, dict[str, Any]]:
    """The Airflow connections of ``tenants`` (conn id -> connection) pointing at the sandbox: each tool's
    ``SANDBOX.bench.connection`` of the tenant's slot (tenants of one connection get it once)."""
    conns: dict[str, dict[str, Any]] = {}
    for tenant in tenants:
        if tenant.conn_id is None or tenant.slot is None:
            raise ValueError(f"tenant {tenant.integration_id} is no bench tenant (see bench_tenant)")
        conns[tenant.conn_id] = sandbox_of(tenant.tool).bench.connection(sandbox_url, tenant.slot, limits)
    return conns


def hook_options(tool: str, time_scale: float) -> dict[str, Any]:
    """Hook arguments for a sandbox running ``time_scale`` times faster than real time.

    Access tokens are issued for the scaled lifetime (Exact's 600 s last 20 real seconds at scale 30), so
    the margin before expiry at which a hook refreshes must shrink alike, or every call would ask for a
    new token (Xero's 30 minutes last one real minute at scale 30, its hook's default margin). The margin
    is the tool's hook's own default; a hook without one (Yuki's session needs no refresh) gets nothing.
    """
    margin = refresh_margin_s(sandbox_of(tool).descriptor.load_hook())
    return {"refresh_margin_s": margin / time_scale} if margin is not None else {}


def refresh_margin_s(hook: type) -> float | None:
    """The default ``refresh_margin_s`` of ``hook``'s constructor, or of the first base class's that has
    one (Xero's and QuickBooks' hooks keep the margin of the OAuth base they share); None without one."""
    for cls in hook.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get("refresh_margin_s")
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return float(parameter.default)
    return None


# -- one tenant's sync ------------------------------------------------------------------------------


@dataclass
class CallLog:
    """The rate-limited calls one connector made, grouped by the rate window they were counted in.

    ``windows`` maps a window's end (real epoch seconds, as the tool or our budget knows it) to the units
    (calls or credits) spent in it. Exact's windows come from its ``X-RateLimit-Minutely-Reset`` header
    and Xero's from its ``X-MinLimit-Remaining`` count (the tools' own counts); Twinfield and QuickBooks
    announce nothing, so theirs are the ones our budgets count in (QuickBooks: batch calls only, the
    window the bench lowers). Each tool's ``SANDBOX.bench.windows`` says which.

    :param minute_s: real seconds of a sandbox minute: how long a window lasts where the tool does not
        say when it ends (Xero, QuickBooks).
    """

    windows: dict[float, int] = field(default_factory=dict)
    throttled: int = 0
    minute_s: float = 60.0

    def add(self, window_end: float | None, units: int) -> None:
        key = round(window_end or 0.0, 3)
        self.windows[key] = self.windows.get(key, 0) + units

    def attach(self, tool: str, hook: Any) -> None:
        """Record the calls of ``hook`` in the windows ``SANDBOX.bench.windows`` says (none for a day's
        window, which the simulator counts)."""
        windows = sandbox_of(tool).bench.windows
        if windows is None:
            return
        match windows(hook, self.minute_s):
            case WindowsFromAnswers(window_end):
                self._record_answers(hook, window_end)
            case WindowsFromBudget(budget, window_end):
                self._record_takes(budget, window_end)

    def _record_answers(self, hook: Any, window_end: Callable[[requests.Response], float | None]) -> None:
        """Count each answer of ``hook`` in the window it names (an answer naming none did not count)."""
        transmit = hook._transmit

        def recorded(method: str, url: str, **kwargs: Any) -> Any:
            response = transmit(method, url, **kwargs)
            if response.status_code == 429:
                self.throttled += 1
            elif (end := window_end(response)) is not None:
                self.add(end, 1)
            return response

        hook._transmit = recorded

    def _record_takes(self, budget: Any, window_end: Callable[[], float | None]) -> None:
        """Count what ``budget`` hands out in the window ``window_end`` names right after."""
        acquire = budget.acquire

        def counted(cost: int = 1) -> None:
            acquire(cost)
            self.add(window_end(), cost)

        budget.acquire = counted

    def utilisation(self, limit: int) -> float | None:
        """Units per window over ``limit``, over every window but the last.

        The last window is where the backlog ran out, not where the limit stopped us, so counting it would
        measure the backlog's size; with fewer than two windows there is nothing to measure.
        """
        spent = [self.windows[key] for key in sorted(self.windows)]
        if len(spent) < 2:
            return None
        return round(sum(spent[:-1]) / (limit * (len(spent) - 1)), 3)


@dataclass(frozen=True, slots=True)
class TenantRun:
    """One tenant's sync: the engine's report, its wall time and its calls per window."""

    integration_id: int
    tool: str
    report: dict[str, Any]
    wall_s: float
    windows: dict[float, int]
    throttled: int
    error: str | None = None
    waited_s: float = 0.0
    """Of ``wall_s``, the time the hook waited for a rate window or after a 429."""


_ENGINES: dict[str, Engine] = {}


def engine_for(db_url: str) -> Engine:
    """One engine per database for this process and the tenants forked from it.

    SQLAlchemy caches compiled statements per engine; a forked tenant that keeps the parent's engine
    (with fresh connections, see :func:`_child`) starts with that cache warm, as a worker process that
    has run tasks before does, instead of spending its first second compiling the engine's queries.
    """
    from invoice_sync.store.db import make_engine

    engine = _ENGINES.get(db_url)
    if engine is None:
        engine = _ENGINES[db_url] = make_engine(db_url)
    return engine


def sync_tenant(
    db_url: str,
    integration_id: int,
    *,
    time_scale: float,
    run_id: str,
    log: CallLog | None = None,
    shared_budgets: BudgetStore | None = None,
) -> TenantRun:
    """Sync one integration the way the connector operator does (real connector, engine and vault).

    :param shared_budgets: where the windows several tenants spend are counted, as a task's store counts
        them; None: each tenant counts its own (the ``tenants`` and ``limit`` scenarios measure that).
    """
    from invoice_sync.connectors.registry import factory_for
    from invoice_sync.engine.sync import IntegrationSync
    from invoice_sync.store.repository import SyncStore
    from invoice_sync.store.tokens import SqlTokenVault

    log = log or CallLog()
    engine = engine_for(db_url)
    started = time.perf_counter()
    store = SyncStore(engine, lease=timedelta(minutes=10))
    integration = store.integration(integration_id)
    connector: Any = factory_for(integration.tool)(
        integration,
        SqlTokenVault(engine),
        shared_budgets=shared_budgets,
        **hook_options(integration.tool, time_scale),
    )
    log.attach(integration.tool, connector.hook)
    error = None
    try:
        report = IntegrationSync(
            store, connector, integration, run_id=run_id, holder=f"{run_id}:{integration_id}#try1"
        ).run()
        result = report.to_dict()
    except Exception as exc:  # one tenant's failure is reported, the others go on
        result, error = {}, f"{type(exc).__name__}: {exc}"
    return TenantRun(
        integration_id,
        integration.tool,
        result,
        round(time.perf_counter() - started, 3),
        dict(log.windows),
        log.throttled,
        error,
        round(connector.hook.waited_s, 3),
    )


def warm_up(
    db_url: str,
    integration_ids: Sequence[int],
    *,
    time_scale: float,
    shared_budgets: BudgetStore | None = None,
) -> float | None:
    """Sync small warm-up tenants in this process before forking the measured ones.

    A worker imports Airflow and the connectors and reads its settings once at start-up, long before it
    runs a task; the forked tenants inherit all that (and the engine's compiled statements), so their
    wall time is the sync's, not the interpreter's start-up. Returns the end of a clock-minute window
    (real epoch seconds) if a tenant of a tool whose windows are the clock's minutes was among them
    (``SANDBOX.bench.clock_minutes``: Exact's), see :func:`wait_for_window`.
    """
    window_end = None
    for integration_id in integration_ids:
        log = CallLog()
        run = sync_tenant(
            db_url,
            integration_id,
            time_scale=time_scale,
            run_id="warm-up",
            log=log,
            shared_budgets=shared_budgets,
        )
        if run.error:
            raise RuntimeError(f"warm-up tenant {integration_id} failed: {run.error}")
        if sandbox_of(run.tool).bench.clock_minutes:  # other tools' windows are their callers' own
            window_end = max(log.windows, default=window_end)
    engine_for(db_url).dispose()  # no connection crosses the fork
    return window_end


def wait_for_window(window_end: float | None, period_s: float) -> None:
    """Sleep until a clock-minute window begins (Exact's windows are clock minutes, not per caller).

    A phase that starts late in a minute gets that minute's 60 calls in a fraction of it, one that starts
    early waits almost a whole minute after them: up to a window's length of difference in the wall time
    of a tenant that spans a few minutes. Starting the tenants alone and the tenants together at the same
    point of the minute compares the tenants, not where the clock happened to be.
    """
    if window_end is None:
        return
    now = time.time()
    passed = max(0.0, now - window_end)
    start = window_end + math.ceil(passed / period_s) * period_s
    if start - now < 0.1:
        start += period_s
    time.sleep(max(0.0, start - now))


def _child(db_url: str, integration_id: int, time_scale: float, run_id: str, result: str) -> None:
    engine_for(db_url).dispose(close=False)  # the parent's connections stay the parent's
    try:
        run = sync_tenant(db_url, integration_id, time_scale=time_scale, run_id=run_id)
        payload = {
            "integration_id": run.integration_id,
            "tool": run.tool,
            "report": run.report,
            "wall_s": run.wall_s,
            "throttled": run.throttled,
            "error": run.error,
        }
    except Exception as exc:  # a crash is a result too, or the parent would wait for nothing
        payload = {"integration_id": integration_id, "error": f"{type(exc).__name__}: {exc}"}
    Path(result).write_text(json.dumps(payload))
    sys.stdout.flush()
    os._exit(0)  # skip the parent's atexit handlers (inherited through fork)


def sync_in_parallel(
    db_url: str, integration_ids: Sequence[int], *, time_scale: float, run_id: str, results_dir: Path
) -> tuple[float, list[dict[str, Any]]]:
    """Sync each integration in a forked process of its own, all at once; (wall seconds, results)."""
    context = multiprocessing.get_context("fork")
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {i: results_dir / f"{run_id}-{i}.json" for i in integration_ids}
    started = time.perf_counter()
    cpu_before = _children_cpu_s()
    processes = [
        context.Process(target=_child, args=(db_url, i, time_scale, run_id, str(paths[i])))
        for i in integration_ids
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    wall = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu_before
    results = []
    for integration_id, path in paths.items():
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            results.append({"integration_id": integration_id, "error": "the tenant process left no result"})
    for result in results:
        result["cpu_s_all"] = round(cpu, 3)  # of every process of this call together
    return round(wall, 3), results


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the scenario -----------------------------------------------------------------------------------


def plan(tenants: int, invoices: int, *, first_id: int = 1, first_slot: int = 1) -> list[Tenant]:
    """``tenants`` tenants over the tools in turn, each on a slot (division, domain, office) of its own."""
    planned = []
    for n in range(tenants):
        tool = TOOLS[n % len(TOOLS)]
        slot = first_slot + n // len(TOOLS)
        planned.append(bench_tenant(first_id + n, tool, slot, invoices))
    return planned


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    """The ``tenants`` line: 20 tenants in parallel against the slowest of them alone."""
    count = QUICK_TENANTS if quick else TENANTS
    invoices = QUICK_INVOICES_PER_TENANT if quick else INVOICES_PER_TENANT
    workdir = fresh_dir(workdir / "tenants")
    parallel = plan(count, invoices)
    # The tenants synced alone: one per tool, on slots no parallel tenant uses.
    alone = [bench_tenant(count + 1 + n, tool, SLOTS - n, invoices) for n, tool in enumerate(TOOLS)]
    # The warm-up tenants: on the slot below the lone ones, after their ids.
    warm = [
        bench_tenant(count + 1 + len(TOOLS) + n, tool, SLOTS - len(TOOLS), WARM_UP_INVOICES)
        for n, tool in enumerate(TOOLS)
    ]
    limits = BenchLimits(minute_s=60.0 / TIME_SCALE)
    db_url = sqlite_url(workdir / "invoicing.db")
    engine = open_db(db_url)
    try:
        seed_tenants(engine, [*parallel, *alone, *warm])
    finally:
        engine.dispose()
    with Sandbox(workdir, time_scale=TIME_SCALE) as sandbox:
        env = connection_env(bench_connections(sandbox.url, [*parallel, *alone, *warm], limits))
        with _environment(env):
            window_end = warm_up(db_url, [t.integration_id for t in warm], time_scale=TIME_SCALE)
            minute_s = 60.0 / TIME_SCALE
            solo: dict[str, float] = {}
            solo_results = []
            for tenant in alone:
                note(f"tenants: {tenant.tool} tenant alone ({invoices} invoices)")
                wait_for_window(window_end, minute_s)
                wall, results = sync_in_parallel(
                    db_url,
                    [tenant.integration_id],
                    time_scale=TIME_SCALE,
                    run_id="alone",
                    results_dir=workdir / "results",
                )
                solo[tenant.tool] = wall
                solo_results += results
            note(f"tenants: {count} tenants in parallel ({invoices} invoices each)")
            wait_for_window(window_end, minute_s)
            wall, results = sync_in_parallel(
                db_url,
                [t.integration_id for t in parallel],
                time_scale=TIME_SCALE,
                run_id="parallel",
                results_dir=workdir / "results",
            )
        http_429 = sum(int(sandbox.stats(tool).get("rate_limited", 0)) for tool in TOOLS)
    slowest_tool = max(solo, key=lambda tool: solo[tool])
    booked = sum(int(r.get("report", {}).get("booked", 0)) for r in results)
    errors = [f"{r['integration_id']}: {r['error']}" for r in [*results, *solo_results] if r.get("error")]
    isolated = not errors and all(
        r.get("report", {}).get("booked") == invoices for r in [*results, *solo_results]
    )
    by_tool = {tool: sum(1 for t in parallel if t.tool == tool) for tool in TOOLS}
    line: dict[str, Any] = {
        "scenario": "tenants",
        "ratio": round(wall / solo[slowest_tool], 3),
        "wall_s": wall,
        "slowest_alone_s": solo[slowest_tool],
        "slowest_alone_tool": slowest_tool,
        "alone_s": solo,
        "tenants": count,
        "by_tool": by_tool,
        "invoices_per_tenant": invoices,
        "booked": booked,
        "slowest_tenant_in_parallel_s": max((float(r.get("wall_s", 0.0)) for r in results), default=0.0),
        "cpu_s": results[0].get("cpu_s_all") if results else None,
        "http_429": http_429,
        "isolated": isolated,
        "time_scale": TIME_SCALE,
        "cores": os.cpu_count(),
    }
    if errors:
        line["errors"] = errors[:5]
    return [line]


class _environment:
    """Set environment variables for the duration of a ``with`` block (forked children inherit them)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for name, value in self.values.items():
            self.saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *_: object) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


SCENARIOS: dict[str, Callable[..., list[dict[str, Any]]]] = {"tenants": run}
