"""Exact Online: sales entries and customer accounts over Exact's REST API.

``hook`` does the I/O (OAuth2 with rotating refresh tokens, rate budget, typed errors), ``mapping``
holds the pure payload rules, ``connector`` puts both behind the engine's ``Connector`` contract.
"""

from __future__ import annotations

from invoice_sync.connectors.descriptor import RateLimit, ToolDescriptor

DESCRIPTOR = ToolDescriptor(
    name="exact_online",
    label="Exact Online",
    connector="invoice_sync.connectors.exact_online.connector:build_connector",
    hook="invoice_sync.connectors.exact_online.hook:ExactOnlineHook",
    form="invoice_sync.connectors.exact_online.form:FORM",
    settings="invoice_sync.connectors.exact_online.settings:ExactOnlineSettings",
    # Exact rations calls per app and division; eight tenants' minute windows stay far below the app-wide
    # limits.
    pool_slots=8,
    # reference/exact_online.md, limits: 60 calls a minute and 5,000 a day per app per division.
    rate_limits=(
        RateLimit("Exact per-division minute window", 60, 60.0),
        RateLimit("Exact per-division day window", 5000, 86_400.0),
    ),
)
