"""One Airflow pool per accounting tool, so a tool's app-wide limits hold however many tenants sync at once.

Each tool rations calls per tenant (Exact per division, Yuki per domain, Twinfield per organisation) and
some also per app or per IP address (Twinfield: 1,000 credits a minute per IP and per client id, and one
concurrent action per organisation advised). A pool caps how many of a tool's mapped task instances run at
the same time across all DAG runs; the per-tenant claim already keeps two of them off one tenant.

Airflow does not create pools from DAG files, and a task in a pool that does not exist is never scheduled,
so every deployment imports them: ``python -m invoice_sync.airflow.pools FILE`` writes the file that
``airflow pools import FILE`` reads (``make run`` and the compose file's ``airflow-init`` do this).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from invoice_sync.connectors.registry import DESCRIPTORS, descriptor_of


def pool_name(tool: str) -> str:
    return descriptor_of(tool).pool


def pools() -> dict[str, dict[str, object]]:
    """Every tool's pool in the shape ``airflow pools import`` reads; each tool's descriptor says how many
    of its tasks may run at once (and why, beside the number)."""
    return {
        descriptor.pool: {
            "slots": descriptor.pool_slots,
            "description": f"invoice-sync: concurrent syncs to {descriptor.label}",
            "include_deferred": False,
        }
        for descriptor in DESCRIPTORS
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        usage = "usage: python -m invoice_sync.airflow.pools FILE   (then: airflow pools import FILE)"
        print(usage, file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pools(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
