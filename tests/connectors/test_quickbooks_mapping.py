"""The pure QuickBooks Online mapping and error rules: entities, names, queries, validation, fault classes."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from invoice_sync.connectors.quickbooks import mapping
from invoice_sync.connectors.quickbooks.errors import (
    Fault,
    error_class,
    fault_error,
    faults_of,
    message,
)
from invoice_sync.connectors.quickbooks.hook import MINOR_VERSION, request_id
from invoice_sync.connectors.quickbooks.settings import QuickBooksSettings
from invoice_sync.domain.errors import AuthError, ConfigError, DataError, QuotaExceededError, TransientError
from invoice_sync.domain.models import CustomerKind, ErrorClass, InvoiceKind

REALM = "9341452710923456"


@pytest.fixture
def settings(builders: Any) -> Any:
    return QuickBooksSettings.parse(
        builders.settings(
            vat_codes={"21": "5", "9": "6", "0": "7"},
            gl_accounts={"7000": "1", "7010": "2"},
            default_gl_account=None,
            realm_id=REALM,
        )
    )


def test_an_invoice_goes_tax_exclusive_with_the_apps_vat_total_and_items_from_the_gl_mapping(
    builders, settings
):
    invoice = builders.invoice(
        [
            builders.line("100.00", "21", quantity="4"),
            builders.line("10.00", "9", position=2, gl_account="7010", quantity="3"),
        ],
        total_vat="21.91",
    )
    payload = mapping.transaction_payload(invoice, settings, "58")
    assert mapping.entity_of(invoice) == "Invoice"
    assert payload["DocNumber"] == "2026/0042"
    assert payload["CustomerRef"] == {"value": "58"}
    assert payload["GlobalTaxCalculation"] == "TaxExcluded"
    assert payload["CurrencyRef"] == {"value": "EUR"}
    assert payload["TxnTaxDetail"] == {"TotalTax": 21.91}
    first, second = payload["Line"]
    assert first["Amount"] == 100.0
    assert first["SalesItemLineDetail"] == {
        "ItemRef": {"value": "1"},
        "Qty": 4.0,
        "UnitPrice": 25.0,
        "TaxCodeRef": {"value": "5"},
    }
    # 10.00 / 3 has no exact unit price: one unit at the line amount, so Amount = Qty x UnitPrice
    assert (second["SalesItemLineDetail"]["Qty"], second["SalesItemLineDetail"]["UnitPrice"]) == (1.0, 10.0)
    assert second["SalesItemLineDetail"]["ItemRef"] == {"value": "2"}
    # amounts are JSON numbers whose text is the two-decimal amount, never a float artefact
    assert '"TotalTax": 21.91' in json.dumps(payload)


def test_a_credit_note_is_a_credit_memo_with_positive_amounts(builders, settings):
    credit = builders.invoice([builders.line("100.00", "21")], kind=InvoiceKind.CREDIT_NOTE)
    payload = mapping.transaction_payload(credit, settings, "58")
    assert mapping.entity_of(credit) == "CreditMemo"
    assert payload["Line"][0]["Amount"] == 100.0
    assert payload["TxnTaxDetail"] == {"TotalTax": 21.0}


def test_the_default_item_serves_unmapped_gl_accounts(builders, settings):
    invoice = builders.invoice([builders.line("10.00", gl_account="7999")])
    assert mapping.validate(invoice, replace(settings, default_gl_account="2")) == []
    payload = mapping.transaction_payload(invoice, replace(settings, default_gl_account="2"), "58")
    assert payload["Line"][0]["SalesItemLineDetail"]["ItemRef"] == {"value": "2"}


def test_display_names_carry_our_customer_id_and_fit_quickbooks(builders):
    assert mapping.display_name(builders.customer(1042, name="  Atelier   Verhoeven BV ")) == (
        "Atelier Verhoeven BV (1042)"
    )
    long = mapping.display_name(builders.customer(7, name="x" * 600))
    assert len(long) == mapping.DISPLAY_NAME_MAX and long.endswith(" (7)")


def test_a_customer_payload_leaves_empty_fields_out(builders):
    company = builders.customer(5, name="Smith & Sons")
    assert mapping.customer_payload(company) == {
        "DisplayName": "Smith & Sons (5)",
        "CompanyName": "Smith & Sons",
        "PrimaryEmailAddr": {"Address": "boekhouding@verhoeven.example"},
        "PrimaryTaxIdentifier": "BE0123456749",
        "BillAddr": {"Line1": "Kortrijksesteenweg 12", "City": "Gent", "PostalCode": "9000", "Country": "BE"},
    }
    person = builders.customer(
        6, name="Jan Peeters", kind=CustomerKind.CONTACT, email=None, vat_number=None, address_line1=None,
        postcode=None, city=None, country_code=None,
    )  # fmt: skip
    assert mapping.customer_payload(person) == {"DisplayName": "Jan Peeters (6)"}


def test_queries_escape_quotes_and_backslashes():
    query = mapping.any_of_query("Customer", "DisplayName", ["O'Brien (1)", "A\\B (2)"])
    assert query == (
        "select * from Customer where DisplayName in ('O\\'Brien (1)', 'A\\\\B (2)') maxresults 1000"
    )
    assert mapping.chunks(["a", "b", "a", "c"], size=2) == [["a", "b"], ["c"]]


def test_validate_reports_what_quickbooks_would_refuse(builders, settings):
    invoice = builders.invoice(
        [
            builders.line("10.00", "6"),
            builders.line("5.005", "21", position=2, gl_account="7999", description="d" * 4001),
        ],
        number="2026-INV-000000000042",  # 21 characters: the longest QuickBooks takes
        total_vat="1.65",
    )
    usd = replace(invoice, currency="USD", number="2026-INV-0000000000042")
    problems = mapping.validate(usd, settings)
    where, label = f"QuickBooks company {REALM}", "Invoice 2026-INV-0000000000042"
    assert [(p.error_class, p.message) for p in problems] == [
        (ErrorClass.CONFIG, f"VAT rate 6% is not mapped to a QuickBooks tax code for {where}"),
        (
            ErrorClass.CONFIG,
            "GL account 7999 is not mapped to a QuickBooks item (its income account books the line) for "
            f"{where}, and no default is set",
        ),
        (
            ErrorClass.CONFIG,
            f"{label} is in USD, but {where} takes EUR only; switch on multicurrency in QuickBooks and add "
            "the currency to the integration's setting currencies",
        ),
        (
            ErrorClass.DATA,
            f"{label}: the number is longer than the 21 characters of QuickBooks' DocNumber (it has 22)",
        ),
        (
            ErrorClass.DATA,
            f"{label}: the description of line 2 is longer than the 4000 characters QuickBooks accepts "
            "(it has 4001); shorten it in the app",
        ),
        (ErrorClass.DATA, f"{label}: line 2 has an amount with more than two decimals (5.005)"),
    ]
    assert len(invoice.number or "") == mapping.DOC_NUMBER_MAX
    enabled = replace(settings, currencies=("USD",))
    assert [p.error_class for p in mapping.validate(replace(usd, number="X"), enabled)] == [
        ErrorClass.CONFIG,
        ErrorClass.CONFIG,
        ErrorClass.DATA,
        ErrorClass.DATA,
    ]


def test_validate_reports_customer_fields_quickbooks_cannot_hold(builders, settings):
    customer = builders.customer(9, email="a" * 95 + "@x.example")
    problems = mapping.validate(builders.invoice(customer=customer), settings)
    assert [p.message for p in problems] == [
        "Invoice 2026/0042: the e-mail address of customer Atelier Verhoeven BV (#9) is longer than the 100 "
        "characters QuickBooks accepts (it has 105); shorten it in the app"
    ]


def test_transaction_payload_refuses_an_invalid_invoice(builders, settings):
    with pytest.raises(ValueError, match="not mapped"):
        mapping.transaction_payload(builders.invoice([builders.line("1.00", "6")]), settings, "58")


def test_request_ids_follow_realm_and_content():
    payload = {"BatchItemRequest": [{"bId": "1", "Invoice": {"DocNumber": "A", "Amount": 1.5}}]}
    same = json.loads(json.dumps(payload))
    first = request_id(REALM, "batch", payload)
    assert first == request_id(REALM, "batch", same)
    assert len(first) == 36  # the most a batch's requestid may have
    assert first != request_id("other", "batch", payload)
    assert first != request_id(
        REALM, "batch", {"BatchItemRequest": [{"bId": "1", "Invoice": {"DocNumber": "B"}}]}
    )
    assert MINOR_VERSION == 75


# -- faults ---------------------------------------------------------------------------------------------


def test_faults_are_read_from_answers_and_batch_items():
    body = {
        "Fault": {
            "Error": [
                {"Message": "Duplicate Document Number Error", "Detail": "DocNumber=1 ...", "code": "6140"}
            ],
            "type": "ValidationFault",
        }
    }
    assert faults_of(body) == [Fault(6140, "Duplicate Document Number Error", "DocNumber=1 ...")]
    assert faults_of({"Invoice": {}}) == []
    assert faults_of({"Fault": {"type": "SystemFault"}}) == [Fault(0, "QuickBooks answered a SystemFault")]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (6140, ErrorClass.DATA),
        (6240, ErrorClass.DATA),
        (6210, ErrorClass.CONFIG),
        (5010, ErrorClass.TRANSIENT),
        (3001, ErrorClass.TRANSIENT),
        (120, ErrorClass.AUTH),
        (3100, ErrorClass.AUTH),
        (3200, ErrorClass.AUTH),
        (610, ErrorClass.CONFIG),
        (2500, ErrorClass.CONFIG),
        (500, ErrorClass.CONFIG),
        (2020, ErrorClass.DATA),
        (2050, ErrorClass.DATA),
        (6000, ErrorClass.DATA),
        (6190, ErrorClass.QUOTA),
        (10000, None),
    ],
)
def test_fault_codes_decide_the_class(code, expected):
    assert error_class(Fault(code, "text")) is expected


def test_whole_call_faults_become_typed_errors_with_quickbooks_words_and_advice():
    where = "QuickBooks company 1"
    closed = fault_error(
        [Fault(6210, "Account Period Closed", "locked through 2025-12-31")], context=where, status=400
    )
    assert isinstance(closed, ConfigError)
    assert closed.message.startswith(
        "QuickBooks company 1: Account Period Closed: locked through 2025-12-31 (code 6210) (the books are "
        "closed for this date in QuickBooks: ask the accountant to reopen the period"
    )
    assert isinstance(
        fault_error([Fault(3200, "AuthenticationFailed")], context=where, status=401), AuthError
    )
    assert isinstance(
        fault_error([Fault(6190, "Invalid Company Status")], context=where, status=400), QuotaExceededError
    )
    assert isinstance(fault_error([Fault(2050, "String too long")], context=where, status=400), DataError)
    assert isinstance(
        fault_error([Fault(10000, "An application error")], context=where, status=500), TransientError
    )
    assert message(Fault(2500, "Invalid Reference Id", "Item element id 9 not found"), context=where) == (
        "QuickBooks company 1: Invalid Reference Id: Item element id 9 not found (code 2500) (a reference "
        "QuickBooks does not know: check that the integration's item and tax code mappings name active "
        "QuickBooks items and tax codes)"
    )


def test_money_is_sent_from_two_decimal_strings(builders, settings):
    invoice = builders.invoice([builders.line("0.10", "21"), builders.line("0.20", "21", position=2)])
    payload = mapping.transaction_payload(invoice, settings, "58")
    text = json.dumps(payload)
    assert '"Amount": 0.1' in text and '"Amount": 0.2' in text
    assert Decimal(str(payload["TxnTaxDetail"]["TotalTax"])) == invoice.total_vat


# -- discounts, VAT regimes, numbering ------------------------------------------------------------------


def discounted(builders: Any) -> Any:
    """200.00 at 21 % on GL 7000 and 100.00 at 9 % on GL 7010, less a 10 % invoice-level discount: 270.00
    + 45.90 (180.00 x 21 % + 90.00 x 9 %)."""
    return builders.invoice(
        [builders.line("200.00", "21"), builders.line("100.00", "9", position=2, gl_account="7010")],
        discount="10",
    )


def sales_lines(payload: dict[str, Any]) -> list[tuple[float, str, str, float, float]]:
    """``(Amount, item, tax code, Qty, UnitPrice)`` per line."""
    return [
        (
            line["Amount"],
            line["SalesItemLineDetail"]["ItemRef"]["value"],
            line["SalesItemLineDetail"]["TaxCodeRef"]["value"],
            line["SalesItemLineDetail"]["Qty"],
            line["SalesItemLineDetail"]["UnitPrice"],
        )
        for line in payload["Line"]
    ]


def test_a_negative_line_goes_as_a_negative_sales_line(builders, settings):
    invoice = builders.invoice([builders.line("100.00"), builders.line("-10.00", position=2)])
    assert mapping.validate(invoice, settings) == []
    payload = mapping.transaction_payload(invoice, settings, "58")
    assert sales_lines(payload) == [(100.0, "1", "5", 1.0, 100.0), (-10.0, "1", "5", 1.0, -10.0)]
    assert payload["TxnTaxDetail"] == {"TotalTax": 18.9}


def test_an_invoice_level_discount_lowers_each_item_and_tax_code_to_the_cent(builders, settings):
    payload = mapping.transaction_payload(discounted(builders), settings, "58")
    assert sales_lines(payload) == [
        (200.0, "1", "5", 1.0, 200.0),
        (100.0, "2", "6", 1.0, 100.0),
        (-20.0, "1", "5", 1.0, -20.0),
        (-10.0, "2", "6", 1.0, -10.0),
    ]
    assert sum(Decimal(str(line["Amount"])) for line in payload["Line"]) == Decimal("270.00")
    assert payload["TxnTaxDetail"] == {"TotalTax": 45.9}
    assert [line["LineNum"] for line in payload["Line"]] == [1, 2, 3, 4]


def test_an_invoice_level_discount_goes_on_the_discount_item_when_one_is_mapped(builders, settings):
    with_account = replace(settings, discount_gl_account="4")
    payload = mapping.transaction_payload(discounted(builders), with_account, "58")
    assert [(amount, item, code) for amount, item, code, _, _ in sales_lines(payload)] == [
        (200.0, "1", "5"),
        (100.0, "2", "6"),
        (-20.0, "4", "5"),  # the discount item, VAT still per rate
        (-10.0, "4", "6"),
    ]


def test_two_zero_rate_lines_of_different_tax_rates_get_their_own_tax_codes(builders, settings):
    regimes = replace(settings, tax_rates={"exempt": "7", "intra_community": "9"})
    invoice = builders.invoice(
        [
            replace(builders.line("100.00", "0"), tax_rate="exempt"),
            replace(builders.line("50.00", "0", position=2), tax_rate="intra_community"),
        ]
    )
    payload = mapping.transaction_payload(invoice, regimes, "58")
    assert [code for _, _, code, _, _ in sales_lines(payload)] == ["7", "9"]
    unmapped = mapping.validate(invoice, replace(regimes, tax_rates={"exempt": "7"}))
    assert [(p.error_class, "'intra_community'" in p.message) for p in unmapped] == [
        (ErrorClass.CONFIG, True)
    ]


def test_custom_transaction_numbers_must_be_on():
    on = {"SalesFormsPrefs": {"CustomTxnNumbers": True}}
    assert mapping.custom_numbers_problem(on, where="QuickBooks company 1") is None
    for preferences in ({"SalesFormsPrefs": {"CustomTxnNumbers": False}}, {}, {"SalesFormsPrefs": None}):
        problem = mapping.custom_numbers_problem(preferences, where="QuickBooks company 1")
        assert problem is not None and problem.startswith("QuickBooks company 1 ")
        assert "custom transaction numbers" in problem
        assert "Account and settings > Sales > Sales form content > Custom transaction numbers" in problem
