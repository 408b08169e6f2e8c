"""Invoice-level discounts become negative lines per tax rate, VAT rate and GL account, to the cent."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from invoice_sync.domain.discounts import bookable_lines
from invoice_sync.domain.models import Invoice, InvoiceKind, InvoiceLine, InvoiceStatus


def line(position: int, amount: str, vat: str, gl: str, tax_rate: str | None = None) -> InvoiceLine:
    return InvoiceLine(
        position=position,
        description=f"Line {position}",
        quantity=Decimal("1"),
        unit_price=Decimal(amount),
        vat_rate=Decimal(vat),
        amount=Decimal(amount),
        gl_account=gl,
        tax_rate=tax_rate,
    )


def invoice(lines: tuple[InvoiceLine, ...], discount: str | None, total_excl: str) -> Invoice:
    return Invoice(
        id=1,
        integration_id=1,
        kind=InvoiceKind.INVOICE,
        number="2026/0100",
        status=InvoiceStatus.REGISTERED,
        customer=None,
        invoice_date=date(2026, 3, 2),
        due_date=None,
        currency="EUR",
        total_excl_vat=Decimal(total_excl),
        total_vat=Decimal("0"),
        total_incl_vat=Decimal(total_excl),
        lines=lines,
        updated_at=datetime(2026, 3, 2, tzinfo=UTC),
        discount_percentage=Decimal(discount) if discount else None,
    )


def test_without_a_discount_the_lines_are_the_invoices_own():
    lines = (line(1, "100.00", "21", "7000"), line(2, "-10.00", "21", "7000"))
    assert bookable_lines(invoice(lines, None, "90.00")) == lines


def test_one_discount_line_per_tax_rate_vat_rate_and_account():
    lines = (
        line(1, "100.00", "21", "7000"),
        line(2, "50.00", "21", "7000"),
        line(3, "80.00", "6", "7000"),
        line(4, "40.00", "0", "7000", "intra_community"),
        line(5, "60.00", "0", "7000", "export"),
        line(6, "30.00", "21", "7100"),
    )
    booked = bookable_lines(invoice(lines, "10", "324.00"))
    derived = booked[len(lines) :]
    assert [(d.position, d.amount, d.vat_rate, d.tax_rate, d.gl_account) for d in derived] == [
        (7, Decimal("-15.00"), Decimal("21"), None, "7000"),
        (8, Decimal("-8.00"), Decimal("6"), None, "7000"),
        (9, Decimal("-4.00"), Decimal("0"), "intra_community", "7000"),
        (10, Decimal("-6.00"), Decimal("0"), "export", "7000"),
        (11, Decimal("-3.00"), Decimal("21"), None, "7100"),
    ]
    assert all(d.discount and d.description == "Discount 10%" for d in derived)
    assert all(d.quantity * d.unit_price == d.amount for d in derived)
    assert sum(item.amount for item in booked) == Decimal("324.00")


def test_the_apps_rounding_of_the_discount_is_kept_to_the_cent():
    # 2.5 % of 33.33 and of 33.35 round to 0.83 each (1.66), but the app's total says the discount is 1.67
    lines = (line(1, "33.35", "21", "7000"), line(2, "33.33", "6", "7000"))
    booked = bookable_lines(invoice(lines, "2.5", "65.01"))
    assert [item.amount for item in booked[2:]] == [Decimal("-0.84"), Decimal("-0.83")]
    assert sum(item.amount for item in booked) == Decimal("65.01")


def test_a_total_far_from_the_discount_is_left_for_the_rules_to_report():
    lines = (line(1, "100.00", "21", "7000"),)
    booked = bookable_lines(invoice(lines, "10", "80.00"))
    assert [item.amount for item in booked] == [Decimal("100.00"), Decimal("-10.00")]
