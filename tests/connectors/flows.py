"""What the connector tests of Twinfield, Xero and QuickBooks Online do alike: build a connector the way
the registry does (with a short back-off), and book invoices the way the engine does (customers first).

A plain module beside the tests (``from flows import book``): the tests directory is not a package, and
pytest puts this directory on the import path for its test modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from invoice_sync.connectors.registry import factory_for
from invoice_sync.domain.models import Outcome


def book(connector: Any, *invoices: Any) -> list[Outcome]:
    """Link the invoices' customers, push the invoices and return the outcomes."""
    customers = {invoice.customer.id: invoice.customer for invoice in invoices}
    links = connector.ensure_customers(list(customers.values()))
    assert all(isinstance(link, str) for link in links.values()), links
    return list(connector.push(list(invoices), links))


def connector_factory(
    tool: str, conn_id: str, builders: Any, vault: Any, settings: Any
) -> Callable[..., Any]:
    """``build(*, integration_settings=None, token_vault=None, **hook_options)``: a connector of ``tool``
    for ``settings`` on ``conn_id``; hook options default to a short back-off and, since a time-scaled
    sandbox issues tokens that live seconds, a refresh only just before a token expires."""

    def build(*, integration_settings: Any = None, token_vault: Any = None, **hook_options: Any) -> Any:
        options = {"backoff_s": 0.01, "refresh_margin_s": 1.0, **hook_options}
        integration = builders.integration(integration_settings or settings, conn_id=conn_id)
        return factory_for(tool)(replace(integration, tool=tool), token_vault or vault, **options)

    return build
