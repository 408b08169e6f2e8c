"""Run the engine for some integrations the way one Airflow task try does, in a process of its own.

``python tests/fault/runner.py --db URL --integration 3 --holder nightly#try1 --lease 1.5 --result out.json``

Each integration gets an :class:`~invoice_sync.engine.sync.IntegrationSync` with the real connector and the
SQL token vault; like the connector operator, one integration's failure does not stop the next. The result
(JSON) says per integration whether it synced, found the claim held, lost its lease or failed, and why.
Exit status: 0 all synced, 4 a lease was lost, 3 a claim was held, 1 any other failure. The Airflow
connection comes from the environment (``AIRFLOW_CONN_...``), as in a task.

Tests start it three ways: :func:`sync` in the test process, :func:`start_forked` (a forked process, cheap:
nothing to import again) and :func:`start_exec` (a fresh interpreter, like a task process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the test helpers live next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

OK, ERROR, CLAIM_HELD, LEASE_LOST = 0, 1, 3, 4


def sync(
    db_url: str,
    integration_ids: list[int],
    *,
    run_id: str,
    holder: str,
    lease_s: float,
    batch_size: int = 50,
    wait_for_claim_s: float = 0.0,
) -> dict[str, Any]:
    """Sync ``integration_ids`` in order; wait up to ``wait_for_claim_s`` for a held claim."""
    from invoice_sync.connectors.registry import connector_for
    from invoice_sync.domain.errors import LeaseLostError
    from invoice_sync.engine.sync import IntegrationSync, SyncOptions
    from invoice_sync.store.claims import ClaimHeldError
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.repository import SyncStore
    from invoice_sync.store.tokens import SqlTokenVault

    engine = make_engine(db_url)
    store = SyncStore(engine, lease=timedelta(seconds=lease_s))
    vault = SqlTokenVault(engine)
    results: dict[str, Any] = {}
    try:
        for integration_id in integration_ids:
            deadline = time.monotonic() + wait_for_claim_s
            while True:
                result: dict[str, Any] = {"status": "ok"}
                try:
                    integration = store.integration(integration_id)
                    connector = connector_for(integration, vault)
                    # Reading the connection initialises Airflow's settings (seconds, once per process):
                    # do it before the claim, as a task process has done long before it syncs.
                    getattr(connector, "request_timeout_s", None)
                    report = IntegrationSync(
                        store,
                        connector,
                        integration,
                        run_id=run_id,
                        holder=holder,
                        options=SyncOptions(batch_size=batch_size),
                    ).run()
                    result["report"] = report.to_dict()
                except ClaimHeldError as exc:
                    result = {"status": "claim_held", "error": str(exc), "error_type": type(exc).__name__}
                    if time.monotonic() < deadline:
                        time.sleep(0.1)
                        continue
                except LeaseLostError as exc:
                    result = {"status": "lease_lost", "error": str(exc), "error_type": type(exc).__name__}
                except Exception as exc:  # reported, like the operator does, and the next one goes on
                    result = {"status": "error", "error": str(exc), "error_type": type(exc).__name__}
                results[str(integration_id)] = result
                break
    finally:
        engine.dispose()
    return results


def exit_status(results: dict[str, Any]) -> int:
    statuses = {r["status"] for r in results.values()}
    if "lease_lost" in statuses:
        return LEASE_LOST
    if "claim_held" in statuses:
        return CLAIM_HELD
    return ERROR if "error" in statuses else OK


def arguments(
    db_url: str,
    integration_ids: list[int],
    *,
    run_id: str,
    holder: str,
    lease_s: float,
    result: Path,
    batch_size: int = 50,
    wait_for_claim_s: float = 0.0,
) -> list[str]:
    args = ["--db", db_url, "--run-id", run_id, "--holder", holder, "--lease", str(lease_s)]
    args += ["--batch-size", str(batch_size), "--wait-for-claim", str(wait_for_claim_s)]
    args += ["--result", str(result)]
    for integration_id in integration_ids:
        args += ["--integration", str(integration_id)]
    return args


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--integration", type=int, action="append", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--holder", required=True)
    parser.add_argument("--lease", type=float, required=True, help="lease in seconds")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--wait-for-claim", type=float, default=0.0)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    results = sync(
        args.db,
        args.integration,
        run_id=args.run_id,
        holder=args.holder,
        lease_s=args.lease,
        batch_size=args.batch_size,
        wait_for_claim_s=args.wait_for_claim,
    )
    partial = args.result.with_suffix(".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "integrations": results}))
    partial.replace(args.result)
    return exit_status(results)


def _forked_main(argv: list[str]) -> None:
    sys.exit(main(argv))


def start_forked(argv: list[str]) -> multiprocessing.process.BaseProcess:
    """Run :func:`main` in a forked process (it inherits the environment, connection included)."""
    process = multiprocessing.get_context("fork").Process(target=_forked_main, args=(argv,), daemon=True)
    process.start()
    return process


def start_exec(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Run this file in a fresh interpreter, as Airflow runs a task process.

    Its output goes to ``log_path``, not to a pipe: nobody reads a pipe while the runner works, and a
    full pipe buffer would block it mid-sync.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            env={**env, "PYTHONUNBUFFERED": "1"},  # a killed runner's last lines must reach the log
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def read_result(path: Path) -> dict[str, Any] | None:
    """The runner's result, or ``None`` when it never finished (killed)."""
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
