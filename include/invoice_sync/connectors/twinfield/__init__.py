"""Twinfield: sales transactions and debtor dimensions over OAuth2 and the ProcessXml SOAP service.

``hook`` does the I/O (OAuth2 through the token vault, the cluster URL, credits, faults), ``mapping``
holds the pure ProcessXml rules, ``errors`` sorts Twinfield's texts into error classes, and ``connector``
puts them behind the engine's ``Connector`` contract.

Integration settings: ``extra.office`` (office code), ``journal`` (sales daybook, e.g. ``VRK``),
``credit_note_journal`` (optional, default the same), ``extra.debtors_account`` (debtors control account
of the total line), ``vat_codes`` (app rate -> Twinfield VAT code), ``tax_rates`` (app tax-rate code ->
Twinfield VAT code, for apps whose lines carry one), ``gl_accounts`` and ``default_gl_account`` (app GL ->
Twinfield revenue account), ``discount_gl_account`` (optional: where discounts are booked, the app's
negative lines and invoice-level discounts) and ``extra.customer_code_offset`` (default 1000: debtor code =
offset + customer id).
"""

from __future__ import annotations

from invoice_sync.connectors.descriptor import RateLimit, ToolDescriptor

CLIENT_ID_MINUTE = RateLimit("Twinfield per-client-id credit minute", 1000, 60.0, "tool")
"""reference/twinfield.md, limits: 1,000 credits a minute per ClientId, shared by an integrator's tenants."""

DESCRIPTOR = ToolDescriptor(
    name="twinfield",
    label="Twinfield",
    connector="invoice_sync.connectors.twinfield.connector:build_connector",
    hook="invoice_sync.connectors.twinfield.hook:TwinfieldHook",
    form="invoice_sync.connectors.twinfield.form:FORM",
    settings="invoice_sync.connectors.twinfield.settings:TwinfieldSettings",
    # Twinfield's credits are per IP address and per client id, shared by every tenant behind them, and it
    # advises one concurrent action per organisation.
    pool_slots=2,
    rate_limits=(CLIENT_ID_MINUTE,),
)
