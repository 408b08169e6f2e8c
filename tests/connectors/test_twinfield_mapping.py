"""Pure mapping rules of the Twinfield connector: ProcessXml documents, VAT cents, sides, validation."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree

from invoice_sync.connectors.soap import SoapFault, parse
from invoice_sync.connectors.twinfield import mapping
from invoice_sync.connectors.twinfield.errors import message_class, recognised_fault
from invoice_sync.connectors.twinfield.settings import TwinfieldSettings
from invoice_sync.domain.errors import AuthError, ConfigError
from invoice_sync.domain.models import ErrorClass, InvoiceKind


@pytest.fixture
def settings(builders: Any) -> Any:
    return TwinfieldSettings.parse(
        builders.settings(
            journal="VRK",
            credit_note_journal=None,
            vat_codes={"21": "VH", "9": "VL", "0": "VN"},
            gl_accounts={"7000": "8000", "7010": "8010"},
            default_gl_account=None,
            payment_condition=None,
            office="NLA001",
            debtors_account="1300",
        )
    )


def xml(node: Any) -> str:
    return etree.tostring(node, encoding="unicode")


def test_an_invoice_becomes_a_final_sales_transaction(builders, settings):
    invoice = builders.invoice(
        [builders.line("250.00", "21", description="Consultancy March")],
        number="2026/0042",
        customer=builders.customer(42),
    )
    invoice = replace(invoice, due_date=date(2026, 4, 1))
    assert xml(mapping.transaction_element(invoice, settings, "1042")) == (
        '<transaction destiny="final" raisewarning="false">'
        "<header><office>NLA001</office><code>VRK</code><currency>EUR</currency><date>20260302</date>"
        "<period>2026/03</period><invoicenumber>2026/0042</invoicenumber><duedate>20260401</duedate></header>"
        "<lines>"
        '<line type="total" id="1"><dim1>1300</dim1><dim2>1042</dim2><debitcredit>debit</debitcredit>'
        "<value>302.50</value></line>"
        '<line type="detail" id="2"><dim1>8000</dim1><debitcredit>credit</debitcredit><value>250.00</value>'
        "<vatvalue>52.50</vatvalue><description>Consultancy March</description><vatcode>VH</vatcode></line>"
        "</lines></transaction>"
    )


def sides(transaction: Any) -> list[tuple[str | None, ...]]:
    return [
        (line.get("type"), line.findtext("dim1"), line.findtext("debitcredit"), line.findtext("value"),
         line.findtext("vatvalue"), line.findtext("vatcode"))
        for line in transaction.find("lines")
    ]  # fmt: skip


def balance(transaction: Any) -> Decimal:
    """Debit minus credit over the lines and the VAT Twinfield will book from each ``vatvalue``."""
    signed = Decimal("0")
    for line in transaction.find("lines"):
        amount = Decimal(line.findtext("value")) + Decimal(line.findtext("vatvalue") or "0")
        signed += amount if line.findtext("debitcredit") == "debit" else -amount
    return signed


def test_no_vat_lines_are_sent_and_every_detail_line_carries_its_vat(builders, settings):
    invoice = builders.invoice([builders.line("33.33", "21"), builders.line("10.00", "0", position=2)])
    transaction = mapping.transaction_element(invoice, settings, "1042")
    assert [line.get("type") for line in transaction.find("lines")] == ["total", "detail", "detail"]
    assert sides(transaction)[1:] == [
        ("detail", "8000", "credit", "33.33", "7.00", "VH"),
        ("detail", "8000", "credit", "10.00", "0.00", "VN"),
    ]
    assert balance(transaction) == 0
    assert "autobalancevat" not in transaction.attrib  # the VAT is given: nothing for Twinfield to round


def test_a_credit_note_swaps_debit_and_credit_and_a_negative_line_flips_its_side(builders, settings):
    credit_note = builders.invoice(
        [builders.line("100.00", "21"), builders.line("-10.00", "21", position=2)],
        kind=InvoiceKind.CREDIT_NOTE,
    )
    transaction = mapping.transaction_element(credit_note, settings, "1042")
    assert sides(transaction) == [
        ("total", "1300", "credit", "108.90", None, None),
        ("detail", "8000", "debit", "100.00", "21.00", "VH"),
        ("detail", "8000", "credit", "10.00", "2.10", "VH"),
    ]
    assert balance(transaction) == 0


def test_a_negative_line_on_an_invoice_is_a_debit_detail_line_with_unsigned_amounts(builders, settings):
    invoice = builders.invoice(
        [builders.line("200.00", "21"), builders.line("-25.00", "21", position=2, description="Goodwill")]
    )
    transaction = mapping.transaction_element(invoice, settings, "1042")
    assert sides(transaction) == [
        ("total", "1300", "debit", "211.75", None, None),
        ("detail", "8000", "credit", "200.00", "42.00", "VH"),
        ("detail", "8000", "debit", "25.00", "5.25", "VH"),
    ]
    assert balance(transaction) == 0


def discounted(builders: Any) -> Any:
    """100.00 at 21 % (GL 7000) and 50.00 at 9 % (GL 7010), 10 % off the invoice: the app's totals are
    135.00 + 18.90 + 4.05 VAT."""
    return builders.invoice(
        [builders.line("100.00", "21"), builders.line("50.00", "9", position=2, gl_account="7010")],
        discount="10",
    )


def test_an_invoice_level_discount_lowers_each_revenue_account_and_vat_code(builders, settings):
    transaction = mapping.transaction_element(discounted(builders), settings, "1042")
    assert sides(transaction) == [
        ("total", "1300", "debit", "157.95", None, None),
        ("detail", "8000", "credit", "100.00", "21.00", "VH"),
        ("detail", "8010", "credit", "50.00", "4.50", "VL"),
        ("detail", "8000", "debit", "10.00", "2.10", "VH"),
        ("detail", "8010", "debit", "5.00", "0.45", "VL"),
    ]
    assert balance(transaction) == 0


def test_an_invoice_level_discount_goes_to_the_discount_account_when_one_is_mapped(builders, settings):
    with_account = replace(settings, discount_gl_account="8090")
    transaction = mapping.transaction_element(discounted(builders), with_account, "1042")
    assert sides(transaction)[3:] == [
        ("detail", "8090", "debit", "10.00", "2.10", "VH"),
        ("detail", "8090", "debit", "5.00", "0.45", "VL"),
    ]
    assert balance(transaction) == 0


def test_zero_rate_lines_of_different_tax_rates_keep_their_own_vat_codes(builders, settings):
    regimes = replace(settings, tax_rates={"intra_community": "VEU", "export": "VEX", "standard": "VH"})
    invoice = builders.invoice(
        [
            replace(builders.line("400.00", "0"), tax_rate="intra_community"),
            replace(builders.line("300.00", "0", position=2), tax_rate="export"),
            replace(builders.line("100.00", "21", position=3), tax_rate="standard"),
        ]
    )
    transaction = mapping.transaction_element(invoice, regimes, "1042")
    assert [(v, code) for _, _, _, _, v, code in sides(transaction)[1:]] == [
        ("0.00", "VEU"),
        ("0.00", "VEX"),
        ("21.00", "VH"),
    ]
    unmapped = replace(regimes, tax_rates={"intra_community": "VEU", "standard": "VH"})
    assert [p.message for p in mapping.validate(invoice, unmapped)] == [
        "Tax rate 'export' (0%) is not mapped to a Twinfield VAT code for Twinfield office NLA001; "
        "add it to the integration's tax rates"
    ]


def test_vat_per_code_is_the_apps_and_adds_up_to_its_total_to_the_cent(builders, settings):
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [builders.line("2.05", "21")]
    lines += [builders.line("0.15", "9", position=20 + n) for n in range(3)]

    def per_code(invoice: Any) -> dict[str, Decimal]:
        found: dict[str, Decimal] = {}
        for detail in mapping.detail_lines(invoice, settings):
            code = mapping.vat_code_for(detail.line, settings)
            found[code] = found.get(code, Decimal("0")) + detail.vat
        return found

    per_rate = builders.invoice(lines, total_vat="2.46")
    assert per_code(per_rate) == {"VH": Decimal("2.42"), "VL": Decimal("0.04")}
    # An app that rounded per line: 0.22 x 9 + 0.43 and 0.01 x 3 = 2.44; the two cents go to VH.
    per_line = builders.invoice(lines, total_vat="2.44")
    assert per_code(per_line) == {"VH": Decimal("2.40"), "VL": Decimal("0.04")}
    for invoice in (per_rate, per_line):
        assert sum(per_code(invoice).values()) == invoice.total_vat
        assert balance(mapping.transaction_element(invoice, settings, "1042")) == 0


def test_customer_dimension_keeps_markup_and_emoji_intact(builders, settings):
    customer = builders.customer(5, name='Smith & <Sons> "Ltd" 🚀', country_code="nl", email=None)
    request = mapping.dimensions_request([customer], settings)
    text = xml(request)
    assert 'Smith &amp; &lt;Sons&gt; "Ltd" 🚀' in text
    dimension = parse(text.encode())[0]
    assert dimension.findtext("name") == 'Smith & <Sons> "Ltd" 🚀'
    assert dimension.findtext("code") == "1005"
    address = dimension.find("addresses/address")
    assert address.attrib == {"type": "invoice", "default": "true"}
    assert [child.tag for child in address] == ["name", "country", "city", "postcode", "field2", "field4"]
    assert address.findtext("country") == "NL"


def test_customer_code_offset(builders, settings):
    assert mapping.customer_code(16, settings) == "1016"
    assert mapping.customer_code(16, replace(settings, customer_code_offset=20000)) == "20016"


def test_browse_request_sends_every_column_in_full(settings):
    columns = mapping.browse_request("NLA001", "2026/0042")
    assert columns.get("code") == "100"
    rows = [tuple(child.text or None for child in column) for column in columns]
    assert [tuple(child.tag for child in column) for column in columns] == [
        ("field", "label", "visible", "ask", "operator", "from", "to")
    ] * 4
    assert rows == [
        ("fin.trs.head.office", "Office", "true", "true", "equal", "NLA001", None),
        ("fin.trs.line.invnumber", "Invoice number", "true", "true", "equal", "2026/0042", None),
        ("fin.trs.head.code", "Transaction type", "true", "false", "none", None, None),
        ("fin.trs.head.number", "Trans. no.", "true", "false", "none", None, None),
    ]


def test_validate_names_the_missing_settings(builders, settings):
    """The office and the debtors account cannot be missing here: the parse refuses that already
    (tests/connectors/test_settings.py); what is left are the shared mappings."""
    invoice = builders.invoice([builders.line("10.00", "6", gl_account="7999")])
    bare = replace(settings, journal=None, vat_codes={}, gl_accounts={}, default_gl_account=None)
    messages = [(p.error_class, p.message) for p in mapping.validate(invoice, bare)]
    assert messages == [
        (ErrorClass.CONFIG, "No sales daybook (transaction type) is set for Twinfield office NLA001"),
        (ErrorClass.CONFIG, "VAT rate 6% is not mapped to a Twinfield VAT code for Twinfield office NLA001"),
        (
            ErrorClass.CONFIG,
            "GL account 7999 is not mapped to a Twinfield GL account for Twinfield office NLA001, "
            "and no default is set",
        ),
    ]
    assert mapping.validate(builders.invoice(), settings) == []
    with pytest.raises(ValueError, match="VAT rate 6%"):
        mapping.transaction_element(invoice, settings, "1042")


def test_validate_refuses_a_vat_total_the_lines_cannot_reach(builders, settings):
    broken = builders.invoice([builders.line("100.00", "21")], total_vat="25.00")
    assert [p.error_class for p in mapping.validate(broken, settings)] == [ErrorClass.DATA]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("btw-code(VX): VAT VX does not exist or is not (yet) active", ErrorClass.CONFIG),
        ("Dimension 8999 with financial level 1 not found", ErrorClass.CONFIG),
        ("Dimension 1999 with financial level 2 not found", ErrorClass.DATA),
        ("De boeking is niet in balans. Er ontbreekt 0.01 debet.", ErrorClass.DATA),
        ("The code does not conform to the format [4-7][0-9][0-9]", ErrorClass.DATA),
        ("Dagboek XYZ bestaat niet.", ErrorClass.CONFIG),
        ("Administratie XYZ001 bestaat niet of u heeft geen toegang.", ErrorClass.CONFIG),
        ("Factuurnummer is verplicht.", ErrorClass.DATA),
    ],
)
def test_refusals_are_sorted_into_config_and_data(message, expected):
    assert message_class(message) is expected


def test_faults_refused_before_processing_are_recognised():
    token = SoapFault("soap:Server", "Access denied. Token invalid (code 354)", status=500)
    assert isinstance(recognised_fault(token, context="X"), AuthError)
    company = SoapFault("soap:Server", "Toegang geweigerd. Company ontbreekt in request header.", status=500)
    assert isinstance(recognised_fault(company, context="X"), ConfigError)
    assert (
        recognised_fault(SoapFault("soap:Server", "Object reference not set", status=500), context="X")
        is None
    )
