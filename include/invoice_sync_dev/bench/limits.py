"""The ``limit_<tool>`` scenarios and the ``naive`` baseline: how close a sync gets to the APIs' limits.

The physical limit of a sync is the fewest calls an API allows, spent at exactly the rate it allows. Each
``limit_<tool>`` scenario syncs one tenant with a backlog that spans at least ten of the tool's rate
windows, against the sandbox with every limit on and a time scale (a sandbox minute lasts
``60 / time_scale`` real seconds), with the real connector, engine and token vault, and reports:

- ``api_calls``: the calls the tool counted against the tenant's limit, from the simulator's statistics
  (Exact: calls to the division, not the token endpoint or ``current/Me``; Twinfield: ProcessXml calls,
  with ``credits`` beside them; Yuki: every web-service call, ``Authenticate`` included; Xero: every
  Accounting API call, not the token endpoint or ``/connections``; QuickBooks: every company call, with
  ``batch_calls`` beside them);
- ``calls_per_invoice``: ``api_calls`` over the invoices booked;
- ``utilisation``: units spent per window over the window's limit, over every window the run spanned but
  the last (where the backlog ran out; counting it would measure the backlog, not the pacing). Exact's
  windows are the ones its ``X-RateLimit-Minutely-Reset`` header names, so the tool's own count decides;
  Xero names no end, but its ``X-MinLimit-Remaining`` goes up when a minute begins, so its count decides
  too. Twinfield sends no headers, so the windows are the ones our budget counted credits in (the
  simulator's 429 count shows whether they matched Twinfield's). QuickBooks sends none either and its
  minute slides: the bench counts batch calls in minutes that open with a call (a sliding limit holds for
  each of them). Yuki documents no per-minute limit: its window is
  the domain's day, and its utilisation is the calls spent that day over the day's allowance, in a run
  whose backlog is larger than the day allows (the rest is deferred to the next run, as in production);
- ``per_minute_overall`` (minute windows): calls (Twinfield: credits; QuickBooks: batch calls) per sandbox
  minute over the whole run, start-up and the last window included, for comparison with ``limit``;
- ``http_429``: 429s the simulator answered (its ``rate_limited`` counter): the target is none.

Where a real limit would need an impractical backlog to span ten windows, the simulator's limit is lowered
together with the connection extra that tells our connector about it (Twinfield: ``credits_per_minute``
and ``minute_s``; Yuki: ``daily_limit``; QuickBooks: ``batches_per_minute`` and ``minute_s``). Xero's hook
learns the lowered limit from ``X-MinLimit-Remaining``, so its connection is told only the windows'
lengths of the time-scaled sandbox (``minute_s``, ``day_s``). The lines say which limit was used
(``limit``) next to the real one.

``naive`` books the same Exact backlog the way most sync tools do: for every invoice one lookup of the
entry by ``YourRef``, one lookup of the customer's account by code (and a create when it is missing),
then one create, with the real :class:`~invoice_sync.connectors.exact_online.hook.ExactOnlineHook`
against the sandbox, so it is paced and counted exactly like ours. ``ratio`` = our ``api_calls`` over its.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from invoice_sync.connectors.registry import TOOLS
from invoice_sync_dev.bench.common import (
    Sandbox,
    fresh_dir,
    note,
    open_db,
    seed_tenants,
    sqlite_url,
)
from invoice_sync_dev.bench.tenants import (
    CallLog,
    TenantRun,
    _environment,
    bench_connections,
    bench_tenant,
    engine_for,
    hook_options,
    sync_tenant,
)
from invoice_sync_dev.sandbox.process import connection_env
from invoice_sync_dev.sandbox.tools import BenchLimits, sandbox_of, sandbox_tools

INTEGRATION_ID = 1
SLOT = 1


class Setup:
    """One limit scenario's sizes and limits, full or quick."""

    def __init__(
        self,
        tool: str,
        *,
        invoices: int,
        time_scale: float,
        limit: int,
        real_limit: int,
        window: str,
    ) -> None:
        self.tool = tool
        self.invoices = invoices
        self.time_scale = time_scale
        self.limit = limit
        self.real_limit = real_limit
        self.window = window

    def sandbox_config(self) -> dict[str, Any]:
        """The simulator's limit for this run (only the limit scenarios lower one)."""
        return {sandbox_of(self.tool).bench.limit_switch: self.limit}

    def limits(self) -> BenchLimits:
        """What the connections tell our connectors: the sandbox minute's length, and the lowered limit
        (each tool's bench connection passes it on where the tool does not announce it: Twinfield's
        credits, Yuki's day, QuickBooks' batch calls)."""
        return BenchLimits(minute_s=60.0 / self.time_scale, limit=self.limit)


def setup(tool: str, quick: bool) -> Setup:
    """Sizes: ten windows and more at full size; a few in quick mode (the suite's smoke test). Each tool's
    ``SANDBOX.bench.limit_run`` and ``quick_limit_run`` hold them, with the reasons."""
    knobs = sandbox_of(tool).bench
    run = knobs.quick_limit_run if quick else knobs.limit_run
    return Setup(
        tool,
        invoices=run.invoices,
        time_scale=run.time_scale,
        limit=run.limit,
        real_limit=run.real_limit,
        window=run.window,
    )


def api_calls(tool: str, stats: Mapping[str, Any]) -> int:
    """Calls the tool counts against the tenant's limits, from the simulator's statistics: its ``total``,
    or the calls to the routes ``SANDBOX.bench.limited_route`` names where ``total`` counts others too."""
    marker = sandbox_of(tool).bench.limited_route
    if marker is None:  # the simulator counts only calls its limits count
        return int(stats.get("total", 0))
    calls: Mapping[str, Mapping[str, int]] = stats.get("calls", {})
    return sum(
        count
        for route, statuses in calls.items()
        if marker in route.lower() or marker in route
        for status, count in statuses.items()
        if status != "429"
    )


def naive_tool() -> str:
    """The tool whose backlog ``naive`` books the naive way (``SANDBOX.bench.naive_baseline``: Exact's)."""
    for sandbox in sandbox_tools():
        if sandbox.bench.naive_baseline:
            return sandbox.name
    raise LookupError("no tool's SANDBOX.bench has naive_baseline: the naive scenario has nothing to book")


_OURS: dict[tuple[str, str, bool], dict[str, Any]] = {}
"""(workdir, tool, quick) -> the ``limit_<tool>`` line this process made, so ``naive`` compares with the
run just made."""


def _seeded(workdir: Path, tool: str, invoices: int) -> str:
    db_url = sqlite_url(workdir / "invoicing.db")
    engine = open_db(db_url)
    try:
        seed_tenants(engine, [bench_tenant(INTEGRATION_ID, tool, SLOT, invoices)])
    finally:
        engine.dispose()
    return db_url


def limit_line(workdir: Path, tool: str, *, quick: bool = False) -> dict[str, Any]:
    """One ``limit_<tool>`` line (see the module's docstring)."""
    plan = setup(tool, quick)
    workdir = fresh_dir(workdir / f"limit_{tool}")
    db_url = _seeded(workdir, tool, plan.invoices)
    tenant = bench_tenant(INTEGRATION_ID, tool, SLOT, plan.invoices)
    limits = plan.limits()
    log = CallLog(minute_s=limits.minute_s)
    note(f"limit_{tool}: {plan.invoices} invoices, {plan.limit} a {plan.window}, scale {plan.time_scale:g}")
    with Sandbox(workdir, time_scale=plan.time_scale) as sandbox:
        sandbox.configure(tool, **plan.sandbox_config())
        with _environment(connection_env(bench_connections(sandbox.url, [tenant], limits))):
            started = time.perf_counter()
            run = sync_tenant(db_url, INTEGRATION_ID, time_scale=plan.time_scale, run_id="limit", log=log)
            wall = time.perf_counter() - started
        stats = sandbox.stats(tool)
    engine_for(db_url).dispose()
    line = _line(f"limit_{tool}", plan, run, stats, wall)
    if plan.window == "day":  # the run spends one day: its calls over the day's allowance
        line["utilisation"] = round(line["api_calls"] / plan.limit, 3)
        line["windows"] = 1
    else:
        line["utilisation"] = log.utilisation(plan.limit)
        line["windows"] = len(log.windows)
        # The rate over the whole run, start-up and the last, partly filled window included.
        minutes = wall * plan.time_scale / 60
        line["per_minute_overall"] = round(sum(log.windows.values()) / minutes, 1) if minutes else None
    figures = sandbox_of(tool).bench.limit_figures
    if figures is not None:
        line.update(figures(stats))
    _OURS[(str(workdir.parent), tool, quick)] = line
    return line


def _line(
    scenario: str, plan: Setup, run: TenantRun, stats: Mapping[str, Any], wall: float
) -> dict[str, Any]:
    booked = int(run.report.get("booked", 0))
    calls = api_calls(plan.tool, stats)
    line: dict[str, Any] = {
        "scenario": scenario,
        "tool": plan.tool,
        "invoices": plan.invoices,
        "booked": booked,
        "deferred": int(run.report.get("deferred", 0)),
        "api_calls": calls,
        "calls_per_invoice": round(calls / booked, 4) if booked else None,
        "utilisation": None,
        "http_429": int(stats.get("rate_limited", 0)),
        "window": plan.window,
        "windows": None,
        "limit": plan.limit,
        "real_limit": plan.real_limit,
        "time_scale": plan.time_scale,
        "customers_created": int(run.report.get("customers_created", 0)),
        "token_refreshes": int(stats.get("token_refreshes", 0)),
        "wall_s": round(wall, 3),
    }
    if run.error:
        line["error"] = run.error
    return line


# -- the naive baseline -----------------------------------------------------------------------------


def naive_exact(db_url: str, integration_id: int, *, time_scale: float) -> tuple[int, int]:
    """Book the integration's invoices the naive way; (invoices booked, 429s the hook ran into).

    Per invoice: a lookup of the entry by ``YourRef`` (skipped when found), a lookup of the customer's
    account by code, its creation when missing, and the entry's creation. No ledger is written: the
    baseline is counted in calls, not in what a crash would leave behind.
    """
    from invoice_sync.connectors.exact_online import mapping
    from invoice_sync.connectors.exact_online.connector import ACCOUNTS, ENTRIES
    from invoice_sync.connectors.exact_online.hook import ExactOnlineHook
    from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
    from invoice_sync.store.models import InvoiceRow
    from invoice_sync.store.repository import SyncStore, UnreadableInvoice
    from invoice_sync.store.tokens import SqlTokenVault

    tool = naive_tool()
    engine = engine_for(db_url)
    store = SyncStore(engine)
    integration = store.integration(integration_id)
    settings = ExactOnlineSettings.of(integration)
    hook = ExactOnlineHook(
        exact_online_conn_id=integration.conn_id,
        vault=SqlTokenVault(engine),
        division=settings.division,
        **hook_options(tool, time_scale),
    )
    log = CallLog()
    log.attach(tool, hook)
    with engine.connect() as connection:
        ids = list(
            connection.scalars(
                select(InvoiceRow.id)
                .where(InvoiceRow.integration_id == integration_id)
                .order_by(InvoiceRow.id)
            )
        )
    booked = 0
    for start in range(0, len(ids), 200):
        for invoice in store.load_invoices(ids[start : start + 200]):
            if isinstance(invoice, UnreadableInvoice):  # the seeder writes none; say so if it ever did
                raise RuntimeError(f"bench invoice {invoice.id} is unreadable: {invoice.message}")
            assert invoice.number is not None and invoice.customer is not None
            found = hook.get(
                ENTRIES, {"$filter": mapping.any_of("YourRef", [invoice.number]), "$select": "EntryID"}
            )
            if (found.get("d") or {}).get("results"):
                continue
            code = mapping.account_code(invoice.customer.id)
            accounts = hook.get(ACCOUNTS, {"$filter": mapping.any_of("Code", [code]), "$select": "ID"})
            rows = (accounts.get("d") or {}).get("results") or []
            if rows:
                account_id = str(rows[0]["ID"])
            else:
                account_id = str(hook.post(ACCOUNTS, mapping.account_payload(invoice.customer))["ID"])
            hook.post(ENTRIES, mapping.sales_entry_payload(invoice, settings, account_id))
            booked += 1
    return booked, log.throttled


def naive_line(workdir: Path, *, quick: bool = False) -> dict[str, Any]:
    """The ``naive`` line: the Exact limit scenario done the naive way, and our calls over its calls."""
    tool = naive_tool()
    ours = _OURS.get((str(workdir), tool, quick)) or limit_line(workdir, tool, quick=quick)
    plan = setup(tool, quick)
    workdir = fresh_dir(workdir / "naive")
    db_url = _seeded(workdir, tool, plan.invoices)
    tenant = bench_tenant(INTEGRATION_ID, tool, SLOT, plan.invoices)
    note(f"naive: {plan.invoices} Exact invoices, one lookup and one create each, customers per invoice")
    with Sandbox(workdir, time_scale=plan.time_scale) as sandbox:
        sandbox.configure(tool, **plan.sandbox_config())
        with _environment(connection_env(bench_connections(sandbox.url, [tenant], plan.limits()))):
            started = time.perf_counter()
            booked, _ = naive_exact(db_url, INTEGRATION_ID, time_scale=plan.time_scale)
            wall = time.perf_counter() - started
        stats = sandbox.stats(tool)
    engine_for(db_url).dispose()
    calls = api_calls(tool, stats)
    return {
        "scenario": "naive",
        "tool": tool,
        "ratio": round(ours["api_calls"] / calls, 3) if calls else None,
        "api_calls": calls,
        "ours_api_calls": ours["api_calls"],
        "invoices": plan.invoices,
        "booked": booked,
        "calls_per_invoice": round(calls / booked, 4) if booked else None,
        "ours_calls_per_invoice": ours["calls_per_invoice"],
        "http_429": int(stats.get("rate_limited", 0)),
        "wall_s": round(wall, 3),
        "ours_wall_s": ours["wall_s"],
        "time_scale": plan.time_scale,
    }


def limit_scenario(tool: str) -> Callable[..., list[dict[str, Any]]]:
    """The ``limit_<tool>`` scenario: :func:`limit_line` of ``tool`` in the runner's shape."""

    def scenario(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
        return [limit_line(workdir, tool, quick=quick)]

    scenario.__name__ = scenario.__qualname__ = f"limit_{tool}"
    return scenario


def naive(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    return [naive_line(workdir, quick=quick)]


SCENARIOS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    **{f"limit_{tool}": limit_scenario(tool) for tool in TOOLS},
    "naive": naive,
}
"""Scenario name -> its function, a limit scenario for every tool the registry knows (the runner may run
any of them alone; ``naive`` then runs ours too)."""


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    """Every line of this module, in the runner's order."""
    lines: list[dict[str, Any]] = []
    for scenario in SCENARIOS.values():
        lines += scenario(workdir, quick=quick)
    return lines
