"""Tool-independent rules: what may be pushed at all, and what makes an invoice unbookable anywhere.

Tool-specific checks (is this VAT rate mapped for that tool?) live in each connector's ``validate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal

from invoice_sync.domain import validation
from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    Customer,
    ErrorClass,
    Integration,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Problem,
    RelatedInvoice,
    rate_key,
)

SYNCABLE_STATUSES = (InvoiceStatus.REGISTERED, InvoiceStatus.PAID)
CENT = Decimal("0.01")


class SkipReason:
    """Why an invoice is not offered to the tool at all. These are not failures."""

    DRAFT = "draft"
    ALREADY_SYNCED = "already_synced"
    BEFORE_CUTOVER = "before_cutover"
    CHANGED_AFTER_SYNC = "changed_after_sync"


def skip_reason(invoice: Invoice, integration: Integration) -> str | None:
    """Return why ``invoice`` must not be pushed, or ``None`` when it may be.

    A draft is never pushed, an invoice that carries a registration number is never pushed again
    (edits after sync are reported instead), and nothing older than the integration's cut-over date is
    pushed unless someone moves that date.
    """
    if invoice.status not in SYNCABLE_STATUSES:
        return SkipReason.DRAFT
    if invoice.registration_number:
        if invoice.synced_at is not None and invoice.updated_at > invoice.synced_at:
            return SkipReason.CHANGED_AFTER_SYNC
        return SkipReason.ALREADY_SYNCED
    if before_cutover(invoice.invoice_date, integration.sync_from):
        return SkipReason.BEFORE_CUTOVER
    return None


def before_cutover(invoice_date: date, sync_from: date | None) -> bool:
    return sync_from is not None and invoice_date < sync_from


def problems(invoice: Invoice) -> list[Problem]:
    """Problems that no accounting tool would accept, found without calling one.

    Every message names the invoice, the field and what to change in the app. Problems that need other
    invoices (a number used twice, a credit note of an invoice not booked yet) are
    :func:`duplicate_number_problem` and :func:`credited_invoice_problem`.
    """
    label = _label(invoice)
    found: list[Problem] = []

    def data(message: str) -> None:
        found.append(Problem(ErrorClass.DATA, message))

    if not invoice.number:
        data(f"{label} has no invoice number")
    else:
        _check_number(invoice, label, data)
    if invoice.customer is None:
        data(f"{label} has no customer; link a customer in the app")
    else:
        _check_customer(invoice.customer, label, data)
    if invoice.currency is None or invoice.currency.strip().upper() not in validation.CURRENCY_CODES:
        data(
            f"{label}: currency {invoice.currency!r} is not an ISO 4217 currency code; "
            "correct the invoice's currency in the app"
        )
    if invoice.due_date is not None and invoice.due_date < invoice.invoice_date:
        data(
            f"{label}: the due date {invoice.due_date.isoformat()} is before the invoice date "
            f"{invoice.invoice_date.isoformat()}; correct the due date in the app"
        )
    if not invoice.lines:
        data(f"{label} has no lines")
        return found
    for line in invoice.lines:
        _check_line(line, label, data)
    percentage = invoice.discount_percentage
    if percentage is not None and not 0 <= percentage < 100:
        data(
            f"{label} has a discount of {_plain(percentage)}%, which is not a percentage below 100; "
            "correct the invoice's discount in the app"
        )
        return found
    line_sum = sum((line.amount for line in bookable_lines(invoice)), Decimal("0"))
    if line_sum.quantize(CENT) != invoice.total_excl_vat.quantize(CENT):
        after = f" less its {_plain(percentage)}% discount" if percentage else ""
        data(
            f"{label}: the lines{after} add up to {line_sum:.2f} {invoice.currency} but the total "
            f"excluding VAT is {invoice.total_excl_vat:.2f}"
        )
    if (invoice.total_excl_vat + invoice.total_vat).quantize(CENT) != invoice.total_incl_vat.quantize(CENT):
        data(
            f"{label}: total excluding VAT {invoice.total_excl_vat:.2f} plus VAT "
            f"{invoice.total_vat:.2f} is not the total {invoice.total_incl_vat:.2f}"
        )
    # Negative lines (a discount, a returned item) are ordinary on an invoice; only the document as a
    # whole decides whether it is an invoice or a credit note, and the app keeps credit notes positive.
    if invoice.total_excl_vat < 0 or invoice.total_incl_vat < 0:
        data(
            f"{label} has a negative total; "
            + (
                "credit notes carry positive amounts in the app"
                if _is_credit(invoice)
                else "an invoice that gives money back must be a credit note in the app"
            )
        )
    elif all(line.amount.quantize(CENT) == 0 for line in invoice.lines) and not invoice.total_incl_vat:
        data(
            f"{label} amounts to 0.00 {invoice.currency}: there is nothing to book; "
            "add the missing amounts or cancel it in the app"
        )
    return found


def _check_number(invoice: Invoice, label: str, report: Callable[[str], None]) -> None:
    number = invoice.number or ""
    where = validation.control_character(number)
    if where:
        report(f"{label}: the invoice number contains a control character ({where}); remove it in the app")
    elif number != number.strip():
        report(f"{label}: the invoice number {number!r} starts or ends with spaces; remove them in the app")


_CUSTOMER_TEXT_FIELDS = (
    ("name", "name"),
    ("vat_number", "VAT number"),
    ("email", "e-mail address"),
    ("address_line1", "address"),
    ("postcode", "postcode"),
    ("city", "city"),
)


def customer_label(customer: Customer) -> str:
    """``customer Atelier Verhoeven BV (#12)``, control characters shown as escapes."""
    return f"customer {_printable(customer.name)} (#{customer.id})"


def customer_problems(customer: Customer) -> list[str]:
    """What is wrong with a customer in itself, as message tails (without the invoice's label)."""
    found: list[str] = []
    who = customer_label(customer)
    if not (customer.name or "").strip():
        found.append(f"customer #{customer.id} has no name; enter the customer's name in the app")
    for attribute, field_name in _CUSTOMER_TEXT_FIELDS:
        where = validation.control_character(getattr(customer, attribute))
        if where:
            found.append(
                f"the {field_name} of {who} contains a control character ({where}); remove it in the app"
            )
            return found  # the other checks would only repeat the garbled text
    country = (customer.country_code or "").strip()
    if country and country.upper() not in validation.COUNTRY_CODES:
        found.append(
            f"{who} has country code {country!r}, which is not an ISO 3166 country code; "
            "correct the customer's country in the app"
        )
    email = (customer.email or "").strip()
    if email and not validation.valid_email(email):
        found.append(
            f"{who[0].upper()}{who[1:]} has an invalid e-mail address {email!r}; correct it in the app"
        )
    vat_number = (customer.vat_number or "").strip()
    if vat_number:
        reason = validation.vat_number_problem(vat_number, country or None)
        if reason:
            land = validation.vat_country(vat_number, country or None)
            found.append(
                f"the VAT number {vat_number} of {who} is not a valid {land} VAT number: it {reason}; "
                "correct the customer's VAT number in the app (leave it empty for a private person)"
            )
    return found


def _check_customer(customer: Customer, label: str, report: Callable[[str], None]) -> None:
    for message in customer_problems(customer):
        report(f"{label}: {message}")


def _check_line(line: InvoiceLine, label: str, report: Callable[[str], None]) -> None:
    where = validation.control_character(line.description)
    if where:
        report(
            f"{label}: the description of line {line.position} contains a control character ({where}); "
            "remove it in the app"
        )
    elif not (line.description or "").strip():
        report(f"{label}: line {line.position} has no description; describe the line in the app")
    if not 0 <= line.vat_rate < 100:
        report(
            f"{label}: line {line.position} has VAT rate {rate_key(line.vat_rate)}%, which no country "
            "charges; correct the line's VAT rate in the app"
        )
    product = line.quantity * line.unit_price
    if abs(product - line.amount) > CENT:
        report(
            f"{label}: line {line.position} has amount {line.amount:.2f}, but quantity "
            f"{_plain(line.quantity)} × unit price {_plain(line.unit_price)} is {product:.2f}; "
            "correct the line in the app"
        )


# -- rules that need other invoices (the engine reads them from the store) ------------------------


BOOKED_STATES = ("booked", "written_back")


def is_booked(related: RelatedInvoice) -> bool:
    """The tool has this invoice: it carries a registration number, or the ledger says it was booked."""
    return bool(related.registration_number) or related.ledger_state in BOOKED_STATES


def duplicate_number_problem(invoice: Invoice, others: Sequence[RelatedInvoice]) -> Problem | None:
    """Two registered invoices of one integration with one number cannot both be booked: the tool is
    searched by our number (that is how a lost answer is settled), so it could not tell them apart."""
    others = [other for other in others if other.id != invoice.id]
    if not others:
        return None
    described = ", ".join(
        f"#{other.id} of {other.invoice_date.isoformat()} for {other.total_incl_vat:.2f} {other.currency}"
        + (f", booked as {other.registration_number}" if other.registration_number else "")
        for other in others
    )
    return Problem(
        ErrorClass.DATA,
        f"{_label(invoice)} has the same number as another invoice of this integration ({described}); "
        "the accounting tool is searched by invoice number and cannot tell them apart: "
        "give one of them a new number in the app",
    )


def credited_invoice_problem(
    credit_note: Invoice, credited: RelatedInvoice | None, integration: Integration
) -> Problem | None:
    """A credit note follows the invoice it credits: it is held back until that invoice is booked.

    A credit note that names no invoice (a rebate, a goodwill gesture) is booked on its own. An invoice
    from before the integration's cut-over date was booked outside the sync, so its credit notes flow.
    """
    if not _is_credit(credit_note) or credit_note.credited_invoice_id is None:
        return None
    label = _label(credit_note)
    if credited is None:
        return Problem(
            ErrorClass.DATA,
            f"{label} credits invoice #{credit_note.credited_invoice_id}, which does not exist; "
            "link the credited invoice in the app",
        )
    name = f"invoice {credited.number or f'#{credited.id}'}"
    if credited.integration_id != credit_note.integration_id:
        reason = "which belongs to another integration; link an invoice of this company in the app"
    elif credited.kind == InvoiceKind.CREDIT_NOTE:
        reason = "which is itself a credit note; link the invoice it corrects in the app"
    elif credited.status not in SYNCABLE_STATUSES:
        reason = "which is still a draft; register that invoice first"
    elif is_booked(credited) or before_cutover(credited.invoice_date, integration.sync_from):
        return None
    elif credited.ledger_state == "rejected":
        reason = (
            "which was refused"
            + (f" ({credited.ledger_error})" if credited.ledger_error else "")
            + f"; fix {name} first, then sync this credit note again"
        )
    else:
        reason = "which is not booked in the accounting tool yet; sync this credit note again once it is"
    return Problem(ErrorClass.DATA, f"{label} credits {name}, {reason}")


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _printable(text: str | None) -> str:
    return "".join(f"\\x{ord(ch):02x}" if validation.control_character(ch) else ch for ch in (text or ""))


def _is_credit(invoice: Invoice) -> bool:
    return invoice.kind == InvoiceKind.CREDIT_NOTE


def _label(invoice: Invoice) -> str:
    kind = "Credit note" if _is_credit(invoice) else "Invoice"
    return f"{kind} {invoice.number or f'#{invoice.id}'}"
