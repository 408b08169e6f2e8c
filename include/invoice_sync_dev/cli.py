"""``invoice-sync-dev``: the development tools' console script (package ``invoice_sync_dev``).

invoice-sync-dev demo seed [--invoices N]   fill the invoicing database with demo data (--reset: wipe a
                                            demo database first; see --i-mean-this-database)
invoice-sync-dev sandbox serve              run the accounting-tool simulators on loopback
invoice-sync-dev sandbox connections URL    `export AIRFLOW_CONN_...` lines: every demo connection on URL
invoice-sync-dev chaos [--invoices N]       nightly runs under random faults, then a check of the books
invoice-sync-dev bench [--scenario NAME]    throughput and overhead figures against the sandbox

``make run``, ``make ui`` and ``make test`` install it; a deployment image does not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoice-sync-dev", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="demo data").add_subparsers(dest="action", required=True)
    seed = demo.add_parser("seed", help="fill the invoicing database with demo data")
    seed.add_argument("--invoices", type=int, default=60, help="regular invoices to create (default 60)")
    seed.add_argument("--seed", type=int, default=2026, help="random seed, for repeatable data")
    seed.add_argument(
        "--reset",
        action="store_true",
        help="wipe existing app and sync data first (of a database the demo seeding made, or one named by "
        "--i-mean-this-database)",
    )
    seed.add_argument(
        "--i-mean-this-database",
        dest="confirm_database",
        metavar="NAME",
        default=None,
        help="let --reset wipe this database (its name, SQLite file or URL), which the demo did not make",
    )
    seed.add_argument("--if-empty", action="store_true", help="do nothing when the database has data")

    sandbox = commands.add_parser("sandbox", help="accounting-tool simulators").add_subparsers(
        dest="action", required=True
    )
    serve = sandbox.add_parser("serve", help="serve every simulator on one loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--time-scale", type=float, default=1.0, help="sandbox seconds per real second")
    serve.add_argument("--state", default=None, help="JSON file that keeps the simulators' books")
    connections = sandbox.add_parser(
        "connections", help="print an `export AIRFLOW_CONN_<ID>=...` line per demo connection"
    )
    connections.add_argument("url", help="the sandbox's base URL (http://127.0.0.1:8765)")

    chaos = commands.add_parser("chaos", help="nightly runs under random faults, then check the books")
    chaos.add_argument(
        "--invoices",
        type=int,
        default=2000,
        help="valid invoices to book over every tool, at least (default 2000)",
    )
    chaos.add_argument("--runs", type=int, default=6, help="runs under faults (default 6)")
    chaos.add_argument("--seed", type=int, default=1, help="random seed of data and faults (default 1)")
    chaos.add_argument("--kills", type=int, default=1, help="runs to SIGKILL mid-sync (default 1)")
    chaos.add_argument(
        "--i-mean-this-database",
        dest="confirm_database",
        metavar="NAME",
        default=None,
        help="let chaos wipe its database (its name, SQLite file or URL) although the demo did not make it",
    )

    bench = commands.add_parser("bench", help="throughput at the tools' limits, overhead, memory, parse time")
    bench.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this scenario (repeatable; default: all). Names: overhead, limit_<tool>, naive, "
        "tenants, night, extract, memory, parse",
    )
    bench.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke test (figures mean little)"
    )
    bench.add_argument("--workdir", default=None, help="throw-away state (default var/bench/, wiped first)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo_seed(args)
    if args.command == "sandbox" and args.action == "connections":
        from invoice_sync_dev.sandbox.tools import export_lines

        print("\n".join(export_lines(args.url)))
        return 0
    if args.command == "sandbox":
        from invoice_sync_dev.sandbox.server import serve as run_server

        run_server(args.host, args.port, time_scale=args.time_scale, state_path=args.state)
        return 0
    if args.command == "chaos":
        from invoice_sync_dev.chaos import main as run_chaos
        from invoice_sync_dev.sandbox.demo import NotADemoDatabase

        try:
            return run_chaos(
                invoices=args.invoices,
                runs=args.runs,
                seed=args.seed,
                kills=args.kills,
                wipe_database=args.confirm_database,
            )
        except NotADemoDatabase as exc:
            print(f"invoice-sync-dev: {exc}", file=sys.stderr)
            return 1
    if args.command == "bench":
        from invoice_sync_dev.bench import main as run_bench

        workdir = Path(args.workdir) if args.workdir else None
        return run_bench(args.scenario, quick=args.quick, workdir=workdir)
    return 2


def _demo_seed(args: argparse.Namespace) -> int:
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.migrate import prepare
    from invoice_sync_dev.sandbox.demo import NotADemoDatabase, seed

    engine = make_engine()
    prepare(engine)
    try:
        counts = seed(
            engine,
            invoices=args.invoices,
            seed_value=args.seed,
            reset=args.reset,
            confirm=args.confirm_database,
        ).counts
    except NotADemoDatabase as exc:
        print(f"invoice-sync-dev: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if args.if_empty:
            print(f"demo seed skipped: {exc}")
            return 0
        print(f"invoice-sync: {exc}", file=sys.stderr)
        return 1
    print("seeded " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
