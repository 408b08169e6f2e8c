"""``invoice-sync``: the runtime's console script (what a deployment image has).

invoice-sync db upgrade                 create/migrate the invoicing database's tables
invoice-sync status                     what is synced, per integration, and the last run's summary
invoice-sync secrets check              refuse placeholder or short deployment secrets (airflow-init)
invoice-sync tokens rotate              reseal every stored OAuth token under the newest Fernet key

The demo seeder, the simulators, chaos and bench are development tools: ``invoice-sync-dev`` (package
``invoice_sync_dev``), installed by ``make run``, ``make ui`` and ``make test``, never by the image.
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

    status = commands.add_parser("status", help="per integration: synced, unsynced, failed; last run summary")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    secrets = commands.add_parser("secrets", help="the deployment's own secrets").add_subparsers(
        dest="action", required=True
    )
    secrets.add_parser(
        "check", help="exit non-zero when a secret of .env is missing, a placeholder or too short"
    )

    tokens = commands.add_parser("tokens", help="the OAuth tokens kept in sync_tokens").add_subparsers(
        dest="action", required=True
    )
    tokens.add_parser(
        "rotate",
        help="reseal every stored token under the newest key of Airflow's [core] fernet_key (new,old)",
    )

    args = parser.parse_args(argv)
    if args.command == "secrets":
        from invoice_sync.deployment_secrets import check

        return check()
    if args.command == "db":
        return _db_upgrade()
    if args.command == "status":
        return _status(as_json=args.json)
    if args.command == "tokens":
        return _tokens_rotate()
    return 2


def _db_upgrade() -> int:
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.migrate import prepare

    prepare(make_engine())
    print("invoicing database is up to date")
    return 0


def _tokens_rotate() -> int:
    """After Airflow's fernet_key became ``new,old`` (and ``airflow rotate-fernet-key`` resealed Airflow's
    own secrets): reseal the tokens too, so ``old`` can go. 1 when a connection's tokens open under no
    configured key (named on stderr; the others are resealed all the same) or no key is set."""
    from invoice_sync.airflow.runtime import token_keys
    from invoice_sync.domain.errors import ConfigError
    from invoice_sync.store.db import make_engine
    from invoice_sync.store.tokens import SqlTokenVault

    try:
        rotation = SqlTokenVault(make_engine(), keys=token_keys()).rotate()
    except ConfigError as exc:
        print(f"invoice-sync tokens rotate: {exc.message}", file=sys.stderr)
        return 1
    print(f"resealed the stored tokens of {rotation.resealed} connection(s) under the newest key")
    for message in rotation.unopenable.values():
        print(f"invoice-sync tokens rotate: left as they are: {message}", file=sys.stderr)
    return 1 if rotation.unopenable else 0


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
