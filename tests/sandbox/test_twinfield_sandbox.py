"""The Twinfield simulator over real HTTP: what the connector relies on must behave like Twinfield."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from lxml import etree

from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread
from invoice_sync_dev.sandbox.twinfield import COMPANY_MISSING, TOKEN_INVALID, TwinfieldSandbox
from invoice_sync_dev.sandbox.twinfield_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    DISCOUNT_ACCOUNT,
    FOREIGN_OFFICE,
    OFFICE,
    ORGANISATION,
    SECOND_OFFICE,
    VAT_ACCOUNT,
)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TWF = "http://www.twinfield.com/"
ACTION = '"http://www.twinfield.com/ProcessXmlString"'
NOT_ACTIVE = "does not exist or is not (yet) active"


def token_call(
    base: str, auth: tuple[str, str] = (CLIENT_ID, CLIENT_SECRET), **form: str
) -> requests.Response:
    return requests.post(f"{base}/auth/authentication/connect/token", auth=auth, data=form, timeout=5)


def refresh(base: str, refresh_token: str = BOOTSTRAP_REFRESH_TOKEN) -> requests.Response:
    return token_call(base, grant_type="refresh_token", refresh_token=refresh_token)


def validation(base: str, token: str) -> requests.Response:
    url = f"{base}/auth/authentication/connect/accesstokenvalidation"
    return requests.get(url, params={"token": token}, timeout=5)


class Cluster:
    """A minimal Twinfield client for the tests: a token, its cluster, ProcessXml in and out."""

    def __init__(self, handle: SandboxHandle, office: str | None = OFFICE) -> None:
        self.base = handle.url_of("twinfield")
        self.token = refresh(self.base).json()["access_token"]
        self.cluster = validation(self.base, self.token).json()["twf.clusterUrl"]
        self.office = office

    def post(self, xml: str, *, office: str | None = None, token: str | None = None) -> requests.Response:
        envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "twf": TWF})
        header = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Header"), f"{{{TWF}}}Header")
        etree.SubElement(header, f"{{{TWF}}}AccessToken").text = token or self.token
        company = office if office is not None else self.office
        if company:
            etree.SubElement(header, f"{{{TWF}}}CompanyCode").text = company
        body = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{TWF}}}ProcessXmlString")
        etree.SubElement(body, f"{{{TWF}}}xmlRequest").text = xml  # lxml escapes it
        return requests.post(
            f"{self.cluster}/webservices/processxml.asmx",
            data=etree.tostring(envelope),
            headers={"SOAPAction": ACTION, "Content-Type": "text/xml; charset=utf-8"},
            timeout=5,
        )

    def process(self, xml: str, **kwargs: Any) -> etree._Element:
        response = self.post(xml, **kwargs)
        assert response.status_code == 200, response.text
        envelope = etree.fromstring(response.content)
        result = envelope.find(
            f"{{{SOAP}}}Body/{{{TWF}}}ProcessXmlStringResponse/{{{TWF}}}ProcessXmlStringResult"
        )
        return etree.fromstring(result.text.encode())


def fault_text(response: requests.Response) -> str:
    assert response.status_code == 500
    return etree.fromstring(response.content).findtext(f"{{{SOAP}}}Body/{{{SOAP}}}Fault/faultstring")


def customer_xml(code: str = "1042", name: str = "Atelier Verhoeven BV", office: str = OFFICE) -> str:
    return (
        f"<dimensions><dimension><office>{office}</office><type>DEB</type><code>{code}</code><name>{name}</name>"
        "<addresses><address type='invoice' default='true'><country>NL</country><city>Utrecht</city>"
        "<field2>Oudegracht 1</field2></address></addresses>"
        "<banks><bank default='true'><ascription>Verhoeven</ascription>"
        "<iban>NL91ABNA0417164300</iban></bank></banks>"
        "</dimension></dimensions>"
    )


def transaction_xml(
    number: str = "2026-001",
    *,
    office: str = OFFICE,
    customer: str = "1042",
    total: str = "302.50",
    details: tuple[tuple[str, ...], ...] = (("8000", "250.00", "VH"),),
    vat: tuple[tuple[str, str], ...] = (),
    daybook: str = "VRK",
    attributes: str = "",
) -> str:
    """A sales transaction; a detail is ``(account, value, vatcode[, vatvalue[, side]])``, a ``vat`` line
    (sent on top of the ones Twinfield makes) ``(vatcode, value)``."""
    lines = (
        f"<line type='total'><dim1>1300</dim1><dim2>{customer}</dim2><debitcredit>debit</debitcredit>"
        f"<value>{total}</value></line>"
    )
    for account, value, code, *rest in details:
        vatvalue = f"<vatvalue>{rest[0]}</vatvalue>" if rest and rest[0] else ""
        side = rest[1] if len(rest) > 1 else "credit"
        lines += (
            f"<line type='detail'><dim1>{account}</dim1><debitcredit>{side}</debitcredit>"
            f"<value>{value}</value>{vatvalue}<description>Work</description><vatcode>{code}</vatcode></line>"
        )
    for code, value in vat:
        lines += (
            f"<line type='vat'><debitcredit>credit</debitcredit><value>{value}</value>"
            f"<vatcode>{code}</vatcode></line>"
        )
    return (
        f"<transaction destiny='final' raisewarning='false' {attributes}><header><office>{office}</office>"
        f"<code>{daybook}</code><currency>EUR</currency><date>20260302</date><period>2026/03</period>"
        f"<invoicenumber>{number}</invoicenumber>"
        f"</header><lines>{lines}</lines></transaction>"
    )


def browse_xml(reference: str, office: str = OFFICE) -> str:
    """A lookup as php-twinfield's BrowseData writes one: every column in full."""

    def column(field: str, label: str, value: str | None) -> str:
        ask, operator = ("true", "equal") if value is not None else ("false", "none")
        return (
            f"<column><field>{field}</field><label>{label}</label><visible>true</visible><ask>{ask}</ask>"
            f"<operator>{operator}</operator><from>{value or ''}</from><to></to></column>"
        )

    return (
        "<columns code='100'>"
        + column("fin.trs.head.office", "Office", office)
        + column("fin.trs.line.invnumber", "Invoice number", reference)
        + column("fin.trs.head.number", "Trans. no.", None)
        + "</columns>"
    )


def error_messages(node: etree._Element) -> list[str]:
    return [e.get("msg") for e in node.iter() if e.get("msgtype") == "error"]


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxHandle]:
    handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def fresh(shared: SandboxHandle) -> SandboxHandle:
    shared.simulator("twinfield").reset()
    return shared


@pytest.fixture
def api(fresh: SandboxHandle) -> Cluster:
    return Cluster(fresh)


# ---------------------------------------------------------------------------------------------- OAuth


def test_refresh_gives_an_hour_long_token_and_the_refresh_token_is_reusable(fresh: SandboxHandle) -> None:
    base = fresh.url_of("twinfield")
    first = refresh(base)
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert "refresh_token" not in body  # not rotated
    assert refresh(base).status_code == 200  # the same refresh token again
    assert fresh.simulator("twinfield").stats_snapshot()["token_refreshes"] == 2

    assert token_call(base, auth=(CLIENT_ID, "wrong"), grant_type="refresh_token").json() == {
        "error": "invalid_client"
    }
    assert token_call(base, auth=(CLIENT_ID, "wrong"), grant_type="refresh_token").status_code == 401
    unknown = refresh(base, "never-issued")
    assert (unknown.status_code, unknown.json()) == (400, {"error": "invalid_grant"})
    assert token_call(base, grant_type="password").json() == {"error": "unsupported_grant_type"}


def test_consent_code_exchange_and_revocation(fresh: SandboxHandle) -> None:
    base = fresh.url_of("twinfield")
    simulator = fresh.simulator("twinfield")
    consent = simulator.consent(CLIENT_ID)
    exchanged = token_call(base, grant_type="authorization_code", code=consent["code"]).json()
    assert exchanged["refresh_token"] and exchanged["access_token"]
    assert (
        token_call(base, grant_type="authorization_code", code=consent["code"]).status_code == 400
    )  # single use
    assert refresh(base, consent["refresh_token"]).status_code == 200
    simulator.revoke(consent["refresh_token"])
    assert refresh(base, consent["refresh_token"]).json() == {"error": "invalid_grant"}
    assert refresh(base).status_code == 200  # other consents are untouched


def test_validation_names_the_cluster_and_organisation(fresh: SandboxHandle) -> None:
    base = fresh.url_of("twinfield")
    token = refresh(base).json()["access_token"]
    body = validation(base, token).json()
    assert body["twf.clusterUrl"] == base + "/cluster"
    assert body["twf.organisationCode"] == ORGANISATION
    assert body["exp"] - time.time() == pytest.approx(3600, abs=5)
    invalid = validation(base, "nope")
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_token"
    calls = fresh.simulator("twinfield").stats_snapshot()
    assert calls["credits_used"] == {}  # token and validation calls cost no credits


def test_an_expired_token_is_refused_with_a_fault(api: Cluster, fresh: SandboxHandle) -> None:
    assert api.process("<list><type>offices</type></list>").get("result") == "1"
    fresh.simulator("twinfield").expire_tokens()
    assert fault_text(api.post("<list><type>offices</type></list>")) == TOKEN_INVALID
    assert validation(api.base, api.token).status_code == 400
    assert fault_text(api.post(browse_xml("x"), token="unknown")) == TOKEN_INVALID


def test_tokens_expire_on_the_sandbox_clock() -> None:
    handle = start_in_thread(time_scale=3600)  # an hour passes in a second
    try:
        api = Cluster(handle)
        assert refresh(api.base).json()["expires_in"] == 1
        time.sleep(1.1)
        assert fault_text(api.post("<list><type>offices</type></list>")) == TOKEN_INVALID
    finally:
        handle.stop()


def test_company_code_is_needed_except_to_list_offices(api: Cluster) -> None:
    offices = api.process("<list><type>offices</type></list>", office="")
    assert [o.text for o in offices] == [OFFICE, SECOND_OFFICE]  # not the other organisation's office
    assert fault_text(api.post(browse_xml("x"), office="")) == COMPANY_MISSING
    assert "Geen toegang tot administratie XYZ001" in fault_text(
        api.post(browse_xml("x"), office=FOREIGN_OFFICE)
    )


def test_wrong_soap_action_and_garbage_are_faults(api: Cluster) -> None:
    response = requests.post(
        f"{api.cluster}/webservices/processxml.asmx",
        data=b"<not-soap",
        headers={"SOAPAction": ACTION, "Content-Type": "text/xml"},
        timeout=5,
    )
    assert "Server was unable to read request" in fault_text(response)
    garbled = api.post("<transactions><transaction>")
    assert "Data at the root level is invalid" in fault_text(garbled)


# ----------------------------------------------------------------------------------------- dimensions


def test_customers_are_upserted_by_code(api: Cluster, fresh: SandboxHandle) -> None:
    created = api.process(customer_xml(name='Smith &amp; &lt;Sons&gt; "Ltd" 🚀'))
    assert created.get("result") == "1"
    assert created.find("dimension").get("result") == "1"
    updated = api.process(customer_xml(name="Atelier Verhoeven NV"))
    assert updated.get("result") == "1"
    (stored,) = fresh.simulator("twinfield").customers()
    assert (stored["code"], stored["name"], stored["office"]) == ("1042", "Atelier Verhoeven NV", OFFICE)
    assert stored["addresses"][0]["field2"] == "Oudegracht 1"
    assert stored["banks"][0]["iban"] == "NL91ABNA0417164300"
    read = api.process(
        f"<read><type>dimensions</type><office>{OFFICE}</office><dimtype>DEB</dimtype><code>1042</code></read>"
    )
    assert read.findtext("name") == "Atelier Verhoeven NV"
    assert api.process(customer_xml(office=SECOND_OFFICE)).get("result") == "1"
    assert len(fresh.simulator("twinfield").customers(OFFICE)) == 1


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (customer_xml(code="42"), "The code does not conform to the format 1[0-9]{3,5}"),
        (customer_xml(name=""), "Naam is verplicht."),
        (customer_xml(office=FOREIGN_OFFICE), "Administratie XYZ001 bestaat niet of u heeft geen toegang."),
        (
            customer_xml().replace("<ascription>Verhoeven", "<ascription>" + "x" * 41),
            "De tenaamstelling mag maximaal 40 tekens bevatten.",
        ),
    ],
    ids=["code-format", "name", "office", "ascription"],
)
def test_customer_validation(api: Cluster, fresh: SandboxHandle, xml: str, expected: str) -> None:
    answer = api.process(xml)
    assert answer.get("result") == "0"
    assert answer.find("dimension").get("result") == "0"
    assert error_messages(answer) == [expected]
    assert fresh.simulator("twinfield").customers() == []


# --------------------------------------------------------------------------------------- transactions


def test_transactions_are_numbered_per_office_and_daybook(api: Cluster, fresh: SandboxHandle) -> None:
    api.process(customer_xml())
    api.process(customer_xml(office=SECOND_OFFICE))
    first = api.process(f"<transactions>{transaction_xml('A-1')}{transaction_xml('A-2')}</transactions>")
    other = api.process(transaction_xml("B-1", office=SECOND_OFFICE))
    assert first.get("result") == "1"
    assert [t.findtext("header/number") for t in first] == ["202600001", "202600002"]
    assert [t.get("location") for t in first] == ["final", "final"]
    assert other.findtext("header/number") == "202600001"
    books = fresh.simulator("twinfield").booked()
    assert [(b["office"], b["code"], b["registration_number"], b["reference"]) for b in books] == [
        (OFFICE, "VRK", "202600001", "A-1"),
        (OFFICE, "VRK", "202600002", "A-2"),
        (SECOND_OFFICE, "VRK", "202600001", "B-1"),
    ]
    booking = books[0]
    assert (booking["total_incl_vat"], booking["total_vat"]) == (Decimal("302.50"), Decimal("52.50"))
    assert booking["customer_name"] == "Atelier Verhoeven BV"
    read = api.process(
        f"<read><type>transaction</type><office>{OFFICE}</office><code>VRK</code><number>202600002</number></read>"
    )
    assert read.findtext("header/invoicenumber") == "A-2"


def test_a_repeated_invoice_number_is_booked_again(api: Cluster, fresh: SandboxHandle) -> None:
    api.process(customer_xml())
    api.process(transaction_xml("R-1"))
    again = api.process(transaction_xml("R-1"))
    assert again.get("result") == "1" and again.findtext("header/number") == "202600002"
    assert fresh.simulator("twinfield").create_posts() == {"R-1": 2}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"details": (("8000", "250.00", "VX"),)}, f"btw-code(VX): VAT VX {NOT_ACTIVE}"),
        ({"details": (("8000", "250.00", "V9"),)}, f"btw-code(V9): VAT V9 {NOT_ACTIVE}"),
        ({"details": (("8999", "250.00", "VH"),)}, "Dimension 8999 with financial level 1 not found"),
        ({"customer": "1999"}, "Dimension 1999 with financial level 2 not found"),
        ({"total": "302.49"}, "De boeking is niet in balans. Er ontbreekt 0.01 debet."),
        ({"total": "302.51"}, "De boeking is niet in balans. Er ontbreekt 0.01 credit."),
        ({"vat": (("VH", "52.50"),)}, "De boeking is niet in balans. Er ontbreekt 52.50 debet."),
        ({"details": (("8000", "-250.00", "VH"),)}, "Bedrag -250.00 is ongeldig."),
        ({"details": (("8000", "250.00", "VH", "-52.50"),)}, "Btw-bedrag -52.50 is ongeldig."),
        ({"daybook": "XYZ"}, "Dagboek XYZ bestaat niet."),
        ({"daybook": "MEMO"}, "Dagboek MEMO is geen verkoopdagboek."),
        ({"office": FOREIGN_OFFICE}, "Administratie XYZ001 bestaat niet of u heeft geen toegang."),
    ],
    ids=["inactive-vat", "unknown-vat", "gl", "customer", "short-debit", "short-credit", "doubled-vat",
         "signed-value", "signed-vatvalue", "daybook", "memorial", "office"],
)  # fmt: skip
def test_transaction_validation_texts(
    api: Cluster, fresh: SandboxHandle, kwargs: dict[str, Any], expected: str
) -> None:
    api.process(customer_xml())
    answer = api.process(
        f"<transactions>{transaction_xml('OK-1')}{transaction_xml('BAD-1', **kwargs)}</transactions>"
    )
    assert answer.get("result") == "0"  # not all were booked...
    good, bad = list(answer)
    assert (
        good.get("result") == "1" and good.findtext("header/number") == "202600001"
    )  # ...but each on its own
    assert bad.get("result") == "0"
    assert error_messages(bad) == [expected]
    assert [b["reference"] for b in fresh.simulator("twinfield").booked()] == ["OK-1"]


def vat_lines(transaction: etree._Element) -> list[dict[str, str]]:
    return [
        {child.tag: child.text for child in line}
        for line in transaction.find("lines")
        if line.get("type") == "vat"
    ]


def test_twinfield_makes_the_vat_lines_from_each_detail_lines_vat_code(
    api: Cluster, fresh: SandboxHandle
) -> None:
    """As salesTransactionGetResponse.xml (php-twinfield) shows: a VAT line on the code's account, with
    its turnover and baseline, in the answer; per detail line the VAT as sent, else computed per line."""
    api.process(customer_xml())
    two_lines = (("8000", "1.05", "VH"), ("8010", "1.05", "VH"))
    # Per detail line 21 % of 1.05 = 0.2205 -> 0.22, twice 0.44; an app that rounds up its own way says
    # 0.45: a vatvalue books that.
    computed = transaction_xml("V-1", total="2.54", details=two_lines)
    given = transaction_xml(
        "V-2", total="2.55", details=(("8000", "1.05", "VH", "0.23"), ("8010", "1.05", "VH", "0.22"))
    )
    answer = api.process(f"<transactions>{computed}{given}</transactions>")
    assert [t.get("result") for t in answer] == ["1", "1"]
    assert [v.text for v in answer[0].iter("vatvalue")] == ["0.22", "0.22"]
    assert vat_lines(answer[0]) == [
        {"dim1": VAT_ACCOUNT, "value": "0.44", "vatcode": "VH", "debitcredit": "credit",
         "vatturnover": "2.10", "vatbaseturnover": "2.10", "baseline": "1"},
    ]  # fmt: skip
    assert answer[0].find("lines/line[@type='total']").findtext("vattotal") == "0.44"
    assert [v.text for v in answer[1].iter("vatvalue")] == ["0.23", "0.22"]
    first, second = fresh.simulator("twinfield").booked()
    assert (first["total_vat"], first["vat_by_code"]) == (Decimal("0.44"), {"VH": Decimal("0.44")})
    assert (second["total_incl_vat"], second["total_vat"]) == (Decimal("2.55"), Decimal("0.45"))
    (vat,) = [line for line in second["lines"] if line["type"] == "vat"]
    assert (vat["dim1"], vat["signed"], vat["vatturnover"]) == (
        VAT_ACCOUNT,
        Decimal("-0.45"),
        Decimal("2.10"),
    )


def test_a_vat_line_sent_on_top_doubles_the_vat_and_is_refused(api: Cluster, fresh: SandboxHandle) -> None:
    api.process(customer_xml())
    doubled = transaction_xml("W-1", total="2.55", details=(("8000", "2.10", "VH"),), vat=(("VH", "0.45"),))
    answer = api.process(doubled)
    assert error_messages(answer) == ["De boeking is niet in balans. Er ontbreekt 0.44 debet."]
    assert fresh.simulator("twinfield").booked() == []


def test_twinfields_own_vat_rounding_and_autobalancevat(api: Cluster, fresh: SandboxHandle) -> None:
    """The example of developers.twinfield.com, "VAT Calculation": per line with the rounding carried to
    the next line, VAT 38.53 against 38.54 on the total; autobalancevat moves the cent to the highest line."""
    api.process(customer_xml())
    details = tuple(("8000", value, "VH") for value in ("170.00", "3.50", "10.00", "0.00", "0.00", "0.00"))
    plain = api.process(transaction_xml("A-1", total="222.04", details=details))
    assert error_messages(plain) == ["De boeking is niet in balans. Er ontbreekt 0.01 credit."]
    assert [v.text for v in plain.iter("vatvalue")] == []  # refused: no VAT in the answer
    balanced = api.process(transaction_xml("A-2", total="222.03", details=details))
    assert [v.text for v in balanced.iter("vatvalue")] == ["35.70", "0.74", "2.10", "-0.01", "0.01", "-0.01"]
    auto = api.process(
        transaction_xml("A-3", total="222.04", details=details, attributes="autobalancevat='true'")
    )
    assert auto.get("result") == "1"
    assert [v.text for v in auto.iter("vatvalue")][0] == "35.71"
    beyond = api.process(
        transaction_xml("A-4", total="222.05", details=details, attributes="autobalancevat='true'")
    )
    assert error_messages(beyond) == ["De boeking is niet in balans. Er ontbreekt 0.02 credit."]
    assert [(b["reference"], b["total_vat"]) for b in fresh.simulator("twinfield").booked()] == [
        ("A-2", Decimal("38.53")),
        ("A-3", Decimal("38.54")),
    ]


def test_a_negative_line_goes_the_other_way_with_debitcredit(api: Cluster, fresh: SandboxHandle) -> None:
    api.process(customer_xml())
    details = (("8000", "200.00", "VH", "42.00"), ("8090", "20.00", "VH", "4.20", "debit"))
    answer = api.process(transaction_xml("N-1", total="217.80", details=details))
    assert answer.get("result") == "1", error_messages(answer)
    (booking,) = fresh.simulator("twinfield").booked()
    assert (booking["total_incl_vat"], booking["total_vat"]) == (Decimal("217.80"), Decimal("37.80"))
    assert [(line["dim1"], line["signed"]) for line in booking["lines"] if line["type"] == "detail"] == [
        ("8000", Decimal("-200.00")),
        (DISCOUNT_ACCOUNT, Decimal("20.00")),
    ]


def test_zero_rate_vat_codes_get_vat_lines_of_their_own(api: Cluster, fresh: SandboxHandle) -> None:
    api.process(customer_xml())
    details = (("8000", "400.00", "VEU"), ("8000", "300.00", "VEX"), ("8000", "100.00", "VH"))
    answer = api.process(transaction_xml("Z-1", total="821.00", details=details))
    assert [(v["vatcode"], v["value"], v["vatturnover"]) for v in vat_lines(answer)] == [
        ("VEU", "0.00", "400.00"),
        ("VEX", "0.00", "300.00"),
        ("VH", "21.00", "100.00"),
    ]
    (booking,) = fresh.simulator("twinfield").booked()
    assert booking["vat_by_code"] == {"VEU": Decimal("0"), "VEX": Decimal("0"), "VH": Decimal("21.00")}


def test_browse_finds_transactions_by_invoice_number(api: Cluster) -> None:
    api.process(customer_xml())
    api.process(customer_xml(office=SECOND_OFFICE))
    api.process(
        f"<transactions>{transaction_xml('F-1')}{transaction_xml('F-2')}{transaction_xml('F-1')}</transactions>"
    )
    api.process(transaction_xml("F-1", office=SECOND_OFFICE))
    answer = api.process(browse_xml("F-1"))
    assert answer.tag == "browse" and answer.get("result") == "1"
    rows = [{td.get("field"): td.text for td in tr.findall("td")} for tr in answer.findall("tr")]
    assert rows == [
        {"fin.trs.head.office": OFFICE, "fin.trs.line.invnumber": "F-1", "fin.trs.head.number": "202600001"},
        {"fin.trs.head.office": OFFICE, "fin.trs.line.invnumber": "F-1", "fin.trs.head.number": "202600003"},
    ]
    assert api.process(browse_xml("nothing")).findall("tr") == []
    refused = api.process(browse_xml("F-1").replace("fin.trs.head.number", "fin.trs.nope"))
    assert error_messages(refused) == ["Kolom fin.trs.nope bestaat niet."]


def test_browse_answer_has_twinfields_shape_and_a_fault_can_drop_its_filters(
    api: Cluster, fresh: SandboxHandle
) -> None:
    api.process(customer_xml())
    api.process(customer_xml(office=SECOND_OFFICE))
    api.process(f"<transactions>{transaction_xml('F-1')}{transaction_xml('F-2')}</transactions>")
    api.process(transaction_xml("G-1", office=SECOND_OFFICE))
    answer = api.process(browse_xml("F-2"))
    assert [(td.text, td.get("label"), td.get("type")) for td in answer.find("th")] == [
        ("fin.trs.head.office", "Office", "String"),
        ("fin.trs.line.invnumber", "Invoice number", "String"),
        ("fin.trs.head.number", "Trans. no.", "Decimal"),
    ]
    (row,) = answer.findall("tr")
    assert [child.tag for child in row] == ["td", "td", "td", "key"]  # the key comes last, as Twinfield's
    assert [row.findtext(f"key/{part}") for part in ("office", "code", "number", "line")] == [
        OFFICE, "VRK", "202600002", "1",
    ]  # fmt: skip

    fresh.simulator("twinfield").configure(browse_ignores_filters=True)
    ignored = api.process(browse_xml("F-2"))
    numbers = [[td.text for td in tr.findall("td")] for tr in ignored.findall("tr")]
    assert numbers == [[OFFICE, "F-1", "202600001"], [OFFICE, "F-2", "202600002"]]  # never another office's


# -------------------------------------------------------------------------------------------- credits


def test_credits_per_minute_with_429_and_retry_after() -> None:
    handle = start_in_thread(time_scale=20)  # a credit minute passes in three seconds
    try:
        simulator = handle.simulator("twinfield")
        simulator.configure(credits_per_minute=7)
        api = Cluster(handle)
        assert api.process(customer_xml()).get("result") == "1"  # 3
        assert api.process(browse_xml("x")).get("result") == "1"  # 1
        assert api.process(transaction_xml("C-1")).get("result") == "1"  # 3: 7 spent
        refused = api.post(transaction_xml("C-2"))
        assert refused.status_code == 429
        # real seconds, rounded up: the sandbox minute ends within three
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
        assert simulator.create_posts() == {"C-1": 1}  # nothing processed
        time.sleep(float(refused.headers["Retry-After"]))
        assert api.process(transaction_xml("C-2")).get("result") == "1"
        stats = simulator.stats_snapshot()
        assert stats["rate_limited"] == 1
        assert stats["credits_used"] == {CLIENT_ID: 10}
        simulator.configure(limits_enabled=False, credits_per_minute=0)
        assert api.process(browse_xml("x")).get("result") == "1"
    finally:
        handle.stop()


# ---------------------------------------------------------------------------------------------- faults


def test_fault_rules_match_the_processxml_root(api: Cluster, fresh: SandboxHandle) -> None:
    simulator = fresh.simulator("twinfield")
    api.process(customer_xml())
    simulator.faults.set_rules(
        [
            {
                "path": r"processxml\.asmx#ProcessXmlString/transactions$",
                "kind": "status",
                "status": 500,
                "times": 1,
            },
            {"path": "#ProcessXmlString/columns$", "kind": "status", "status": 503, "times": 1},
            {"path": "#ProcessXmlString/dimensions$", "kind": "rate_limit", "times": 1},
        ]
    )
    fault = api.post(f"<transactions>{transaction_xml('X-1')}</transactions>")
    assert fault.headers["content-type"].startswith("text/xml")
    assert fault_text(fault) == "Injected fault"
    unavailable = api.post(browse_xml("X-1"))
    assert unavailable.status_code == 503 and unavailable.headers["content-type"].startswith("text/html")
    limited = api.post(customer_xml())
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert simulator.create_posts() == {}  # none of them was processed
    assert api.process(transaction_xml("X-1")).get("result") == "1"  # a single <transaction> root: no match
    stats = simulator.stats_snapshot()
    assert stats["faults"] == {"status": 2, "rate_limit": 1}
    assert stats["rate_limited"] == 1


def test_commit_then_drop_books_but_the_answer_is_lost(api: Cluster, fresh: SandboxHandle) -> None:
    simulator = fresh.simulator("twinfield")
    api.process(customer_xml())
    simulator.faults.set_rules(
        [{"path": "#ProcessXmlString/transactions$", "kind": "commit_then_drop", "times": 1}]
    )
    with pytest.raises(requests.exceptions.RequestException):
        api.post(f"<transactions>{transaction_xml('D-1')}</transactions>")
    assert [b["reference"] for b in simulator.booked()] == ["D-1"]


def test_a_batch_booked_in_part_loses_its_answer(api: Cluster, fresh: SandboxHandle) -> None:
    """``partial_commit_then_drop`` (``make chaos``): the first part of the ``<transactions>`` is booked,
    then the connection drops; the rest was never booked."""
    simulator = fresh.simulator("twinfield")
    api.process(customer_xml())
    simulator.faults.set_rules(
        [{"path": "#ProcessXmlString/transactions$", "kind": "partial_commit_then_drop", "times": 1}]
    )
    batch = "".join(transaction_xml(f"P-{n}") for n in range(1, 4))
    with pytest.raises(requests.exceptions.RequestException):
        api.post(f"<transactions>{batch}</transactions>")
    assert [b["reference"] for b in simulator.booked()] == ["P-1"]


# ------------------------------------------------------------------------------------------ state


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state_path = tmp_path / "sandbox.json"
    handle = start_in_thread(state_path=state_path)
    try:
        api = Cluster(handle)
        api.process(customer_xml(name="Café 🚀"))
        api.process(transaction_xml("S-1"))
        before = handle.simulator("twinfield").booked()
    finally:
        handle.stop()
    again = start_in_thread(state_path=state_path)
    try:
        simulator = again.simulator("twinfield")
        assert simulator.booked() == before
        assert simulator.customers()[0]["name"] == "Café 🚀"
        api = Cluster(again)  # the bootstrap refresh token still works
        assert api.process(transaction_xml("S-2")).findtext("header/number") == "202600002"
    finally:
        again.stop()


def test_state_round_trips_through_the_python_api() -> None:
    first = TwinfieldSandbox()
    consent = first.consent(CLIENT_ID)
    second = TwinfieldSandbox(saved_state=first.state())
    form = {"grant_type": "refresh_token", "refresh_token": consent["refresh_token"]}
    assert second.token(None, {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form})[
        "access_token"
    ]
    second.reset()
    assert second.customers() == [] and second.stats_snapshot()["token_refreshes"] == 0
