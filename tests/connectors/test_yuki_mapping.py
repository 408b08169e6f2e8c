"""Pure rules of the Yuki connector: the SalesInvoice document, VAT cents, signs, validation, faults."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from lxml import etree

from invoice_sync.connectors.yuki import mapping
from invoice_sync.connectors.yuki.errors import classify_fault, invoice_error_class, is_session_fault
from invoice_sync.connectors.yuki.settings import YukiSettings
from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError
from invoice_sync.domain.models import ErrorClass, IntegrationSettings, InvoiceKind


def settings(**overrides) -> YukiSettings:
    data = {
        "vat_codes": {"21": "2", "12": "2", "6": "2", "0": "5"},
        "gl_accounts": {"7000": "7000", "7010": "7010"},
        "default_gl_account": None,
        "administration": "Demo Yuki BV",
    }
    data.update(overrides)
    return YukiSettings.parse(IntegrationSettings.from_json(data))


def names(node: etree._Element) -> list[str]:
    return [etree.QName(c).localname for c in node]


def value(node: etree._Element, path: str) -> str | None:
    return node.findtext("/".join(f"{{{mapping.SALES_INVOICES_NS}}}{p}" for p in path.split("/")))


def test_sales_invoice_follows_the_schema_order_and_books_the_apps_amounts(builders):
    invoice = builders.invoice(
        [
            builders.line("250.00", "21", quantity="2"),
            builders.line("10.00", "6", position=2, gl_account="7010"),
        ]
    )
    node = mapping.sales_invoice(invoice, settings())
    assert names(node) == [
        "Reference", "Subject", "Process", "EmailToCustomer", "Date", "Currency", "Contact", "InvoiceLines",
    ]  # fmt: skip
    assert value(node, "Reference") == "2026/0042" and value(node, "Process") == "true"
    assert value(node, "EmailToCustomer") == "false" and value(node, "Date") == "2026-03-02"
    assert names(node[6]) == [
        "ContactCode", "FullName", "CountryCode", "City", "Zipcode", "AddressLine_1", "EmailAddress",
        "VATNumber", "ContactType",
    ]  # fmt: skip
    assert value(node, "Contact/ContactCode") == "1042" and value(node, "Contact/CountryCode") == "BE"
    first, second = node[7]
    assert names(first) == ["Description", "ProductQuantity", "LineAmount", "LineVATAmount", "Product"]
    assert names(first[4]) == [
        "Description", "Reference", "SalesPrice", "VATPercentage", "VATIncluded", "VATType", "GLAccountCode",
    ]  # fmt: skip
    assert [first.findtext(f"{{*}}{n}") for n in ("ProductQuantity", "LineAmount", "LineVATAmount")] == [
        "2",
        "250.00",
        "52.50",
    ]
    assert first[4].findtext("{*}SalesPrice") == "125.00" and first[4].findtext("{*}VATType") == "2"
    assert second[4].findtext("{*}GLAccountCode") == "7010" and second[4].findtext("{*}VATPercentage") == "6"
    assert second[4].findtext("{*}Description") == "Sales 7010 6% type 2"
    assert second[4].findtext("{*}Reference") == "7010-6-2"


def test_credit_notes_go_with_negative_quantities_and_amounts(builders):
    note = builders.invoice([builders.line("99.99", "21", quantity="3")], kind=InvoiceKind.CREDIT_NOTE)
    line = mapping.sales_invoice(note, settings())[7][0]
    assert line.findtext("{*}ProductQuantity") == "-3" and line[4].findtext("{*}SalesPrice") == "33.33"
    assert (line.findtext("{*}LineAmount"), line.findtext("{*}LineVATAmount")) == ("-99.99", "-21.00")
    assert mapping.sales_invoice(note, settings())[1].text == "Credit note 2026/0042"


def test_a_price_with_more_than_two_decimals_goes_as_one_unit_of_the_line_amount(builders):
    line = builders.line("100.00", quantity="3")  # unit price 33.333...
    assert mapping.quantity_and_price(line) == (Decimal(1), Decimal("100.00"))
    assert mapping.quantity_and_price(builders.line("7.50", quantity="2.5")) == (Decimal("2.5"), Decimal("3"))


def test_vat_cents_are_spread_over_the_largest_lines_and_add_up(builders):
    lines = [builders.line("10.01", position=n) for n in range(1, 4)] + [
        builders.line("50.00", "0", position=4)
    ]
    # 3 x 2.1021 rounds to 3 x 2.10 = 6.30, the app rounds the total 6.3063 to 6.31
    assert mapping.line_vat_amounts(lines, Decimal("6.31")) == [
        Decimal("2.11"),
        Decimal("2.10"),
        Decimal("2.10"),
        Decimal("0.00"),
    ]
    assert sum(mapping.line_vat_amounts(lines, Decimal("6.28"))) == Decimal("6.28")


def test_awkward_names_survive_the_xml(builders):
    customer = builders.customer(7, name='Smith & <Sons> "Ltd" 😀')
    node = mapping.sales_invoice(builders.invoice(customer=customer), settings())
    parsed = etree.fromstring(etree.tostring(node, encoding="utf-8"))
    assert value(parsed, "Contact/FullName") == 'Smith & <Sons> "Ltd" 😀'


def test_validate_names_the_unmapped_rate_and_account(builders):
    invoice = builders.invoice([builders.line("10.00", "9"), builders.line("5.00", "21", gl_account="4000")])
    problems = mapping.validate(invoice, settings())
    assert [p.error_class for p in problems] == [ErrorClass.CONFIG, ErrorClass.CONFIG]
    assert (
        "VAT rate 9% is not mapped to a Yuki VAT type for administration Demo Yuki BV" in problems[0].message
    )
    assert "GL account 4000 is not mapped" in problems[1].message
    assert (
        mapping.validate(invoice, settings(vat_codes={"9": "2", "21": "2"}, default_gl_account="7000")) == []
    )


def test_validate_reports_lengths_and_decimals(builders):
    """A missing administration is refused by the parse already (tests/connectors/test_settings.py)."""
    customer = builders.customer(name="N" * 101)
    invoice = builders.invoice(
        [builders.line("10.005")], customer=customer, number="R" * 51, total_vat="2.10"
    )
    messages = [p.message for p in mapping.validate(invoice, settings())]
    assert any("longer than the 50 characters of Yuki's Reference" in m for m in messages)
    assert any("name of customer" in m and "100 characters" in m for m in messages)
    assert any("more than two decimals (10.005)" in m for m in messages)
    with pytest.raises(ValueError):
        mapping.sales_invoice(invoice, settings())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authentication failed: invalid access key.", AuthError),
        (
            "Daily call limit exceeded: this domain has used its 1000 web service calls for today.",
            QuotaExceededError,
        ),
        ("The web service 'Sales' is not allowed for this access key (tick ...).", ConfigError),
        ("Unknown administration ID 'x', or this access key has no access to it.", ConfigError),
        ("This functionality is not available: the administration has no invoicing bundle.", ConfigError),
        ("Server was unable to process request. ---> Object reference not set", type(None)),
    ],
)
def test_faults_are_classified_by_yukis_text(text, expected):
    assert type(classify_fault(text, context="Yuki administration Demo Yuki BV")) is expected


def test_session_faults_and_invoice_messages():
    assert is_session_fault("Invalid sessionID: the session has expired or does not exist.")
    assert not is_session_fault("Authentication failed: invalid access key.")
    assert invoice_error_class("No tax code for VATPercentage 21 & VATType 9") is ErrorClass.CONFIG
    assert (
        invoice_error_class("GLAccountCode '7999' does not exist in administration X.") is ErrorClass.CONFIG
    )
    assert (
        invoice_error_class("The sales price 1.005 has too many decimals (at most 2 are allowed).")
        is ErrorClass.DATA
    )


# -- discounts, VAT regimes, lines without an amount (issue #12 items 5 and 6) -------------------------


def line_values(row: etree._Element) -> dict[str, str | None]:
    product = row.find("{*}Product")
    assert product is not None
    return {
        "quantity": row.findtext("{*}ProductQuantity"),
        "amount": row.findtext("{*}LineAmount"),
        "vat": row.findtext("{*}LineVATAmount"),
        "price": product.findtext("{*}SalesPrice"),
        "vat_type": product.findtext("{*}VATType"),
        "gl": product.findtext("{*}GLAccountCode"),
        "product": product.findtext("{*}Reference"),
    }


def discounted(builders):
    """200.00 at 21 % on 7000 and 50.00 at 6 % on 7010, less a 10 % invoice-level discount: 225.00 + 40.50."""
    return builders.invoice(
        [builders.line("200.00", "21"), builders.line("50.00", "6", position=2, gl_account="7010")],
        discount="10",
    )


def test_a_negative_line_goes_as_a_negative_quantity_at_a_positive_price(builders):
    invoice = builders.invoice([builders.line("100.00", "21"), builders.line("-20.00", "21", position=2)])
    assert mapping.validate(invoice, settings()) == []
    rows = mapping.sales_invoice(invoice, settings())[7]
    assert [line_values(row) for row in rows] == [
        {"quantity": "1", "amount": "100.00", "vat": "21.00", "price": "100.00", "vat_type": "2",
         "gl": "7000", "product": "7000-21-2"},
        {"quantity": "-1", "amount": "-20.00", "vat": "-4.20", "price": "20.00", "vat_type": "2",
         "gl": "7000", "product": "7000-21-2"},
    ]  # fmt: skip


def test_an_invoice_level_discount_lowers_each_rate_and_account_to_the_cent(builders):
    rows = mapping.sales_invoice(discounted(builders), settings())[7]
    values = [line_values(row) for row in rows]
    assert [(v["quantity"], v["amount"], v["vat"], v["gl"]) for v in values] == [
        ("1", "200.00", "42.00", "7000"),
        ("1", "50.00", "3.00", "7010"),
        ("-1", "-20.00", "-4.20", "7000"),
        ("-1", "-5.00", "-0.30", "7010"),
    ]
    assert rows[2].findtext("{*}Description") == "Discount 10%"
    assert sum(Decimal(v["amount"] or "") for v in values) == Decimal("225.00")
    assert sum(Decimal(v["vat"] or "") for v in values) == Decimal("40.50")


def test_an_invoice_level_discount_goes_to_the_discount_account_when_one_is_mapped(builders):
    rows = mapping.sales_invoice(discounted(builders), settings(discount_gl_account="7020"))[7]
    assert [line_values(row)["gl"] for row in rows] == ["7000", "7010", "7020", "7020"]
    assert [line_values(row)["product"] for row in rows][2:] == ["7020-21-2", "7020-6-2"]


def test_a_credit_note_with_a_discount_line_negates_every_line_by_its_kind_only(builders):
    note = replace(discounted(builders), kind=InvoiceKind.CREDIT_NOTE)
    rows = mapping.sales_invoice(note, settings())[7]
    assert [line_values(row)["quantity"] for row in rows] == ["-1", "-1", "1", "1"]
    assert [line_values(row)["amount"] for row in rows] == ["-200.00", "-50.00", "20.00", "5.00"]


def test_two_zero_rate_lines_of_different_regimes_keep_their_own_vat_type_and_product(builders):
    exempt = replace(builders.line("100.00", "0"), tax_rate="exempt")
    intra = replace(builders.line("300.00", "0", position=2), tax_rate="intra_community")
    invoice = builders.invoice([exempt, intra])
    regimes = settings(tax_rates={"exempt": "5", "intra_community": "3"})
    assert mapping.validate(invoice, regimes) == []
    rows = mapping.sales_invoice(invoice, regimes)[7]
    assert [(line_values(r)["vat_type"], line_values(r)["product"]) for r in rows] == [
        ("5", "7000-0-5"),
        ("3", "7000-0-3"),
    ]
    descriptions = {r.findtext("{*}Product/{*}Description") for r in rows}
    assert descriptions == {"Sales 7000 0% type 5", "Sales 7000 0% type 3"}
    unmapped = mapping.validate(invoice, settings(tax_rates={"exempt": "5"}))
    assert [p.error_class for p in unmapped] == [ErrorClass.CONFIG] and "'intra_community'" in unmapped[
        0
    ].message


def test_a_line_without_an_amount_is_not_sent_at_sales_price_zero(builders):
    free = builders.line("0.00", "21", position=2, quantity="2", description="Free installation")
    invoice = builders.invoice([builders.line("100.00", "21"), free])
    rows = mapping.sales_invoice(invoice, settings())[7]
    assert [row.findtext("{*}Description") for row in rows] == ["Consultancy"]
    assert all(row.findtext("{*}Product/{*}SalesPrice") != "0.00" for row in rows)
    nothing = builders.invoice([builders.line("0.00", "21")])
    problems = mapping.validate(nothing, settings())
    assert [p.error_class for p in problems] == [ErrorClass.DATA] and "catalogue price" in problems[0].message
