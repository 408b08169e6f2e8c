"""``invoice-sync``: the project's console script.

invoice-sync db upgrade                 create/migrate the invoicing database's tables
invoice-sync demo seed [--invoices N]   fill it with demo data
invoice-sync sandbox serve              run the accounting-tool simulators on loopback
invoice-sync status                     what is synced, per integration, and the last run's summary
invoice-sync chaos [--invoices N]       nightly runs under random faults, then a check of the books
invoice-sync bench [--scenario NAME]    throughput and overhead figures against the sandbox
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoice-sync", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the invoicing database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="create the demo app tables if missing and migrate the sync tables")

    demo = commands.add_parser("demo", help="demo data").add_subparsers(dest="action", required=True)
    seed = demo.add_parser("seed", help="fill the invoicing database with demo data")
    seed.add_argument("--invoices", type=int, default=60, help="regular invoices to create (default 60)")
    seed.add_argument("--seed", type=int, default=2026, help="random seed, for repeatable data")
    seed.add_argument("--reset", action="store_true", help="wipe existing app and sync data first")
    seed.add_argument("--if-empty", action="store_true", help="do nothing when the database has data")

    sandbox = commands.add_parser("sandbox", help="accounting-tool simulators").add_subparsers(
        dest="action", required=True
    )
    serve = sandbox.add_parser("serve", help="serve every simulator on one loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--time-scale", type=float, default=1.0, help="sandbox seconds per real second")
    serve.add_argument("--state", default=None, help="JSON file that keeps the simulators' books")

    status = commands.add_parser("status", help="per integration: synced, unsynced, failed; last run summary")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    chaos = commands.add_parser("chaos", help="nightly runs under random faults, then check the books")
    chaos.add_argument("--invoices", type=int, default=2000, help="regular invoices to seed (default 2000)")
    chaos.add_argument("--runs", type=int, default=6, help="runs under faults (default 6)")
    chaos.add_argument("--seed", type=int, default=1, help="random seed of data and faults (default 1)")
    chaos.add_argument("--kills", type=int, default=1, help="runs to SIGKILL mid-sync (default 1)")

    bench = commands.add_parser("bench", help="throughput at the tools' limits, overhead, memory, parse time")
    bench.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this scenario (repeatable; default: all). Names: overhead, limit_<tool>, naive, "
        "tenants, extract, memory, parse",
    )
    bench.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke test (figures mean little)"
    )
    bench.add_argument("--workdir", default=None, help="throw-away state (default var/bench/, wiped first)")

    args = parser.parse_args(argv)
    if args.command == "db":
        return _db_upgrade()
    if args.command == "demo":
        return _demo_seed(args)
    if args.command == "sandbox":
        from invoice_sync.sandbox.server import serve as run_server

        run_server(args.host, args.port, time_scale=args.time_scale, state_path=args.state)
        return 0
    if args.command == "status":
        return _status(as_json=args.json)
    if args.command == "chaos":
        from invoice_sync.chaos import main as run_chaos

        return run_chaos(invoices=args.invoices, runs=args.runs, seed=args.seed, kills=args.kills)
    if args.command == "bench":
        from pathlib import Path

        from invoice_sync.bench import main as run_bench

        workdir = Path(args.workdir) if args.workdir else None
        return run_bench(args.scenario, quick=args.quick, workdir=workdir)
    return 2


def _db_upgrade() -> int:
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.migrate import prepare

    prepare(make_engine())
    print("invoicing database is up to date")
    return 0


def _demo_seed(args: argparse.Namespace) -> int:
    from invoice_sync.sandbox.demo import seed
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.migrate import prepare

    engine = make_engine()
    prepare(engine)
    try:
        counts = seed(engine, invoices=args.invoices, seed_value=args.seed, reset=args.reset).counts
    except RuntimeError as exc:
        if args.if_empty:
            print(f"demo seed skipped: {exc}")
            return 0
        print(f"invoice-sync: {exc}", file=sys.stderr)
        return 1
    print("seeded " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def _status(*, as_json: bool) -> int:
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.reports import last_run, status_frame

    engine = make_engine()
    frame = status_frame(engine)
    run = last_run(engine)
    if as_json:
        print(json.dumps({"integrations": frame.to_dict(orient="records"), "last_run": run}, default=str))
        return 0
    print("Invoices per integration (now):")
    print(frame.to_string(index=False) if not frame.empty else "  no integrations")
    if run is None:
        print("\nNo sync run recorded yet.")
        return 0
    print(f"\nLast run: {run['run_id']} ({run['run_type']}), finished {run['finished_at']}")
    import pandas as pd

    table = pd.DataFrame(run["counts"].get("integrations", []))
    print(table.to_string(index=False) if not table.empty else "  nothing selected")
    synced = run["counts"].get("invoices_synced", 0)
    print(
        f"\n{synced} invoice(s) and {run['counts'].get('customers_created', 0)} customer(s) "
        "synced in that run" + ("" if synced else " - nothing new to sync")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
