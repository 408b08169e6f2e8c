"""Yuki: sales invoices (with their contacts) over Yuki's SOAP web services.

``hook`` does the I/O (access key -> 24-hour session shared through the token vault, the domain's daily
call budget, typed errors), ``mapping`` holds the pure ``SalesInvoices`` document rules, ``connector`` puts
both behind the engine's ``Connector`` contract.
"""

from __future__ import annotations

from invoice_sync.connectors.descriptor import RateLimit, ToolDescriptor

DOMAIN_DAY = RateLimit("Yuki per-domain day window", 1000, 86_400.0)
"""reference/yuki.md, limits: 1,000 calls a day per domain (the smallest plan), shared by its integrations."""

DESCRIPTOR = ToolDescriptor(
    name="yuki",
    label="Yuki",
    connector="invoice_sync.connectors.yuki.connector:build_connector",
    hook="invoice_sync.connectors.yuki.hook:YukiHook",
    form="invoice_sync.connectors.yuki.form:FORM",
    settings="invoice_sync.connectors.yuki.settings:YukiSettings",
    # Yuki's daily quota is per domain; four at once keep one slow SOAP call from starving the others.
    pool_slots=4,
    rate_limits=(DOMAIN_DAY,),
)
