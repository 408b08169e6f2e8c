"""Pure Xero mapping: the bodies Xero receives, what is refused before a call, and how texts are classed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from invoice_sync.connectors.xero import mapping
from invoice_sync.connectors.xero.errors import (
    DUPLICATE_NUMBER,
    NAME_TAKEN,
    has_errors,
    message_class,
    validation_messages,
)
from invoice_sync.connectors.xero.hook import idempotency_key
from invoice_sync.connectors.xero.settings import XeroSettings
from invoice_sync.domain.models import ErrorClass, InvoiceKind

TENANT = "7f2c3c1e-0000-4000-8000-000000000001"


@pytest.fixture
def settings(builders: Any) -> Any:
    return XeroSettings.parse(
        builders.settings(
            journal=None,
            credit_note_journal=None,
            vat_codes={"21": "OUTPUT", "9": "OUTPUT2", "0": "ZERORATEDOUTPUT"},
            gl_accounts={"7000": "200", "7010": "260"},
            default_gl_account=None,
            payment_condition=None,
            tenant_id=TENANT,
        )
    )


def test_an_invoice_is_an_authorised_accrec_with_our_number_and_pinned_tax(builders, settings):
    invoice = replace(
        builders.invoice(
            [
                builders.line("120.00", "21", quantity="3"),
                builders.line("45.50", "9", position=2, gl_account="7010"),
            ]
        ),
        due_date=date(2026, 4, 1),
    )
    body = mapping.document(invoice, settings, "contact-guid")
    assert body == {
        "Type": "ACCREC",
        "Contact": {"ContactID": "contact-guid"},
        "InvoiceNumber": "2026/0042",
        "Date": "2026-03-02",
        "DueDate": "2026-04-01",
        "Status": "AUTHORISED",
        "LineAmountTypes": "Exclusive",
        "CurrencyCode": "EUR",
        "LineItems": [
            {
                "Description": "Consultancy",
                "Quantity": 3.0,
                "UnitAmount": 40.0,
                "LineAmount": 120.0,
                "AccountCode": "200",
                "TaxType": "OUTPUT",
                "TaxAmount": 25.2,
            },
            {
                "Description": "Consultancy",
                "Quantity": 1.0,
                "UnitAmount": 45.5,
                "LineAmount": 45.5,
                "AccountCode": "260",
                "TaxType": "OUTPUT2",
                "TaxAmount": 4.1,
            },
        ],
    }


def test_a_credit_note_goes_with_its_own_number_field_and_positive_amounts(builders, settings):
    credit = replace(
        builders.invoice([builders.line("100.00")], number="CN-7", kind=InvoiceKind.CREDIT_NOTE),
        due_date=date(2026, 4, 1),
    )
    body = mapping.document(credit, settings, "c")
    assert body["Type"] == "ACCRECCREDIT"
    assert body["CreditNoteNumber"] == "CN-7"
    assert "InvoiceNumber" not in body and "DueDate" not in body
    assert body["LineItems"][0]["LineAmount"] == 100.0 and body["LineItems"][0]["TaxAmount"] == 21.0


def test_the_lines_tax_adds_up_to_the_apps_vat_total_to_the_cent(builders, settings):
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [
        builders.line("2.05", "21", position=9)
    ]
    lines += [builders.line("0.15", "9", position=10 + n, gl_account="7010") for n in range(3)]
    # Per line 0.22 x9 + 0.43 + 0.01 x3 = 2.44; the app rounds per rate: 2.42 + 0.04 = 2.46.
    invoice = builders.invoice(lines, total_vat="2.46")
    body = mapping.document(invoice, settings, "c")
    taxes = [Decimal(str(item["TaxAmount"])) for item in body["LineItems"]]
    amounts = [Decimal(str(item["LineAmount"])) for item in body["LineItems"]]
    assert sum(taxes) == invoice.total_vat
    assert sum(amounts) + sum(taxes) == invoice.total_incl_vat


def test_money_is_sent_as_the_decimal_text_never_a_float_artefact(builders, settings):
    invoice = builders.invoice([builders.line("0.10", "21"), builders.line("0.20", "21", position=2)])
    text = json.dumps(mapping.document(invoice, settings, "c"))
    assert '"LineAmount": 0.1' in text and '"LineAmount": 0.2' in text
    assert '"TaxAmount": 0.02' in text and '"TaxAmount": 0.04' in text
    assert "0.30000000000000004" not in text


def test_a_unit_price_xero_cannot_carry_goes_as_one_unit_at_the_line_amount(builders, settings):
    line = replace(builders.line("10.00", quantity="3"), unit_price=Decimal("3.3333"))
    assert mapping.quantity_and_price(line) == (Decimal(1), Decimal("10.00"))
    assert mapping.quantity_and_price(builders.line("7.50", quantity="2.5")) == (Decimal("2.5"), Decimal("3"))


def test_a_contact_carries_our_customer_id_as_contact_number(builders):
    body = mapping.contact(builders.customer(1042))
    assert body == {
        "Name": "Atelier Verhoeven BV",
        "ContactNumber": "1042",
        "EmailAddress": "boekhouding@verhoeven.example",
        "TaxNumber": "BE0123456749",
        "Addresses": [
            {
                "AddressType": "POBOX",
                "AddressLine1": "Kortrijksesteenweg 12",
                "City": "Gent",
                "PostalCode": "9000",
                "Country": "BE",
            }
        ],
    }
    bare = mapping.contact(builders.customer(7, email=None, vat_number=None, address_line1=None,
                                             postcode=None, city=None, country_code=None))  # fmt: skip
    assert bare == {"Name": "Atelier Verhoeven BV", "ContactNumber": "7"}


def test_a_valid_invoice_has_no_problems(builders, settings):
    assert mapping.validate(builders.invoice(), settings) == []


def test_missing_mappings_are_config_problems_naming_the_organisation(builders, settings):
    """A missing organisation is refused by the parse already (tests/connectors/test_settings.py)."""
    bare = replace(settings, vat_codes={}, gl_accounts={})
    problems = mapping.validate(builders.invoice([builders.line("10.00", "6")]), bare)
    assert [p.error_class for p in problems] == [ErrorClass.CONFIG] * 2
    assert [p.message for p in problems] == [
        f"VAT rate 6% is not mapped to a Xero tax rate (TaxType) for Xero organisation {TENANT}",
        f"GL account 7000 is not mapped to a Xero account code for Xero organisation {TENANT}, "
        "and no default is set",
    ]
    named = replace(bare, tenant="Demo Xero Ltd")
    assert "for Xero organisation Demo Xero Ltd" in mapping.validate(builders.invoice(), named)[0].message


def test_xeros_own_limits_are_refused_before_a_call(builders, settings):
    long_name = builders.customer(5, name="N" * 256)
    invoice = builders.invoice(
        [builders.line("10.005", description="x" * 4001)], number="9" * 256, customer=long_name
    )
    messages = [p.message for p in mapping.validate(invoice, settings)]
    assert all(p.error_class is ErrorClass.DATA for p in mapping.validate(invoice, settings))
    assert any("the number is longer than the 255 characters Xero keeps" in m for m in messages)
    assert any("the name of customer" in m and "255 characters" in m for m in messages)
    assert any("description of line 1 is longer than the 4000 characters" in m for m in messages)
    assert any("more than two decimals (10.005)" in m for m in messages)

    nameless = builders.invoice(customer=builders.customer(6, name="  "))
    assert [p.message for p in mapping.validate(nameless, settings)] == [
        "Invoice 2026/0042: customer #6 has no name, and Xero needs one for a contact"
    ]
    empty = builders.invoice([])
    assert [p.message for p in mapping.validate(empty, settings)] == [
        "Invoice 2026/0042 has no lines; Xero needs at least one line item"
    ]


def test_a_currency_the_organisation_does_not_take_is_refused_when_the_setting_lists_them(builders, settings):
    usd = replace(builders.invoice(), currency="USD")
    assert mapping.validate(usd, settings) == []  # not listed: Xero judges
    listed = replace(settings, currencies=("EUR",))
    (problem,) = mapping.validate(usd, listed)
    assert problem.error_class is ErrorClass.CONFIG
    assert "takes invoices in EUR only (setting currencies), not in USD" in problem.message
    (bad,) = mapping.validate(replace(builders.invoice(), currency="EURO"), settings)
    assert bad.message == "Invoice 2026/0042: 'EURO' is not a three-letter currency code"


def test_vat_that_per_line_rounding_cannot_explain_is_a_data_problem(builders, settings):
    (problem,) = mapping.validate(builders.invoice(total_vat="60.00"), settings)
    assert problem.error_class is ErrorClass.DATA
    assert "does not match its lines' VAT" in problem.message


def test_document_refuses_what_validation_reports(builders, settings):
    with pytest.raises(ValueError, match="not mapped"):
        mapping.document(builders.invoice([builders.line("10.00", "6")]), settings, "c")


# -- keys and texts ---------------------------------------------------------------------------------------


def test_the_idempotency_key_follows_the_content_and_the_organisation():
    body = {"Invoices": [{"InvoiceNumber": "1", "LineItems": [{"LineAmount": 10.0}]}]}
    key = idempotency_key(TENANT, "PUT", "Invoices", body)
    assert key == idempotency_key(TENANT, "PUT", "Invoices", json.loads(json.dumps(body)))
    assert len(key) <= 128 and key.startswith("invoice-sync-")
    changed = {"Invoices": [{"InvoiceNumber": "1", "LineItems": [{"LineAmount": 10.01}]}]}
    others = {
        idempotency_key(TENANT, "PUT", "Invoices", changed),
        idempotency_key("another-tenant", "PUT", "Invoices", body),
        idempotency_key(TENANT, "PUT", "CreditNotes", body),
        idempotency_key(TENANT, "POST", "Invoices", body),
    }
    assert key not in others and len(others) == 4


@pytest.mark.parametrize(
    ("message", "error_class"),
    [
        ("Account code '999' is not a valid code for this document.", ErrorClass.CONFIG),
        ("Account code '210' has been archived, or has been deleted. Each line item must reference "
         "a valid account.", ErrorClass.CONFIG),
        ("The TaxType code OUTPUT3 does not exist or cannot be used for this type of transaction.",
         ErrorClass.CONFIG),
        ("Organisation is not subscribed to currency USD", ErrorClass.CONFIG),
        ("The contact with ContactID 'x' could not be found.", ErrorClass.DATA),
        ("Email address must be valid.", ErrorClass.DATA),
        ("The document total must not be negative.", ErrorClass.DATA),
    ],
)  # fmt: skip
def test_refusals_are_classed_by_what_must_change(message, error_class):
    assert message_class(message) is error_class


def test_duplicate_numbers_and_taken_names_are_recognised():
    assert DUPLICATE_NUMBER.search("Invoice # must be unique.")
    assert DUPLICATE_NUMBER.search("Credit Note # must be unique.")
    assert not DUPLICATE_NUMBER.search("Account code '999' is not a valid code for this document.")
    assert NAME_TAKEN.search(
        "The contact name Acme is already assigned to another contact. "
        "The contact name must be unique across all active contacts."
    )


def test_an_answered_element_is_read_for_its_own_errors():
    refused = {"HasErrors": True, "ValidationErrors": [{"Message": "a"}, {"Message": "a"}, {"Message": "b"}]}
    assert has_errors(refused) and validation_messages(refused) == ["a", "b"]
    assert has_errors({"StatusAttributeString": "ERROR"})
    assert not has_errors({"StatusAttributeString": "OK", "HasErrors": False, "InvoiceID": "x"})


# -- discounts and VAT regimes --------------------------------------------------------------------------


def discounted(builders: Any, kind: InvoiceKind = InvoiceKind.INVOICE) -> Any:
    """200.00 at 21 % on GL 7000 and 100.00 at 9 % on GL 7010, less a 10 % invoice-level discount."""
    return builders.invoice(  # 270.00 + 45.90 (180.00 x 21 % + 90.00 x 9 %)
        [builders.line("200.00", "21"), builders.line("100.00", "9", position=2, gl_account="7010")],
        kind=kind,
        discount="10",
    )


def items(body: dict[str, Any]) -> list[tuple[float, str, str, float]]:
    """``(LineAmount, AccountCode, TaxType, TaxAmount)`` per line item."""
    return [(i["LineAmount"], i["AccountCode"], i["TaxType"], i["TaxAmount"]) for i in body["LineItems"]]


def test_a_negative_line_goes_as_a_negative_line_item(builders, settings):
    invoice = builders.invoice([builders.line("100.00"), builders.line("-10.00", position=2)])
    assert mapping.validate(invoice, settings) == []
    body = mapping.document(invoice, settings, "contact-guid")
    assert items(body) == [(100.0, "200", "OUTPUT", 21.0), (-10.0, "200", "OUTPUT", -2.1)]
    assert body["LineItems"][1]["UnitAmount"] == -10.0 and "DiscountRate" not in body["LineItems"][1]


@pytest.mark.parametrize("kind", [InvoiceKind.INVOICE, InvoiceKind.CREDIT_NOTE])
def test_an_invoice_level_discount_is_a_negative_line_per_account_and_tax_type(builders, settings, kind):
    """Also on a credit note, where Xero takes no ``DiscountRate``."""
    body = mapping.document(discounted(builders, kind), settings, "contact-guid")
    assert items(body) == [
        (200.0, "200", "OUTPUT", 42.0),
        (100.0, "260", "OUTPUT2", 9.0),
        (-20.0, "200", "OUTPUT", -4.2),
        (-10.0, "260", "OUTPUT2", -0.9),
    ]
    assert sum(Decimal(str(i["TaxAmount"])) for i in body["LineItems"]) == Decimal("45.90")


def test_an_invoice_level_discount_goes_on_the_discount_account_when_one_is_mapped(builders, settings):
    body = mapping.document(
        discounted(builders), replace(settings, discount_gl_account="270"), "contact-guid"
    )
    assert [(amount, account, tax) for amount, account, tax, _ in items(body)] == [
        (200.0, "200", "OUTPUT"),
        (100.0, "260", "OUTPUT2"),
        (-20.0, "270", "OUTPUT"),
        (-10.0, "270", "OUTPUT2"),
    ]


def test_two_zero_rate_lines_of_different_tax_rates_get_their_own_tax_types(builders, settings):
    regimes = replace(settings, tax_rates={"exempt": "EXEMPTOUTPUT", "intra_community": "ECZROUTPUT"})
    invoice = builders.invoice(
        [
            replace(builders.line("100.00", "0"), tax_rate="exempt"),
            replace(builders.line("50.00", "0", position=2), tax_rate="intra_community"),
        ]
    )
    body = mapping.document(invoice, regimes, "contact-guid")
    assert [tax for _, _, tax, _ in items(body)] == ["EXEMPTOUTPUT", "ECZROUTPUT"]
    unmapped = mapping.validate(invoice, replace(regimes, tax_rates={"exempt": "EXEMPTOUTPUT"}))
    assert [(p.error_class, "'intra_community'" in p.message) for p in unmapped] == [
        (ErrorClass.CONFIG, True)
    ]
