"""Airflow connections that point the demo integrations at a running sandbox.

``python -m invoice_sync_dev.sandbox.connections exact_demo http://127.0.0.1:8765`` prints the JSON form that
``AIRFLOW_CONN_EXACT_DEMO`` accepts (``yuki_demo``, ``twinfield_demo``, ``xero_demo`` and ``quickbooks_demo``
likewise). Production connections
carry the real host and the credentials from the tool's developer portal instead (see the README).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from invoice_sync_dev.sandbox import (
    exact_fixtures,
    quickbooks_fixtures,
    twinfield_fixtures,
    xero_fixtures,
    yuki_fixtures,
)
from invoice_sync_dev.sandbox.demo import (
    DEMO_CONN_ID,
    QUICKBOOKS_CONN_ID,
    TWINFIELD_CONN_ID,
    XERO_CONN_ID,
    YUKI_CONN_ID,
)
from invoice_sync_dev.sandbox.server import (
    EXACT_MOUNT,
    QUICKBOOKS_MOUNT,
    TWINFIELD_MOUNT,
    XERO_MOUNT,
    YUKI_MOUNT,
)


def exact_online_connection(sandbox_url: str, *, refresh_token: str | None = None) -> dict[str, object]:
    return {
        "conn_type": "http",
        "host": sandbox_url.rstrip("/") + EXACT_MOUNT,
        "login": exact_fixtures.CLIENT_ID,
        "password": exact_fixtures.CLIENT_SECRET,
        "extra": {"refresh_token": refresh_token or exact_fixtures.BOOTSTRAP_REFRESH_TOKEN, "timeout": 30},
    }


def twinfield_connection(sandbox_url: str, *, refresh_token: str | None = None) -> dict[str, object]:
    """Twinfield: ``host`` is the login host (the sandbox's mount plays both it and the cluster, whose
    URL the token validation answers); login/password are the app's client id and secret."""
    consent = refresh_token or twinfield_fixtures.BOOTSTRAP_REFRESH_TOKEN
    return {
        "conn_type": "http",
        "host": sandbox_url.rstrip("/") + TWINFIELD_MOUNT,
        "login": twinfield_fixtures.CLIENT_ID,
        "password": twinfield_fixtures.CLIENT_SECRET,
        "extra": {"refresh_token": consent, "timeout": 30},
    }


def yuki_connection(sandbox_url: str) -> dict[str, object]:
    """Yuki: ``host`` is the base URL of the web services, ``password`` the demo domain's access key;
    ``daily_limit`` is the domain's allowance of calls per day (1,000 without Yuki's extra features)."""
    return {
        "conn_type": "http",
        "host": sandbox_url.rstrip("/") + YUKI_MOUNT,
        "password": yuki_fixtures.ACCESS_KEY,
        "extra": {"timeout": 30, "daily_limit": yuki_fixtures.DAILY_LIMIT},
    }


def xero_connection(sandbox_url: str) -> dict[str, object]:
    """Xero: ``host`` is the API host (the sandbox's mount serves ``/api.xro/2.0`` and ``/connections``);
    login/password are the app's client id and secret; ``token_url`` points at the sandbox's identity
    endpoint instead of Xero's."""
    base = sandbox_url.rstrip("/") + XERO_MOUNT
    return {
        "conn_type": "http",
        "host": base,
        "login": xero_fixtures.CLIENT_ID,
        "password": xero_fixtures.CLIENT_SECRET,
        "extra": {
            "refresh_token": xero_fixtures.BOOTSTRAP_REFRESH_TOKEN,
            "token_url": base + "/identity/connect/token",
            "timeout": 30,
        },
    }


def quickbooks_connection(sandbox_url: str) -> dict[str, object]:
    """QuickBooks Online: ``host`` is the API's base URL (the sandbox's mount), login/password the app's
    client id and secret; the token endpoint is on another host at Intuit, so the sandbox's is named."""
    base = sandbox_url.rstrip("/") + QUICKBOOKS_MOUNT
    return {
        "conn_type": "http",
        "host": base,
        "login": quickbooks_fixtures.CLIENT_ID,
        "password": quickbooks_fixtures.CLIENT_SECRET,
        "extra": {
            "refresh_token": quickbooks_fixtures.BOOTSTRAP_REFRESH_TOKEN,
            "token_url": base + "/oauth2/v1/tokens/bearer",
            "timeout": 30,
        },
    }


DEMO_CONNECTIONS: dict[str, Callable[[str], dict[str, object]]] = {
    DEMO_CONN_ID: exact_online_connection,
    YUKI_CONN_ID: yuki_connection,
    TWINFIELD_CONN_ID: twinfield_connection,
    XERO_CONN_ID: xero_connection,
    QUICKBOOKS_CONN_ID: quickbooks_connection,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in DEMO_CONNECTIONS:
        print(
            "usage: python -m invoice_sync_dev.sandbox.connections CONN_ID SANDBOX_URL "
            f"(CONN_ID: {' | '.join(DEMO_CONNECTIONS)})",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(DEMO_CONNECTIONS[argv[0]](argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
