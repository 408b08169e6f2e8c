"""Xero's connection in Airflow's Connections form (see :mod:`invoice_sync.connectors.forms`)."""

from __future__ import annotations

from invoice_sync.connectors.forms import TOKEN_URL, oauth_form

FORM = oauth_form(
    host_label="Base URL", host_placeholder="https://api.xero.com", extra_fields={"token_url": TOKEN_URL}
)
