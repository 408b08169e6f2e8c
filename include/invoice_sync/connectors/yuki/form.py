"""Yuki's connection in Airflow's Connections form (see :mod:`invoice_sync.connectors.forms`)."""

from __future__ import annotations

from invoice_sync.connectors.forms import TIMEOUT, ConnectionForm

FORM = ConnectionForm(
    hidden=("schema", "port", "login"),
    relabeling={"host": "Base URL", "password": "Web service access key"},
    placeholders={"host": "https://api.yukiworks.be"},
    extra_fields={
        "daily_limit": {
            "label": "Daily call limit",
            "description": (
                "The domain's web-service calls a day (1,000 when empty; 5,000 or 10,000 with Yuki's "
                "web-service features). The sync stops for the day before they are spent."
            ),
            "schema": {"type": ["integer", "null"], "minimum": 1},
        },
        "timeout": TIMEOUT,
    },
)
"""Yuki needs no login: the access key (Settings > Web services) identifies the domain."""
