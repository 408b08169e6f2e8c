"""Airflow connections that point the demo integrations at a running sandbox.

``python -m invoice_sync.sandbox.connections exact_demo http://127.0.0.1:8765`` prints the JSON form that
``AIRFLOW_CONN_EXACT_DEMO`` accepts. Production connections carry the real host and the credentials from
the tool's developer portal instead (see the README).
"""

from __future__ import annotations

import json
import sys

from invoice_sync.sandbox import exact_fixtures
from invoice_sync.sandbox.server import EXACT_MOUNT


def exact_online_connection(sandbox_url: str, *, refresh_token: str | None = None) -> dict[str, object]:
    return {
        "conn_type": "http",
        "host": sandbox_url.rstrip("/") + EXACT_MOUNT,
        "login": exact_fixtures.CLIENT_ID,
        "password": exact_fixtures.CLIENT_SECRET,
        "extra": {"refresh_token": refresh_token or exact_fixtures.BOOTSTRAP_REFRESH_TOKEN, "timeout": 30},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m invoice_sync.sandbox.connections CONN_ID SANDBOX_URL", file=sys.stderr)
        return 2
    print(json.dumps(exact_online_connection(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
