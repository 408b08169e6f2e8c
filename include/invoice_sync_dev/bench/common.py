"""What every benchmark scenario needs: the sandbox as a subprocess, a fast seeder, child-process
measurements (wall time and peak RSS) and ``airflow dags test`` runs.

The scenarios measure our own code, so everything around it is real and separate: the simulators run in
their own process (``invoice-sync-dev sandbox serve``) the way the accounting tools are another machine, and a
DAG run is a real ``airflow dags test`` subprocess whose peak RSS the kernel reports when it is reaped.

Seeding writes rows with SQLAlchemy Core in chunks instead of going through the demo seeder: a million
invoices built as ORM objects would take longer than the benchmarks themselves. The rows follow the demo's
integrations (same administrations, VAT codes and GL accounts as the sandbox knows), so every seeded
invoice is one the tool accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from invoice_sync.config import PROJECT_ROOT
from invoice_sync.connectors.registry import TOOLS
from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import CustomerRow, IntegrationRow, InvoiceLineRow, InvoiceRow
from invoice_sync_dev.sandbox.demo import (
    INTEGRATIONS,
    DemoIntegration,
    be_vat_number,
    nl_vat_number,
    wipe,
)
from invoice_sync_dev.sandbox.process import (
    SandboxProcess,
    airflow_bin,
    airflow_env,
)
from invoice_sync_dev.sandbox.tools import demo_connections, sandbox_of

WORKDIR = PROJECT_ROOT / "var" / "bench"


def template_of(tool: str) -> DemoIntegration:
    """The demo integration each seeded tenant of ``tool`` copies its settings from (its simulator module's
    ``SANDBOX.bench.template_integration``)."""
    wanted = sandbox_of(tool).bench.template_integration
    return next(integration for integration in INTEGRATIONS if integration.id == wanted)


CHUNK = 10_000
SEEDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
CENT = Decimal("0.01")


def note(message: str) -> None:
    """Progress for the person watching; stdout is reserved for the JSON lines."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def fresh_dir(path: Path) -> Path:
    """``path``, emptied (files and subdirectories), so a scenario never reads an earlier run's state."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# -- the sandbox ------------------------------------------------------------------------------------


class Sandbox(SandboxProcess):
    """The sandbox subprocess, with the bench's switch to take every rate limit away."""

    def limits_off(self, tools: Sequence[str] = TOOLS) -> None:
        """Switch the rate limits of ``tools`` off (each simulator's ``SANDBOX.bench.limits_off``)."""
        for tool in tools:
            self.configure(tool, **sandbox_of(tool).bench.limits_off)


def connections(sandbox_url: str, *, limits_off: bool = False) -> dict[str, dict[str, Any]]:
    """The demo connections (conn id -> Airflow connection dict) pointing at the sandbox.

    With ``limits_off`` the limits our clients count themselves (each simulator's ``SANDBOX.bench.unpaced``:
    Yuki's ``daily_limit``, QuickBooks' windows; those tools send no headers) are raised along with the
    simulator's, or the client would stop after Yuki's 1,000 calls or pace itself to QuickBooks' 40 batches
    a minute.
    """
    result = demo_connections(sandbox_url)
    if limits_off:
        for integration in INTEGRATIONS:
            connection = result[integration.conn_id]
            connection["extra"] = {**connection["extra"], **sandbox_of(integration.tool).bench.unpaced}
    return result


# -- seeding ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    """One integration to seed.

    :param integration_id: its id (also used in its invoice numbers, so numbers never collide).
    :param tool: any tool the sandbox simulates (see :func:`template_of`).
    :param invoices: registered invoices without a registration number (the backlog to sync).
    :param synced: invoices that already have one (history the candidate query must not pay for).
    :param settings: overrides of the demo integration's settings (say, another Exact division).
    :param conn_id: the Airflow connection; default: the tool's demo connection.
    :param name: the integration's name; default: one from its id and tool.
    :param slot: for a bench tenant (:func:`~invoice_sync_dev.bench.tenants.bench_tenant`), the bench slot
        (division, domain, office) of its tool it is on, whose bench connection ``conn_id`` is.
    """

    integration_id: int
    tool: str
    invoices: int
    synced: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    conn_id: str | None = None
    name: str | None = None
    slot: int | None = None


def open_db(url: str, *, reset: bool = True) -> Engine:
    """An engine on ``url`` with the app's and our tables, emptied first when ``reset`` (and marked as a
    demo database: a wipe refuses a database with data that the demo or the bench did not make)."""
    engine = make_engine(url)
    prepare(engine)
    if reset:
        wipe(engine, by="bench")
    return engine


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def seed_tenants(
    engine: Engine,
    tenants: Sequence[Tenant],
    *,
    customers_per_tenant: int = 10,
    lines_per_invoice: int = 2,
    first_invoice_id: int = 1,
) -> dict[str, int]:
    """Insert integrations, customers, invoices and their lines for ``tenants``; returns row counts.

    Each tenant's history (``synced``) gets lower ids than its backlog, as in a real app where the
    unsynced invoices are the newest. History rows get no lines: nothing ever reads them. Every tenant has
    its own customers, so tenants never share a customer link. Rows go in chunks of :data:`CHUNK`.
    Invoice ids start at ``first_invoice_id`` (room for rows a caller inserts some faster way).
    """
    counts = {"integrations": 0, "customers": 0, "invoices": 0, "invoice_lines": 0}
    with engine.begin() as connection:
        for tenant in tenants:
            template = template_of(tenant.tool)
            connection.execute(
                insert(IntegrationRow),
                [
                    {
                        "id": tenant.integration_id,
                        "name": tenant.name or f"Bench {tenant.tool} {tenant.integration_id}",
                        "tool": tenant.tool,
                        "conn_id": tenant.conn_id or template.conn_id,
                        "auto_sync": True,
                        "sync_from": None,
                        # Its tenants book into the sandbox, which a connector allows only a demo.
                        "settings": {**template.settings, "demo": True, **tenant.settings},
                        "updated_at": SEEDED_AT,
                    }
                ],
            )
            counts["integrations"] += 1
        next_customer = 1
        next_invoice = first_invoice_id
        for tenant in tenants:
            template = template_of(tenant.tool)
            customer_ids = list(range(next_customer, next_customer + customers_per_tenant))
            next_customer += customers_per_tenant
            connection.execute(insert(CustomerRow), [_customer(i, template.country) for i in customer_ids])
            counts["customers"] += len(customer_ids)
            rates, gl_accounts = sandbox_of(tenant.tool).bench.accepted
            for synced, total in ((True, tenant.synced), (False, tenant.invoices)):
                for start in range(0, total, CHUNK):
                    size = min(CHUNK, total - start)
                    invoices, lines = [], []
                    for n in range(start, start + size):
                        invoice_id = next_invoice
                        next_invoice += 1
                        row, invoice_lines = _invoice(
                            invoice_id,
                            tenant.integration_id,
                            n if synced else tenant.synced + n,
                            customer_ids[n % len(customer_ids)],
                            rates,
                            gl_accounts,
                            synced=synced,
                            lines=0 if synced else lines_per_invoice,
                        )
                        invoices.append(row)
                        lines.extend(invoice_lines)
                    connection.execute(insert(InvoiceRow), invoices)
                    if lines:
                        connection.execute(insert(InvoiceLineRow), lines)
                    counts["invoices"] += len(invoices)
                    counts["invoice_lines"] += len(lines)
    return counts


def _customer(customer_id: int, country: str) -> dict[str, Any]:
    vat = (
        be_vat_number(5_000_000 + customer_id * 7919)
        if country == "BE"
        else nl_vat_number(20_000_000 + customer_id * 7919)
    )
    return {
        "id": customer_id,
        "kind": "company",
        "name": f"Bench Klant {customer_id:05d} BV",
        "vat_number": vat,
        "email": f"boekhouding@klant{customer_id}.example",
        "address_line1": f"Stationsstraat {customer_id % 200 + 1}",
        "postcode": "9000" if country == "BE" else "3511 ED",
        "city": "Gent" if country == "BE" else "Utrecht",
        "country_code": country,
        "updated_at": SEEDED_AT,
    }


def _invoice(
    invoice_id: int,
    integration_id: int,
    serial: int,
    customer_id: int,
    rates: Sequence[str],
    gl_accounts: Sequence[str],
    *,
    synced: bool,
    lines: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    invoice_date = date(2026, 3 + serial % 8, 1 + serial % 28)
    registered_at = datetime.combine(invoice_date, datetime.min.time(), UTC) + timedelta(hours=9)
    line_rows = []
    total_excl = total_vat = Decimal("0")
    for position in range(1, lines + 1):
        rate = rates[(serial + position) % len(rates)]
        amount = (Decimal(100 + (serial * 7 + position * 13) % 9000) / 4).quantize(CENT)
        vat = (amount * Decimal(rate) / 100).quantize(CENT, ROUND_HALF_UP)
        total_excl += amount
        total_vat += vat
        line_rows.append(
            {
                "invoice_id": invoice_id,
                "position": position,
                "description": "Consultancy" if position % 2 else "Materials",
                "quantity": Decimal("1"),
                "unit_price": amount,
                "vat_rate": Decimal(rate),
                "amount": amount,
                "gl_account": gl_accounts[position % len(gl_accounts)],
            }
        )
    if not lines:  # history: plausible totals, no lines
        total_excl = Decimal("100.00")
        total_vat = Decimal("21.00")
    row = {
        "id": invoice_id,
        "integration_id": integration_id,
        "kind": "invoice",
        "number": f"B{integration_id}-{serial + 1:07d}",
        "status": "registered",
        "customer_id": customer_id,
        "invoice_date": invoice_date,
        "due_date": invoice_date + timedelta(days=30),
        "currency": "EUR",
        "total_excl_vat": total_excl,
        "total_vat": total_vat,
        "total_incl_vat": total_excl + total_vat,
        "credited_invoice_id": None,
        "registered_at": registered_at,
        "updated_at": registered_at,
        "registration_number": f"{70_000_000 + invoice_id}" if synced else None,
        "synced_at": registered_at + timedelta(days=1) if synced else None,
    }
    return row, line_rows


# -- measuring child processes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    """One child process: its exit code, wall time and peak resident set (the largest of the process
    and the descendants it waited for, as the kernel reports it at reaping)."""

    returncode: int
    wall_s: float
    peak_rss_mb: float


def run_measured(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path,
    timeout_s: float = 900.0,
    cwd: Path | None = None,
) -> Measured:
    """Run ``command`` with output to ``log_path``; measure wall time and peak RSS via ``wait4``.

    ``wait4`` gives this child's own resource usage (not the maximum over every child this process ever
    reaped, which ``RUSAGE_CHILDREN`` would), so several measurements in one bench run stay independent.
    A child still running after ``timeout_s`` is killed with its process group; the result then has
    return code -9.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(process.pid, 9)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Measured(process.returncode, round(wall, 3), round(usage.ru_maxrss / 1024, 1))


# -- Airflow ----------------------------------------------------------------------------------------


def migrated_airflow_home(workdir: Path) -> Path:
    """``workdir/airflow``, its metadata DB migrated once per bench run (later calls reuse it)."""
    home = workdir / "airflow"
    marker = home / ".migrated"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, sqlite_url(workdir / "unused.db"), {})
    log_path = workdir / "logs" / "airflow-db-migrate.log"
    note(f"airflow db migrate (AIRFLOW_HOME={home})")
    result = run_measured([airflow_bin(), "db", "migrate"], env=env, log_path=log_path, timeout_s=900)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed; see {log_path}")
    marker.touch()
    return home


@dataclass(frozen=True, slots=True)
class DagTest:
    """One ``airflow dags test``: the run's final state and the process's measurements."""

    state: str
    measured: Measured
    log_path: Path


def dags_test(
    env: Mapping[str, str],
    dag_id: str,
    *,
    conf: Mapping[str, Any] | None = None,
    log_path: Path,
    timeout_s: float = 900.0,
) -> DagTest:
    """``airflow dags test <dag_id> [-c conf]`` in a subprocess; the state comes from its log."""
    command = [airflow_bin(), "dags", "test", dag_id]
    if conf is not None:
        command += ["-c", json.dumps(conf)]
    measured = run_measured(command, env=env, log_path=log_path, timeout_s=timeout_s)
    return DagTest(dag_state(dag_id, log_path.read_text(errors="replace")), measured, log_path)


def dag_state(dag_id: str, log: str) -> str:
    """The run's final state as ``airflow dags test`` logs it (``unknown`` if it never said)."""
    import re

    match = re.search(rf"Marking run <DagRun {re.escape(dag_id)} .*?> (successful|failed)", log)
    if match is None:
        return "unknown"
    return "success" if match.group(1) == "successful" else "failed"


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(function(*args, **kwargs), seconds it took)``."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
