"""The Xero simulator over real HTTP: what a Xero connector relies on must behave like Xero."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from invoice_sync_dev.sandbox import xero_fixtures as fx
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread
from invoice_sync_dev.sandbox.xero import (
    ACCOUNT_CODE_ARCHIVED,
    ACCOUNT_CODE_INVALID,
    CONTACT_NOT_FOUND,
    CONTACT_REQUIRED,
    CREDIT_NOTE_NUMBER_NOT_UNIQUE,
    CURRENCY_NOT_SUBSCRIBED,
    IDEMPOTENCY_MISMATCH,
    INVALID_DATE,
    INVALID_LINE_AMOUNT_TYPES,
    INVALID_STATUS,
    INVOICE_NUMBER_NOT_UNIQUE,
    LINE_ITEMS_REQUIRED,
    NEGATIVE_TOTAL,
    TAX_TYPE_INVALID,
    XeroSandbox,
    parse_where,
)

DEMO, SECOND = fx.DEMO_TENANT_ID, fx.SECOND_TENANT_ID
LIMIT_HEADERS = ("X-MinLimit-Remaining", "X-DayLimit-Remaining", "X-AppMinLimit-Remaining")


def refresh(base: str, refresh_token: str, **extra: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token} | extra
    auth = None if "client_id" in extra else (fx.CLIENT_ID, fx.CLIENT_SECRET)
    return requests.post(f"{base}/identity/connect/token", data=form, auth=auth, timeout=5)


class Api:
    """A minimal Xero client for the tests: one access token, one organisation, JSON in and out."""

    def __init__(self, handle: SandboxHandle, tenant: str = DEMO, refresh_token: str | None = None) -> None:
        self.base = handle.url_of("xero")
        self.tenant = tenant
        tokens = refresh(self.base, refresh_token or fx.BOOTSTRAP_REFRESH_TOKEN).json()
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        self.expires_in = tokens["expires_in"]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "xero-tenant-id": self.tenant} | extra

    def get(self, resource: str, **params: Any) -> requests.Response:
        return requests.get(
            f"{self.base}/api.xro/2.0/{resource}", headers=self.headers(), params=params, timeout=5
        )

    def put(self, resource: str, payload: Any, key: str | None = None, **params: Any) -> requests.Response:
        headers = self.headers(**({"Idempotency-Key": key} if key else {}))
        url = f"{self.base}/api.xro/2.0/{resource}"
        return requests.put(url, headers=headers, json=payload, params=params, timeout=5)

    def contact(self, name: str = "Atelier Verhoeven BV", number: str = "TL-1042") -> str:
        response = self.put("Contacts", {"Contacts": [{"Name": name, "ContactNumber": number}]})
        assert response.status_code == 200, response.text
        return str(response.json()["Contacts"][0]["ContactID"])


def invoice(contact_id: str, number: str | None = "2026/0042", **overrides: Any) -> dict[str, Any]:
    line = {"Description": "Consultancy", "Quantity": 2, "UnitAmount": 125.0, "AccountCode": "200",
            "TaxType": fx.TAX_STANDARD}  # fmt: skip
    document = {"Type": "ACCREC", "Contact": {"ContactID": contact_id}, "InvoiceNumber": number,
                "Date": "2026-03-02", "DueDate": "2026-04-01", "Status": "AUTHORISED",
                "LineItems": [line]}  # fmt: skip
    return {k: v for k, v in (document | overrides).items() if v is not None}


def credit_note(contact_id: str, number: str | None = "CN-2026-1", **overrides: Any) -> dict[str, Any]:
    document = invoice(contact_id, None, Type="ACCRECCREDIT", **overrides)
    return document | ({"CreditNoteNumber": number} if number else {})


def errors(element: dict[str, Any]) -> list[str]:
    return [e["Message"] for e in element.get("ValidationErrors", [])]


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxHandle]:
    """One server for the many cases; each case starts from the fixtures again."""
    handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def fresh(shared: SandboxHandle) -> SandboxHandle:
    shared.simulator("xero").reset()
    return shared


@pytest.fixture
def xero(fresh: SandboxHandle) -> XeroSandbox:
    return fresh.simulator("xero")  # type: ignore[no-any-return]  # the handle returns Any simulators


@pytest.fixture
def api(fresh: SandboxHandle) -> Api:
    return Api(fresh)


# ---------------------------------------------------------------------------------------- OAuth


def test_refresh_tokens_rotate_and_a_used_one_is_refused(fresh: SandboxHandle, xero: XeroSandbox) -> None:
    base = fresh.url_of("xero")
    first = refresh(base, fx.BOOTSTRAP_REFRESH_TOKEN)
    tokens = first.json()
    assert set(tokens) == {"access_token", "refresh_token", "expires_in", "token_type", "scope"}
    assert (tokens["expires_in"], tokens["token_type"]) == (1800, "Bearer")
    assert tokens["scope"].split() == list(fx.SCOPES)
    reused = refresh(base, fx.BOOTSTRAP_REFRESH_TOKEN)
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    assert refresh(base, "never-issued").json() == {"error": "invalid_grant"}
    bad_client = refresh(base, tokens["refresh_token"], client_id=fx.CLIENT_ID, client_secret="wrong")
    assert (bad_client.status_code, bad_client.json()) == (400, {"error": "invalid_client"})
    # client credentials as form fields work as well as HTTP Basic
    second = refresh(base, tokens["refresh_token"], client_id=fx.CLIENT_ID, client_secret=fx.CLIENT_SECRET)
    assert second.status_code == 200 and refresh(base, tokens["refresh_token"]).status_code == 400
    assert xero.stats_snapshot()["token_refreshes"] == 2


def test_a_grace_period_lets_a_lost_refresh_answer_be_fetched_again(
    fresh: SandboxHandle, xero: XeroSandbox
) -> None:
    xero.configure(refresh_grace_s=60)
    base = fresh.url_of("xero")
    assert refresh(base, fx.BOOTSTRAP_REFRESH_TOKEN).status_code == 200
    assert refresh(base, fx.BOOTSTRAP_REFRESH_TOKEN).status_code == 200


def test_expired_and_unknown_tokens_get_401_and_a_refresh_helps(
    fresh: SandboxHandle, api: Api, xero: XeroSandbox
) -> None:
    assert api.get("Accounts").status_code == 200
    assert xero.expire_tokens() == 1
    expired = api.get("Accounts")
    assert expired.status_code == 401 and expired.json()["title"] == "Unauthorized"
    assert expired.json()["status"] == 401 and expired.json()["detail"].startswith(
        "TokenExpired: token expired at "
    )
    anonymous = requests.get(f"{api.base}/api.xro/2.0/Accounts", headers={"xero-tenant-id": DEMO}, timeout=5)
    assert (anonymous.status_code, anonymous.json()["detail"]) == (401, "AuthenticationUnsuccessful")
    assert "X-MinLimit-Remaining" not in expired.headers  # refused calls are not counted
    api.access_token = refresh(api.base, api.refresh_token).json()["access_token"]
    assert api.get("Accounts").status_code == 200


def test_the_tenant_header_decides_the_organisation(fresh: SandboxHandle, api: Api) -> None:
    connections = requests.get(f"{api.base}/connections", headers=api.headers(), timeout=5).json()
    assert [(c["tenantId"], c["tenantName"]) for c in connections] == [
        (DEMO, fx.DEMO_TENANT_NAME), (SECOND, fx.SECOND_TENANT_NAME),
    ]  # fmt: skip
    headers = {"Authorization": f"Bearer {api.access_token}"}
    missing = requests.get(f"{api.base}/api.xro/2.0/Contacts", headers=headers, timeout=5)
    assert (missing.status_code, missing.json()["detail"]) == (403, "AuthorizationUnsuccessful")
    api.tenant = "00000000-0000-0000-0000-000000000001"
    assert api.get("Contacts").status_code == 403
    api.tenant = DEMO
    api.contact()
    api.tenant = SECOND  # same token, other organisation: its own books
    assert api.get("Contacts").json()["Contacts"] == []
    api.contact()  # the same name is free in another organisation
    consented = requests.post(
        f"{api.base}/_sandbox/consent", json={"client_id": fx.CLIENT_ID, "tenants": [DEMO]}, timeout=5
    ).json()
    demo_only = Api(fresh, SECOND, refresh_token=consented["refresh_token"])
    assert demo_only.get("Contacts").status_code == 403
    demo_only.tenant = DEMO
    assert demo_only.get("Contacts").status_code == 200
    form = {"grant_type": "authorization_code", "code": consented["code"]}
    auth = (fx.CLIENT_ID, fx.CLIENT_SECRET)
    code = requests.post(f"{api.base}/identity/connect/token", data=form, auth=auth, timeout=5)
    assert code.status_code == 200 and code.json()["refresh_token"]


# ---------------------------------------------------------------------------------------- limits


def test_limit_headers_count_down_and_token_calls_do_not_count(api: Api, xero: XeroSandbox) -> None:
    answers = [api.get("TaxRates").headers for _ in range(3)]
    assert [a["X-MinLimit-Remaining"] for a in answers] == ["59", "58", "57"]
    assert [a["X-DayLimit-Remaining"] for a in answers] == ["4999", "4998", "4997"]
    assert [a["X-AppMinLimit-Remaining"] for a in answers] == ["9999", "9998", "9997"]
    requests.get(f"{api.base}/connections", headers=api.headers(), timeout=5).raise_for_status()
    api.tenant = SECOND  # its own minute and day, the app's minute shared
    headers = api.get("TaxRates").headers
    assert [headers[h] for h in LIMIT_HEADERS] == ["59", "4999", "9996"]
    assert xero.calls_today(DEMO) == 3


def _limited(response: requests.Response, problem: str) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["X-Rate-Limit-Problem"] == problem
    assert all(h in response.headers for h in LIMIT_HEADERS)
    return int(response.headers["Retry-After"])


def test_minute_day_and_app_limits_answer_429(fresh: SandboxHandle, api: Api, xero: XeroSandbox) -> None:
    xero.configure(minute_limit=2)
    assert [api.get("Accounts").status_code for _ in range(2)] == [200, 200]
    assert 1 <= _limited(api.get("Accounts"), "minute") <= 60
    api.tenant = SECOND
    assert api.get("Accounts").status_code == 200  # the minute is per organisation

    xero.configure(minute_limit=60, day_limit=1)
    assert 1 <= _limited(api.get("Accounts"), "day") <= 86_400  # its one call of today is spent

    xero.reset()
    api = Api(fresh)
    xero.configure(app_minute_limit=3)
    api.get("Accounts")
    api.tenant = SECOND
    api.get("Accounts")
    api.get("Accounts")
    api.tenant = DEMO
    limited = api.get("Accounts")
    assert 1 <= _limited(limited, "appminute") <= 60 and limited.headers["X-AppMinLimit-Remaining"] == "0"
    assert xero.stats_snapshot()["rate_limited_by"] == {"appminute": 1}
    xero.configure(limits_enabled=False)
    assert api.get("Accounts").status_code == 200


def test_more_than_five_calls_in_flight_get_a_concurrent_429(api: Api, xero: XeroSandbox) -> None:
    xero.configure(concurrent_limit=2, processing_delay_s=1.5)
    start = threading.Barrier(5)
    answers: list[requests.Response] = []

    def call() -> None:
        start.wait()
        answers.append(api.get("Accounts"))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 2 and 429 in statuses, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert _limited(refused, "concurrent") == 1
    xero.configure(processing_delay_s=0.0)
    assert api.get("Accounts").status_code == 200  # every slot was released


# ------------------------------------------------------------------------------- invoices and notes


def test_invoice_totals_numbers_and_dates(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    booked = api.put("Invoices", {"Invoices": [invoice(contact)]}).json()
    assert (booked["Status"], booked["ProviderName"]) == ("OK", fx.APP_NAME) and booked["Id"]
    document = booked["Invoices"][0]
    assert (document["SubTotal"], document["TotalTax"], document["Total"]) == (250.0, 52.5, 302.5)
    assert (document["Date"], document["DateString"]) == ("/Date(1772409600000+0000)/", "2026-03-02T00:00:00")
    assert (document["StatusAttributeString"], document["HasErrors"]) == ("OK", False)

    lines = [
        {"Description": "Inclusive 9%", "LineAmount": 109.0, "AccountCode": "260", "TaxType": fx.TAX_REDUCED},
        {"Description": "Tax given", "LineAmount": 10.0, "AccountCode": "200", "TaxAmount": 2.11},
    ]
    inclusive = invoice(
        contact, None, LineAmountTypes="Inclusive", LineItems=lines, Date="/Date(1772409600000)/"
    )
    auto = api.put("Invoices", {"Invoices": [inclusive]}).json()["Invoices"][0]
    assert auto["InvoiceNumber"] == "INV-0001"
    assert (auto["SubTotal"], auto["TotalTax"], auto["Total"]) == (107.89, 11.11, 119.0)
    notax = invoice(contact, None, LineAmountTypes="NoTax")
    assert api.put("Invoices", {"Invoices": [notax]}).json()["Invoices"][0]["TotalTax"] == 0.0
    assert [b["reference"] for b in xero.booked()] == ["2026/0042", "INV-0001", "INV-0002"]
    assert xero.booked()[1]["total_vat"] == Decimal("11.11")

    duplicate = api.put("Invoices", {"Invoices": [invoice(contact)]})
    assert duplicate.status_code == 400 and errors(duplicate.json()["Elements"][0]) == [
        INVOICE_NUMBER_NOT_UNIQUE
    ]
    api.tenant = SECOND  # numbers are unique per organisation
    other = api.contact()
    assert api.put("Invoices", {"Invoices": [invoice(other)]}).status_code == 200
    assert xero.create_posts() == {"2026/0042": 3, "INV-0001": 1, "INV-0002": 1}


def test_credit_notes_are_positive_and_have_their_own_numbers(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    answer = api.put(
        "CreditNotes", {"CreditNotes": [credit_note(contact), credit_note(contact, None)]}
    ).json()
    assert [c["CreditNoteNumber"] for c in answer["CreditNotes"]] == ["CN-2026-1", "CN-0001"]
    assert answer["CreditNotes"][0]["Total"] == 302.5 and answer["CreditNotes"][0]["RemainingCredit"] == 302.5
    again = api.put("CreditNotes", {"CreditNotes": [credit_note(contact)]})
    assert errors(again.json()["Elements"][0]) == [CREDIT_NOTE_NUMBER_NOT_UNIQUE]
    negative_line = [{"Description": "Minus", "LineAmount": -10, "AccountCode": "200"}]
    negative = api.put(
        "CreditNotes", {"CreditNotes": [credit_note(contact, "CN-X", LineItems=negative_line)]}
    )
    assert errors(negative.json()["Elements"][0]) == [NEGATIVE_TOTAL]
    assert [(b["kind"], b["reference"]) for b in xero.booked()] == [
        ("credit_note", "CN-2026-1"), ("credit_note", "CN-0001"),
    ]  # fmt: skip
    found = api.get("CreditNotes", where='CreditNoteNumber=="CN-0001" OR CreditNoteNumber=="CN-2026-1"')
    assert len(found.json()["CreditNotes"]) == 2


def _bad_line(**fields: Any) -> dict[str, Any]:
    return {"LineItems": [{"Description": "x", "UnitAmount": 10, "AccountCode": "200"} | fields]}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"Contact": None}, [CONTACT_REQUIRED]),
        ({"Contact": {"ContactID": "5b2b7f4e-0000-4000-8000-000000000000"}},
         [CONTACT_NOT_FOUND.format("5b2b7f4e-0000-4000-8000-000000000000")]),
        ({"LineItems": []}, [LINE_ITEMS_REQUIRED]),
        (_bad_line(AccountCode="999"), [ACCOUNT_CODE_INVALID.format("999")]),
        (_bad_line(AccountCode=fx.EXPENSE_ACCOUNT), [ACCOUNT_CODE_INVALID.format(fx.EXPENSE_ACCOUNT)]),
        (_bad_line(AccountCode=fx.ARCHIVED_REVENUE_ACCOUNT),
         [ACCOUNT_CODE_ARCHIVED.format(fx.ARCHIVED_REVENUE_ACCOUNT)]),
        (_bad_line(TaxType=fx.TAX_PURCHASES), [TAX_TYPE_INVALID.format(fx.TAX_PURCHASES)]),
        (_bad_line(TaxType=fx.TAX_DELETED, AccountCode="999"),
         [ACCOUNT_CODE_INVALID.format("999"), TAX_TYPE_INVALID.format(fx.TAX_DELETED)]),
        ({"CurrencyCode": "USD"}, [CURRENCY_NOT_SUBSCRIBED.format("USD")]),
        ({"Status": "PAID"}, [INVALID_STATUS.format("Invoice")]),
        ({"LineAmountTypes": "Gross"}, [INVALID_LINE_AMOUNT_TYPES]),
        ({"Date": "02/03/2026"}, [INVALID_DATE.format("Date", "02/03/2026")]),
    ],
)  # fmt: skip
def test_invoice_validation_errors(
    api: Api, xero: XeroSandbox, overrides: dict[str, Any], expected: list[str]
) -> None:
    document = invoice(api.contact(), "V-1") | overrides
    refused = api.put("Invoices", {"Invoices": [{k: v for k, v in document.items() if v is not None}]})
    body = refused.json()
    assert (refused.status_code, body["Type"], body["ErrorNumber"]) == (400, "ValidationException", 10)
    assert errors(body["Elements"][0]) == expected
    assert xero.booked() == []


def test_foreign_currency_where_the_organisation_subscribes(api: Api, xero: XeroSandbox) -> None:
    api.tenant = SECOND
    answer = api.put("Invoices", {"Invoices": [invoice(api.contact(), CurrencyCode="USD")]})
    assert answer.status_code == 200 and xero.booked(SECOND)[0]["currency"] == "USD"


def test_summarize_errors_false_books_the_valid_and_answers_every_element(
    api: Api, xero: XeroSandbox
) -> None:
    contact = api.contact()
    batch = [invoice(contact, "M-1"), invoice(contact, "M-2") | _bad_line(AccountCode="999"),
             invoice(contact, "M-3"), invoice(contact, "M-1")]  # fmt: skip
    answer = api.put("Invoices", {"Invoices": batch}, summarizeErrors="false")
    assert answer.status_code == 200
    elements = answer.json()["Invoices"]
    assert [e["InvoiceNumber"] for e in elements] == ["M-1", "M-2", "M-3", "M-1"]
    assert [e["StatusAttributeString"] for e in elements] == ["OK", "ERROR", "OK", "ERROR"]
    assert [e["HasErrors"] for e in elements] == [False, True, False, True]
    assert errors(elements[3]) == [INVOICE_NUMBER_NOT_UNIQUE]
    assert elements[1]["InvoiceID"] == "00000000-0000-0000-0000-000000000000"
    assert [b["reference"] for b in xero.booked()] == ["M-1", "M-3"]
    assert xero.create_posts() == {"M-1": 2, "M-2": 1, "M-3": 1}
    summarized = api.put("Invoices", {"Invoices": [invoice(contact, "M-4"), invoice(contact, "M-1")]})
    assert summarized.status_code == 400 and len(xero.booked()) == 2  # all or nothing


def test_idempotency_key_replays_and_refuses_another_request(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    payload = {"Invoices": [invoice(contact)]}
    first = api.put("Invoices", payload, key="inv-42")
    replay = api.put("Invoices", payload, key="inv-42")
    assert replay.json()["Invoices"] == first.json()["Invoices"]
    assert replay.headers["X-MinLimit-Remaining"] == "57"  # a replay is still a call
    assert xero.create_posts() == {"2026/0042": 1} and len(xero.booked()) == 1
    other = api.put("Invoices", {"Invoices": [invoice(contact, "2026/0043")]}, key="inv-42")
    assert other.status_code == 400 and other.json()["Message"] == IDEMPOTENCY_MISMATCH.format("inv-42")
    assert errors(other.json()["Elements"][0]) == [IDEMPOTENCY_MISMATCH.format("inv-42")]
    assert api.put("Invoices", payload, key="x" * 129).status_code == 400
    assert xero.stats_snapshot()["idempotent_replays"] == 1
    refused = api.put("Invoices", payload, key="dup")  # a refusal is replayed too
    assert api.put("Invoices", payload, key="dup").json() == refused.json()
    assert xero.create_posts() == {"2026/0042": 2}


# -------------------------------------------------------------------------------- contacts, lookups


def test_contacts_names_are_unique_and_post_updates(api: Api, xero: XeroSandbox) -> None:
    contact_id = api.contact()
    clash = api.put("Contacts", {"Contacts": [{"Name": "atelier verhoeven bv"}]})
    assert errors(clash.json()["Elements"][0]) == [
        "The contact name atelier verhoeven bv is already assigned to another contact. "
        "The contact name must be unique across all active contacts."
    ]
    assert errors(
        api.put("Contacts", {"Contacts": [{"Name": "x", "ContactNumber": "N" * 51}]}).json()["Elements"][0]
    )
    assert errors(
        api.put("Contacts", {"Contacts": [{"Name": "y", "EmailAddress": "nope"}]}).json()["Elements"][0]
    )
    update = {"Contacts": [{"ContactID": contact_id, "EmailAddress": "boekhouding@verhoeven.example"}]}
    response = requests.post(
        f"{api.base}/api.xro/2.0/Contacts", headers=api.headers(), json=update, timeout=5
    )
    assert response.json()["Contacts"][0]["EmailAddress"] == "boekhouding@verhoeven.example"
    assert [(c["code"], c["email"]) for c in xero.customers()] == [
        ("TL-1042", "boekhouding@verhoeven.example")
    ]


def test_lookups_where_ids_search_and_paging(api: Api) -> None:
    contacts = [{"Name": f"Klant {n:03d}", "ContactNumber": f"K{n:03d}"} for n in range(1, 106)]
    ids = [c["ContactID"] for c in api.put("Contacts", {"Contacts": contacts}).json()["Contacts"]]
    where = 'ContactNumber=="K001" OR Name=="klant 002" OR ContactNumber=="none"'
    assert [c["ContactNumber"] for c in api.get("Contacts", where=where).json()["Contacts"]] == [
        "K001",
        "K002",
    ]
    assert len(api.get("Contacts", IDs=",".join(ids[:3])).json()["Contacts"]) == 3
    found = api.get("Contacts", searchTerm="KLANT 10").json()["Contacts"]
    assert [c["Name"] for c in found] == [f"Klant {n}" for n in range(100, 106)]
    pages = [api.get("Contacts", page=p).json() for p in (1, 2)]
    assert [len(p["Contacts"]) for p in pages] == [100, 5] and pages[1]["pagination"]["itemCount"] == 105
    assert len(api.get("Contacts").json()["Contacts"]) == 105  # no page: everything
    assert api.get("Contacts/K007").json()["Contacts"][0]["ContactID"] == ids[6]
    assert api.get(f"Contacts/{ids[0]}").json()["Contacts"][0]["Name"] == "Klant 001"
    missing = api.get("Invoices/0b7a3d2e-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and "X-MinLimit-Remaining" in missing.headers
    assert api.get("Contacts", where="Name startswith x").json()["Type"] == "QueryParseException"
    api.put("Invoices", {"Invoices": [invoice(ids[0], "L-1"), invoice(ids[1], "L-2")]})
    assert [i["InvoiceNumber"] for i in api.get("Invoices", InvoiceNumbers="L-2,L-9").json()["Invoices"]] == [
        "L-2"
    ]
    by_type = api.get("Invoices", where=f'Type=="ACCREC" AND Contact.ContactID==Guid("{ids[1]}")').json()
    assert [i["InvoiceNumber"] for i in by_type["Invoices"]] == ["L-2"]
    accounts = {a["Code"]: a["Status"] for a in api.get("Accounts").json()["Accounts"]}
    assert accounts[fx.ARCHIVED_REVENUE_ACCOUNT] == "ARCHIVED" and accounts[fx.SALES_ACCOUNT] == "ACTIVE"
    rates = {t["TaxType"]: (t["EffectiveRate"], t["Status"]) for t in api.get("TaxRates").json()["TaxRates"]}
    assert rates[fx.TAX_STANDARD] == (21.0, "ACTIVE") and rates[fx.TAX_DELETED][1] == "DELETED"


# ----------------------------------------------------------------------------- time scale, faults


def test_time_scale_shortens_tokens_and_rate_windows() -> None:
    handle = start_in_thread(time_scale=900)  # an access token lives two real seconds
    try:
        api = Api(handle)
        assert api.expires_in == 2 and api.get("Accounts").status_code == 200
        time.sleep(2.5)
        assert api.get("Accounts").status_code == 401
        simulator: XeroSandbox = handle.simulator("xero")
        simulator.configure(minute_limit=1)
        api.access_token = refresh(api.base, api.refresh_token).json()["access_token"]
        first = api.get("Accounts")
        second = api.get("Accounts")
        if first.status_code == 429:  # the window of a slow first call: a sandbox minute is 1/15 s
            first, second = second, api.get("Accounts")
        assert second.status_code in (200, 429)
        if second.status_code == 429:
            assert int(second.headers["Retry-After"]) == 1  # real seconds, never 0
            time.sleep(0.1)
            assert api.get("Accounts").status_code == 200
    finally:
        handle.stop()


def test_time_scale_minute_window_and_retry_after_in_real_seconds() -> None:
    handle = start_in_thread(time_scale=30)  # a sandbox minute lasts two real seconds
    try:
        simulator: XeroSandbox = handle.simulator("xero")
        simulator.configure(minute_limit=1)
        api = Api(handle)
        assert api.expires_in == 60
        api.get("Accounts")
        limited = api.get("Accounts")
        if limited.status_code == 200:  # a loaded machine let the window pass; it opened again
            limited = api.get("Accounts")
        retry_after = _limited(limited, "minute")
        assert 1 <= retry_after <= 2
        time.sleep(retry_after + 0.1)
        assert api.get("Accounts").status_code == 200
    finally:
        handle.stop()


def _faults(api: Api, *rules: dict[str, Any]) -> None:
    requests.post(f"{api.base}/_sandbox/faults", json=list(rules), timeout=5).raise_for_status()


def test_injected_faults_look_like_xero(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    _faults(api, {"kind": "status", "method": "PUT", "path": "Invoices$", "status": 503, "times": 1},
            {"kind": "rate_limit", "method": "GET", "path": "Accounts$", "times": 1})  # fmt: skip
    failed = api.put("Invoices", {"Invoices": [invoice(contact)]}, key="k1")
    assert failed.status_code == 503 and failed.json()["status"] == 503
    assert xero.booked() == [] and xero.create_posts() == {}
    limited = api.get("Accounts")
    assert _limited(limited, "minute") >= 1 and limited.headers["X-MinLimit-Remaining"] == "0"
    assert limited.headers["X-DayLimit-Remaining"] == "4999"  # the faulted PUT never reached Xero
    assert xero.stats_snapshot()["faults"] == {"status": 1, "rate_limit": 1}


def test_a_dropped_answer_is_settled_by_replaying_the_idempotency_key(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    _faults(api, {"kind": "commit_then_drop", "method": "PUT", "path": "Invoices$", "times": 1})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.put("Invoices", {"Invoices": [invoice(contact)]}, key="k-drop").json()
    replay = api.put("Invoices", {"Invoices": [invoice(contact)]}, key="k-drop")
    assert replay.status_code == 200 and replay.json()["Invoices"][0]["InvoiceNumber"] == "2026/0042"
    assert xero.create_posts() == {"2026/0042": 1} and len(xero.booked()) == 1


def test_a_batch_booked_in_part_loses_its_answer(api: Api, xero: XeroSandbox) -> None:
    """``partial_commit_then_drop`` (``make chaos``): Xero books the first part of the array, then the
    connection drops; the rest was never booked."""
    contact = api.contact()
    _faults(api, {"kind": "partial_commit_then_drop", "method": "PUT", "path": "Invoices$", "times": 1})
    numbers = [f"2026/00{n}" for n in range(40, 45)]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.put("Invoices", {"Invoices": [invoice(contact, number) for number in numbers]}).json()
    assert [booking["reference"] for booking in xero.booked()] == numbers[:2]
    assert xero.stats_snapshot()["faults"] == {"partial_commit_then_drop": 1}


# ----------------------------------------------------------------------- control API, persistence


def test_control_api_bookings_customers_stats_and_reset(api: Api, xero: XeroSandbox) -> None:
    api.put("Invoices", {"Invoices": [invoice(api.contact())]}).raise_for_status()
    control = f"{api.base}/_sandbox"
    [booking] = requests.get(f"{control}/bookings", timeout=5).json()
    assert (booking["reference"], booking["total_incl_vat"], booking["tenant"]) == (
        "2026/0042",
        "302.50",
        DEMO,
    )
    assert requests.get(f"{control}/bookings?tenant={SECOND}", timeout=5).json() == []
    assert [c["name"] for c in requests.get(f"{control}/customers", timeout=5).json()] == [
        "Atelier Verhoeven BV"
    ]
    stats = requests.get(f"{control}/stats", timeout=5).json()
    assert stats["calls"] == {"PUT Contacts": 1, "PUT Invoices": 1} and stats["total"] == 2
    assert stats["http"]["calls"]["PUT /api.xro/2.0/Invoices"] == {"200": 1}
    assert requests.post(f"{control}/config", json={"minute_limit": "many"}, timeout=5).status_code == 400
    requests.post(f"{control}/reset", timeout=5).raise_for_status()
    assert xero.booked() == [] and refresh(api.base, fx.BOOTSTRAP_REFRESH_TOKEN).status_code == 200


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox-state.json"
    first = start_in_thread(state_path=state)
    try:
        api = Api(first)
        contact = api.contact()
        answer = api.put("Invoices", {"Invoices": [invoice(contact, None)]}, key="k-restart").json()
    finally:
        first.stop()
    second = start_in_thread(state_path=state)
    try:
        simulator: XeroSandbox = second.simulator("xero")
        assert [b["reference"] for b in simulator.booked()] == ["INV-0001"]
        assert refresh(second.url_of("xero"), fx.BOOTSTRAP_REFRESH_TOKEN).status_code == 400
        api.base = second.url_of("xero")
        assert api.get("Contacts").json()["Contacts"][0]["ContactID"] == contact  # the access token lives on
        replay = api.put("Invoices", {"Invoices": [invoice(contact, None)]}, key="k-restart").json()
        assert replay["Invoices"] == answer["Invoices"]
        api.access_token = refresh(api.base, api.refresh_token).json()["access_token"]
        assert api.put("Invoices", {"Invoices": [invoice(contact, None)]}).json()["Invoices"][0][
            "InvoiceNumber"
        ] == ("INV-0002")
        assert simulator.calls_today(DEMO) >= 4  # the day's count survived too
    finally:
        second.stop()
    assert not list(tmp_path.glob(".sandbox-state.json.*"))


def test_where_keeps_and_or_inside_quoted_values_together() -> None:
    """A name with " AND " or " OR " in it is one value, not two clauses."""
    matches = parse_where('Name=="Peeters AND Co" OR ContactNumber=="12"')
    assert matches({"Name": "Peeters and Co"}) and matches({"ContactNumber": "12"})
    assert not matches({"Name": "Peeters"})
    quoted = parse_where('Name=="A \\" OR B" AND Type=="ACCREC"')
    assert quoted({"Name": 'A " OR B', "Type": "ACCREC"}) and not quoted({"Name": "A", "Type": "ACCREC"})


def test_negative_lines_book_and_a_negative_total_only_stays_a_draft(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    lines = [
        {"Description": "Work", "Quantity": 1, "UnitAmount": 100.0, "AccountCode": "200",
         "TaxType": fx.TAX_STANDARD},
        {"Description": "Discount", "Quantity": 1, "UnitAmount": -10.0, "AccountCode": fx.DISCOUNT_ACCOUNT,
         "TaxType": fx.TAX_STANDARD},
    ]  # fmt: skip
    document = api.put("Invoices", {"Invoices": [invoice(contact, "N-1", LineItems=lines)]}).json()[
        "Invoices"
    ][0]
    assert (document["SubTotal"], document["TotalTax"], document["Total"]) == (90.0, 18.9, 108.9)
    assert [i["LineAmount"] for i in document["LineItems"]] == [100.0, -10.0]
    upside_down = [lines[0] | {"UnitAmount": 10.0}, lines[1] | {"UnitAmount": -20.0}]
    refused = api.put("Invoices", {"Invoices": [invoice(contact, "N-2", LineItems=upside_down)]})
    assert refused.status_code == 400 and errors(refused.json()["Elements"][0]) == [NEGATIVE_TOTAL]
    draft = invoice(contact, "N-3", LineItems=upside_down, Status="DRAFT")
    assert api.put("Invoices", {"Invoices": [draft]}).json()["Invoices"][0]["Total"] == -12.1
    assert [b["reference"] for b in xero.booked()] == ["N-1"]


def test_two_zero_rate_lines_keep_their_own_tax_types(api: Api, xero: XeroSandbox) -> None:
    contact = api.contact()
    lines = [
        {"Description": "Exempt", "LineAmount": 100.0, "AccountCode": "200", "TaxType": fx.TAX_EXEMPT},
        {"Description": "EU supply", "LineAmount": 50.0, "AccountCode": "200", "TaxType": fx.TAX_EC_ZERO},
    ]
    document = api.put("Invoices", {"Invoices": [invoice(contact, "Z-1", LineItems=lines)]}).json()[
        "Invoices"
    ][0]
    assert (document["SubTotal"], document["TotalTax"]) == (150.0, 0.0)
    (booking,) = xero.booked()
    assert [(line["TaxType"], line["LineAmount"]) for line in booking["lines"]] == [
        (fx.TAX_EXEMPT, Decimal("100.0")),
        (fx.TAX_EC_ZERO, Decimal("50.0")),
    ]
