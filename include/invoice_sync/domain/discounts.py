"""Invoice-level discounts as the lines a tool books.

The app states a discount over the whole invoice as a percentage (Teamleader's ``discounts[]``), and its
totals are after it; no accounting tool has such a field on a sales entry, so the discount is booked as
negative lines. It must lower each VAT rate's base by its own share (VAT is charged on the discounted
amount, and each rate lands in its own box of the VAT return), and each revenue account by its share
unless the integration books discounts on an account of their own. Hence one discount line per group of
lines that share a tax rate, a VAT percentage and a GL account.

The app's total excluding VAT is the truth: the cents its own rounding leaves are handed to the largest
groups, so the booked lines add up to that total exactly. A total further off than a cent per group is
not rounding; :func:`invoice_sync.domain.rules.problems` reports it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from invoice_sync.domain.models import Invoice, InvoiceLine, rate_key

CENT = Decimal("0.01")


def bookable_lines(invoice: Invoice) -> tuple[InvoiceLine, ...]:
    """The invoice's lines, then one negative line per group for its invoice-level discount (if any)."""
    percentage = invoice.discount_percentage
    if not percentage or not invoice.lines:
        return invoice.lines
    groups: dict[tuple[str | None, str, str | None], list[InvoiceLine]] = {}
    for line in invoice.lines:
        groups.setdefault((line.tax_rate, rate_key(line.vat_rate), line.gl_account), []).append(line)
    bases = [sum((line.amount for line in lines), Decimal("0")) for lines in groups.values()]
    cuts = [(base * percentage / 100).quantize(CENT, rounding=ROUND_HALF_UP) for base in bases]
    _settle_cents(cuts, bases, sum(bases, Decimal("0")) - invoice.total_excl_vat)
    position = max(line.position for line in invoice.lines)
    derived = []
    for lines, cut in zip(groups.values(), cuts, strict=True):
        if not cut:
            continue
        position += 1
        first = lines[0]
        derived.append(
            InvoiceLine(
                position=position,
                description=f"Discount {format(percentage.normalize(), 'f')}%",
                quantity=Decimal("1"),
                unit_price=-cut,
                vat_rate=first.vat_rate,
                amount=-cut,
                gl_account=first.gl_account,
                tax_rate=first.tax_rate,
                discount=True,
            )
        )
    return invoice.lines + tuple(derived)


def _settle_cents(cuts: list[Decimal], bases: list[Decimal], stated: Decimal) -> None:
    """Move the groups' rounded cuts to the discount the app's totals state, a cent at a time.

    Only rounding is settled (at most a cent per group); anything larger is left for the rules to report.
    """
    remainder = stated.quantize(CENT) - sum(cuts, Decimal("0"))
    if not remainder or abs(remainder) > CENT * len(cuts):
        return
    order = sorted(range(len(cuts)), key=lambda i: (-abs(bases[i]), i))
    step = CENT if remainder > 0 else -CENT
    for turn in range(int(abs(remainder) / CENT)):
        cuts[order[turn % len(order)]] += step
