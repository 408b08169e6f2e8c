"""Mapping rules every connector applies the same way: amounts to the cent, and the integration's maps.

Each tool names things differently (an Exact VAT code GUID, a Yuki VAT type, a Twinfield VAT code), but
looking a line up in the integration's mapping, and booking exactly the app's VAT when the tool wants it
per line, do not depend on the tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import (
    ErrorClass,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    Problem,
    rate_key,
)

CENT = Decimal("0.01")


def money(amount: Decimal) -> str:
    """An amount as the tools take it: a decimal string with exactly two places, never a float."""
    return format(amount.quantize(CENT, rounding=ROUND_HALF_UP), "f")


def gl_account_for(line: InvoiceLine, settings: IntegrationSettings) -> str | None:
    """The tool's G/L account of a line: the integration's discount account for a discount when it has
    one, else the line's own account's mapping, else the integration's default.

    A discount is a line derived from an invoice-level discount, or a negative line of the app (the
    app's discount lines: the document as a whole, not a line, decides invoice or credit note). Without a
    discount account both lower the revenue account of their line.
    """
    if settings.discount_gl_account and (line.discount or line.amount < 0):
        return settings.discount_gl_account
    if line.gl_account and line.gl_account in settings.gl_accounts:
        return settings.gl_accounts[line.gl_account]
    return settings.default_gl_account


def vat_code_for(line: InvoiceLine, settings: IntegrationSettings) -> str | None:
    """The tool's VAT code (or type) for a line; ``None`` when it is not mapped.

    A line that carries the app's tax rate is mapped through that rate only: falling back to its
    percentage would book an intra-community supply on the code of an exempt one (both 0 %).
    """
    if line.tax_rate is not None:
        return settings.tax_rates.get(line.tax_rate)
    return settings.vat_codes.get(rate_key(line.vat_rate))


def document_label(invoice: Invoice) -> str:
    """How messages name an invoice: "Invoice 2026/0042" or "Credit note 2026/0043"."""
    return f"{'Credit note' if invoice.kind is InvoiceKind.CREDIT_NOTE else 'Invoice'} {invoice.number}"


def unmapped_problems(
    invoice: Invoice, settings: IntegrationSettings, *, vat_code: str, gl_account: str, where: str
) -> list[Problem]:
    """The lines' tax rates, VAT rates and GL accounts the integration's mapping does not cover (config).

    :param vat_code: what the tool calls a VAT code, with its article ("an Exact VAT code").
    :param gl_account: what a GL account maps to in the tool ("a Xero account code").
    :param where: the tenant, for the message ("Xero organisation Demo Ltd").
    """
    problems = []
    for tax_rate, rate in dict.fromkeys((line.tax_rate, rate_key(line.vat_rate)) for line in invoice.lines):
        if tax_rate is not None and tax_rate not in settings.tax_rates:
            message = (
                f"Tax rate {tax_rate!r} ({rate}%) is not mapped to {vat_code} for {where}; "
                "add it to the integration's tax rates"
            )
            problems.append(Problem(ErrorClass.CONFIG, message))
        elif tax_rate is None and rate not in settings.vat_codes:
            message = f"VAT rate {rate}% is not mapped to {vat_code} for {where}"
            problems.append(Problem(ErrorClass.CONFIG, message))
    unmapped = (line.gl_account for line in invoice.lines if gl_account_for(line, settings) is None)
    for account in dict.fromkeys(unmapped):  # neither mapped nor a default (nor a discount account)
        what = f"GL account {account}" if account else "Lines without a GL account"
        message = f"{what} is not mapped to {gl_account} for {where}, and no default is set"
        problems.append(Problem(ErrorClass.CONFIG, message))
    return problems


def description_problems(invoice: Invoice, *, limit: int, tool: str) -> list[Problem]:
    """Lines whose description is longer than the tool accepts (data: the app must shorten them)."""
    return [
        Problem(
            ErrorClass.DATA,
            f"{document_label(invoice)}: the description of line {line.position} is longer than the {limit} "
            f"characters {tool} accepts (it has {len(line.description)}); shorten it in the app",
        )
        for line in invoice.lines
        if len(line.description or "") > limit
    ]


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
    lines = bookable_lines(invoice)
    if not lines:
        return None
    rounded = sum((line_vat(line) for line in lines), Decimal("0"))
    if abs(invoice.total_vat - rounded) > CENT * len(lines):
        return (
            f"Invoice {invoice.number}: its VAT total {money(invoice.total_vat)} does not match "
            f"its lines' VAT {money(rounded)}"
        )
    return None
