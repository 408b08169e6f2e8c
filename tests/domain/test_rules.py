"""The tool-independent rules: what may be pushed at all, and what no accounting tool would accept."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from invoice_sync.domain import rules
from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    ErrorClass,
    Integration,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
)
from invoice_sync.domain.rules import SkipReason

UPDATED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def line(amount: str, *, position: int = 1, vat_rate: str = "21") -> InvoiceLine:
    return InvoiceLine(
        position=position,
        description="Consultancy",
        quantity=Decimal("1"),
        unit_price=Decimal(amount),
        vat_rate=Decimal(vat_rate),
        amount=Decimal(amount),
        gl_account="7000",
    )


def invoice(*lines: InvoiceLine, **overrides: object) -> Invoice:
    """A valid registered invoice at 21 % whose totals follow from its lines unless overridden."""
    lines = lines or (line("100.00"), line("50.00", position=2))
    excl = sum((item.amount for item in lines), Decimal("0"))
    vat = (excl * Decimal("0.21")).quantize(Decimal("0.01"))
    base = Invoice(
        id=7,
        integration_id=1,
        kind=InvoiceKind.INVOICE,
        number="2026/0007",
        status=InvoiceStatus.REGISTERED,
        customer=Customer(id=1, kind=CustomerKind.COMPANY, name="Atelier Verhoeven BV"),
        invoice_date=date(2026, 3, 2),
        due_date=date(2026, 4, 1),
        currency="EUR",
        total_excl_vat=excl,
        total_vat=vat,
        total_incl_vat=excl + vat,
        lines=tuple(lines),
        updated_at=UPDATED,
    )
    return replace(base, **overrides)


def integration(sync_from: date | None = None) -> Integration:
    return Integration(
        id=1,
        name="Atelier Demo BV",
        tool="exact_online",
        conn_id="exact_demo",
        auto_sync=True,
        sync_from=sync_from,
        settings=IntegrationSettings(),
    )


# -- skip_reason ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [InvoiceStatus.REGISTERED, InvoiceStatus.PAID])
def test_registered_and_paid_unsynced_invoices_may_be_pushed(status):
    assert rules.skip_reason(invoice(status=status), integration()) is None


def test_a_draft_is_never_pushed_even_with_a_registration_number():
    assert rules.skip_reason(invoice(status=InvoiceStatus.DRAFT, number=None), integration()) == "draft"
    draft_with_number = invoice(status=InvoiceStatus.DRAFT, registration_number="26700001")
    assert rules.skip_reason(draft_with_number, integration()) == SkipReason.DRAFT


def test_an_invoice_with_a_registration_number_is_not_pushed_again():
    synced = invoice(registration_number="26700001", synced_at=UPDATED + timedelta(days=1))
    assert rules.skip_reason(synced, integration()) == SkipReason.ALREADY_SYNCED
    # booked by hand in the tool: a number without a sync time is still "already synced"
    assert rules.skip_reason(invoice(registration_number="1"), integration()) == SkipReason.ALREADY_SYNCED


def test_an_edit_after_sync_is_reported_not_pushed():
    edited = invoice(registration_number="26700001", synced_at=UPDATED - timedelta(seconds=1))
    assert rules.skip_reason(edited, integration()) == SkipReason.CHANGED_AFTER_SYNC
    same_instant = invoice(registration_number="26700001", synced_at=UPDATED)
    assert rules.skip_reason(same_instant, integration()) == SkipReason.ALREADY_SYNCED


def test_nothing_older_than_the_cut_over_date_is_pushed():
    cut_over = integration(sync_from=date(2026, 3, 2))
    assert rules.skip_reason(invoice(invoice_date=date(2026, 3, 1)), cut_over) == SkipReason.BEFORE_CUTOVER
    assert rules.skip_reason(invoice(invoice_date=date(2026, 3, 2)), cut_over) is None
    # a synced invoice before the cut-over is reported as synced, which is the more useful fact
    old_synced = invoice(invoice_date=date(2025, 1, 1), registration_number="9")
    assert rules.skip_reason(old_synced, cut_over) == SkipReason.ALREADY_SYNCED
    assert not rules.before_cutover(date(1990, 1, 1), None)


# -- problems ---------------------------------------------------------------------------------------


def test_a_valid_invoice_has_no_problems():
    assert rules.problems(invoice()) == []
    assert rules.problems(invoice(status=InvoiceStatus.PAID, kind=InvoiceKind.CREDIT_NOTE)) == []


def test_an_invoice_without_number_is_named_by_its_id():
    found = rules.problems(invoice(number=None))
    assert [(p.error_class, p.message) for p in found] == [
        (ErrorClass.DATA, "Invoice #7 has no invoice number")
    ]


def test_an_invoice_without_customer():
    (problem,) = rules.problems(invoice(customer=None))
    assert problem.error_class == ErrorClass.DATA
    assert "Invoice 2026/0007 has no customer" in problem.message


def test_an_invoice_without_lines_reports_only_that():
    empty = replace(invoice(), lines=())
    (problem,) = rules.problems(empty)
    assert problem.message == "Invoice 2026/0007 has no lines"


def test_lines_that_do_not_add_up_to_the_total_excluding_vat():
    broken = invoice(total_excl_vat=Decimal("160.00"), total_incl_vat=Decimal("191.50"))  # 160 + 31.50
    (problem,) = rules.problems(broken)
    assert problem.error_class == ErrorClass.DATA
    assert "the lines add up to 150.00 EUR but the total excluding VAT is 160.00" in problem.message


def test_totals_that_do_not_add_up():
    broken = invoice(total_incl_vat=Decimal("181.51"))  # 150.00 + 31.50 = 181.50
    (problem,) = rules.problems(broken)
    assert "total excluding VAT 150.00 plus VAT 31.50 is not the total 181.51" in problem.message


def test_sub_cent_differences_are_not_problems():
    fine = invoice(total_excl_vat=Decimal("150.004"), total_incl_vat=Decimal("181.5004"))
    assert rules.problems(fine) == []


def test_a_negative_line_on_a_positive_invoice_is_an_ordinary_discount():
    assert rules.problems(invoice(line("100.00"), line("-20.00", position=2))) == []
    credit = invoice(line("100.00"), line("-20.00", position=2), kind=InvoiceKind.CREDIT_NOTE)
    assert rules.problems(credit) == []


def test_only_a_negative_total_is_refused_on_an_invoice_and_on_a_credit_note():
    negative = invoice(line("100.00"), line("-120.00", position=2))
    (problem,) = rules.problems(negative)
    assert problem.message == (
        "Invoice 2026/0007 has a negative total; "
        "an invoice that gives money back must be a credit note in the app"
    )
    credit = invoice(line("-50.00"), kind=InvoiceKind.CREDIT_NOTE)
    messages = [p.message for p in rules.problems(credit)]
    assert messages == [
        "Credit note 2026/0007 has a negative total; credit notes carry positive amounts in the app"
    ]


def test_an_invoice_level_discount_is_checked_against_the_totals_after_it():
    # 150.00 less 10 % = 135.00, VAT 21 % of it 28.35
    discounted = invoice(
        discount_percentage=Decimal("10"),
        total_excl_vat=Decimal("135.00"),
        total_vat=Decimal("28.35"),
        total_incl_vat=Decimal("163.35"),
    )
    assert rules.problems(discounted) == []
    (problem,) = rules.problems(replace(discounted, discount_percentage=Decimal("5")))
    assert "the lines less its 5% discount add up to 142.50 EUR but the total excluding VAT is 135.00" in (
        problem.message
    )
    (problem,) = rules.problems(replace(discounted, discount_percentage=Decimal("120")))
    assert "has a discount of 120%, which is not a percentage below 100" in problem.message


def test_every_problem_is_reported_at_once():
    found = rules.problems(invoice(number=None, customer=None, total_incl_vat=Decimal("1")))
    assert len(found) == 3
    assert all(p.error_class == ErrorClass.DATA for p in found)
