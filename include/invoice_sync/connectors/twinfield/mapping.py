"""Pure mapping between the invoicing app's value objects and Twinfield's ProcessXml documents (no I/O).

An invoice issued elsewhere is booked in Twinfield as a *sales transaction* in a sales daybook (reference
section 4): a ``total`` line on the debtors control account carrying the customer (``dim2``) and the amount
including VAT, one ``detail`` line per invoice line on its revenue account with its VAT code, and — our
choice — one explicit ``vat`` line per VAT code carrying the app's own VAT for that rate. Twinfield would
otherwise compute VAT per detail line itself, and the app may have rounded differently (per total, not
per line); with explicit VAT lines what Twinfield books equals the app's VAT to the cent and the
transaction balances exactly. (``vatvalue`` per detail line would do the same; the ``vat`` line is in the
reference's line types and keeps one figure per rate, which is how a VAT return reads it.)

Customers are debtor dimensions (``DEB``) whose code is our customer id plus an offset, so the code is
known without asking Twinfield and an upsert by code is idempotent. All XML is built with lxml.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from invoice_sync.connectors.amounts import (
    CENT,
    document_label,
    gl_account_for,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.connectors.soap import Element, child, element
from invoice_sync.domain.models import (
    Customer,
    ErrorClass,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    Problem,
    rate_key,
)

DEFAULT_CUSTOMER_CODE_OFFSET = 1000
"""Customer 1 becomes debtor 1001: Twinfield offices usually number debtors from 1000 (the demo office's
format is ``1[0-9]{3,5}``)."""
CUSTOMER_NAME_MAX = 80
"""Longest dimension name we send (Twinfield's limit is unconfirmed; 80 is what its UI accepts)."""
INVOICE_NUMBER_MAX = 40
"""Longest ``invoicenumber`` we send (unconfirmed); a cut number would break the lookup by number."""


def office_of(settings: IntegrationSettings) -> str | None:
    value = settings.extra.get("office")
    return str(value).strip() or None if value is not None else None


def debtors_account_of(settings: IntegrationSettings) -> str | None:
    value = settings.extra.get("debtors_account")
    return str(value).strip() or None if value is not None else None


def customer_code(customer_id: int, settings: IntegrationSettings) -> str:
    """The Twinfield debtor code of one of our customers: ``str(offset + id)``."""
    offset = int(settings.extra.get("customer_code_offset", DEFAULT_CUSTOMER_CODE_OFFSET))
    return str(offset + int(customer_id))


def daybook_for(invoice: Invoice, settings: IntegrationSettings) -> str | None:
    """The transaction type (daybook) code; credit notes may have their own, else the same."""
    if invoice.kind is InvoiceKind.CREDIT_NOTE:
        return settings.credit_note_journal or settings.journal
    return settings.journal


def daybooks(settings: IntegrationSettings) -> list[str]:
    """Every daybook this integration books in: lookups ignore transactions in any other."""
    return list(dict.fromkeys(code for code in (settings.journal, settings.credit_note_journal) if code))


def vat_per_code(invoice: Invoice, settings: IntegrationSettings) -> dict[str, Decimal]:
    """The app's VAT per Twinfield VAT code, adding up to the invoice's VAT total exactly.

    Per rate the VAT is the rate of the rate's base, rounded half up (as a VAT return computes it, and as
    invoicing apps print it). Whatever that leaves over against the app's total (an app that rounds per
    line) goes to the taxed code with the largest base, where it changes the effective rate least. It is
    never dropped: Twinfield must book what the invoice says, to the cent.
    """
    bases: dict[tuple[str, Decimal], Decimal] = {}
    for line in invoice.lines:
        code = vat_code_for(line, settings)
        if code is None:
            raise ValueError(f"VAT rate {rate_key(line.vat_rate)}% is not mapped")
        key = (code, line.vat_rate)
        bases[key] = bases.get(key, Decimal("0")) + line.amount
    amounts: dict[str, Decimal] = {}
    code_bases: dict[str, Decimal] = {}
    for (code, rate), base in bases.items():
        vat = (base * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        amounts[code] = amounts.get(code, Decimal("0")) + vat
        code_bases[code] = code_bases.get(code, Decimal("0")) + (base if rate else Decimal("0"))
    remainder = invoice.total_vat.quantize(CENT, rounding=ROUND_HALF_UP) - sum(amounts.values(), Decimal("0"))
    if remainder and amounts:
        largest = max(amounts, key=lambda code: abs(code_bases[code]))
        amounts[largest] += remainder
    return amounts


def _taxed(invoice: Invoice, settings: IntegrationSettings, code: str) -> bool:
    """Whether any line booked under ``code`` has a VAT rate above zero."""
    return any(line.vat_rate and vat_code_for(line, settings) == code for line in invoice.lines)


def _amount_line(parent: Element, kind: str, line_id: int, amount: Decimal, normal_side: str) -> Element:
    """A ``<line>`` with ``debitcredit`` and a non-negative ``value``: a negative amount flips the side."""
    other = "credit" if normal_side == "debit" else "debit"
    node = child(parent, "line", type=kind, id=str(line_id))
    node.append(element(None, "debitcredit", normal_side if amount >= 0 else other))
    node.append(element(None, "value", money(abs(amount))))
    return node


def transaction_element(invoice: Invoice, settings: IntegrationSettings, customer: str) -> Element:
    """The ``<transaction>`` that books ``invoice`` in its sales daybook for debtor ``customer``.

    ``destiny="final"`` books it (a temporary one could still be changed or deleted by anyone);
    ``raisewarning="false"`` keeps warnings (a date outside the period) from stopping it. Credit notes
    use the same layout with debit and credit swapped (the app stores them with positive amounts).
    Call :func:`validate` first; this raises ``ValueError`` for what validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    sign = Decimal(-1) if invoice.kind is InvoiceKind.CREDIT_NOTE else Decimal(1)
    transaction = element(None, "transaction", destiny="final", raisewarning="false")
    header = child(transaction, "header")
    child(header, "office", office_of(settings))
    child(header, "code", daybook_for(invoice, settings))
    child(header, "currency", invoice.currency.upper())
    child(header, "date", invoice.invoice_date.strftime("%Y%m%d"))
    child(header, "period", f"{invoice.invoice_date.year}/{invoice.invoice_date.month:02d}")
    child(header, "invoicenumber", invoice.number)
    if invoice.due_date is not None:
        child(header, "duedate", invoice.due_date.strftime("%Y%m%d"))
    lines = child(transaction, "lines")
    total = _amount_line(lines, "total", 1, sign * invoice.total_incl_vat, "debit")
    total.insert(0, element(None, "dim1", debtors_account_of(settings)))
    total.insert(1, element(None, "dim2", customer))
    line_id = 2
    for line in invoice.lines:
        detail = _amount_line(lines, "detail", line_id, sign * line.amount, "credit")
        detail.insert(0, element(None, "dim1", gl_account_for(line, settings)))
        child(detail, "vatcode", vat_code_for(line, settings))
        if line.description:
            child(detail, "description", line.description)
        line_id += 1
    for code, amount in vat_per_code(invoice, settings).items():
        if amount == 0 and not _taxed(invoice, settings, code):
            continue  # a 0 % code has no VAT to book
        vat = _amount_line(lines, "vat", line_id, sign * amount, "credit")
        child(vat, "vatcode", code)
        line_id += 1
    return transaction


def transactions_request(transactions: Sequence[Element]) -> Element:
    root = element(None, "transactions")
    for transaction in transactions:
        root.append(transaction)
    return root


def dimension_element(customer: Customer, settings: IntegrationSettings) -> Element:
    """The ``<dimension>`` (type ``DEB``) that creates or updates ``customer`` in the office.

    The street line goes into ``field2`` and the VAT number into ``field4`` of the invoice address
    (which fields Twinfield uses for them is unconfirmed). Empty fields are left out.
    """
    dimension = element(None, "dimension")
    child(dimension, "office", office_of(settings))
    child(dimension, "type", "DEB")
    child(dimension, "code", customer_code(customer.id, settings))
    child(dimension, "name", customer.name)
    addresses = child(dimension, "addresses")
    address = child(addresses, "address", type="invoice", default="true")
    fields = {
        "name": customer.name,
        "country": customer.country_code.upper() if customer.country_code else None,
        "city": customer.city,
        "postcode": customer.postcode,
        "email": customer.email,
        "field2": customer.address_line1,
        "field4": customer.vat_number,
    }
    for name, value in fields.items():
        if value not in (None, ""):
            child(address, name, value)
    return dimension


def dimensions_request(customers: Sequence[Customer], settings: IntegrationSettings) -> Element:
    root = element(None, "dimensions")
    for customer in customers:
        root.append(dimension_element(customer, settings))
    return root


def browse_request(office: str, reference: str) -> Element:
    """Browse code 100 (transaction lines) for our invoice number in the office.

    The daybook is a visible column rather than a filter, so one browse serves an integration whose
    credit notes go to a daybook of their own; the caller keeps the rows of its daybooks.
    """
    columns = element(None, "columns", code="100")
    for field, value in (("fin.trs.head.office", office), ("fin.trs.line.invnumber", reference)):
        column = child(columns, "column")
        child(column, "field", field)
        child(column, "operator", "equal")
        child(column, "from", value)
        child(column, "visible", "true")
    for field in ("fin.trs.head.code", "fin.trs.head.number"):
        column = child(columns, "column")
        child(column, "field", field)
        child(column, "visible", "true")
    return columns


def validate(invoice: Invoice, settings: IntegrationSettings) -> list[Problem]:
    """Everything Twinfield would refuse that we can see without asking it (config names the setting)."""
    office = office_of(settings)
    where = f"Twinfield office {office}" if office else "the Twinfield integration"
    problems: list[Problem] = []

    def config(message: str) -> None:
        problems.append(Problem(ErrorClass.CONFIG, message))

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    if not office:
        config("No Twinfield office is set for this integration (setting extra.office)")
    if not debtors_account_of(settings):
        config(f"No debtors control account is set for {where} (setting extra.debtors_account)")
    if not daybook_for(invoice, settings):
        config(f"No sales daybook (transaction type) is set for {where}")
    problems += unmapped_problems(
        invoice, settings, vat_code="a Twinfield VAT code", gl_account="a Twinfield GL account", where=where
    )
    try:
        int(settings.extra.get("customer_code_offset", DEFAULT_CUSTOMER_CODE_OFFSET))
    except (TypeError, ValueError):
        config(
            f"The customer code offset of {where} is not a whole number (setting extra.customer_code_offset)"
        )

    label = document_label(invoice)
    if invoice.number and len(invoice.number) > INVOICE_NUMBER_MAX:
        data(f"{label}: the number is longer than the {INVOICE_NUMBER_MAX} characters Twinfield keeps")
    if invoice.customer is not None and len(invoice.customer.name) > CUSTOMER_NAME_MAX:
        data(
            f"{label}: the name of customer #{invoice.customer.id} is longer than the {CUSTOMER_NAME_MAX} "
            "characters Twinfield accepts; shorten it in the app"
        )
    if (rounding := vat_rounding_problem(invoice)) is not None:
        data(rounding)
    return problems
