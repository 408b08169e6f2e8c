"""The project as an Airflow provider: one connection type per accounting tool.

Airflow finds this through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. With it, the
Connections form offers "Exact Online", "Yuki", "Twinfield", "Xero" and "QuickBooks Online" as connection
types, each with its own labels, hidden fields and extra fields, and its Test button reaches the tool's
hook (``test_connection``). Before, every hook declared ``conn_type = "http"``: the form showed the
generic HTTP fields and tested nothing of the tool.

The form is declared the way Airflow 3.2+ reads it from provider info (``ui-field-behaviour`` and
``conn-fields`` per connection type); the older hook methods ``get_ui_field_behaviour`` and
``get_connection_form_widgets`` are deprecated there. Each tool declares its form in its package's
``form`` module, beside its hook; this module only collects them for the tools the registry lists. It
imports no hook: Airflow asks for provider info while the HTTP provider is being imported, which a hook
module does first, so importing the hooks here would go in a circle.
"""

from __future__ import annotations

from typing import Any

from invoice_sync.connectors.registry import DESCRIPTORS

PACKAGE_NAME = "invoice-sync"
"""Must equal the distribution's name (``pyproject.toml``); Airflow refuses a provider whose differs."""


def connection_types() -> list[dict[str, Any]]:
    """One provider-info ``connection-types`` entry per tool of the registry: its hook by dotted path (not
    imported), its label, and its form."""
    entries = []
    for descriptor in DESCRIPTORS:
        form = descriptor.load_form()
        entries.append(
            {
                "connection-type": descriptor.conn_type,
                "hook-class-name": descriptor.hook.replace(":", "."),
                "hook-name": descriptor.label,
                "ui-field-behaviour": form.ui_field_behaviour(),
                "conn-fields": form.conn_fields(),
            }
        )
    return entries


def get_provider_info() -> dict[str, Any]:
    """What Airflow reads about this provider (``airflow/provider_info.schema.json``)."""
    from importlib.metadata import version

    return {
        "package-name": PACKAGE_NAME,
        "name": "Invoice sync",
        "description": (
            "Syncs registered sales invoices into accounting tools. Connection types for "
            + ", ".join(descriptor.label for descriptor in DESCRIPTORS)
            + "."
        ),
        "versions": [version(PACKAGE_NAME)],
        "connection-types": connection_types(),
    }
