"""``overhead``: what our code costs per invoice when the tool costs nothing (target under 2 ms).

10,000 invoices, one tenant, the sandbox answering at once with its rate limits off: every second left is
ours (queries, validation, mapping, the ledger's durable writes, the write-back, Airflow's task
machinery around them). Each run is a real ``airflow dags test invoice_sync_manual`` in a subprocess
against the sandbox in another. Airflow's fixed start-up (interpreter, DAG parsing, scheduling the run's
tasks, the tasks that run whatever the backlog) is measured as the same command for an integration with
nothing to sync and subtracted: ``ms_per_invoice = (wall_s - startup_s) / invoices``. ``peak_rss_mb`` is
the ``airflow dags test`` process's peak resident set (its tasks run inside it).

Tools: those whose simulator gives the scenario a place (``SANDBOX.bench.overhead``), in that order; the
quick run measures the first only. Yuki first, because it takes 25 invoices per call and no customer
calls, so the figure is our overhead rather than HTTP round trips. Exact Online second, because it is the
other extreme (one POST per invoice, customers created first), so the line shows what a tool without
batches costs on top. Twinfield batches as well, but our client keeps Twinfield's 1,000 credits a minute
even when the sandbox does not (10,000 invoices would wait for a second minute), so it would measure that
wait, not us.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoice_sync.store.models import InvoiceRow
from invoice_sync_dev.bench import common
from invoice_sync_dev.sandbox.process import airflow_env
from invoice_sync_dev.sandbox.tools import SandboxTool, sandbox_tools

DAG_ID = "invoice_sync_manual"
INVOICES = 10_000
QUICK_INVOICES = 200


def _place(sandbox: SandboxTool) -> int:
    return sandbox.bench.overhead or 0


TOOLS = tuple(sandbox.name for sandbox in sorted(filter(_place, sandbox_tools()), key=_place))
"""The tools measured, in their ``SANDBOX.bench.overhead`` order."""
QUICK_TOOLS = TOOLS[:1]
EMPTY_ID = 99
"""The integration with nothing to sync, whose run is Airflow's fixed start-up."""
RUN_TIMEOUT_S = 600.0


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    invoices = QUICK_INVOICES if quick else INVOICES
    tools = QUICK_TOOLS if quick else TOOLS
    airflow_home = common.migrated_airflow_home(workdir)
    workdir = common.fresh_dir(workdir / "overhead")
    db_url = common.sqlite_url(workdir / "invoicing.db")
    tenants = [common.Tenant(n, tool, invoices) for n, tool in enumerate(tools, start=1)]
    tenants.append(common.Tenant(EMPTY_ID, tools[0], 0, name="Bench nothing to sync"))
    engine = common.open_db(db_url)
    common.note(f"overhead: seeding {invoices} invoices for each of {', '.join(tools)}")
    common.seed_tenants(engine, tenants)
    lines: list[dict[str, Any]] = []
    try:
        with common.Sandbox(workdir) as sandbox:
            sandbox.limits_off()
            env = airflow_env(airflow_home, db_url, common.connections(sandbox.url, limits_off=True))
            common.note("overhead: Airflow's fixed start-up (a run with nothing to sync)")
            startup = _dag_run(env, EMPTY_ID, workdir / "logs" / "startup.log")
            for tenant in tenants[:-1]:
                common.note(f"overhead: {invoices} {tenant.tool} invoices through {DAG_ID}")
                measured = _dag_run(env, tenant.integration_id, workdir / "logs" / f"{tenant.tool}.log")
                booked = _synced(engine, tenant.integration_id)
                if booked != invoices:
                    raise RuntimeError(
                        f"{tenant.tool}: {booked} of {invoices} invoices got a registration number; "
                        f"see {workdir / 'logs' / f'{tenant.tool}.log'}"
                    )
                line = {
                    "scenario": "overhead",
                    "tool": tenant.tool,
                    "invoices": invoices,
                    "wall_s": measured.wall_s,
                    "startup_s": startup.wall_s,
                    "ms_per_invoice": round((measured.wall_s - startup.wall_s) * 1000 / invoices, 3),
                    "peak_rss_mb": measured.peak_rss_mb,
                    "api_calls": sandbox.stats(tenant.tool)["total"],
                }
                lines.append(line)
    finally:
        engine.dispose()
    return lines


def _dag_run(env: dict[str, str], integration_id: int, log_path: Path) -> common.Measured:
    result = common.dags_test(
        env, DAG_ID, conf={"integrations": [integration_id]}, log_path=log_path, timeout_s=RUN_TIMEOUT_S
    )
    if result.state != "success":
        raise RuntimeError(f"{DAG_ID} for integration {integration_id} ended {result.state}; see {log_path}")
    return result.measured


def _synced(engine: Any, integration_id: int) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(
            InvoiceRow.integration_id == integration_id, InvoiceRow.registration_number.is_not(None)
        )
        return int(session.scalar(query) or 0)
