"""Pure mapping between the invoicing app's value objects and Xero's Accounting API bodies (no I/O).

Kept apart from the client so the rules that decide what Xero books (accounts, tax types, tax cents, the
numbers a lookup finds again) are tested without a network, and so :func:`validate` refuses what Xero
would refuse before a call is spent on it.

Decisions:

- Sales invoices are ``Type: ACCREC`` on ``PUT /Invoices`` with our number as ``InvoiceNumber``; credit
  notes are ``Type: ACCRECCREDIT`` on ``PUT /CreditNotes`` with our number as ``CreditNoteNumber``. Xero
  keeps the number we send, so it is both the registration number written back and how a lookup finds the
  record again. ``Status: AUTHORISED`` books it (a draft is not in the ledger).
- Credit notes are stored with positive amounts in the app and Xero's credit notes carry positive amounts
  too: the type says which way they go, so both kinds map line by line the same way.
- Amounts are ``LineAmountTypes: Exclusive``: each line carries its amount excluding tax and a pinned
  ``TaxAmount``. Xero would otherwise compute tax per line, and the app rounds per rate on the total; with
  :func:`~invoice_sync.connectors.amounts.line_vat_amounts` the lines' tax adds up to the app's VAT total
  and Xero's ``Total`` equals the app's total including VAT to the cent.
- Money goes as JSON numbers made from two-decimal strings (``float(money(x))``): the JSON text is the
  decimal itself (``121.0``, ``0.07``), no arithmetic ever happens on a float.
- ``Quantity`` and ``UnitAmount`` are the line's own when their product is its amount at a price of at
  most two decimals (Xero's default ``unitdp``); otherwise the line goes as one unit at the line amount, so
  Xero's ``LineAmount`` is the app's.
- Discounts are negative lines. What is booked is
  :func:`~invoice_sync.domain.discounts.bookable_lines`: the app's own lines (a negative one goes as it is)
  plus, for an invoice-level percentage discount, one negative line per group of tax rate, VAT rate and
  account, on ``discount_gl_account`` (a Xero account code) when the integration has one. Xero takes
  negative lines on an invoice whose total is not negative (Xero-OpenAPI issue #429 posts invoices with a
  negative ``UnitAmount``; an invoice below zero cannot be approved, and a credit note is Xero's way:
  Kindo's "Xero Rapid Integration: how to process a negative invoice"). Xero's ``DiscountRate`` and
  ``DiscountAmount`` are not used: per ``xero_accounting.yaml`` (Xero-OpenAPI, ``LineItem``) they exist on
  ACCREC invoices only, "credit notes in Xero do not support discounts", Xero rounds the discounted
  ``LineAmount`` itself per line (the app's cents per VAT rate could be lost), and the discount would stay
  on the line's own account instead of the integration's discount account.
- ``TaxType`` comes from the line's tax-rate code through ``tax_rates`` when the line carries one (an
  exempt and an intra-community 0 % line get their own tax types, such as ``EXEMPTOUTPUT`` and
  ``ECZROUTPUT`` of Xero's ``TaxType`` enum), else from its percentage through ``vat_codes``.
- Contacts carry our customer id as ``ContactNumber`` (Xero's field for the external system's id, writable
  only through the API), so every run finds the contact it created before instead of creating another.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoice_sync.connectors.amounts import (
    CENT,
    description_problems,
    document_label,
    gl_account_for,
    line_vat_amounts,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.connectors.xero.settings import XeroSettings
from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    Customer,
    ErrorClass,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    Problem,
)

INVOICE_TYPE = "ACCREC"
CREDIT_NOTE_TYPE = "ACCRECCREDIT"
BOOKED_STATUS = "AUTHORISED"
LINE_AMOUNT_TYPES = "Exclusive"

NUMBER_MAX = 255
"""``InvoiceNumber`` (and ``CreditNoteNumber``) longest value; a cut number would break the lookup."""
CONTACT_NUMBER_MAX = 50
NAME_MAX = 255
EMAIL_MAX = 255
TAX_NUMBER_MAX = 50
DESCRIPTION_MAX = 4000
ADDRESS_LINE_MAX = 500
CITY_MAX = 255
POSTCODE_MAX = 50
COUNTRY_MAX = 50


def contact_number(customer_id: int) -> str:
    """Xero ``ContactNumber`` of one of our customers: its id, as text."""
    return str(customer_id)


def is_credit_note(invoice: Invoice) -> bool:
    return invoice.kind is InvoiceKind.CREDIT_NOTE


def amount(value: Decimal) -> float:
    """A money value as a JSON number whose text is the two-decimal amount (see the module notes)."""
    return float(money(value))


def quantity_and_price(line: InvoiceLine) -> tuple[Decimal, Decimal]:
    """``(Quantity, UnitAmount)`` for a line: its own when they give its amount with a unit price of at
    most two decimals, else ``(1, amount)``."""
    if line.quantity and line.unit_price == line.unit_price.quantize(CENT):
        if (line.quantity * line.unit_price).quantize(CENT) == line.amount:
            return line.quantity, line.unit_price
    return Decimal(1), line.amount


def line_item(line: InvoiceLine, settings: XeroSettings, tax_amount: Decimal) -> dict[str, Any]:
    """One ``LineItems`` element, its tax pinned to ``tax_amount``."""
    quantity, price = quantity_and_price(line)
    return {
        "Description": line.description or f"Line {line.position}",
        "Quantity": float(quantity.normalize()),
        "UnitAmount": amount(price),
        "LineAmount": amount(line.amount),
        "AccountCode": gl_account_for(line, settings),
        "TaxType": vat_code_for(line, settings),
        "TaxAmount": amount(tax_amount),
    }


def document(invoice: Invoice, settings: XeroSettings, contact_id: str) -> dict[str, Any]:
    """The ``Invoices`` (or ``CreditNotes``) element that books ``invoice`` for the contact ``contact_id``.

    Call :func:`validate` first; this raises ``ValueError`` for what validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    assert invoice.number is not None
    credit = is_credit_note(invoice)
    lines = bookable_lines(invoice)
    taxes = line_vat_amounts(lines, invoice.total_vat)
    body: dict[str, Any] = {
        "Type": CREDIT_NOTE_TYPE if credit else INVOICE_TYPE,
        "Contact": {"ContactID": contact_id},
        number_field(invoice): invoice.number,
        "Date": invoice.invoice_date.isoformat(),
    }
    if invoice.due_date is not None and not credit:  # a credit note has no due date in Xero
        body["DueDate"] = invoice.due_date.isoformat()
    body |= {
        "Status": BOOKED_STATUS,
        "LineAmountTypes": LINE_AMOUNT_TYPES,
        "CurrencyCode": invoice.currency.upper(),
        "LineItems": [line_item(line, settings, tax) for line, tax in zip(lines, taxes, strict=True)],
    }
    return body


def number_field(invoice: Invoice) -> str:
    """Where our number goes: ``CreditNoteNumber`` for a credit note, ``InvoiceNumber`` otherwise."""
    return "CreditNoteNumber" if is_credit_note(invoice) else "InvoiceNumber"


def contact(customer: Customer) -> dict[str, Any]:
    """The ``Contacts`` element that creates ``customer``; empty fields are left out for Xero's defaults."""
    body: dict[str, Any] = {"Name": customer.name.strip(), "ContactNumber": contact_number(customer.id)}
    if customer.email:
        body["EmailAddress"] = customer.email
    if customer.vat_number:
        body["TaxNumber"] = customer.vat_number
    address = {
        "AddressLine1": customer.address_line1,
        "City": customer.city,
        "PostalCode": customer.postcode,
        "Country": customer.country_code.upper() if customer.country_code else None,
    }
    if any(address.values()):
        # POBOX is Xero's postal (billing) address, the one printed on invoices.
        body["Addresses"] = [{"AddressType": "POBOX"} | {k: v for k, v in address.items() if v}]
    return body


def contact_problems(customer: Customer) -> list[str]:
    """What Xero would refuse in ``customer``'s contact, in words a bookkeeper can act on."""
    label = f"customer {customer.name[:60]} (#{customer.id})"
    found = []
    if not customer.name.strip():
        found.append(f"customer #{customer.id} has no name, and Xero needs one for a contact")
    if len(contact_number(customer.id)) > CONTACT_NUMBER_MAX:
        found.append(
            f"the id of {label} is longer than the {CONTACT_NUMBER_MAX} characters of Xero's ContactNumber"
        )
    fields = (
        ("name", customer.name, NAME_MAX),
        ("e-mail address", customer.email, EMAIL_MAX),
        ("VAT number", customer.vat_number, TAX_NUMBER_MAX),
        ("address", customer.address_line1, ADDRESS_LINE_MAX),
        ("city", customer.city, CITY_MAX),
        ("postcode", customer.postcode, POSTCODE_MAX),
        ("country", customer.country_code, COUNTRY_MAX),
    )
    for what, value, limit in fields:
        if value and len(value) > limit:
            found.append(
                f"the {what} of {label} is longer than the {limit} characters Xero accepts for a contact "
                f"(it has {len(value)}); shorten it in the app"
            )
    return found


def validate(invoice: Invoice, settings: XeroSettings) -> list[Problem]:
    """Everything Xero would refuse that we can see without asking it.

    Config problems name the setting to change; data problems name the invoice and the field. A missing
    number or customer and totals the lines do not produce are refused for every tool by
    :mod:`invoice_sync.domain.rules`; here what is particular to Xero.
    """
    where = f"Xero organisation {settings.label}"
    problems: list[Problem] = []

    def config(message: str) -> None:
        problems.append(Problem(ErrorClass.CONFIG, message))

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    problems += unmapped_problems(
        invoice, settings, vat_code="a Xero tax rate (TaxType)", gl_account="a Xero account code", where=where
    )
    currencies = settings.currencies
    if currencies and invoice.currency.upper() not in currencies:
        config(
            f"{where} takes invoices in {', '.join(currencies)} only (setting currencies), not in "
            f"{invoice.currency}; enable the currency in Xero and add it to the setting"
        )

    label = document_label(invoice)
    if invoice.number and len(invoice.number) > NUMBER_MAX:
        data(f"{label}: the number is longer than the {NUMBER_MAX} characters Xero keeps")
    if len(invoice.currency) != 3 or not invoice.currency.isalpha():
        data(f"{label}: {invoice.currency!r} is not a three-letter currency code")
    if not invoice.lines:
        data(f"{label} has no lines; Xero needs at least one line item")
    if invoice.customer is not None:
        for message in contact_problems(invoice.customer):
            data(f"{label}: {message}")
    problems += description_problems(invoice, limit=DESCRIPTION_MAX, tool="Xero")
    for line in bookable_lines(invoice):
        if line.amount != line.amount.quantize(CENT):
            data(f"{label}: line {line.position} has an amount with more than two decimals ({line.amount})")
    if (rounding := vat_rounding_problem(invoice)) is not None:
        data(rounding)
    return problems
