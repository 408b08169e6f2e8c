"""Pure mapping between the invoicing app's value objects and Exact Online payloads (no I/O).

Kept apart from the client so the rules that decide what Exact books (signs, VAT cents, which
journal, which G/L account) are tested without a network, and so :func:`validate` can reject an
invoice before it costs a call: every refused call counts toward Exact's 10-errors-an-hour block.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from invoice_sync.connectors.amounts import (
    description_problems,
    document_label,
    gl_account_for,
    line_vat_amounts,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    Customer,
    ErrorClass,
    Invoice,
    InvoiceKind,
    Problem,
)

T = TypeVar("T")

CODE_WIDTH = 18
"""Exact stores an account ``Code`` as 18 characters, right-aligned with leading spaces."""

YOUR_REF_MAX = 30
"""Longest ``YourRef`` we send. Exact's exact limit for sales entries is unconfirmed; 30 is its
limit on sales invoices and longer references would be cut, which breaks the lookup by number."""

ACCOUNT_FIELD_LIMITS = {
    "Name": 50,
    "AddressLine1": 100,
    "Postcode": 20,
    "City": 50,
    "Email": 100,
    "VATNumber": 20,
}
"""Longest value we send per ``crm/Accounts`` field. Exact does not publish its column widths; these
are the narrowest we found in its UI and in third-party data models of the API, and the simulator
refuses longer values the same way (``Too long: Name (max. 50)``). Checked in :func:`validate` first,
so a too-long field never costs a failing call (Exact blocks an app after 10 an hour per endpoint)."""

LINE_DESCRIPTION_MAX = 60
"""Longest ``SalesEntryLines.Description`` we send (unconfirmed, as above; the simulator enforces it)."""

ENTRY_DESCRIPTION_MAX = 60
"""Longest sales-entry ``Description``; ours is "Credit note " + the invoice number, at most 42."""

_ACCOUNT_FIELD_NAMES = {
    "Name": "name",
    "AddressLine1": "address",
    "Postcode": "postcode",
    "City": "city",
    "Email": "e-mail address",
    "VATNumber": "VAT number",
}

FILTER_MAX_ENCODED = 4500
"""Longest URL-encoded ``$filter`` we send; a batch that would be longer is split (cap: 6,000 for the URL)."""

FILTER_BATCH = 40
"""How many ``or`` terms one ``$filter`` holds (as ossobv does); far below the 6,000-char URL cap."""


def account_code(customer_id: int | str) -> str:
    """Exact account ``Code`` for one of our customers: its id, right-aligned in 18 characters.

    Filters must use the padded form, because that is how Exact stores and compares it.
    """
    text = str(customer_id).strip()
    if not text or len(text) > CODE_WIDTH:
        raise ValueError(f"customer id {customer_id!r} does not fit an Exact account code")
    return text.rjust(CODE_WIDTH)


def compact_vat_number(number: str | None) -> str:
    """A VAT number without spaces, dots, dashes and slashes, upper case: how two spellings compare."""
    return "".join(ch for ch in (number or "") if ch not in " .-/,\t").upper()


def quote(value: str) -> str:
    """An OData string literal: single quotes, with embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def any_of(field: str, values: Iterable[str]) -> str:
    """``(field eq 'a' or field eq 'b')``: one filter term that matches any of ``values``."""
    terms = [f"{field} eq {quote(value)}" for value in values]
    if not terms:
        raise ValueError("an OData 'any of' filter needs at least one value")
    return "(" + " or ".join(terms) + ")"


def batches(items: Sequence[T], size: int = FILTER_BATCH) -> list[Sequence[T]]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def account_payload(customer: Customer) -> dict[str, Any]:
    """The ``crm/Accounts`` body that creates ``customer`` as an Exact customer (``Status`` C).

    Empty fields are left out rather than sent blank, so Exact's defaults apply.
    """
    payload: dict[str, Any] = {
        "Code": account_code(customer.id),
        "Name": customer.name,
        "Status": "C",
        "AddressLine1": customer.address_line1,
        "Postcode": customer.postcode,
        "City": customer.city,
        "Country": customer.country_code.upper() if customer.country_code else None,
        "Email": customer.email,
        "VATNumber": customer.vat_number,
    }
    return {key: value for key, value in payload.items() if value not in (None, "")}


def journal_for(invoice: Invoice, settings: ExactOnlineSettings) -> str | None:
    """The journal code an invoice is booked in; credit notes may have their own journal."""
    if invoice.kind is InvoiceKind.CREDIT_NOTE:
        return settings.credit_note_journal or settings.journal
    return settings.journal


def journals(settings: ExactOnlineSettings) -> list[str]:
    """Every journal this integration books in: lookups ignore entries in any other journal."""
    found = [code for code in (settings.journal, settings.credit_note_journal) if code]
    return list(dict.fromkeys(found))


def sales_entry_payload(
    invoice: Invoice, settings: ExactOnlineSettings, customer_guid: str
) -> dict[str, Any]:
    """The ``salesentry/SalesEntries`` body that books ``invoice`` for the Exact account ``customer_guid``.

    Our invoice number goes into ``YourRef``: it is how :meth:`find_booked` recognises an entry later.
    Credit notes are stored with positive amounts in the app and booked negative in Exact. The lines are
    the invoice's bookable ones: a discount line of the app, or one derived from an invoice-level
    discount, is a negative line on its own VAT code (on the integration's discount account when one is
    set), as Exact takes any line of a sales entry with a signed ``AmountFC``; the entry's sign follows the
    document, never a line. ``VATCode`` comes from the line's tax rate when it has one, so two 0 % lines of
    different regimes carry different codes.
    Call :func:`validate` first; this raises ``ValueError`` for what validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    sign = Decimal(-1) if invoice.kind is InvoiceKind.CREDIT_NOTE else Decimal(1)
    booked = bookable_lines(invoice)
    vat_amounts = line_vat_amounts(booked, invoice.total_vat)
    lines = [
        {
            "GLAccount": gl_account_for(line, settings),
            "AmountFC": money(sign * line.amount),
            "VATCode": vat_code_for(line, settings),
            "VATAmountFC": money(sign * vat_amount),
            "Description": line.description,
            "Quantity": format(line.quantity.normalize(), "f"),
        }
        for line, vat_amount in zip(booked, vat_amounts, strict=True)
    ]
    label = "Credit note" if invoice.kind is InvoiceKind.CREDIT_NOTE else "Invoice"
    payload: dict[str, Any] = {
        "Journal": journal_for(invoice, settings),
        "Customer": customer_guid,
        "EntryDate": f"{invoice.invoice_date.isoformat()}T00:00:00Z",
        "YourRef": invoice.number,
        "Description": f"{label} {invoice.number}",
        "Currency": invoice.currency,
        "SalesEntryLines": lines,
    }
    if invoice.due_date is not None:
        # Writable on SalesEntries; left out, Exact derives it from the payment condition and the app's
        # own due date is lost (reference section 12; exactonline-api-dotnet-client SalesEntry.cs).
        payload["DueDate"] = f"{invoice.due_date.isoformat()}T00:00:00Z"
    if settings.payment_condition:
        payload["PaymentCondition"] = settings.payment_condition
    return payload


def validate(invoice: Invoice, settings: ExactOnlineSettings) -> list[Problem]:
    """Everything Exact would refuse that we can see without asking it.

    Config problems name the setting to change; data problems name the invoice. Messages are for a
    bookkeeper, e.g. "VAT rate 9% is not mapped to an Exact VAT code for Exact division 123456".
    """
    where = f"Exact division {settings.division}"
    problems: list[Problem] = []

    def config(message: str) -> None:
        problems.append(Problem(ErrorClass.CONFIG, message))

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    if not journal_for(invoice, settings):
        config(f"No sales journal is set for {where}")
    problems += unmapped_problems(
        invoice, settings, vat_code="an Exact VAT code", gl_account="an Exact G/L account", where=where
    )

    # A missing number, missing lines and totals that the lines do not produce are refused for every
    # tool by invoice_sync.domain.rules; here only what is particular to Exact.
    if invoice.number and len(invoice.number) > YOUR_REF_MAX:
        data(f"Invoice number {invoice.number} is longer than {YOUR_REF_MAX} characters (Exact's YourRef)")
    if invoice.customer is not None:
        for message in account_problems(invoice.customer):
            data(f"{document_label(invoice)}: {message}")
    problems += description_problems(invoice, limit=LINE_DESCRIPTION_MAX, tool="Exact")
    if (rounding := vat_rounding_problem(invoice)) is not None:
        data(rounding)
    return problems


def account_problems(customer: Customer) -> list[str]:
    """Fields of ``customer`` longer than Exact accepts for an account (see ``ACCOUNT_FIELD_LIMITS``)."""
    found = []
    for field_name, value in account_payload(customer).items():
        limit = ACCOUNT_FIELD_LIMITS.get(field_name)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            found.append(
                f"the {_ACCOUNT_FIELD_NAMES[field_name]} of customer {customer.name[:limit]}… "
                f"(#{customer.id}) is longer than the {limit} characters Exact accepts for an account "
                f"(it has {len(value)}); shorten it in the app"
                if field_name == "Name"
                else f"the {_ACCOUNT_FIELD_NAMES[field_name]} of customer {customer.name} (#{customer.id}) "
                f"is longer than the {limit} characters Exact accepts for an account (it has {len(value)}); "
                "shorten it in the app"
            )
    return found
