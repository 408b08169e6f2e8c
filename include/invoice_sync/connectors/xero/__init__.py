"""Xero: sales invoices, credit notes and their contacts over the Accounting API (OAuth 2.0, JSON).

``hook`` does the I/O (OAuth 2.0 through the token vault, the ``xero-tenant-id`` header, minute and day
limits, idempotency keys, typed errors), ``mapping`` holds the pure body rules, ``errors`` sorts Xero's
texts into error classes, and ``connector`` puts them behind the engine's ``Connector`` contract.

Integration settings: ``extra.tenant_id`` (the organisation's tenant id) or ``extra.tenant`` (its name,
resolved through ``/connections``), ``vat_codes`` (app rate -> Xero ``TaxType``), ``tax_rates`` (app
tax-rate code -> ``TaxType``, for lines that carry one), ``gl_accounts`` and ``default_gl_account`` (app GL
-> Xero account code), ``discount_gl_account`` (the account code discounts are booked on, the app's
negative lines and invoice-level discounts; unset, on their lines' accounts) and, optionally,
``extra.currencies`` (the currencies the organisation accepts, checked before sending).
"""

from __future__ import annotations

from invoice_sync.connectors.descriptor import RateLimit, ToolDescriptor

APP_MINUTE = RateLimit("Xero per-app minute window", 10_000, 60.0, "tool")
"""reference/xero.md, limits: 10,000 calls a minute per app, across the organisations it reaches."""

DESCRIPTOR = ToolDescriptor(
    name="xero",
    label="Xero",
    connector="invoice_sync.connectors.xero.connector:build_connector",
    hook="invoice_sync.connectors.xero.hook:XeroHook",
    form="invoice_sync.connectors.xero.form:FORM",
    settings="invoice_sync.connectors.xero.settings:XeroSettings",
    # Xero rations per organisation (60 a minute) and per app (10,000 a minute), which eight tenants stay far
    # below.
    pool_slots=8,
    # reference/xero.md, limits: 60 calls a minute per organisation, 10,000 a minute per app.
    rate_limits=(
        RateLimit("Xero per-organisation minute window", 60, 60.0),
        APP_MINUTE,
    ),
)
