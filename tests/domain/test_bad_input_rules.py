"""The rules for bad input: one test per kind that needs only the invoice, plus those that need others."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from test_rules import integration, invoice, line

from invoice_sync.domain import rules, validation
from invoice_sync.domain.hints import fix_hint
from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    ErrorClass,
    InvoiceKind,
    InvoiceStatus,
    RelatedInvoice,
)

CUSTOMER = Customer(id=4, kind=CustomerKind.COMPANY, name="Atelier Verhoeven BV", country_code="BE")


def messages(found) -> list[str]:
    assert all(p.error_class == ErrorClass.DATA for p in found)
    return [p.message for p in found]


def with_customer(**changes: object):
    return invoice(customer=replace(CUSTOMER, **changes))


@pytest.mark.parametrize(
    "vat_number, country",
    [("BE0123456749", "BE"), ("BE 0123.456.749", "BE"), ("NL004495445B01", "NL"), ("DE136695976", "DE"),
     ("EL094259216", "GR"), ("CHE-116.281.710 MWST", "CH"), ("", "BE"), (None, "BE")],
)  # fmt: skip
def test_valid_or_empty_vat_numbers_pass(vat_number, country):
    assert rules.problems(with_customer(vat_number=vat_number, country_code=country)) == []


@pytest.mark.parametrize(
    "vat_number, fragment",
    [
        ("BE0123456748", "is not a valid BE VAT number: it has wrong check digits"),
        ("BE12345", "is not a valid BE VAT number: it has the wrong number of characters"),
        ("NL123456789B01", "is not a valid NL VAT number"),
        ("FR1234", "is not a valid FR VAT number"),
        ("0123456748", "is not a valid BE VAT number"),  # no prefix: the customer's country decides
    ],
)
def test_vat_numbers_that_fail_their_countrys_check(vat_number, fragment):
    (message,) = messages(rules.problems(with_customer(vat_number=vat_number)))
    assert fragment in message
    assert f"the VAT number {vat_number} of customer Atelier Verhoeven BV (#4)" in message
    assert "Correct the customer's VAT number" in fix_hint("data", message)


def test_customer_fields():
    assert "customer #4 has no name" in messages(rules.problems(with_customer(name="  ")))[0]
    (bell,) = messages(rules.problems(with_customer(name="Bell\x07 BV")))
    assert (
        "the name of customer Bell\\x07 BV (#4) contains a control character (U+0007 at position 5)" in bell
    )
    (city,) = messages(rules.problems(with_customer(city="Gent\x00")))
    assert "the city of customer" in city and "U+0000" in city
    assert rules.problems(with_customer(name='Tab\tand\nnewline & <Sons> "Ltd" 😀')) == []
    (country,) = messages(rules.problems(with_customer(country_code="XX")))
    assert "has country code 'XX', which is not an ISO 3166 country code" in country
    (email,) = messages(rules.problems(with_customer(email="a@@b")))
    assert "Customer Atelier Verhoeven BV (#4) has an invalid e-mail address 'a@@b'" in email
    assert rules.problems(with_customer(email="boekhouding@verhoeven.example")) == []


def test_invoice_fields():
    (currency,) = messages(rules.problems(invoice(currency="EURO")))
    assert "currency 'EURO' is not an ISO 4217 currency code" in currency
    (due,) = messages(rules.problems(invoice(due_date=date(2026, 3, 1))))
    assert "the due date 2026-03-01 is before the invoice date 2026-03-02" in due
    (spaces,) = messages(rules.problems(invoice(number=" 2026/0007")))
    assert "starts or ends with spaces" in spaces
    (control,) = messages(rules.problems(invoice(number="2026\x1b0007")))
    assert "the invoice number contains a control character (U+001B" in control


def test_line_fields():
    blank = replace(line("100.00"), description=" \t")
    assert "line 1 has no description" in messages(rules.problems(invoice(blank)))[0]
    product = replace(line("100.00"), quantity=Decimal("3"))
    (message,) = messages(rules.problems(invoice(product)))
    assert "line 1 has amount 100.00, but quantity 3 × unit price 100 is 300.00" in message
    rounding = replace(line("33.33"), quantity=Decimal("3"), unit_price=Decimal("11.111"))
    assert rules.problems(invoice(rounding)) == []  # within a cent
    (rate,) = messages(rules.problems(invoice(line("10.00", vat_rate="-6"))))
    assert "line 1 has VAT rate -6%, which no country charges" in rate


def test_an_invoice_of_only_zero_amounts_books_nothing():
    (message,) = messages(rules.problems(invoice(line("0.00"))))
    assert "amounts to 0.00 EUR: there is nothing to book" in message


def related(**changes: object) -> RelatedInvoice:
    base = RelatedInvoice(
        id=3, integration_id=1, kind=InvoiceKind.INVOICE, number="2026/0003",
        status=InvoiceStatus.REGISTERED, invoice_date=date(2026, 3, 1), total_incl_vat=Decimal("121.00"),
        currency="EUR",
    )  # fmt: skip
    return replace(base, **changes)


def test_duplicate_numbers_name_the_other_invoice():
    me = invoice()
    assert rules.duplicate_number_problem(me, [related(id=me.id)]) is None
    problem = rules.duplicate_number_problem(me, [related(id=me.id), related(registration_number="9")])
    assert problem is not None and problem.error_class == ErrorClass.DATA
    assert "has the same number as another invoice of this integration (#3 of 2026-03-01" in problem.message
    assert "booked as 9" in problem.message


@pytest.mark.parametrize(
    "credited, fragment",
    [
        (related(), "which is not booked in the accounting tool yet"),
        (related(ledger_state="rejected", ledger_error="Periode is afgesloten: 2026-01"),
         "which was refused (Periode is afgesloten: 2026-01); fix invoice 2026/0003 first"),
        (related(status=InvoiceStatus.DRAFT), "which is still a draft"),
        (related(integration_id=2), "which belongs to another integration"),
        (related(kind=InvoiceKind.CREDIT_NOTE), "which is itself a credit note"),
        (None, "credits invoice #3, which does not exist"),
    ],
)  # fmt: skip
def test_a_credit_note_waits_for_the_invoice_it_credits(credited, fragment):
    credit = invoice(kind=InvoiceKind.CREDIT_NOTE, credited_invoice_id=3)
    problem = rules.credited_invoice_problem(credit, credited, integration())
    assert problem is not None and problem.error_class == ErrorClass.DATA
    assert problem.message.startswith("Credit note 2026/0007 credits invoice")
    assert fragment in problem.message


@pytest.mark.parametrize(
    "credited",
    [related(registration_number="26700001"), related(ledger_state="booked"),
     related(ledger_state="written_back"), related(invoice_date=date(2025, 12, 1))],
)  # fmt: skip
def test_a_credit_note_of_a_booked_invoice_flows(credited):
    credit = invoice(kind=InvoiceKind.CREDIT_NOTE, credited_invoice_id=3)
    assert rules.credited_invoice_problem(credit, credited, integration(date(2026, 1, 1))) is None
    # a credit note that credits no invoice in particular (a rebate) needs nothing
    assert rules.credited_invoice_problem(invoice(kind=InvoiceKind.CREDIT_NOTE), None, integration()) is None


def test_iso_lists():
    assert {"BE", "NL", "DE", "GB", "US", "XK"} <= validation.COUNTRY_CODES
    assert not {"XX", "EU", "UK", "ZZ"} & validation.COUNTRY_CODES
    assert {"EUR", "USD", "GBP", "CHF"} <= validation.CURRENCY_CODES
    assert not {"ZZZ", "EURO", "XXX"} & validation.CURRENCY_CODES
