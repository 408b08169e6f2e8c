"""Pure mapping rules of the Exact Online connector: codes, quoting, signs, VAT cents, validation."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from invoice_sync.connectors.exact_online import mapping
from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
from invoice_sync.domain.models import ErrorClass, InvoiceKind


def exact_settings(builders: Any, **overrides: Any) -> ExactOnlineSettings:
    """The builders' settings (of division 123456) as Exact reads them; a missing division is refused by
    the parse itself (tests/connectors/test_settings.py), so validation never sees one."""
    return ExactOnlineSettings.parse(builders.settings(**overrides))


@pytest.mark.parametrize(
    ("customer_id", "expected"),
    [(1042, "              1042"), ("7", " " * 17 + "7"), (123456789012345678, "123456789012345678")],
)
def test_account_code_is_right_aligned_in_18_chars(customer_id, expected):
    assert mapping.account_code(customer_id) == expected
    assert len(mapping.account_code(customer_id)) == 18


def test_account_code_refuses_ids_that_do_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        mapping.account_code(10**18)


def test_quote_doubles_single_quotes():
    assert mapping.quote("O'Brien's") == "'O''Brien''s'"


def test_any_of_builds_one_parenthesised_or_filter():
    assert mapping.any_of("YourRef", ["2026/1", "it's"]) == "(YourRef eq '2026/1' or YourRef eq 'it''s')"
    with pytest.raises(ValueError):
        mapping.any_of("YourRef", [])


def test_batches_cut_at_forty():
    refs = [str(n) for n in range(95)]
    assert [len(batch) for batch in mapping.batches(refs)] == [40, 40, 15]


def test_account_payload_leaves_out_empty_fields(builders):
    customer = builders.customer(1042, email=None, vat_number="")
    payload = mapping.account_payload(customer)
    assert payload == {
        "Code": "              1042",
        "Name": "Atelier Verhoeven BV",
        "Status": "C",
        "AddressLine1": "Kortrijksesteenweg 12",
        "Postcode": "9000",
        "City": "Gent",
        "Country": "BE",
    }


def test_sales_entry_payload_for_an_invoice(builders):
    invoice = builders.invoice([builders.line("250.00", "21", gl_account="7010", quantity="2")])
    payload = mapping.sales_entry_payload(invoice, exact_settings(builders), "cust-guid")
    assert payload == {
        "Journal": "70",
        "Customer": "cust-guid",
        "EntryDate": "2026-03-02T00:00:00Z",
        "YourRef": "2026/0042",
        "Description": "Invoice 2026/0042",
        "Currency": "EUR",
        "PaymentCondition": "30",
        "SalesEntryLines": [
            {
                "GLAccount": "gl-7010-guid",
                "AmountFC": "250.00",
                "VATCode": "4",
                "VATAmountFC": "52.50",
                "Description": "Consultancy",
                "Quantity": "2",
            }
        ],
    }


def test_credit_note_is_booked_negative_in_its_own_journal(builders):
    invoice = builders.invoice(
        [builders.line("100.00", "21"), builders.line("40.00", "6", position=2)],
        kind=InvoiceKind.CREDIT_NOTE,
        number="CN-2026/0007",
    )
    payload = mapping.sales_entry_payload(invoice, exact_settings(builders), "cust-guid")
    assert payload["Journal"] == "71"
    assert payload["Description"] == "Credit note CN-2026/0007"
    lines = payload["SalesEntryLines"]
    assert [line["AmountFC"] for line in lines] == ["-100.00", "-40.00"]
    assert [line["VATAmountFC"] for line in lines] == ["-21.00", "-2.40"]


def test_credit_note_falls_back_to_the_sales_journal(builders):
    settings = exact_settings(builders, credit_note_journal=None)
    invoice = builders.invoice(kind=InvoiceKind.CREDIT_NOTE)
    assert mapping.sales_entry_payload(invoice, settings, "g")["Journal"] == "70"
    assert mapping.journals(settings) == ["70"]


def test_unmapped_gl_account_uses_the_default(builders):
    settings = exact_settings(builders, default_gl_account="default-guid")
    invoice = builders.invoice(
        [builders.line("10.00", gl_account="9999"), builders.line("5.00", gl_account=None)]
    )
    lines = mapping.sales_entry_payload(invoice, settings, "g")["SalesEntryLines"]
    assert [line["GLAccount"] for line in lines] == ["default-guid", "default-guid"]


def test_payment_condition_is_left_to_exact_when_not_set(builders):
    payload = mapping.sales_entry_payload(
        builders.invoice(), exact_settings(builders, payment_condition=None), "g"
    )
    assert "PaymentCondition" not in payload


class TestVatCents:
    """The lines' VAT must add up to the invoice's VAT total exactly (design invariant 8)."""

    def test_half_up_per_line(self, builders):
        lines = [builders.line("0.10", "25"), builders.line("0.30", "25", position=2)]  # 0.025, 0.075
        assert mapping.line_vat_amounts(lines, Decimal("0.11")) == [Decimal("0.03"), Decimal("0.08")]

    def test_remainder_goes_to_the_largest_line(self, builders):
        # Per line: 9 x 0.2205 -> 0.22 and 0.4305 -> 0.43, together 2.41; the app's total is
        # 11.50 x 21% = 2.415 -> 2.42. The missing cent lands on the 2.05 line.
        lines = [builders.line("1.05", "21", position=n) for n in range(9)]
        lines.append(builders.line("2.05", "21", position=9))
        amounts = mapping.line_vat_amounts(lines, Decimal("2.42"))
        assert amounts == [Decimal("0.22")] * 9 + [Decimal("0.44")]

    def test_largest_line_by_magnitude_takes_a_negative_remainder(self, builders):
        lines = [builders.line("-200.00", "21"), builders.line("10.03", "21", position=2)]  # -42.00, 2.11
        assert mapping.line_vat_amounts(lines, Decimal("-39.90")) == [Decimal("-42.01"), Decimal("2.11")]

    def test_remainder_never_dropped_on_credit_notes(self, builders):
        lines = [builders.line("0.05", "21"), builders.line("0.05", "21", position=2)]  # 0.0105 -> 0.01 each
        invoice = builders.invoice(lines, kind=InvoiceKind.CREDIT_NOTE, total_vat="0.03")
        payload = mapping.sales_entry_payload(invoice, exact_settings(builders), "g")
        vat = [Decimal(line["VATAmountFC"]) for line in payload["SalesEntryLines"]]
        assert sum(vat) == Decimal("-0.03")

    def test_amounts_are_two_decimal_strings(self, builders):
        invoice = builders.invoice([builders.line("12.5", "6")])
        line = mapping.sales_entry_payload(invoice, exact_settings(builders), "g")["SalesEntryLines"][0]
        assert (line["AmountFC"], line["VATAmountFC"]) == ("12.50", "0.75")


class TestValidate:
    def test_valid_invoice_has_no_problems(self, builders):
        assert mapping.validate(builders.invoice(), exact_settings(builders)) == []

    def test_missing_journal_is_a_config_problem(self, builders):
        problems = mapping.validate(builders.invoice(), exact_settings(builders, journal=None))
        assert [(p.error_class, p.message) for p in problems] == [
            (ErrorClass.CONFIG, "No sales journal is set for Exact division 123456")
        ]

    def test_unmapped_vat_rate_names_rate_and_division(self, builders):
        invoice = builders.invoice([builders.line("100.00", "9"), builders.line("1.00", "9.00", position=2)])
        problems = mapping.validate(invoice, exact_settings(builders))
        assert [p.message for p in problems] == [
            "VAT rate 9% is not mapped to an Exact VAT code for Exact division 123456"
        ]
        assert problems[0].error_class is ErrorClass.CONFIG

    def test_unresolvable_gl_account(self, builders):
        invoice = builders.invoice([builders.line("100.00", gl_account="7999")])
        problems = mapping.validate(invoice, exact_settings(builders))
        assert [p.error_class for p in problems] == [ErrorClass.CONFIG]
        assert "GL account 7999" in problems[0].message

    def test_reference_must_fit_your_ref(self, builders):
        problems = mapping.validate(builders.invoice(number="X" * 31), exact_settings(builders))
        assert [p.error_class for p in problems] == [ErrorClass.DATA]

    def test_vat_total_far_from_the_lines_is_a_data_problem(self, builders):
        problems = mapping.validate(builders.invoice(total_vat="60.00"), exact_settings(builders))
        assert [p.error_class for p in problems] == [ErrorClass.DATA]
        assert "VAT total 60.00" in problems[0].message

    def test_payload_refuses_an_invalid_invoice(self, builders):
        with pytest.raises(ValueError, match="VAT rate 9%"):
            mapping.sales_entry_payload(
                builders.invoice([builders.line("1.00", "9")]),
                exact_settings(builders),
                "g",
            )


# -- due dates, discounts and VAT regimes (issue 12) ----------------------------------------------------


def test_the_apps_due_date_is_sent(builders):
    invoice = replace(builders.invoice(), due_date=date(2026, 4, 17))
    assert (
        mapping.sales_entry_payload(invoice, exact_settings(builders), "g")["DueDate"]
        == "2026-04-17T00:00:00Z"
    )
    assert "DueDate" not in mapping.sales_entry_payload(builders.invoice(), exact_settings(builders), "g")


def test_a_negative_line_on_an_invoice_is_booked_as_a_negative_line(builders):
    invoice = builders.invoice(
        [builders.line("200.00", "21"), builders.line("-20.00", "21", position=2, description="Loyalty")]
    )
    payload = mapping.sales_entry_payload(invoice, exact_settings(builders), "g")
    lines = payload["SalesEntryLines"]
    assert [(line["AmountFC"], line["VATAmountFC"]) for line in lines] == [
        ("200.00", "42.00"),
        ("-20.00", "-4.20"),
    ]
    assert payload["Journal"] == "70" and payload["Description"] == "Invoice 2026/0042"


def _discounted(builders):
    """200.00 at 21 % on 7000 and 100.00 at 6 % on 7010, 10 % off the whole invoice: 270.00 + 43.20."""
    return builders.invoice(
        [builders.line("200.00", "21"), builders.line("100.00", "6", position=2, gl_account="7010")],
        discount="10",
    )


@pytest.mark.parametrize(
    ("discount_gl_account", "expected_accounts"),
    [(None, ["gl-7000-guid", "gl-7010-guid"]), ("gl-discount-guid", ["gl-discount-guid"] * 2)],
)
def test_an_invoice_level_discount_is_one_negative_line_per_vat_code(
    builders, discount_gl_account, expected_accounts
):
    settings = exact_settings(builders, discount_gl_account=discount_gl_account)
    lines = mapping.sales_entry_payload(_discounted(builders), settings, "g")["SalesEntryLines"]
    discount_lines = lines[2:]
    assert [(line["AmountFC"], line["VATCode"]) for line in discount_lines] == [
        ("-20.00", "4"),
        ("-10.00", "1"),
    ]
    assert [line["GLAccount"] for line in discount_lines] == expected_accounts
    assert [line["VATAmountFC"] for line in discount_lines] == ["-4.20", "-0.60"]
    assert sum(Decimal(line["AmountFC"]) for line in lines) == Decimal("270.00")  # to the cent
    assert sum(Decimal(line["VATAmountFC"]) for line in lines) == Decimal("43.20")


def test_two_zero_rated_lines_of_different_regimes_get_their_own_vat_codes(builders):
    settings = exact_settings(builders, tax_rates={"intra_community": "IC", "export": "EX"})
    invoice = builders.invoice(
        [
            replace(builders.line("50.00", "0"), tax_rate="intra_community"),
            replace(builders.line("30.00", "0", position=2), tax_rate="export"),
        ]
    )
    lines = mapping.sales_entry_payload(invoice, settings, "g")["SalesEntryLines"]
    assert [(line["VATCode"], line["AmountFC"], line["VATAmountFC"]) for line in lines] == [
        ("IC", "50.00", "0.00"),
        ("EX", "30.00", "0.00"),
    ]


def test_an_unmapped_tax_rate_is_a_config_problem_naming_it(builders):
    invoice = builders.invoice([replace(builders.line("50.00", "0"), tax_rate="exempt")])
    problems = mapping.validate(invoice, exact_settings(builders, tax_rates={"export": "EX"}))
    assert [(p.error_class, "'exempt'" in p.message) for p in problems] == [(ErrorClass.CONFIG, True)]
