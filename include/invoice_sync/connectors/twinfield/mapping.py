"""Pure mapping between the invoicing app's value objects and Twinfield's ProcessXml documents (no I/O).

An invoice issued elsewhere is booked in Twinfield as a *sales transaction* in a sales daybook (reference
section 4): a ``total`` line on the debtors control account (``dim1``) carrying the customer (``dim2``) and
the amount including VAT, and one ``detail`` line per bookable line (the invoice's lines plus its discount
lines, :func:`~invoice_sync.domain.discounts.bookable_lines`) on its revenue account (``dim1``) with its VAT
code and its VAT as ``vatvalue``.

No ``type="vat"`` lines are sent: Twinfield makes them itself from each detail line's ``vatcode`` (on the
VAT code's own account, with ``vatturnover`` and ``baseline``) and returns them in its answer
(php-twinfield/twinfield ``tests/IntegrationTests/resources/salesTransactionSendRequest.xml`` sends only a
total and a detail line; ``salesTransactionGetResponse.xml`` answers with a third, generated ``vat``
line). A VAT line of our own would book the VAT twice and leave the transaction out of balance.

Twinfield computes a detail line's VAT per line unless ``vatvalue`` gives it, in which case it "uses the VAT
value as passed" (developers.twinfield.com, Getting started, "VAT Calculation", solution 2). Passing the
app's VAT per code spread over the code's lines (:func:`detail_lines`) makes the booked VAT the app's VAT
to the cent, per VAT code and in total, and the transaction balance exactly.

``autobalancevat="true"`` (the same page's solution 1: differences "up to 0.01"; "a maximum of two cents"
in php-twinfield ``src/Transactions/TransactionFields/AutoBalanceVatField.php``) would let Twinfield move a
cent of VAT onto the line with the highest value: with the VAT given per line there is nothing left to
balance, and a cent moved silently would hide a mistake of ours, so it is not sent.

Amounts go out without a sign: php-twinfield ``src/Transactions/TransactionLineFields/ValueFields.php``
("Twinfield uses debitcredit fields instead of signs") always writes the absolute ``value`` and turns the
sign into ``debitcredit``, and ``vatvalue`` follows its line's side (php-twinfield issue #57, "all VAT
values should always be positive"). So a negative line on an invoice (a discount) is a ``debit`` detail
line, and a credit note swaps every side.

Customers are debtor dimensions (``DEB``) whose code is our customer id plus an offset, so the code is
known without asking Twinfield and an upsert by code is idempotent. All XML is built with lxml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from invoice_sync.connectors.amounts import (
    CENT,
    document_label,
    gl_account_for,
    line_vat_amounts,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.connectors.soap import Element, child, element
from invoice_sync.connectors.twinfield.settings import TwinfieldSettings
from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    Customer,
    ErrorClass,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    Problem,
)

CUSTOMER_NAME_MAX = 80
"""Longest dimension name we send (Twinfield's limit is unconfirmed; 80 is what its UI accepts)."""
INVOICE_NUMBER_MAX = 40
"""Longest ``invoicenumber`` we send (unconfirmed); a cut number would break the lookup by number."""


def customer_code(customer_id: int, settings: TwinfieldSettings) -> str:
    """The Twinfield debtor code of one of our customers: ``str(offset + id)``."""
    return str(settings.customer_code_offset + int(customer_id))


def daybook_for(invoice: Invoice, settings: TwinfieldSettings) -> str | None:
    """The transaction type (daybook) code; credit notes may have their own, else the same."""
    if invoice.kind is InvoiceKind.CREDIT_NOTE:
        return settings.credit_note_journal or settings.journal
    return settings.journal


def daybooks(settings: TwinfieldSettings) -> list[str]:
    """Every daybook this integration books in: lookups ignore transactions in any other."""
    return list(dict.fromkeys(code for code in (settings.journal, settings.credit_note_journal) if code))


@dataclass(frozen=True, slots=True)
class DetailLine:
    """One bookable line as a ``detail`` line: signed from the debtor's side (an invoice's revenue is
    positive, a discount line or a credit note's line negative), its VAT signed alike."""

    line: InvoiceLine
    amount: Decimal
    vat: Decimal


def detail_lines(invoice: Invoice, settings: TwinfieldSettings) -> list[DetailLine]:
    """The bookable lines with the VAT each carries: per VAT code what the app's VAT return would say,
    and over all codes the app's VAT total to the cent.

    Per VAT code the VAT is the rate of the code's base, rounded half up (as a VAT return computes it, and
    as invoicing apps print it); whatever that leaves over against the app's total (an app that rounds per
    line) goes to the taxed code with the largest base, where it changes the effective rate least. Within
    a code, :func:`~invoice_sync.connectors.amounts.line_vat_amounts` spreads the code's VAT over its lines.
    """
    lines = bookable_lines(invoice)
    sign = Decimal(-1) if invoice.kind is InvoiceKind.CREDIT_NOTE else Decimal(1)
    by_code: dict[str | None, list[int]] = {}
    for index, line in enumerate(lines):
        by_code.setdefault(vat_code_for(line, settings), []).append(index)
    code_vat: dict[str | None, Decimal] = {}
    taxed_base: dict[str | None, Decimal] = {}
    for code, indexes in by_code.items():
        per_rate: dict[Decimal, Decimal] = {}
        for index in indexes:
            per_rate[lines[index].vat_rate] = (
                per_rate.get(lines[index].vat_rate, Decimal(0)) + lines[index].amount
            )
        code_vat[code] = sum(
            ((base * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP) for rate, base in per_rate.items()),
            Decimal(0),
        )
        taxed_base[code] = sum((base for rate, base in per_rate.items() if rate), Decimal(0))
    remainder = invoice.total_vat.quantize(CENT, rounding=ROUND_HALF_UP) - sum(code_vat.values(), Decimal(0))
    if remainder and code_vat:
        code_vat[max(code_vat, key=lambda code: abs(taxed_base[code]))] += remainder
    vats: dict[int, Decimal] = {}
    for code, indexes in by_code.items():
        amounts = line_vat_amounts([lines[index] for index in indexes], code_vat[code])
        vats.update(zip(indexes, amounts, strict=True))
    return [DetailLine(line, sign * line.amount, sign * vats[index]) for index, line in enumerate(lines)]


def _side(amount: Decimal, normal_side: str) -> str:
    """``normal_side`` for a positive amount (and zero), the other side for a negative one."""
    if amount >= 0:
        return normal_side
    return "credit" if normal_side == "debit" else "debit"


def _amount_line(parent: Element, kind: str, line_id: int, amount: Decimal, normal_side: str) -> Element:
    """A ``<line>`` with ``debitcredit`` and an unsigned ``value``: a negative amount flips the side."""
    node = child(parent, "line", type=kind, id=str(line_id))
    node.append(element(None, "debitcredit", _side(amount, normal_side)))
    node.append(element(None, "value", money(abs(amount))))
    return node


def transaction_element(invoice: Invoice, settings: TwinfieldSettings, customer: str) -> Element:
    """The ``<transaction>`` that books ``invoice`` in its sales daybook for debtor ``customer``.

    ``destiny="final"`` books it (a temporary one could still be changed or deleted by anyone);
    ``raisewarning="false"`` keeps warnings (a date outside the period) from stopping it; no
    ``autobalancevat`` (see the module docstring). A detail line's elements come in php-twinfield's order
    (``src/DomDocuments/TransactionsDocument.php``: ``dim1``, ``debitcredit``, ``value``, ``vatvalue``,
    ``description``, ``vatcode``). Call :func:`validate` first; this raises ``ValueError`` for what
    validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    sign = Decimal(-1) if invoice.kind is InvoiceKind.CREDIT_NOTE else Decimal(1)
    transaction = element(None, "transaction", destiny="final", raisewarning="false")
    header = child(transaction, "header")
    child(header, "office", settings.office)
    child(header, "code", daybook_for(invoice, settings))
    child(header, "currency", invoice.currency.upper())
    child(header, "date", invoice.invoice_date.strftime("%Y%m%d"))
    child(header, "period", f"{invoice.invoice_date.year}/{invoice.invoice_date.month:02d}")
    child(header, "invoicenumber", invoice.number)
    if invoice.due_date is not None:
        child(header, "duedate", invoice.due_date.strftime("%Y%m%d"))
    lines = child(transaction, "lines")
    total = _amount_line(lines, "total", 1, sign * invoice.total_incl_vat, "debit")
    total.insert(0, element(None, "dim1", settings.debtors_account))
    total.insert(1, element(None, "dim2", customer))
    for line_id, detail in enumerate(detail_lines(invoice, settings), start=2):
        node = _amount_line(lines, "detail", line_id, detail.amount, "credit")
        node.insert(0, element(None, "dim1", gl_account_for(detail.line, settings)))
        child(node, "vatvalue", money(abs(detail.vat)))
        if detail.line.description:
            child(node, "description", detail.line.description)
        child(node, "vatcode", vat_code_for(detail.line, settings))
    return transaction


def transactions_request(transactions: Sequence[Element]) -> Element:
    root = element(None, "transactions")
    for transaction in transactions:
        root.append(transaction)
    return root


def dimension_element(customer: Customer, settings: TwinfieldSettings) -> Element:
    """The ``<dimension>`` (type ``DEB``) that creates or updates ``customer`` in the office.

    The street line goes into ``field2`` and the VAT number into ``field4`` of the invoice address
    (which fields Twinfield uses for them is unconfirmed). Empty fields are left out.
    """
    dimension = element(None, "dimension")
    child(dimension, "office", settings.office)
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


def dimensions_request(customers: Sequence[Customer], settings: TwinfieldSettings) -> Element:
    root = element(None, "dimensions")
    for customer in customers:
        root.append(dimension_element(customer, settings))
    return root


BROWSE_LABELS = {
    "fin.trs.head.office": "Office",
    "fin.trs.line.invnumber": "Invoice number",
    "fin.trs.head.code": "Transaction type",
    "fin.trs.head.number": "Trans. no.",
}
"""The browse columns of a lookup, with the labels Twinfield's own browse definition gives them
(php-twinfield ``tests/IntegrationTests/BrowseDataApiConnectorTest.php``)."""


def browse_request(office: str, reference: str) -> Element:
    """Browse code 100 (transaction lines) for our invoice number in the office.

    Every column carries the full set php-twinfield's ``src/Request/BrowseData.php`` writes (``field``,
    ``label``, ``visible``, ``ask``, ``operator``, ``from``, ``to``); a filter column has ``ask`` true and
    operator ``equal``, a shown-only column ``ask`` false and operator ``none``. The invoice number is also
    shown, so the caller can check each row is ours: a filter is the server's to apply, the check is ours.
    The daybook is a shown column rather than a filter, so one browse serves an integration whose credit
    notes go to a daybook of their own; the caller keeps the rows of its daybooks.
    """
    filters = {"fin.trs.head.office": office, "fin.trs.line.invnumber": reference}
    columns = element(None, "columns", code="100")
    for field, label in BROWSE_LABELS.items():
        value = filters.get(field)
        column = child(columns, "column")
        child(column, "field", field)
        child(column, "label", label)
        child(column, "visible", "true")
        child(column, "ask", "true" if value is not None else "false")
        child(column, "operator", "equal" if value is not None else "none")
        child(column, "from", value or "")
        child(column, "to", "")
    return columns


def validate(invoice: Invoice, settings: TwinfieldSettings) -> list[Problem]:
    """Everything Twinfield would refuse that we can see without asking it (config names the setting)."""
    where = f"Twinfield office {settings.office}"
    problems: list[Problem] = []

    def config(message: str) -> None:
        problems.append(Problem(ErrorClass.CONFIG, message))

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    if not daybook_for(invoice, settings):
        config(f"No sales daybook (transaction type) is set for {where}")
    problems += unmapped_problems(
        invoice, settings, vat_code="a Twinfield VAT code", gl_account="a Twinfield GL account", where=where
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
    else:
        for detail in detail_lines(invoice, settings):
            # vatvalue has no sign of its own: it is booked on its line's side.
            if detail.vat and _side(detail.vat, "credit") != _side(detail.amount, "credit"):
                data(
                    f"{label}: the VAT of line {detail.line.position} ({money(detail.vat)}) goes against "
                    f"its amount ({money(detail.amount)}); Twinfield books a line's VAT on the line's side"
                )
    return problems
