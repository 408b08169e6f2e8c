"""``memory``: peak RSS of a sync of 100,000 invoices over that of 10,000 (target at most 1.5).

Memory must not grow with the backlog: extraction pages through the candidates, pushing streams per page,
and the write-back must not hold every booked row at once either. A ratio near 1.0 shows that; a ratio
near 10 would mean something holds the whole backlog.

What runs is what the two task bodies run, in a fresh interpreter per size so one size's heap never
flatters the other: the engine (:class:`~invoice_sync.engine.sync.IntegrationSync`) with the real connector
and the SQL token vault against the sandbox, then the write-back of the registration numbers (the
``write_back_registration_numbers`` task's store call). Not the whole DAG: ``airflow dags test`` adds
Airflow's own ~300 MB to both sides and would dilute the ratio toward 1.0, hiding growth we cause.

Tool: the ``overhead`` scenario's first (``SANDBOX.bench.overhead`` 1: Yuki), for the same reason: the
fewest calls per invoice (25 invoices per ``ProcessSalesInvoices`` call, no customer calls). Twinfield
batches as well but our client keeps its 1,000 credits a minute even when the sandbox's limits are off,
which would turn 100,000 invoices into a 12-minute wait; Exact posts one invoice per call. Limits are off
(the simulator's and the daily allowance in the connection), so the run measures memory, not waiting.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from invoice_sync_dev.bench import common
from invoice_sync_dev.sandbox.process import airflow_env

SIZES = (10_000, 100_000)
QUICK_SIZES = (300, 1_500)
RUN_TIMEOUT_S = 900.0


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    from invoice_sync_dev.bench.overhead import TOOLS  # not in the measured process: it imports simulators

    tool = TOOLS[0]
    small, large = QUICK_SIZES if quick else SIZES
    workdir = common.fresh_dir(workdir / "memory")
    with common.Sandbox(workdir) as sandbox:
        conns = common.connections(sandbox.url, limits_off=True)
        peaks: dict[int, float] = {}
        walls: dict[int, float] = {}
        for size in (small, large):
            db_url = common.sqlite_url(workdir / f"invoicing-{size}.db")
            engine = common.open_db(db_url)
            common.seed_tenants(engine, [common.Tenant(1, tool, size)])
            engine.dispose()
            sandbox.control(tool, "POST", "reset")  # new books; a reset restores the default limits too
            sandbox.limits_off([tool])
            common.note(f"memory: syncing {size} {tool} invoices in a fresh process")
            env = airflow_env(workdir / "airflow", db_url, conns)
            log_path = workdir / f"sync-{size}.log"
            measured = common.run_measured(
                [sys.executable, "-m", "invoice_sync_dev.bench.memory", db_url, "1", str(size)],
                env=env,
                log_path=log_path,
                timeout_s=RUN_TIMEOUT_S,
            )
            if measured.returncode == -9:
                raise RuntimeError(f"the {size}-invoice sync did not finish within {RUN_TIMEOUT_S:.0f} s")
            if measured.returncode != 0:
                raise RuntimeError(f"the {size}-invoice sync failed; see {log_path}")
            peaks[size], walls[size] = measured.peak_rss_mb, measured.wall_s
    return [
        {
            "scenario": "memory",
            "ratio": round(peaks[large] / peaks[small], 3),
            "tool": tool,
            "invoices": [small, large],
            "peak_rss_mb": [peaks[small], peaks[large]],
            "wall_s": [walls[small], walls[large]],
        }
    ]


def _sync(db_url: str, integration_id: int, expected: int) -> None:
    """The measured process: one integration's sync task, then its write-back task, as a worker runs them."""
    from invoice_sync.connectors.registry import connector_for
    from invoice_sync.engine.sync import IntegrationSync
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.repository import SyncStore
    from invoice_sync.store.tokens import SqlTokenVault

    engine = make_engine(db_url)
    store = SyncStore(engine)
    integration = store.integration(integration_id)
    connector = connector_for(integration, SqlTokenVault(engine))
    report = IntegrationSync(
        store, connector, integration, run_id="bench:memory", holder="bench:memory#1"
    ).run()
    claim = store.acquire(integration_id, "bench:memory#write_back")
    try:
        written = store.write_back(claim)
    finally:
        store.release(claim)
    print(report.to_dict(), f"written back: {written}", flush=True)
    if written != expected:
        raise SystemExit(f"expected {expected} invoices written back, got {written}")


if __name__ == "__main__":
    _sync(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
