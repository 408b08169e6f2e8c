"""QuickBooks Online: invoices, credit memos and customers over the Accounting API v3 (OAuth 2.0, JSON).

``hook`` does the I/O (OAuth 2.0 through the token vault, the realm in every path, ``minorversion``,
``requestid``, the locally counted limits), ``mapping`` holds the pure entity rules, ``errors`` sorts
QuickBooks' ``Fault`` codes into error classes, and ``connector`` puts them behind the engine's
``Connector`` contract.

Integration settings: ``extra.realm_id`` (the company), ``gl_accounts`` and ``default_gl_account`` (app GL
account -> QuickBooks **Item** id: QuickBooks books a sales line on its item's income account),
``vat_codes`` (app VAT rate -> QuickBooks TaxCode id), ``tax_rates`` (app tax-rate code -> TaxCode id, for
lines that carry one), ``discount_gl_account`` (an **Item** id as well: a "Discount" item whose income
account takes discounts, the app's negative lines and invoice-level discounts; unset, they go on their
lines' items),
``extra.home_currency`` (default EUR) and ``extra.currencies`` (further currencies, when multicurrency is
on in QuickBooks). The company must have custom transaction numbers on (checked by the connection test
and before a run's first write).
"""

from __future__ import annotations

from invoice_sync.connectors.descriptor import RateLimit, ToolDescriptor

REALM_MINUTE = RateLimit("QuickBooks per-realm minute window", 500, 60.0, sliding=True)
"""reference/quickbooks.md, limits: 500 requests a minute per realm (our hook also keeps 40 batches a
minute). Intuit does not say where its minute starts, so it is counted as sliding."""
REALM_SECOND = RateLimit("QuickBooks per-realm second window", 10, 1.0, sliding=True)
"""reference/quickbooks.md, limits: 10 requests a second per realm and app. The one a burst meets first:
tasks that follow each other on one company (two integrations into it) each start with a fresh count."""

DESCRIPTOR = ToolDescriptor(
    name="quickbooks",
    label="QuickBooks Online",
    connector="invoice_sync.connectors.quickbooks.connector:build_connector",
    hook="invoice_sync.connectors.quickbooks.hook:QuickBooksHook",
    form="invoice_sync.connectors.quickbooks.form:FORM",
    settings="invoice_sync.connectors.quickbooks.settings:QuickBooksSettings",
    # QuickBooks Online rations per company (realm).
    pool_slots=8,
    rate_limits=(REALM_MINUTE, REALM_SECOND),
)
