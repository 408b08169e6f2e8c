"""The ``night`` scenario: a model of a production night, calibrated and validated in one run.

Will 10,000 tenants fit the night? No bench can sync them here, so the scenario models a night and checks
the model against a run this machine can do. The model (:func:`predict`) is a pure function of calibrated
costs and a configuration: per tool, each tenant costs a fixed part (settings, connection check, tokens,
claim) plus, per invoice, our code and the tool's calls; a tenant cannot go faster than its own rate
window (Exact's division minute), a tool's tenants not faster than the windows they share (Twinfield's
client id, Xero's app, and in the validation tenants sharing one organisation); tenants are grouped into
mapped task instances the way :func:`invoice_sync.airflow.tasks.shard` groups them, each instance pays
Airflow's task start-up, and a tool runs as many instances at once as its pool, the DAG's
``max_active_tis_per_dagrun`` and the Celery slots (workers x slots) allow. The night is the DAG's fixed
part plus the longest of: each tool's schedule, and every slot-second needed over the slots there are.
The resource behind that longest term is the bottleneck.

How the run goes: the sandbox in a subprocess (real time: an Airflow task cannot be told the shorter
token-refresh margin a faster sandbox clock needs, see ``tenants.hook_options``), with every limit on.

1. Calibration: the loopback latency of a call; per tool, one tenant of 1 invoice and one of
   :data:`CALIBRATION_INVOICES` synced in this process (the fixed part, the cost per invoice and the calls
   per invoice, from the sandbox's counts); then two real ``airflow dags test`` runs of
   ``invoice_sync_manual`` over 10 and 60 one-invoice tenants: in each, the connector tasks' span (from
   the log) beyond their syncs is the task start-up, the rest of the wall time the fixed part, and the
   two sizes say how both grow with the run's task instances and tenants (``dags test`` looks at every
   task instance of the run for each one it starts).
2. Validation: ``airflow dags test`` over :data:`VALIDATION_TENANTS` tenants of all five tools (it runs
   task instances one at a time: the validated configuration is 1 worker x 1 slot), predicted first.
   Exact, Yuki, Twinfield and QuickBooks tenants are spread over the sandbox's bench slots (two tenants
   per division, domain, office or company); Xero has one demo organisation, so all its tenants share it
   and its minute window, which the prediction models as a window shared by the tool's tenants.
3. The prediction for :data:`NIGHT_TENANTS` tenants x :data:`NIGHT_INVOICES` invoices on
   :data:`NIGHT_WORKERS` workers x :data:`NIGHT_SLOTS` slots, with its bottleneck.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import requests

from invoice_sync.airflow.dag_factory import MAX_ACTIVE_TIS_PER_TOOL
from invoice_sync.airflow.tasks import MAX_MAP_LENGTH, MAX_SHARDS, shard
from invoice_sync.connectors.descriptor import RateLimit
from invoice_sync.connectors.registry import BY_NAME, TOOLS
from invoice_sync.domain.ports import BudgetStore
from invoice_sync.store.budgets import SqlBudgetStore
from invoice_sync_dev.bench import common
from invoice_sync_dev.bench.tenants import bench_connections, bench_tenant, engine_for, sync_tenant, warm_up
from invoice_sync_dev.sandbox.process import airflow_env, connection_env
from invoice_sync_dev.sandbox.tools import BenchLimits, sandbox_of

# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCost:
    """One tool's calibrated costs.

    :param tenant_fixed_s: per tenant, whatever the backlog (settings, connection check, tokens, claim).
    :param cpu_s_per_invoice: our code per invoice, net of the calls' latency.
    :param calls_per_invoice: HTTP calls per invoice (batches make it below one).
    :param units_per_tenant: what the tool's windows count per tenant whatever its backlog (Twinfield:
        credits; the token, the first lookups and batches).
    :param units_per_invoice: what they count per invoice on top.
    :param pool_slots: the tool's Airflow pool.
    """

    tenant_fixed_s: float
    cpu_s_per_invoice: float
    calls_per_invoice: float
    units_per_tenant: float
    units_per_invoice: float
    pool_slots: int
    windows: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class Calibration:
    """What the model knows about this installation: measured costs, and the DAG's fixed limits.

    :param dag_fixed_s: a DAG run's fixed part (interpreter, parsing, the tasks around the connector tasks).
    :param fixed_per_tenant_s: what each tenant adds to those tasks (extraction, write-back, summary).
    :param startup_s: Airflow's start-up of one (mapped) task instance in a small run.
    :param startup_per_instance_s: what each task instance of the run adds to every instance's start-up
        (the scheduling loop looks at all of the run's task instances for each one it starts).
    :param latency_s: one HTTP call's round trip.
    :param shard_limit: mapped task instances per tool at most; tenants are grouped into them as the DAG
        groups them (:func:`invoice_sync.airflow.tasks.shard`).
    """

    dag_fixed_s: float
    startup_s: float
    latency_s: float
    tools: Mapping[str, ToolCost]
    max_active_per_tool: int = MAX_ACTIVE_TIS_PER_TOOL
    fixed_per_tenant_s: float = 0.0
    startup_per_instance_s: float = 0.0
    shard_limit: int = MAX_SHARDS


@dataclass(frozen=True, slots=True)
class Night:
    """What to predict: ``tenants`` per tool with ``invoices`` each, on ``workers`` x ``slots``.

    :param sharing: per tool, tenants that share one tenant-scope window (one division, organisation).
    """

    tenants: Mapping[str, int]
    invoices: int
    workers: int = 1
    slots: int = 1
    sharing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The predicted wall time, the bottleneck's name, and every term the model compared."""

    wall_s: float
    bottleneck: str
    terms: dict[str, float]
    task_instances: int


def _waits(units: float, window: RateLimit) -> float:
    """Seconds spent waiting for later windows to spend ``units``: none while the first window holds them.

    A task counts its windows through a store (Redis, or the database when there is none), which hands
    out a sliding window's :attr:`~RateLimit.shared_units` per window, so that is the rate planned with.
    """
    per_window = window.shared_units
    if units <= per_window:
        return 0.0
    return (math.ceil(units / per_window) - 1) * window.window_s


def predict(calibration: Calibration, night: Night) -> Prediction:
    """The wall time of ``night`` and the resource that sets it.

    Per tool: a tenant takes its fixed part plus its invoices' cost, or as long as its windows make it
    wait if that is longer; a task instance takes Airflow's start-up plus its tenants; the tool's
    instances run ``min(pool, max_active_tis_per_dagrun, workers x slots)`` at a time, plus the waits for
    the windows its tenants share. The slots are held while a task waits for a window, so the night also
    needs every tool's time x its concurrency in slot-seconds, spread over all slots. Each term is named
    by what dominates it; the largest is the bottleneck.
    """
    all_slots = night.workers * night.slots
    terms: dict[str, float] = {}
    slot_seconds = 0.0
    startup_total = 0.0
    shards = {
        tool: [len(s) for s in shard(list(range(count)), calibration.shard_limit)]
        for tool, count in night.tenants.items()
        if count > 0
    }
    instances = sum(len(sizes) for sizes in shards.values())
    startup_s = calibration.startup_s + calibration.startup_per_instance_s * instances
    for tool, sizes in shards.items():
        count = night.tenants[tool]
        cost = calibration.tools[tool]
        invoice_s = cost.cpu_s_per_invoice + cost.calls_per_invoice * calibration.latency_s
        busy = cost.tenant_fixed_s + night.invoices * invoice_s
        units = cost.units_per_tenant + night.invoices * cost.units_per_invoice
        own = max((_waits(units, w) for w in cost.windows), default=0.0)
        tenant_s = max(busy, own)
        concurrency = min(cost.pool_slots, calibration.max_active_per_tool, all_slots)
        task_times = [startup_s + size * tenant_s for size in sizes]
        schedule = max(sum(task_times) / concurrency, max(task_times))
        startup_total += len(sizes) * startup_s
        reason = "start-up" if len(sizes) * startup_s > count * tenant_s else "tenant syncs"
        if own > busy:
            reason = next(w.name for w in cost.windows if _waits(units, w) == own)
        name, tool_s = f"{tool}: {concurrency} at a time x task time ({reason})", schedule
        sharing = max(1, night.sharing.get(tool, 1))
        for window in cost.windows:
            group = count if window.scope == "tool" else min(sharing, count)
            waits = _waits(group * units, window) if group > 1 else 0.0
            # A task that finds a shared window spent holds its slot until a later one (the Xero hook a
            # whole minute: Xero names no end), and the tool's other tasks soon find it spent too: the
            # waits add to the tool's work instead of overlapping it.
            if waits > 0 and schedule + waits > tool_s:
                tool_s = schedule + waits
                if waits > schedule:
                    name = f"{tool}: {window.name} (shared by {group})"
        terms[name] = tool_s
        slot_seconds += tool_s * concurrency
    startup_share = startup_total / slot_seconds if slot_seconds else 0.0
    slot_term = f"worker slots ({night.workers} x {night.slots})"
    if startup_share > 0.5:
        slot_term += " x task start-up"
    terms[slot_term] = slot_seconds / all_slots
    bottleneck = max(terms, key=lambda name: terms[name])
    fixed = calibration.dag_fixed_s + calibration.fixed_per_tenant_s * sum(night.tenants.values())
    return Prediction(round(fixed + terms[bottleneck], 3), bottleneck, terms, instances)


# -- the scenario -----------------------------------------------------------------------------------

DAG_ID = "invoice_sync_manual"
CALIBRATION_INVOICES = 20
STARTUP_TENANTS_PER_TOOL = (2, 12)
"""One-invoice tenants per tool of the two start-up runs: how start-up and the fixed part grow with a
run's task instances and tenants."""
QUICK_STARTUP_TENANTS_PER_TOOL = (1, 3)
VALIDATION_TENANTS = 200
VALIDATION_INVOICES = 6
QUICK_VALIDATION_TENANTS = 10
QUICK_VALIDATION_INVOICES = 2
SLOT_SHARING = 2
"""Validation tenants per bench division, domain or office (two integrations may share a division)."""
NIGHT_TENANTS = 10_000
NIGHT_INVOICES = 20
NIGHT_WORKERS = 4
NIGHT_SLOTS = 8
RUN_TIMEOUT_S = 900.0


@dataclass
class _Ids:
    """Integration ids handed out in order, so every tenant of the run has its own."""

    next_id: int = 1

    def take(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _tenants(ids: _Ids, tool: str, count: int, invoices: int, first_slot: int, spread: int) -> list[Any]:
    """``count`` tenants of ``tool``: from ``first_slot`` on, ``spread`` to a bench slot (a tool with one
    slot puts them all on it)."""
    slots = sandbox_of(tool).bench.slots
    return [
        bench_tenant(ids.take(), tool, 1 if slots == 1 else first_slot + n // spread, invoices)
        for n in range(count)
    ]


def _units(sandbox: common.Sandbox, tool: str) -> tuple[int, int]:
    """(calls, window units) the sandbox has counted for ``tool`` so far (Twinfield's units: credits)."""
    stats = sandbox.stats(tool)
    calls = int(stats.get("total", 0))
    credits = stats.get("credits_used")
    return calls, int(sum(credits.values())) if isinstance(credits, dict) else calls


def _latency_s(sandbox: common.Sandbox, tool: str, rounds: int = 30) -> float:
    """The round trip of one loopback call to the sandbox (its statistics route), the median of ``rounds``."""
    url = f"{sandbox_of(tool).url(sandbox.url)}/_sandbox/stats"
    samples = []
    with requests.Session() as session:
        for _ in range(rounds):
            started = time.perf_counter()
            session.get(url, timeout=10).raise_for_status()
            samples.append(time.perf_counter() - started)
    return sorted(samples)[len(samples) // 2]


def _calibrate_tool(
    sandbox: common.Sandbox,
    db_url: str,
    tool: str,
    one: int,
    many: int,
    latency_s: float,
    budgets: BudgetStore,
) -> ToolCost:
    """Sync a 1-invoice and a :data:`CALIBRATION_INVOICES`-invoice tenant of ``tool`` in this process.

    Their waits for a rate window (or after a 429) are left out: the model adds the windows itself, and
    a minute's wait taken as the cost of 19 invoices made QuickBooks cost 3 s an invoice (every tool's
    calibration tenants share the sandbox's windows with the warm-up's).
    """
    measured = []
    for integration_id in (one, many):
        before = _units(sandbox, tool)
        run = sync_tenant(db_url, integration_id, time_scale=1.0, run_id="calibrate", shared_budgets=budgets)
        if run.error:
            raise RuntimeError(f"calibration tenant {integration_id} ({tool}) failed: {run.error}")
        after = _units(sandbox, tool)
        measured.append((run.wall_s - run.waited_s, after[0] - before[0], after[1] - before[1]))
    (wall_1, calls_1, units_1), (wall_n, calls_n, units_n) = measured
    extra = CALIBRATION_INVOICES - 1
    per_invoice = max(0.0, (wall_n - wall_1) / extra)
    calls = max(0.0, (calls_n - calls_1) / extra)
    return ToolCost(
        tenant_fixed_s=max(0.0, wall_1 - per_invoice),
        cpu_s_per_invoice=max(0.0, per_invoice - calls * latency_s),
        calls_per_invoice=round(calls, 4),
        units_per_tenant=max(0.0, units_1 - (units_n - units_1) / extra),
        units_per_invoice=max(0.0, (units_n - units_1) / extra),
        pool_slots=BY_NAME[tool].pool_slots,
        windows=BY_NAME[tool].rate_limits,
    )


def _dag_run(env: Mapping[str, str], ids: Sequence[int], log_path: Path) -> float:
    result = common.dags_test(
        env, DAG_ID, conf={"integrations": list(ids)}, log_path=log_path, timeout_s=RUN_TIMEOUT_S
    )
    if result.state != "success":
        raise RuntimeError(f"{DAG_ID} over {len(ids)} integration(s) ended {result.state}; see {log_path}")
    return result.measured.wall_s


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    """The ``night`` line: calibration, the validation table and the 10,000-tenant prediction."""
    per_tool = (QUICK_VALIDATION_TENANTS if quick else VALIDATION_TENANTS) // len(TOOLS)
    invoices = QUICK_VALIDATION_INVOICES if quick else VALIDATION_INVOICES
    airflow_home = common.migrated_airflow_home(workdir)
    workdir = common.fresh_dir(workdir / "night")
    ids = _Ids()
    slots_used = math.ceil(per_tool / SLOT_SHARING)
    warm = {tool: _tenants(ids, tool, 1, 3, slots_used + 1, 1)[0] for tool in TOOLS}
    calibrate = {
        tool: (
            _tenants(ids, tool, 1, 1, slots_used + 2, 1)[0],
            _tenants(ids, tool, 1, CALIBRATION_INVOICES, slots_used + 3, 1)[0],
        )
        for tool in TOOLS
    }
    sizes = QUICK_STARTUP_TENANTS_PER_TOOL if quick else STARTUP_TENANTS_PER_TOOL
    startup = [
        [t for tool in TOOLS for t in _tenants(ids, tool, size, 1, slots_used + slot, size)]
        for size, slot in zip(sizes, (2, 4), strict=True)
    ]
    validation = [t for tool in TOOLS for t in _tenants(ids, tool, per_tool, invoices, 1, SLOT_SHARING)]
    every = [
        *warm.values(),
        *(t for pair in calibrate.values() for t in pair),
        *sum(startup, []),
        *validation,
    ]
    # Twinfield tenants first: their customers get the lowest ids, as the connector makes a debtor code of
    # the id and Twinfield's format is 1[0-9]{3,5} (a code from id 1,000 on is refused)
    every.sort(key=lambda tenant: tenant.tool != "twinfield")
    db_url = common.sqlite_url(workdir / "invoicing.db")
    engine = common.open_db(db_url)
    try:
        common.note(f"night: seeding {len(every)} tenants")
        common.seed_tenants(engine, every)
    finally:
        engine.dispose()
    with common.Sandbox(workdir) as sandbox:
        connections = bench_connections(sandbox.url, every, BenchLimits())
        with mock.patch.dict(os.environ, connection_env(connections)):
            common.note("night: calibrating per tool (latency, fixed part, cost and calls per invoice)")
            latency = _latency_s(sandbox, TOOLS[0])
            # A task counts shared windows in a store; so do these tenants, or QuickBooks' company second,
            # spent by the tenant before, draws a 429 and a minute's wait.
            budgets = SqlBudgetStore(engine_for(db_url))
            warm_up(db_url, [t.integration_id for t in warm.values()], time_scale=1.0, shared_budgets=budgets)
            tools = {
                tool: _calibrate_tool(
                    sandbox, db_url, tool, one.integration_id, many.integration_id, latency, budgets
                )
                for tool, (one, many) in calibrate.items()
            }
        env = airflow_env(airflow_home, db_url, connections)
        runs = []  # (tenants, task start-up, fixed part) of each start-up run
        for tenants in startup:
            common.note(f"night: task start-up, {len(tenants)} one-invoice tenants (a task instance each)")
            log_path = workdir / "logs" / f"startup-{len(tenants)}.log"
            wall = _dag_run(env, [t.integration_id for t in tenants], log_path)
            count, span, each = mapped_span(log_path.read_text(errors="replace"))
            syncs = sum(tools[t.tool].tenant_fixed_s + _invoice_s(tools[t.tool], latency) for t in tenants)
            runs.append((count, max(0.0, each - syncs / count), wall - span))
        (small, startup_small, fixed_small), (large, startup_large, fixed_large) = runs
        per_instance = max(0.0, (startup_large - startup_small) / (large - small))
        per_tenant = max(0.0, (fixed_large - fixed_small) / (large - small))
        calibration = Calibration(
            dag_fixed_s=fixed_small - per_tenant * small,
            fixed_per_tenant_s=per_tenant,
            startup_s=max(0.0, startup_small - per_instance * small),
            startup_per_instance_s=per_instance,
            latency_s=latency,
            tools=tools,
        )
        night = Night(
            tenants={tool: per_tool for tool in TOOLS},
            invoices=invoices,
            sharing={tool: per_tool if sandbox_of(tool).bench.slots == 1 else SLOT_SHARING for tool in TOOLS},
        )
        predicted = predict(calibration, night)
        common.note(
            f"night: validation, {len(validation)} tenants x {invoices} invoices through {DAG_ID} "
            f"(predicted {predicted.wall_s:.1f} s, bottleneck {predicted.bottleneck})"
        )
        before = {tool: _units(sandbox, tool)[0] for tool in TOOLS}
        measured = _dag_run(env, [t.integration_id for t in validation], workdir / "logs" / "validation.log")
        http_429 = sum(int(sandbox.stats(tool).get("rate_limited", 0)) for tool in TOOLS)
        calls = {tool: _units(sandbox, tool)[0] - before[tool] for tool in TOOLS}
    booked = _booked(db_url, [t.integration_id for t in validation])
    if booked != len(validation) * invoices:
        raise RuntimeError(f"validation booked {booked} of {len(validation) * invoices} invoices")
    error_pct = round(100 * (predicted.wall_s - measured) / measured, 1)
    big = Night(
        tenants={tool: NIGHT_TENANTS // len(TOOLS) for tool in TOOLS},
        invoices=NIGHT_INVOICES,
        workers=NIGHT_WORKERS,
        slots=NIGHT_SLOTS,
    )
    night_10k = predict(calibration, big)
    # before MAX_SHARDS: one task instance per integration up to Airflow's max_map_length
    night_10k_before = predict(replace(calibration, shard_limit=MAX_MAP_LENGTH), big)
    common.note(_validation_table(predicted, measured, error_pct, night, len(validation)))
    return [
        {
            "scenario": "night",
            "error_pct": error_pct,
            "predicted_s": predicted.wall_s,
            "measured_s": measured,
            "validated": f"{len(validation)} tenants x {invoices} invoices, W=1 x S=1 (airflow dags test)",
            "validation_bottleneck": predicted.bottleneck,
            "predicted_10k_h": round(night_10k.wall_s / 3600, 3),
            "bottleneck_10k": night_10k.bottleneck,
            "task_instances_10k": night_10k.task_instances,
            "predicted_10k_h_before": round(night_10k_before.wall_s / 3600, 3),
            "bottleneck_10k_before": night_10k_before.bottleneck,
            "task_instances_10k_before": night_10k_before.task_instances,
            "night_10k": f"{NIGHT_TENANTS} x {NIGHT_INVOICES} invoices on {NIGHT_WORKERS} x {NIGHT_SLOTS}",
            "calibration": _calibration_figures(calibration),
            "validation_calls": calls,
            "http_429": http_429,
            "cores": os.cpu_count(),
        }
    ]


_DAG_TEST_TASK = re.compile(r"^(\S+) .*\[DAG TEST\] (starting|end task) task_id=[a-z_]+\.sync ", re.MULTILINE)


def mapped_span(log: str) -> tuple[int, float, float]:
    """(connector task instances, seconds from the first one's start to the last one's end, the median
    seconds from one's start to the next's) of an ``airflow dags test`` log.

    The rest of the wall time is the run's fixed part. The median, not the mean, is an instance's time:
    a tenant that waits for a window spent by the tenants before it (the sandbox's one Xero organisation)
    adds a minute to the span, not to every instance."""
    starts, stamps = [], []
    for match in _DAG_TEST_TASK.finditer(log):
        stamp = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        stamps.append(stamp)
        if match.group(2) == "starting":
            starts.append(stamp)
    if len(starts) < 2:
        raise RuntimeError("the run's log names fewer than two connector task instances")
    gaps = sorted((b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False))
    return len(starts), (max(stamps) - min(stamps)).total_seconds(), gaps[len(gaps) // 2]


def _invoice_s(cost: ToolCost, latency_s: float) -> float:
    return cost.cpu_s_per_invoice + cost.calls_per_invoice * latency_s


def _booked(db_url: str, integration_ids: Sequence[int]) -> int:
    from sqlalchemy import func, select

    from invoice_sync.store.models import InvoiceRow

    engine = common.open_db(db_url, reset=False)
    try:
        with engine.connect() as connection:
            query = select(func.count()).where(
                InvoiceRow.integration_id.in_(list(integration_ids)),
                InvoiceRow.registration_number.is_not(None),
            )
            return int(connection.scalar(query) or 0)
    finally:
        engine.dispose()


def _calibration_figures(calibration: Calibration) -> dict[str, Any]:
    return {
        "dag_fixed_s": round(calibration.dag_fixed_s, 3),
        "fixed_per_tenant_s": round(calibration.fixed_per_tenant_s, 4),
        "startup_s": round(calibration.startup_s, 3),
        "startup_per_instance_ms": round(calibration.startup_per_instance_s * 1000, 3),
        "latency_ms": round(calibration.latency_s * 1000, 2),
        **{
            tool: {
                "tenant_fixed_s": round(cost.tenant_fixed_s, 3),
                "cpu_ms_per_invoice": round(cost.cpu_s_per_invoice * 1000, 2),
                "calls_per_invoice": cost.calls_per_invoice,
                "units_per_tenant": round(cost.units_per_tenant, 3),
                "units_per_invoice": round(cost.units_per_invoice, 3),
            }
            for tool, cost in calibration.tools.items()
        },
    }


def _validation_table(predicted: Prediction, measured: float, error_pct: float, night: Night, n: int) -> str:
    rows = [
        ("configuration", "predicted_s", "measured_s", "error_%", "bottleneck"),
        (
            f"{n} tenants x {night.invoices} invoices, W={night.workers} x S={night.slots}",
            f"{predicted.wall_s:.1f}",
            f"{measured:.1f}",
            f"{error_pct:+.1f}",
            predicted.bottleneck,
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "night: validation\n" + "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
