"""Pure mapping between the invoicing app's value objects and Yuki's ``SalesInvoices`` document (no I/O).

Kept apart from the client so the rules that decide what Yuki books (signs, VAT cents, VAT types, GL
accounts) are tested without a network, and so :func:`validate` can refuse an invoice before it is sent:
Yuki checks the whole document against its schema first, so one too-long name would refuse every invoice
of the call, and each faulty invoice counts toward the six after which Yuki stops processing a call.

Decisions (Yuki's behaviour behind them is unconfirmed where noted):

- ``Reference`` is our invoice number: it is Yuki's registration number for us and how a lookup finds the
  invoice again. ``Contact/ContactCode`` is our customer id, so Yuki matches the same contact every time.
- Element order: ``SalesInvoices.xsd`` is a sequence, so one misplaced element refuses the whole call. The
  order is the one three independent clients send (bvolders/yuki-cli ``src/cli/sales_invoice.rs``
  ``render``, which says it follows the XSD; FunkyTime/Yuki ``src/Yuki.php`` ``ProcessInvoice``;
  dtrx-bv/DatrixFinances ``Services/XMLService.cs``): ``Contact/EmailAddress`` right after the address lines,
  ``InvoiceLine/LineAmount`` and ``LineVATAmount`` before ``Product``. The sandbox holds the resulting XSD
  (``invoice_sync_dev/sandbox/yuki_sales_invoices.xsd``), and ``tests/contract/test_yuki_xsd.py`` validates
  every document this module can build against it.
- Lines: the invoice's bookable lines (:func:`~invoice_sync.domain.discounts.bookable_lines`: its own lines
  plus one negative line per group for an invoice-level discount), so a discount lowers each VAT rate's
  base, or lands on the integration's discount GL account when one is mapped.
- Amounts: each line carries ``LineAmount`` and ``LineVATAmount`` so Yuki books exactly the app's totals;
  the app rounds VAT on the total, so the cents that per-line rounding leaves over are spread one by one
  over the largest lines (:func:`line_vat_amounts`). ``SalesPrice`` is the unit price when it has at most
  two decimals, the quantity at most four (the XSD's ``fractionDigits``) and together they give the line
  amount; otherwise the line goes as quantity 1 at the line amount (Yuki refuses prices with more than two
  decimals).
- Signs: the price is never negative; the sign goes in the quantity (and ``LineAmount``/``LineVATAmount``),
  the way a credit line is keyed in Yuki. A credit note (decided by the invoice's kind only) negates every
  line; a discount line of an invoice is negative on its own.
- A line without an amount is left out: a ``SalesPrice`` of 0 makes Yuki bill the product's catalogue price
  instead (reference, 2026-12-04; bvolders/yuki-cli refuses such a line for that reason), and a line of 0
  adds nothing to the books.
- Products: Yuki matches products on their description (and item number, ``Product/Reference``) and
  overwrites their price, VAT and GL account from each invoice. One product per Yuki GL account, VAT rate
  and VAT type ("Sales 7000 21% type 2") keeps Yuki's product list small, and keeps two 0 % lines of
  different VAT regimes (an exempt and an intra-community supply, say) on products of their own; the line's
  own text goes into ``InvoiceLine/Description``.
- ``Process=true`` (book, not draft) and ``EmailToCustomer=false``: the app already sent the invoice, and
  the Minimal bundle with the Sales web-service feature allows only this combination.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from lxml import etree

from invoice_sync.connectors.amounts import (
    CENT,
    gl_account_for,
    line_vat_amounts,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.connectors.soap import child, element
from invoice_sync.connectors.yuki.settings import YukiSettings
from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    ErrorClass,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    Problem,
    rate_key,
)

SALES_INVOICES_NS = "urn:xmlns:http://www.theyukicompany.com:salesinvoices"

MAX_LENGTHS = {
    "Reference": 50,
    "Subject": 250,
    "ContactCode": 50,
    "FullName": 100,
    "AddressLine_1": 100,
    "City": 50,
    "Zipcode": 20,
    "VATNumber": 30,
    "EmailAddress": 100,
    "Description": 250,
}
"""Longest value we send per element. Yuki's schema facets are unconfirmed; these are what the sandbox
enforces. A longer value would make Yuki refuse the whole call, so :func:`validate` reports it first."""

_FIELD_NAMES = {
    "FullName": "name",
    "AddressLine_1": "address",
    "City": "city",
    "Zipcode": "postcode",
    "VATNumber": "VAT number",
    "EmailAddress": "e-mail address",
}


def number(value: Decimal) -> str:
    """A quantity or percentage without trailing zeros (``2.50`` -> ``2.5``, ``21.00`` -> ``21``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def contact_code(customer_id: int) -> str:
    """Yuki ``ContactCode`` of one of our customers: its id, as text."""
    return str(customer_id)


QUANTITY = Decimal("0.0001")
"""``ProductQuantity`` carries at most four decimals (``fractionDigits`` 4; bvolders/yuki-cli)."""


def quantity_and_price(line: InvoiceLine) -> tuple[Decimal, Decimal]:
    """``(ProductQuantity, SalesPrice)`` for a line, the price never negative and the sign in the quantity.

    The line's own quantity and price when they give its amount with a price of at most two decimals and
    a quantity of at most four; else one unit at the line amount.
    """
    sign = Decimal(-1) if line.amount < 0 else Decimal(1)
    quantity, price = abs(line.quantity), abs(line.unit_price)
    if quantity and quantity == quantity.quantize(QUANTITY) and price == price.quantize(CENT):
        if (quantity * price).quantize(CENT) == abs(line.amount):
            return sign * quantity, price
    return sign, abs(line.amount)


def product_description(gl_account: str, vat_rate: Decimal, vat_type: str) -> str:
    return f"Sales {gl_account} {rate_key(vat_rate)}% type {vat_type}"


def product_reference(gl_account: str, vat_rate: Decimal, vat_type: str) -> str:
    """The product's item number: one per GL account, VAT rate and VAT type (see the module docstring)."""
    return f"{gl_account}-{rate_key(vat_rate)}-{vat_type}"


def booked_lines(invoice: Invoice) -> list[tuple[InvoiceLine, Decimal]]:
    """The lines Yuki receives with their VAT: the bookable lines, without those of no amount.

    A line of 0 would go with ``SalesPrice`` 0, and Yuki bills the product's catalogue price instead.
    """
    lines = bookable_lines(invoice)
    vat_amounts = line_vat_amounts(lines, invoice.total_vat)
    return [(line, vat) for line, vat in zip(lines, vat_amounts, strict=True) if line.amount or vat]


def sales_invoice(invoice: Invoice, settings: YukiSettings) -> etree._Element:
    """The ``SalesInvoice`` element that books ``invoice``; its contact is matched by our customer id.

    Children in the order of ``SalesInvoices.xsd`` (see the module docstring). Call :func:`validate`
    first; this raises ``ValueError`` for what validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    assert invoice.customer is not None and invoice.number is not None
    credit = invoice.kind is InvoiceKind.CREDIT_NOTE
    sign = Decimal(-1) if credit else Decimal(1)
    node = element(SALES_INVOICES_NS, "SalesInvoice")
    child(node, "Reference", invoice.number)
    child(node, "Subject", f"{'Credit note' if credit else 'Invoice'} {invoice.number}")
    child(node, "Process", "true")
    child(node, "EmailToCustomer", "false")
    child(node, "Date", invoice.invoice_date.isoformat())
    if invoice.due_date is not None:
        child(node, "DueDate", invoice.due_date.isoformat())
    child(node, "Currency", invoice.currency)
    _contact(child(node, "Contact"), invoice.customer)
    rows = child(node, "InvoiceLines")
    for line, vat_amount in booked_lines(invoice):
        gl_account = gl_account_for(line, settings) or ""
        vat_type = vat_code_for(line, settings) or ""
        quantity, price = quantity_and_price(line)
        description = product_description(gl_account, line.vat_rate, vat_type)
        row = child(rows, "InvoiceLine")
        child(row, "Description", line.description or description)
        child(row, "ProductQuantity", number(sign * quantity))
        child(row, "LineAmount", money(sign * line.amount))
        child(row, "LineVATAmount", money(sign * vat_amount))
        product = child(row, "Product")
        child(product, "Description", description)
        child(product, "Reference", product_reference(gl_account, line.vat_rate, vat_type))
        child(product, "SalesPrice", money(price))
        child(product, "VATPercentage", rate_key(line.vat_rate))
        child(product, "VATIncluded", "false")
        child(product, "VATType", vat_type)
        child(product, "GLAccountCode", gl_account)
    return node


def _contact(node: etree._Element, customer: Customer) -> None:
    """Fill ``Contact`` in the schema's order (``EmailAddress`` right after the address lines: bvolders/
    yuki-cli and FunkyTime/Yuki); empty fields are left out so Yuki's defaults apply."""
    fields = (
        ("ContactCode", contact_code(customer.id)),
        ("FullName", customer.name),
        ("CountryCode", (customer.country_code or "").upper()),
        ("City", customer.city),
        ("Zipcode", customer.postcode),
        ("AddressLine_1", customer.address_line1),
        ("EmailAddress", customer.email),
        ("VATNumber", customer.vat_number),
        ("ContactType", "Person" if customer.kind is CustomerKind.CONTACT else "Company"),
    )
    for name, value in fields:
        if value:
            child(node, name, value)


def sales_invoices(invoices: Sequence[etree._Element]) -> etree._Element:
    """The ``xmlDoc`` root holding the ``SalesInvoice`` elements of one call."""
    root = element(SALES_INVOICES_NS, "SalesInvoices")
    for invoice in invoices:
        root.append(invoice)
    return root


def validate(invoice: Invoice, settings: YukiSettings) -> list[Problem]:
    """Everything Yuki would refuse that we can see without asking it.

    Config problems name the setting to change; data problems name the invoice. Messages are for a
    bookkeeper, e.g. "VAT rate 9% is not mapped to a Yuki VAT type for administration Demo Yuki BV".
    """
    where = f"administration {settings.label}"
    problems: list[Problem] = []

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    problems += unmapped_problems(
        invoice, settings, vat_code="a Yuki VAT type", gl_account="a Yuki GL account code", where=where
    )

    # A missing number or customer, no lines and totals the lines do not produce are refused for every
    # tool by invoice_sync.domain.rules; here only what is particular to Yuki.
    label = f"{'Credit note' if invoice.kind is InvoiceKind.CREDIT_NOTE else 'Invoice'} {invoice.number}"
    if invoice.number and len(invoice.number) > MAX_LENGTHS["Reference"]:
        data(
            f"{label}: the number is longer than the {MAX_LENGTHS['Reference']} characters of Yuki's "
            "Reference"
        )
    if invoice.customer is not None:
        for message in contact_problems(invoice.customer):
            data(f"{label}: {message}")
    for line in invoice.lines:
        if len(line.description or "") > MAX_LENGTHS["Description"]:
            data(
                f"{label}: the description of line {line.position} is longer than the "
                f"{MAX_LENGTHS['Description']} characters Yuki accepts (it has {len(line.description)})"
            )
        if line.amount != line.amount.quantize(CENT):
            data(f"{label}: line {line.position} has an amount with more than two decimals ({line.amount})")
    if (rounding := vat_rounding_problem(invoice)) is not None:
        data(rounding)
    elif invoice.lines and not booked_lines(invoice):
        data(f"{label}: no line has an amount, and Yuki would bill a line of 0 at its catalogue price")
    return problems


def contact_problems(customer: Customer) -> list[str]:
    """Fields of ``customer`` longer than Yuki's contact accepts (see ``MAX_LENGTHS``)."""
    found = []
    values = {
        "FullName": customer.name,
        "AddressLine_1": customer.address_line1,
        "City": customer.city,
        "Zipcode": customer.postcode,
        "VATNumber": customer.vat_number,
        "EmailAddress": customer.email,
    }
    for name, value in values.items():
        limit = MAX_LENGTHS[name]
        if value and len(value) > limit:
            found.append(
                f"the {_FIELD_NAMES[name]} of customer {customer.name[:60]} (#{customer.id}) is longer than "
                f"the {limit} characters Yuki accepts for a contact (it has {len(value)}); "
                "shorten it in the app"
            )
    return found
