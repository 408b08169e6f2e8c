"""Exact Online's connection in Airflow's Connections form (see :mod:`invoice_sync.connectors.forms`)."""

from __future__ import annotations

from invoice_sync.connectors.forms import oauth_form

FORM = oauth_form(
    host_label="Base URL",
    host_placeholder="https://start.exactonline.be (your country's Exact site)",
)
"""Exact's token endpoint is on the API's own host: there is no token URL to set."""
