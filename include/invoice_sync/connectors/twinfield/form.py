"""Twinfield's connection in Airflow's Connections form (see :mod:`invoice_sync.connectors.forms`)."""

from __future__ import annotations

from invoice_sync.connectors.forms import oauth_form

FORM = oauth_form(
    host_label="Login host",
    host_placeholder="https://login.twinfield.com",
    extra_fields={
        "credits_per_minute": {
            "label": "Credits per minute",
            "description": (
                "The client id's allowance (1,000 when empty); give each process that shares the client "
                "id its share."
            ),
            "schema": {"type": ["integer", "null"], "minimum": 1},
        },
    },
)
"""The cluster that serves ProcessXml is learnt from the token, so the login host is the only URL."""
