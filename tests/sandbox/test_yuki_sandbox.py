"""The Yuki simulator over real HTTP: what the Yuki connector relies on must behave like Yuki."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from lxml import etree

from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread
from invoice_sync_dev.sandbox.yuki import SALES_INVOICES_NS, SOAP_ENV, YUKI_NS, YukiSandbox
from invoice_sync_dev.sandbox.yuki_fixtures import (
    ACCESS_KEY,
    ADMINISTRATION_ID,
    ADMINISTRATION_NAME,
    DOMAIN_ID,
    LIMITED_ACCESS_KEY,
    SECOND_ADMINISTRATION_ID,
)

Param = tuple[str, "str | etree._Element"]


# -- a minimal SOAP client for the tests --------------------------------------------------------------


def call(
    base: str, service: str, operation: str, params: Sequence[Param] = (), *, action: str | None = None
) -> requests.Response:
    """POST one SOAP 1.1 envelope built with lxml."""
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    content = etree.SubElement(body, f"{{{YUKI_NS}}}{operation}", nsmap={None: YUKI_NS})
    for name, value in params:
        node = etree.SubElement(content, f"{{{YUKI_NS}}}{name}")
        if isinstance(value, str):
            node.text = value
        else:
            node.append(value)
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{action if action is not None else YUKI_NS + operation}"',
    }
    data = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    return requests.post(f"{base}/ws/{service}.asmx", data=data, headers=headers, timeout=10)


def result(response: requests.Response, operation: str) -> etree._Element:
    assert response.status_code == 200, response.text
    document = etree.fromstring(response.content)
    node = document.find(f".//{{{YUKI_NS}}}{operation}Result")
    assert node is not None, response.text
    return node


def fault(response: requests.Response) -> str:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("text/xml")
    document = etree.fromstring(response.content)
    assert document.find(f".//{{{SOAP_ENV}}}Fault/faultcode") is not None
    return document.findtext(f".//{{{SOAP_ENV}}}Fault/faultstring") or ""


def authenticate(base: str, key: str = ACCESS_KEY, service: str = "Sales") -> str:
    return result(call(base, service, "Authenticate", [("accessKey", key)]), "Authenticate").text or ""


def sales(tag: str, text: Any = None, *children: etree._Element) -> etree._Element:
    node = etree.Element(f"{{{SALES_INVOICES_NS}}}{tag}", nsmap={None: SALES_INVOICES_NS})
    if text is not None:
        node.text = str(text)
    node.extend(children)
    return node


def line(
    price: str = "100.00",
    percentage: str = "21",
    vat_type: str = "2",
    gl: str | None = "7000",
    *,
    quantity: str = "1",
    amount: str | None = None,
    vat: str | None = None,
) -> etree._Element:
    product = [
        sales("Description", "Consultancy"),
        sales("SalesPrice", price),
        sales("VATPercentage", percentage),
        sales("VATIncluded", "false"),
        sales("VATType", vat_type),
    ]
    if gl is not None:
        product.append(sales("GLAccountCode", gl))
    parts = [sales("Description", "Work"), sales("ProductQuantity", quantity)]
    if amount is not None:
        parts.append(sales("LineAmount", amount))
    if vat is not None:
        parts.append(sales("LineVATAmount", vat))
    return sales("InvoiceLine", None, *parts, sales("Product", None, *product))


def invoice(
    reference: str,
    *lines: etree._Element,
    code: str | None = "C1042",
    name: str = "Atelier Verhoeven BV",
    process: str = "true",
    date: str = "2026-03-02",
) -> etree._Element:
    contact = [
        sales("FullName", name),
        sales("Zipcode", "9000"),
        sales("AddressLine_1", "Kortrijksesteenweg 12"),
    ]
    if code is not None:
        contact.insert(0, sales("ContactCode", code))
    return sales(
        "SalesInvoice",
        None,
        sales("Reference", reference),
        sales("Subject", f"Invoice {reference}"),
        sales("Process", process),
        sales("EmailToCustomer", "false"),
        sales("Date", date),
        sales("Contact", None, *contact, sales("ContactType", "Company")),
        sales("InvoiceLines", None, *(lines or [line()])),
    )


def process(
    base: str, session: str, *invoices: etree._Element, administration: str = ADMINISTRATION_ID
) -> etree._Element:
    """ProcessSalesInvoices; returns the SalesInvoicesImportResponse (child elements or escaped text)."""
    document = sales("SalesInvoices", None, *invoices)
    params: list[Param] = [("sessionId", session), ("administrationId", administration), ("xmlDoc", document)]
    holder = result(call(base, "Sales", "ProcessSalesInvoices", params), "ProcessSalesInvoices")
    if len(holder):
        return holder[0]
    return etree.fromstring((holder.text or "").encode())


def process_fault(base: str, session: str, administration: str = ADMINISTRATION_ID) -> str:
    params: list[Param] = [
        ("sessionId", session),
        ("administrationId", administration),
        ("xmlDoc", sales("SalesInvoices", None, invoice("X1"))),
    ]
    return fault(call(base, "Sales", "ProcessSalesInvoices", params))


def results(response: etree._Element) -> list[dict[str, str]]:
    return [
        {etree.QName(c).localname: c.text or "" for c in node}
        for node in response
        if "Invoice" == local(node)
    ]


def local(node: etree._Element) -> str:
    return etree.QName(node).localname


def total(response: etree._Element, name: str) -> int:
    return int(response.findtext(f"{{*}}{name}") or "-1")


def items(base: str, session: str, reference: str) -> list[etree._Element]:
    params: list[Param] = [
        ("sessionID", session),
        ("administrationID", ADMINISTRATION_ID),
        ("Reference", reference),
    ]
    holder = result(
        call(base, "Accounting", "CheckOutstandingItemAdmin", params), "CheckOutstandingItemAdmin"
    )
    return holder.findall(".//{*}Item")


@pytest.fixture
def yuki(sandbox: SandboxHandle) -> tuple[str, YukiSandbox]:
    return sandbox.url_of("yuki"), sandbox.simulator("yuki")


@pytest.fixture
def fast() -> Iterator[SandboxHandle]:
    """A sandbox whose day passes in four real seconds (room for a few calls on a loaded machine)."""
    handle = start_in_thread(time_scale=21_600)
    try:
        yield handle
    finally:
        handle.stop()


# -- sessions and faults -----------------------------------------------------------------------------


def test_authenticate_opens_a_session_on_every_service_and_a_bad_key_faults(yuki):
    base, simulator = yuki
    sessions = {authenticate(base, service=service) for service in ("Sales", "Accounting", "Contact")}
    assert len(sessions) == 3 and all(len(s) == 36 for s in sessions)
    text = fault(call(base, "Sales", "Authenticate", [("accessKey", "wrong")]))
    assert "invalid" in text.lower() and "access key" in text.lower()
    assert simulator.stats_snapshot()["token_refreshes"] == 3


def test_an_expired_or_unknown_session_faults_and_a_new_one_works(yuki):
    base, simulator = yuki
    session = authenticate(base)
    assert simulator.expire_tokens() == 1
    for text in (process_fault(base, session), process_fault(base, "not-a-session")):
        assert "invalid" in text.lower() and "session" in text.lower()
    assert simulator.booked() == [] and simulator.create_posts() == {}
    assert total(process(base, authenticate(base), invoice("X1")), "TotalSucceeded") == 1


def test_a_session_lives_24_sandbox_hours(fast):
    base = fast.url_of("yuki")
    session = authenticate(base)
    assert total(process(base, session, invoice("A1")), "TotalSucceeded") == 1
    time.sleep(4.4)
    assert "session" in process_fault(base, session).lower()


def test_parameter_names_are_spelled_as_yuki_spells_them(yuki):
    base, _ = yuki
    session = authenticate(base)
    # sessionID (capital D) is the spelling elsewhere; ProcessSalesInvoices wants sessionId.
    params: list[Param] = [
        ("sessionID", session),
        ("administrationId", ADMINISTRATION_ID),
        ("xmlDoc", sales("SalesInvoices", None, invoice("X1"))),
    ]
    assert "session" in fault(call(base, "Sales", "ProcessSalesInvoices", params)).lower()
    wrong = [("sessionId", session), ("administrationID", ADMINISTRATION_ID), ("Reference", "X1")]
    assert "session" in fault(call(base, "Accounting", "CheckOutstandingItemAdmin", wrong)).lower()


def test_soap_action_must_name_a_known_operation_that_matches_the_body(yuki):
    base, _ = yuki
    unknown = fault(call(base, "Sales", "Authenticate", [("accessKey", ACCESS_KEY)], action=YUKI_NS + "Nope"))
    assert "did not recognize the value of HTTP Header SOAPAction" in unknown
    mismatch = call(
        base, "Sales", "Authenticate", [("accessKey", ACCESS_KEY)], action=YUKI_NS + "Administrations"
    )
    assert "does not match the body element 'Authenticate'" in fault(mismatch)
    elsewhere = call(base, "Contact", "ProcessSalesInvoices", [("sessionId", "x")])
    assert "SOAPAction" in fault(elsewhere)
    garbled = requests.post(
        f"{base}/ws/Sales.asmx",
        data=b"<soap:Envelope",
        headers={"SOAPAction": f'"{YUKI_NS}Authenticate"', "Content-Type": "text/xml"},
        timeout=5,
    )
    assert "unable to read request" in fault(garbled)


def test_key_rights_administration_and_bundle_are_checked(yuki):
    base, simulator = yuki
    limited = authenticate(base, LIMITED_ACCESS_KEY)
    assert "not allowed for this access key" in process_fault(base, limited)
    assert "Unknown administration ID" in process_fault(base, authenticate(base), "0000")
    assert "invoicing bundle" in process_fault(base, authenticate(base), SECOND_ADMINISTRATION_ID)
    # The limited key may still read outstanding items (Accounting right).
    assert items(base, limited, "X1") == []
    assert simulator.booked() == []


def test_administrations_and_administration_id(yuki):
    base, _ = yuki
    session = authenticate(base)
    holder = result(call(base, "Accounting", "Administrations", [("sessionID", session)]), "Administrations")
    rows = {node.get("ID"): node.findtext("{*}Name") for node in holder.iter("Administration")}
    assert rows[ADMINISTRATION_ID] == ADMINISTRATION_NAME and SECOND_ADMINISTRATION_ID in rows
    params: list[Param] = [("sessionID", session), ("administrationName", ADMINISTRATION_NAME)]
    assert (
        result(call(base, "Sales", "AdministrationID", params), "AdministrationID").text == ADMINISTRATION_ID
    )
    missing = [("sessionID", session), ("administrationName", "Nope BV")]
    assert "Unknown administration name" in fault(call(base, "Sales", "AdministrationID", missing))


# -- the xmlDoc: schema first, then invoice by invoice -----------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (
            lambda inv: inv.insert(0, inv[4]),
            "Element 'Date': This element is not expected",
        ),  # before Reference
        (
            lambda inv: inv.remove(inv[2]),
            "Element 'EmailToCustomer': This element is not expected",
        ),  # no Process
        (
            lambda inv: setattr(inv[4], "text", "02-03-2026"),
            "'02-03-2026' is not a valid value of the atomic type 'xs:date'",
        ),
        (
            lambda inv: setattr(inv[2], "text", "yes"),
            "'yes' is not a valid value of the atomic type 'xs:boolean'",
        ),
        (
            lambda inv: inv.insert(2, sales("PaymentMethod", "x" * 61)),
            "exceeds the allowed maximum length of '60'",
        ),
        (
            lambda inv: inv[6][0][2].insert(1, inv[6][0][2][4]),
            "'VATType': This element is not expected. Expected is one of ( Reference, Category, SalesPrice )",
        ),
        (
            lambda inv: setattr(inv[6][0][2][1], "text", "1O.00"),
            "Element 'SalesPrice': '1O.00' is not a valid",
        ),
        (
            lambda inv: setattr(inv[6][0][2][1], "text", "10.00001"),
            "more fractional digits than are allowed ('4')",
        ),
        (
            lambda inv: inv[5].append(sales("ContactType", "Firm")),
            "Element 'ContactType': This element is not",
        ),
        # the order before the 2026-12-04 correction: e-mail last, line amounts after the product
        (
            lambda inv: inv[5].append(sales("EmailAddress", "a@b.be")),
            "Element 'EmailAddress': This element is not",
        ),
        (
            lambda inv: inv[6][0].append(sales("LineAmount", "100.00")),
            "Element 'LineAmount': This element is not",
        ),
    ],
)
def test_a_schema_failure_rejects_the_whole_call_with_one_message(yuki, mangle, expected):
    base, simulator = yuki
    good, bad = invoice("S1"), invoice("S2", code="C2")
    mangle(bad)
    response = process(base, authenticate(base), good, bad)
    assert results(response) == []
    assert [total(response, n) for n in ("TotalSucceeded", "TotalFailed", "TotalSkipped")] == [0, 0, 0]
    message = response.findtext("{*}Message") or ""
    assert (
        "SalesInvoices.xsd" in message
        and "SalesInvoice 2 (Reference 'S2')" in message
        and expected in message
    )
    assert simulator.booked() == [] and simulator.create_posts() == {} and simulator.customers() == []


def test_per_invoice_checks_refuse_with_yukis_texts_and_leave_no_trace(yuki):
    base, simulator = yuki
    response = process(
        base,
        authenticate(base),
        invoice("P1"),
        invoice("P2", line(vat_type="9"), code="C2"),
        invoice("P3", line(gl="7999"), code="C3"),
        invoice("P4", line(price="10.005"), code="C4"),
        invoice("P5", line(percentage="12", vat_type="2"), code="C5"),
    )
    by_reference = {r["Reference"]: r for r in results(response)}
    assert by_reference["P1"]["Succeeded"] == "true" and by_reference["P1"]["Processed"] == "true"
    assert by_reference["P2"]["Message"] == "No tax code for VATPercentage 21 & VATType 9"
    assert "GLAccountCode '7999' does not exist" in by_reference["P3"]["Message"]
    assert "sales price 10.005 has too many decimals" in by_reference["P4"]["Message"]
    assert all(by_reference[r]["Succeeded"] == "false" for r in ("P2", "P3", "P4"))
    assert by_reference["P1"]["Contact"] == "Atelier Verhoeven BV"
    assert [total(response, n) for n in ("TotalSucceeded", "TotalFailed", "TotalSkipped")] == [2, 3, 0]
    assert [b["reference"] for b in simulator.booked()] == ["P1", "P5"]
    assert sorted(c["code"] for c in simulator.customers()) == ["C1042", "C5"]  # no contact of a failed one
    assert simulator.create_posts() == dict.fromkeys(["P1", "P2", "P3", "P4", "P5"], 1)


def test_processing_stops_after_six_faulty_invoices(yuki):
    base, simulator = yuki
    faulty = [invoice(f"F{n}", line(vat_type="9"), code=f"C{n}") for n in range(1, 8)]
    response = process(base, authenticate(base), *faulty, invoice("OK1"), invoice("OK2"))
    assert [r["Reference"] for r in results(response)] == [f"F{n}" for n in range(1, 7)]
    assert [total(response, n) for n in ("TotalSucceeded", "TotalFailed", "TotalSkipped")] == [0, 6, 3]
    assert simulator.booked() == [] and "F7" not in simulator.create_posts()


def test_a_reference_already_booked_is_refused_as_a_duplicate(yuki):
    base, simulator = yuki
    session = authenticate(base)
    process(base, session, invoice("D1"))
    again = results(process(base, session, invoice("D1", line(price="5.00"))))[0]
    assert again["Succeeded"] == "false" and "already exists" in again["Message"]
    assert "duplicate" in again["Message"]
    assert len(simulator.booked()) == 1 and simulator.create_posts() == {"D1": 2}


def test_process_false_leaves_a_draft_without_an_item(yuki):
    base, simulator = yuki
    session = authenticate(base)
    result_ = results(process(base, session, invoice("DR1", process="false")))[0]
    assert (result_["Succeeded"], result_["Processed"]) == ("true", "false")
    assert simulator.booked() == [] and len(simulator.drafts()) == 1 and items(base, session, "DR1") == []


def test_line_amounts_are_honoured_else_vat_is_rounded_half_up_per_line(yuki):
    base, simulator = yuki
    process(
        base,
        authenticate(base),
        invoice("M1", line("2.50", quantity="1"), line("0.05", "6"), line("33.33", quantity="3")),
        invoice(
            "M2",
            line("10.01", amount="10.01", vat="2.11"),
            line("10.01", quantity="-1", amount="-10.01", vat="-2.10"),
        ),
    )
    first, second = simulator.booked()
    assert [ln["vat_amount"] for ln in first["lines"]] == [Decimal("0.53"), Decimal("0.00"), Decimal("21.00")]
    assert first["total_excl_vat"] == Decimal("102.54") and first["total_vat"] == Decimal("21.53")
    assert second["total_vat"] == Decimal("0.01") and second["total_incl_vat"] == Decimal("0.01")


def test_booked_invoices_get_item_ids_that_lookups_return(yuki):
    base, simulator = yuki
    session = authenticate(base)
    process(base, session, invoice("I1"), invoice("I2", code="C2"))
    booked = {b["reference"]: b for b in simulator.booked()}
    found = items(base, session, "I1")
    assert [node.get("ID") for node in found] == [booked["I1"]["item_id"]]
    assert found[0].findtext("{*}OriginalAmount") == "121.00" and booked["I1"]["registration_number"] == "I1"
    assert booked["I1"]["item_id"] != booked["I2"]["item_id"]
    assert items(base, session, "I3") == []
    manual = simulator.add_outstanding_item("I1", Decimal("5.00"))
    assert [node.get("ID") for node in items(base, session, "I1")] == [booked["I1"]["item_id"], manual]
    holder = result(
        call(base, "Accounting", "CheckOutstandingItem", [("sessionID", session), ("Reference", "I2")]),
        "CheckOutstandingItem",
    )
    assert [n.get("ID") for n in holder.iter("Item")] == [booked["I2"]["item_id"]]


def test_contacts_match_by_code_or_name_and_address_and_search_pages_by_100(yuki):
    base, simulator = yuki
    session = authenticate(base)
    process(base, session, invoice("K1", code="C1"), invoice("K2", code="C1", name="Renamed BV"))
    process(
        base,
        session,
        invoice("K3", code=None, name="No Code NV"),
        invoice("K4", code=None, name="No Code NV"),
    )
    contacts = {c["name"]: c for c in simulator.customers()}
    assert set(contacts) == {"Atelier Verhoeven BV", "No Code NV"}  # an existing contact is not renamed
    assert {b["customer_code"] for b in simulator.booked()} == {"C1", contacts["No Code NV"]["code"]}
    process(base, session, *[invoice(f"N{n}", code=f"N{n:03d}", name=f"Klant {n:03d}") for n in range(103)])

    def search(page: int, value: str = "") -> list[etree._Element]:
        params: list[Param] = [
            ("sessionID", session),
            ("domainID", DOMAIN_ID),
            ("searchOption", "Name"),
            ("searchValue", value),
            ("sortOrder", "Name"),
            ("modifiedAfter", ""),
            ("active", "Both"),
            ("pageNumber", str(page)),
        ]
        holder = result(call(base, "Contact", "SearchContacts", params), "SearchContacts")
        return list(holder.iter("Contact"))  # a result's children carry no namespace

    assert [len(search(page)) for page in (1, 2, 3)] == [100, 5, 0]
    assert [c.findtext("Code") for c in search(1, "klant 10")] == ["N100", "N101", "N102"]


# -- limits, faults, forms, persistence --------------------------------------------------------------


def _sleep_past_midnight(simulator: YukiSandbox) -> None:
    """Wait (for real) until the sandbox's next midnight has passed."""
    now = simulator.clock.now()
    seconds = 86_400 - (now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6)
    time.sleep(simulator.clock.sandbox_seconds_to_real(seconds) + 0.05)


def test_the_daily_call_limit_faults_until_sandbox_midnight(fast):
    base, simulator = fast.url_of("yuki"), fast.simulator("yuki")
    simulator.configure(daily_limit=3)
    _sleep_past_midnight(simulator)  # a fresh sandbox day of four real seconds
    session = authenticate(base)  # 1
    process(base, session, invoice("Q1"))  # 2
    assert items(base, session, "Q1")  # 3
    text = process_fault(base, session)
    assert "daily call limit exceeded" in text.lower()
    assert "limit" in fault(call(base, "Sales", "Authenticate", [("accessKey", ACCESS_KEY)])).lower()
    assert simulator.create_posts() == {"Q1": 1} and simulator.stats_snapshot()["rate_limited"] == 2
    _sleep_past_midnight(simulator)
    session = authenticate(base)  # a session lives a day: the old one may have ended with it
    assert total(process(base, session, invoice("Q2")), "TotalSucceeded") == 1
    simulator.configure(limits_enabled=False)
    assert simulator.calls_today() == 2


def test_fault_rules_can_target_one_operation(yuki):
    base, simulator = yuki
    simulator.faults.set_rules(
        [
            {
                "kind": "status",
                "status": 500,
                "method": "POST",
                "path": r"/ws/Sales\.asmx#ProcessSalesInvoices$",
                "times": 1,
            },
            {
                "kind": "status",
                "status": 502,
                "method": "POST",
                "path": r"#CheckOutstandingItemAdmin$",
                "times": 1,
            },
            {"kind": "rate_limit", "path": r"#Administrations$", "times": 1},
        ]
    )
    session = authenticate(base)  # not hit by the rule on the same path
    assert "Server was unable to process request" in process_fault(base, session)
    gateway = call(
        base,
        "Accounting",
        "CheckOutstandingItemAdmin",
        [("sessionID", session), ("administrationID", ADMINISTRATION_ID), ("Reference", "X")],
    )
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")
    assert b"Fault" not in gateway.content
    throttled = call(base, "Accounting", "Administrations", [("sessionID", session)])
    assert throttled.status_code == 429
    assert total(process(base, session, invoice("R1")), "TotalSucceeded") == 1
    stats = simulator.stats_snapshot()
    assert stats["calls"] == {"Authenticate": 1, "ProcessSalesInvoices": 1} and stats["rate_limited"] == 1
    assert simulator.create_posts() == {"R1": 1}


def test_the_response_may_come_as_escaped_text(yuki):
    base, simulator = yuki
    simulator.configure(response_as_text=True)
    session = authenticate(base)
    document = sales("SalesInvoices", None, invoice("T1"))
    params: list[Param] = [
        ("sessionId", session),
        ("administrationId", ADMINISTRATION_ID),
        ("xmlDoc", document),
    ]
    holder = result(call(base, "Sales", "ProcessSalesInvoices", params), "ProcessSalesInvoices")
    assert len(holder) == 0 and "SalesInvoicesImportResponse" in (holder.text or "")
    response = etree.fromstring((holder.text or "").encode())
    assert etree.QName(response).namespace == "urn:xmlns:http://www.theyukicompany.com:salesinvoicesresponse"
    assert results(response)[0]["Succeeded"] == "true"
    assert response.findtext("{*}AdministrationId") == ADMINISTRATION_ID


def test_control_api(yuki):
    base, simulator = yuki
    process(base, authenticate(base), invoice("C1"))
    control = f"{base}/_sandbox"
    booking = requests.get(f"{control}/bookings", timeout=5).json()[0]
    assert booking["reference"] == "C1" and booking["total_incl_vat"] == "121.00"
    assert requests.get(f"{control}/customers", timeout=5).json()[0]["code"] == "C1042"
    assert requests.get(f"{control}/stats", timeout=5).json()["token_refreshes"] == 1
    assert requests.post(f"{control}/config", json={"daily_limit": 5}, timeout=5).json()["daily_limit"] == 5
    assert requests.post(f"{control}/config", json={"nope": 1}, timeout=5).status_code == 400
    rules = [{"kind": "status", "status": 503, "path": "#Authenticate$"}]
    assert len(requests.post(f"{control}/faults", json=rules, timeout=5).json()) == 1
    assert requests.delete(f"{control}/faults", timeout=5).json() == []
    assert requests.post(f"{control}/expire-tokens", timeout=5).json() == {"expired": 1}
    requests.post(f"{control}/reset", timeout=5).raise_for_status()
    assert simulator.booked() == [] and simulator.config.daily_limit == 1000


def test_state_survives_a_restart(tmp_path: Path):
    state = tmp_path / "sandbox.json"
    first = start_in_thread(state_path=state)
    try:
        base = first.url_of("yuki")
        session = authenticate(base)
        process(base, session, invoice("P1", line("9.99")))
        item = first.simulator("yuki").booked()[0]["item_id"]
    finally:
        first.stop()
    second = start_in_thread(state_path=state)
    try:
        base, simulator = second.url_of("yuki"), second.simulator("yuki")
        assert [b["total_vat"] for b in simulator.booked()] == [Decimal("2.10")]
        assert [node.get("ID") for node in items(base, session, "P1")] == [item]  # the session survived too
        assert "already exists" in results(process(base, session, invoice("P1")))[0]["Message"]
        assert [c["code"] for c in simulator.customers()] == ["C1042"]
    finally:
        second.stop()


# -- issue #12: answers by local name, paid items, SalesPrice 0, what the XSD lets out ----------------


@pytest.mark.parametrize("as_text", [False, True])
def test_the_children_of_a_result_carry_no_namespace(yuki, as_text):
    """Yuki's results hold their children with xmlns="" (DatrixFinances XMLService.cs reads them so): a
    client that looked them up in the result's namespace would find nothing."""
    base, simulator = yuki
    simulator.configure(response_as_text=as_text)
    session = authenticate(base)
    response = process(base, session, invoice("NS1"))
    assert etree.QName(response).namespace == "urn:xmlns:http://www.theyukicompany.com:salesinvoicesresponse"
    assert {etree.QName(c).namespace for c in response.iter() if c is not response} == {None}
    assert response.find("Invoice/Succeeded").text == "true"  # type: ignore[union-attr]  # a missing element fails anyway
    found = items(base, session, "NS1")
    assert [etree.QName(node).namespace for node in found] == [None]


def test_a_paid_invoice_leaves_the_outstanding_items_but_keeps_its_reference(yuki):
    base, simulator = yuki
    session = authenticate(base)
    process(base, session, invoice("P1"))
    assert len(items(base, session, "P1")) == 1
    assert simulator.mark_paid("P1") == 1
    assert items(base, session, "P1") == []  # silence: no proof that nothing was booked
    again = results(process(base, session, invoice("P1")))
    assert again[0]["Succeeded"] == "false" and "duplicate invoice number" in again[0]["Message"]
    assert len(simulator.booked()) == 1


def test_a_sales_price_of_zero_bills_the_catalogue_price(yuki):
    base, simulator = yuki
    session = authenticate(base)
    process(base, session, invoice("Z1", line("80.00")))  # puts "Consultancy" at 80.00 in the catalogue
    process(base, session, invoice("Z2", line("0.00", amount="0.00", vat="0.00")))
    zero = next(b for b in simulator.booked() if b["reference"] == "Z2")
    assert zero["total_excl_vat"] == Decimal("80.00") and zero["lines"][0]["sales_price"] == Decimal("80.00")


def test_negative_lines_two_zero_rate_types_and_no_reference_are_accepted(yuki):
    base, simulator = yuki
    session = authenticate(base)
    numbered = invoice(
        "R0", line("100.00"), line("20.00", quantity="-1"), line("-5.00"), line("10.00", "0", "5")
    )
    numbered.remove(numbered[0])  # no Reference: Yuki numbers the invoice itself
    process(base, session, invoice("R1", line("10.00", "0", "5"), line("30.00", "0", "3")), numbered)
    first, second = simulator.booked()
    assert [(ln["vat_percentage"], ln["vat_type"]) for ln in first["lines"]] == [("0", "5"), ("0", "3")]
    assert second["reference"] == "2" and second["total_excl_vat"] == Decimal("85.00")


def test_a_new_contact_needs_a_full_name(yuki):
    base, simulator = yuki
    nameless = invoice("C1", code="UNKNOWN")
    contact = nameless.find(f"{{{SALES_INVOICES_NS}}}Contact")
    assert contact is not None
    contact.remove(contact.find(f"{{{SALES_INVOICES_NS}}}FullName"))
    refused = results(process(base, authenticate(base), nameless))
    assert refused[0]["Succeeded"] == "false" and "without a FullName" in refused[0]["Message"]
    assert simulator.booked() == [] and simulator.customers() == []
