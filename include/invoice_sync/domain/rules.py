"""Tool-independent rules: what may be pushed at all, and what makes an invoice unbookable anywhere.

Tool-specific checks (is this VAT rate mapped for that tool?) live in each connector's ``validate``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from invoice_sync.domain.models import (
    ErrorClass,
    Integration,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Problem,
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
    """Problems that no accounting tool would accept, found without calling one."""
    label = _label(invoice)
    found: list[Problem] = []
    if not invoice.number:
        found.append(Problem(ErrorClass.DATA, f"{label} has no invoice number"))
    if invoice.customer is None:
        found.append(Problem(ErrorClass.DATA, f"{label} has no customer; link a customer in the app"))
    if not invoice.lines:
        found.append(Problem(ErrorClass.DATA, f"{label} has no lines"))
        return found
    line_sum = sum((line.amount for line in invoice.lines), Decimal("0"))
    if line_sum.quantize(CENT) != invoice.total_excl_vat.quantize(CENT):
        found.append(
            Problem(
                ErrorClass.DATA,
                f"{label}: the lines add up to {line_sum:.2f} {invoice.currency} but the total "
                f"excluding VAT is {invoice.total_excl_vat:.2f}",
            )
        )
    if (invoice.total_excl_vat + invoice.total_vat).quantize(CENT) != invoice.total_incl_vat.quantize(CENT):
        found.append(
            Problem(
                ErrorClass.DATA,
                f"{label}: total excluding VAT {invoice.total_excl_vat:.2f} plus VAT "
                f"{invoice.total_vat:.2f} is not the total {invoice.total_incl_vat:.2f}",
            )
        )
    if any(line.amount < 0 for line in invoice.lines) or invoice.total_incl_vat < 0:
        found.append(
            Problem(
                ErrorClass.DATA,
                f"{label} has negative amounts; "
                + (
                    "credit notes carry positive amounts in the app"
                    if _is_credit(invoice)
                    else "use a credit note"
                ),
            )
        )
    return found


def _is_credit(invoice: Invoice) -> bool:
    return invoice.kind == InvoiceKind.CREDIT_NOTE


def _label(invoice: Invoice) -> str:
    kind = "Credit note" if _is_credit(invoice) else "Invoice"
    return f"{kind} {invoice.number or f'#{invoice.id}'}"
