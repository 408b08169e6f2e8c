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
from invoice_sync.domain.errors import AuthError, ConfigError
from invoice_sync.domain.models import ErrorClass, InvoiceKind


@pytest.fixture
def settings(builders: Any) -> Any:
    return builders.settings(
        journal="VRK",
        credit_note_journal=None,
        vat_codes={"21": "VH", "9": "VL", "0": "VN"},
        gl_accounts={"7000": "8000", "7010": "8010"},
        default_gl_account=None,
        payment_condition=None,
        division=None,
        office="NLA001",
        debtors_account="1300",
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
        "<vatcode>VH</vatcode><description>Consultancy March</description></line>"
        '<line type="vat" id="3"><debitcredit>credit</debitcredit><value>52.50</value>'
        "<vatcode>VH</vatcode></line>"
        "</lines></transaction>"
    )


def test_a_credit_note_swaps_debit_and_credit_and_a_negative_line_flips_its_side(builders, settings):
    credit_note = builders.invoice(
        [builders.line("100.00", "21"), builders.line("-10.00", "21", position=2)],
        kind=InvoiceKind.CREDIT_NOTE,
    )
    lines = mapping.transaction_element(credit_note, settings, "1042").find("lines")
    sides = [(line.get("type"), line.findtext("debitcredit"), line.findtext("value")) for line in lines]
    assert sides == [
        ("total", "credit", "108.90"),
        ("detail", "debit", "100.00"),
        ("detail", "credit", "10.00"),
        ("vat", "debit", "18.90"),
    ]


def test_vat_per_code_adds_up_to_the_apps_total_to_the_cent(builders, settings):
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [builders.line("2.05", "21")]
    lines += [builders.line("0.15", "9", position=20 + n) for n in range(3)]
    per_rate = builders.invoice(lines, total_vat="2.46")
    assert mapping.vat_per_code(per_rate, settings) == {"VH": Decimal("2.42"), "VL": Decimal("0.04")}
    # An app that rounded per line: 0.22 x 9 + 0.43 and 0.01 x 3 = 2.44; the two cents go to VH.
    per_line = builders.invoice(lines, total_vat="2.44")
    assert mapping.vat_per_code(per_line, settings) == {"VH": Decimal("2.40"), "VL": Decimal("0.04")}
    for invoice in (per_rate, per_line):
        assert sum(mapping.vat_per_code(invoice, settings).values()) == invoice.total_vat


def test_a_zero_rate_gets_no_vat_line_and_the_transaction_balances(builders, settings):
    invoice = builders.invoice([builders.line("33.33", "21"), builders.line("10.00", "0", position=2)])
    lines = mapping.transaction_element(invoice, settings, "1042").find("lines")
    signed = Decimal("0")
    for line in lines:
        value = Decimal(line.findtext("value"))
        signed += value if line.findtext("debitcredit") == "debit" else -value
    assert signed == 0
    assert [line.findtext("vatcode") for line in lines if line.get("type") == "vat"] == ["VH"]


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
    offset = builders.settings(office="NLA001", customer_code_offset=20000)
    assert mapping.customer_code(16, offset) == "20016"


def test_browse_request_filters_office_and_invoice_number(settings):
    columns = mapping.browse_request("NLA001", "2026/0042")
    assert columns.get("code") == "100"
    rows = [(c.findtext("field"), c.findtext("operator"), c.findtext("from")) for c in columns]
    assert rows == [
        ("fin.trs.head.office", "equal", "NLA001"),
        ("fin.trs.line.invnumber", "equal", "2026/0042"),
        ("fin.trs.head.code", None, None),
        ("fin.trs.head.number", None, None),
    ]


def test_validate_names_the_missing_settings(builders, settings):
    invoice = builders.invoice([builders.line("10.00", "6", gl_account="7999")])
    bare = builders.settings(journal=None, vat_codes={}, gl_accounts={}, default_gl_account=None)
    messages = [(p.error_class, p.message) for p in mapping.validate(invoice, bare)]
    assert messages == [
        (ErrorClass.CONFIG, "No Twinfield office is set for this integration (setting extra.office)"),
        (
            ErrorClass.CONFIG,
            "No debtors control account is set for the Twinfield integration (setting extra.debtors_account)",
        ),
        (ErrorClass.CONFIG, "No sales daybook (transaction type) is set for the Twinfield integration"),
        (
            ErrorClass.CONFIG,
            "VAT rate 6% is not mapped to a Twinfield VAT code for the Twinfield integration",
        ),
        (
            ErrorClass.CONFIG,
            "GL account 7999 is not mapped to a Twinfield GL account for the Twinfield integration, "
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
