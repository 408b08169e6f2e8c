"""Mapping rules every connector applies the same way: amounts to the cent, and the integration's maps.

Each tool names things differently (an Exact VAT code GUID, a Yuki VAT type, a Twinfield VAT code), but
looking a line up in the integration's mapping, and booking exactly the app's VAT when the tool wants it
per line, do not depend on the tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from invoice_sync.domain.models import IntegrationSettings, Invoice, InvoiceLine, rate_key

CENT = Decimal("0.01")


def money(amount: Decimal) -> str:
    """An amount as the tools take it: a decimal string with exactly two places, never a float."""
    return format(amount.quantize(CENT, rounding=ROUND_HALF_UP), "f")


def gl_account_for(line: InvoiceLine, settings: IntegrationSettings) -> str | None:
    """The tool's G/L account of a line: its own account's mapping, else the integration's default."""
    if line.gl_account and line.gl_account in settings.gl_accounts:
        return settings.gl_accounts[line.gl_account]
    return settings.default_gl_account


def vat_code_for(line: InvoiceLine, settings: IntegrationSettings) -> str | None:
    """The tool's VAT code (or type) mapped for the line's VAT rate; ``None`` when it is not mapped."""
    return settings.vat_codes.get(rate_key(line.vat_rate))


def line_vat(line: InvoiceLine) -> Decimal:
    """A line's VAT on its own, rounded half up to the cent."""
    return (line.amount * line.vat_rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def line_vat_amounts(lines: Sequence[InvoiceLine], total_vat: Decimal) -> list[Decimal]:
    """Per-line VAT that adds up to ``total_vat`` exactly.

    Each line's VAT is rounded half up; the cents the app's rounding of the total leaves over (it rounds
    per rate, not per line) are handed out one at a time to the lines with the largest amounts among
    those that carry VAT, where a cent changes the effective rate least. Nothing is dropped: the tool
    must book what the invoice says, to the cent.
    """
    amounts = [line_vat(line) for line in lines]
    if not amounts:
        return amounts
    remainder = total_vat.quantize(CENT, rounding=ROUND_HALF_UP) - sum(amounts, Decimal("0"))
    if not remainder:
        return amounts
    taxed = [i for i, line in enumerate(lines) if line.vat_rate] or list(range(len(lines)))
    order = sorted(taxed, key=lambda i: (-abs(lines[i].amount), i))
    step = CENT if remainder > 0 else -CENT
    for turn in range(int(abs(remainder) / CENT)):
        amounts[order[turn % len(order)]] += step
    return amounts


def vat_rounding_problem(invoice: Invoice) -> str | None:
    """Why the invoice's VAT total cannot be booked per line, or None.

    The total may differ from the sum of the rounded line VAT by at most a cent a line (what
    :func:`line_vat_amounts` spreads); more is a broken invoice, not rounding.
    """
    if not invoice.lines:
        return None
    rounded = sum((line_vat(line) for line in invoice.lines), Decimal("0"))
    if abs(invoice.total_vat - rounded) > CENT * len(invoice.lines):
        return (
            f"Invoice {invoice.number}: its VAT total {money(invoice.total_vat)} does not match "
            f"its lines' VAT {money(rounded)}"
        )
    return None
