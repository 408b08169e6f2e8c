"""Airflow connections that point the demo integrations at a running sandbox.

``invoice-sync-dev sandbox connections http://127.0.0.1:8765`` prints one ``export AIRFLOW_CONN_<ID>=...``
line per demo connection (``make run`` and ``make ui`` evaluate them); ``python -m
invoice_sync_dev.sandbox.connections exact_demo http://127.0.0.1:8765`` prints the JSON of one. Each
connection is its tool's ``demo_connection`` (in the tool's simulator module), with the tool's own
connection type. Production connections carry the real host and the credentials from the tool's developer
portal instead (see the README).
"""

from __future__ import annotations

import json
import sys

from invoice_sync_dev.sandbox.tools import demo_connections, export_lines


def main(argv: list[str]) -> int:
    """``CONN_ID SANDBOX_URL``: the JSON of one demo connection; ``SANDBOX_URL`` alone: every export line."""
    if len(argv) == 1:
        print("\n".join(export_lines(argv[0])))
        return 0
    known = demo_connections("http://sandbox")
    if len(argv) != 2 or argv[0] not in known:
        print(
            "usage: python -m invoice_sync_dev.sandbox.connections [CONN_ID] SANDBOX_URL "
            f"(CONN_ID: {' | '.join(known)})",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(demo_connections(argv[1])[argv[0]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
