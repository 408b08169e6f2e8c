"""The QuickBooks Online simulator over real HTTP: what a QuickBooks connector relies on must behave like
Intuit's API (the SDK-level proof is tests/contract/test_quickbooks_sdk.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from invoice_sync_dev.sandbox.quickbooks import QuickBooksSandbox
from invoice_sync_dev.sandbox.quickbooks_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    ITEM_DISCOUNT,
    ITEM_HOURS,
    ITEM_INACTIVE,
    ITEM_SERVICES,
    OTHER_REFRESH_TOKEN,
    REALM_DEMO,
    REALM_OTHER,
    TAX_CODE_0,
    TAX_CODE_0_EU,
    TAX_CODE_0_EXPORT,
    TAX_CODE_9,
    TAX_CODE_21,
    TAX_CODE_INACTIVE,
)
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread

THROTTLE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"


def refresh(base: str, refresh_token: str, secret: str = CLIENT_SECRET) -> requests.Response:
    return requests.post(
        f"{base}/oauth2/v1/tokens/bearer",
        auth=(CLIENT_ID, secret),
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        timeout=5,
    )


class Api:
    """A minimal QuickBooks client for the tests: one company, one access token, JSON in and out."""

    def __init__(self, handle: SandboxHandle, realm: str = REALM_DEMO, token: str = BOOTSTRAP_REFRESH_TOKEN):
        self.base = handle.url_of("quickbooks")
        self.realm = realm
        tokens = refresh(self.base, token).json()
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"}

    def url(self, resource: str, realm: str | None = None) -> str:
        return f"{self.base}/v3/company/{realm or self.realm}/{resource}"

    def get(self, resource: str, timeout: float = 5, **params: Any) -> requests.Response:
        return requests.get(self.url(resource), headers=self.headers, params=params, timeout=timeout)

    def post(self, resource: str, payload: Any, timeout: float = 5, **params: Any) -> requests.Response:
        return requests.post(
            self.url(resource), headers=self.headers, json=payload, params=params, timeout=timeout
        )

    def query(self, text: str) -> requests.Response:
        headers = self.headers | {"Content-Type": "application/text"}
        return requests.post(
            self.url("query"), headers=headers, data=text, params={"minorversion": 75}, timeout=5
        )

    def customer(self, name: str = "Atelier Verhoeven BV (TL-1042)") -> str:
        response = self.post("customer", {"DisplayName": name})
        assert response.status_code == 200, response.text
        return str(response.json()["Customer"]["Id"])


def line(amount: str = "250.00", item: str = ITEM_SERVICES, tax_code: str = TAX_CODE_21) -> dict[str, Any]:
    return {
        "Amount": amount,
        "Description": "Consultancy",
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": {"ItemRef": {"value": item}, "TaxCodeRef": {"value": tax_code}},
    }


def invoice(customer: str, number: str = "2026-0042", **overrides: Any) -> dict[str, Any]:
    payload = {
        "CustomerRef": {"value": customer},
        "DocNumber": number,
        "TxnDate": "2026-03-02",
        "GlobalTaxCalculation": "TaxExcluded",
        "Line": [line()],
    }
    return payload | overrides


def error(response: requests.Response) -> dict[str, Any]:
    """The first ``Fault.Error`` of an answer."""
    return dict(response.json()["Fault"]["Error"][0])


def code(response: requests.Response) -> tuple[int, str]:
    return response.status_code, error(response)["code"]


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxHandle]:
    """One server for the many cases; each case starts from the fixtures again."""
    handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def fresh(shared: SandboxHandle) -> SandboxHandle:
    """The shared server back at its fixtures. The tests fire calls faster than QuickBooks' 10 a second,
    so that limit is raised here; the limit tests set their own."""
    shared.simulator("quickbooks").reset()
    qbo(shared).configure(second_limit=1000)
    return shared


def qbo(handle: SandboxHandle) -> QuickBooksSandbox:
    simulator: QuickBooksSandbox = handle.simulator("quickbooks")
    return simulator


# ---------------------------------------------------------------------------- OAuth


def test_refresh_tokens_rotate_and_the_old_one_dies_once_its_successor_is_used(fresh: SandboxHandle) -> None:
    base = fresh.url_of("quickbooks")
    first = refresh(base, BOOTSTRAP_REFRESH_TOKEN)
    tokens = first.json()
    assert first.status_code == 200 and set(tokens) == {
        "access_token", "refresh_token", "expires_in", "x_refresh_token_expires_in", "token_type",
    }  # fmt: skip
    assert (tokens["expires_in"], tokens["x_refresh_token_expires_in"], tokens["token_type"]) == (
        3600, 8726400, "bearer",
    )  # fmt: skip
    # the answer got lost: the old token still works and hands out the same successor
    again = refresh(base, BOOTSTRAP_REFRESH_TOKEN).json()
    assert (
        again["refresh_token"] == tokens["refresh_token"] and again["access_token"] != tokens["access_token"]
    )

    successor = refresh(base, tokens["refresh_token"])
    assert successor.status_code == 200 and successor.json()["refresh_token"] != tokens["refresh_token"]
    dead = refresh(base, BOOTSTRAP_REFRESH_TOKEN)
    assert (dead.status_code, dead.json()) == (400, {"error": "invalid_grant"})
    assert refresh(base, "never-issued").json() == {"error": "invalid_grant"}
    wrong_secret = refresh(base, successor.json()["refresh_token"], secret="x")
    assert (wrong_secret.status_code, wrong_secret.json()) == (401, {"error": "invalid_client"})
    assert qbo(fresh).stats_snapshot()["token_refreshes"] == 3


def test_api_calls_need_a_live_token_and_get_intuits_401_fault(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    anonymous = requests.get(api.url("item/1"), timeout=5)
    assert code(anonymous) == (401, "3200") and anonymous.json()["Fault"]["type"] == "AUTHENTICATION"
    assert error(anonymous)["Message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    assert "invalid_token" in anonymous.headers["WWW-Authenticate"]
    assert api.get("item/1").status_code == 200
    assert requests.post(f"{api.base}/_sandbox/expire-tokens", timeout=5).json() == {"expired": 1}
    expired = api.get("item/1")
    assert code(expired) == (401, "3200") and error(expired)["Detail"].startswith("Token expired")
    renewed = refresh(api.base, api.refresh_token).json()
    api.access_token = renewed["access_token"]
    assert api.get("item/1").status_code == 200


def test_revoked_refresh_token_ends_its_chain(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    revoked = requests.post(
        f"{api.base}/oauth2/v1/tokens/revoke",
        auth=(CLIENT_ID, CLIENT_SECRET),
        json={"token": api.refresh_token},
        timeout=5,
    )
    assert revoked.status_code == 200
    assert code(api.get("item/1")) == (401, "3200")
    assert refresh(api.base, api.refresh_token).json() == {"error": "invalid_grant"}
    consent = requests.post(f"{api.base}/_sandbox/consent", json={"client_id": CLIENT_ID}, timeout=5).json()
    assert refresh(api.base, consent["refresh_token"]).status_code == 200


def test_a_token_is_bound_to_its_company(fresh: SandboxHandle) -> None:
    demo, other = Api(fresh), Api(fresh, REALM_OTHER, OTHER_REFRESH_TOKEN)
    customer = demo.customer()
    assert demo.post("invoice", invoice(customer)).status_code == 200
    crossing = requests.get(demo.url(f"invoice/{145}", REALM_OTHER), headers=demo.headers, timeout=5)
    assert code(crossing) == (403, "3100") and crossing.json()["Fault"]["type"] == "AUTHORIZATION"
    unknown = requests.get(demo.url("item/1", "1234"), headers=demo.headers, timeout=5)
    assert code(unknown) == (403, "3100")
    # the other company has its own books: the same number and name are free there
    assert other.query("select * from Invoice").json()["QueryResponse"] == {}
    other_customer = other.customer()
    assert other.post("invoice", invoice(other_customer)).status_code == 200
    assert [b["tenant"] for b in qbo(fresh).booked()] == [REALM_DEMO, REALM_OTHER]
    assert [c["tenant"] for c in qbo(fresh).customers(REALM_OTHER)] == [REALM_OTHER]


def test_minorversion_absent_is_75_and_lower_is_refused(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    assert api.get("item/1").status_code == 200
    assert api.get("item/1", minorversion=75).status_code == 200
    assert api.get("item/1", minorversion=80).status_code == 200
    old = api.get("item/1", minorversion=74)
    assert code(old) == (400, "500") and error(old)["Message"] == "Unsupported Operation"
    assert "Minimum supported minor version is 75" in error(old)["Detail"]
    assert code(api.get("item/1", minorversion="x")) == (400, "500")
    qbo(fresh).configure(reject_old_minorversion=False)  # Intuit itself now answers such calls as 75
    assert api.get("item/1", minorversion=74).status_code == 200


# ------------------------------------------------------------------------- customers


def test_customers_get_ids_synctokens_and_unique_display_names(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    address = {"Line1": "Kortrijksesteenweg 12", "City": "Gent"}
    email = {"Address": "a@b.example"}
    created = api.post(
        "customer", {"DisplayName": "Atelier (TL-1)", "PrimaryEmailAddr": email, "BillAddr": address}
    )
    customer = created.json()["Customer"]
    assert (customer["Id"], customer["SyncToken"], customer["Active"]) == ("58", "0", True)
    assert set(customer["MetaData"]) == {"CreateTime", "LastUpdatedTime"} and "time" in created.json()
    duplicate = api.post("customer", {"DisplayName": "ATELIER (tl-1)"})
    assert code(duplicate) == (400, "6240") and error(duplicate)["Message"] == "Duplicate Name Exists Error"
    assert error(duplicate)["Detail"].endswith("Id=58")
    assert code(api.post("customer", {"DisplayName": ""})) == (400, "2020")
    assert code(api.post("customer", {"DisplayName": "x" * 501})) == (400, "2050")
    assert (
        api.post("customer", {"GivenName": "Ann", "FamilyName": "Peeters"}).json()["Customer"]["DisplayName"]
        == "Ann Peeters"
    )

    update = api.post("customer", {"Id": "58", "SyncToken": "0", "sparse": True, "Notes": "VIP"})
    assert update.json()["Customer"]["SyncToken"] == "1" and update.json()["Customer"]["Notes"] == "VIP"
    stale = api.post("customer", {"Id": "58", "SyncToken": "0", "sparse": True, "Notes": "late"})
    assert code(stale) == (400, "5010")
    assert code(api.post("customer", {"Id": "999", "SyncToken": "0", "DisplayName": "x"})) == (400, "610")
    (listed, _) = qbo(fresh).customers()
    assert (listed["name"], listed["email"], listed["tenant"]) == (
        "Atelier (TL-1)",
        "a@b.example",
        REALM_DEMO,
    )


# ------------------------------------------------------------------- invoices


def test_invoice_totals_tax_per_line_and_wrapper(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    lines = [line("250.00"), line("99.99", ITEM_HOURS, TAX_CODE_9), line("10.00", tax_code=TAX_CODE_0)]
    created = api.post("invoice", invoice(customer, Line=lines, DueDate="2026-04-15"), minorversion=75)
    assert created.status_code == 200
    body = created.json()["Invoice"]
    assert (body["Id"], body["SyncToken"], body["DocNumber"], body["DueDate"]) == (
        "145", "0", "2026-0042", "2026-04-15",
    )  # fmt: skip
    assert Decimal(str(body["TxnTaxDetail"]["TotalTax"])) == Decimal("61.50")
    assert Decimal(str(body["TotalAmt"])) == Decimal("421.49") == Decimal(str(body["Balance"]))
    assert body["CustomerRef"] == {"value": customer, "name": "Atelier Verhoeven BV (TL-1042)"}
    assert body["CurrencyRef"]["value"] == "EUR" and body["Line"][-1]["DetailType"] == "SubTotalLineDetail"
    (booking,) = qbo(fresh).booked()
    assert (booking["total_excl_vat"], booking["total_vat"], booking["total_incl_vat"]) == (
        Decimal("359.99"), Decimal("61.50"), Decimal("421.49"),
    )  # fmt: skip
    assert (booking["reference"], booking["registration_number"], booking["external_id"]) == (
        "2026-0042", "2026-0042", "145",
    )  # fmt: skip
    assert (booking["kind"], booking["customer_code"], booking["currency"]) == ("invoice", customer, "EUR")
    fetched = api.get("invoice/145").json()
    assert fetched["Invoice"] == body and "time" in fetched
    assert api.get("invoice/145").json()["Invoice"]["DueDate"] == "2026-04-15"


def test_given_total_tax_inclusive_and_not_applicable(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    overridden = invoice(customer, "A-1", Line=[line("0.05")] * 3, TxnTaxDetail={"TotalTax": "0.02"})
    body = api.post("invoice", overridden).json()["Invoice"]
    assert (Decimal(str(body["TxnTaxDetail"]["TotalTax"])), Decimal(str(body["TotalAmt"]))) == (
        Decimal("0.02"), Decimal("0.17"),
    )  # fmt: skip
    assert sum(Decimal(str(t["Amount"])) for t in body["TxnTaxDetail"]["TaxLine"]) == Decimal("0.02")
    inclusive = api.post("invoice", invoice(customer, "A-2", GlobalTaxCalculation="TaxInclusive",
                                            Line=[line("121.00")])).json()["Invoice"]  # fmt: skip
    assert (Decimal(str(inclusive["TotalAmt"])), Decimal(str(inclusive["TxnTaxDetail"]["TotalTax"]))) == (
        Decimal("121.00"), Decimal("21.00"),
    )  # fmt: skip
    no_tax_code = {**line("80.00"), "SalesItemLineDetail": {"ItemRef": {"value": ITEM_SERVICES}}}
    untaxed = api.post(
        "invoice", invoice(customer, "A-3", GlobalTaxCalculation="NotApplicable", Line=[no_tax_code])
    )
    assert Decimal(str(untaxed.json()["Invoice"]["TotalAmt"])) == Decimal("80.00")
    numbered = api.post("invoice", invoice(customer, "")).json()["Invoice"]
    assert numbered["DocNumber"] == "1001"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p | {"DocNumber": "X" * 22}, "2050"),
        (lambda p: p | {"CustomerRef": None}, "2020"),
        (lambda p: p | {"CustomerRef": {"value": "999"}}, "2500"),
        (lambda p: p | {"Line": []}, "2020"),
        (lambda p: p | {"Line": [line(item="999")]}, "2500"),
        (lambda p: p | {"Line": [line(item=ITEM_INACTIVE)]}, "6000"),
        (lambda p: p | {"Line": [line(tax_code="99")]}, "2500"),
        (lambda p: p | {"Line": [line(tax_code=TAX_CODE_INACTIVE)]}, "6000"),
        (lambda p: p | {"Line": [{**line(), "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}]}, "6000"),
        (lambda p: p | {"Line": [{**line(), "Amount": None}]}, "2020"),
        (lambda p: p | {"GlobalTaxCalculation": "Sometimes"}, "2170"),
        (lambda p: p | {"TxnDate": "2025-12-31"}, "6210"),
        (lambda p: p | {"TxnDate": "02-03-2026"}, "2010"),
        (lambda p: p | {"CurrencyRef": {"value": "USD"}}, "6000"),
        (lambda p: p | {"Line": [line("-10.00")]}, "6000"),
    ],
)
def test_invoice_validation_faults(fresh: SandboxHandle, mutate: Any, expected: str) -> None:
    api = Api(fresh)
    refused = api.post("invoice", mutate(invoice(api.customer())))
    assert code(refused) == (400, expected), refused.text
    assert refused.json()["Fault"]["type"] == "ValidationFault" and error(refused)["Message"]
    assert qbo(fresh).booked() == [] and qbo(fresh).create_posts() == {
        mutate(invoice("1"))["DocNumber"] or "": 1
    }


def test_duplicate_doc_numbers_closed_period_and_credit_memos(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    api.post("invoice", invoice(customer)).raise_for_status()
    duplicate = api.post("invoice", invoice(customer))
    assert (
        code(duplicate) == (400, "6140") and error(duplicate)["Message"] == "Duplicate Document Number Error"
    )
    assert "DocNumber=2026-0042 is assigned to TxnType=Invoice with TxnId=145" in error(duplicate)["Detail"]
    memo = api.post("creditmemo", invoice(customer, TxnDate="2026-03-05"))  # its own number space
    assert memo.status_code == 200 and Decimal(str(memo.json()["CreditMemo"]["TotalAmt"])) == Decimal(
        "302.50"
    )
    assert code(api.post("creditmemo", invoice(customer))) == (400, "6140")
    qbo(fresh).configure(closing_date="2026-03-31")
    assert code(api.post("invoice", invoice(customer, "2026-0043"))) == (400, "6210")
    qbo(fresh).configure(closing_date="none")
    assert api.post("invoice", invoice(customer, "2024-0001", TxnDate="2024-01-05")).status_code == 200
    kinds = [(b["kind"], b["total_incl_vat"]) for b in qbo(fresh).booked()]
    assert kinds == [("invoice", Decimal("302.50")), ("credit_note", Decimal("-302.50")),
                     ("invoice", Decimal("302.50"))]  # fmt: skip
    assert qbo(fresh).create_posts() == {"2026-0042": 4, "2026-0043": 1, "2024-0001": 1}


def test_updates_need_the_current_sync_token(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    created = api.post("invoice", invoice(api.customer())).json()["Invoice"]
    changed = api.post("invoice", created | {"PrivateNote": "edited"}).json()["Invoice"]
    assert (changed["Id"], changed["SyncToken"], changed["PrivateNote"]) == ("145", "1", "edited")
    assert changed["MetaData"]["CreateTime"] == created["MetaData"]["CreateTime"]
    assert code(api.post("invoice", created | {"PrivateNote": "stale"})) == (400, "5010")
    assert code(api.post("invoice", {"Id": "999", "SyncToken": "0"})) == (400, "610")
    assert code(api.post("invoice", created, operation="delete")) == (400, "500")
    assert len(qbo(fresh).booked()) == 1 and qbo(fresh).create_posts() == {"2026-0042": 1}


def test_requestid_replays_per_company_without_processing_again(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    first = api.post("invoice", invoice(customer), requestid="req-1")
    replay = api.post("invoice", invoice(customer), requestid="req-1")
    assert replay.status_code == 200 and replay.json() == first.json()
    refused = api.post("invoice", invoice(customer), requestid="req-2")
    assert code(refused) == (400, "6140")
    assert api.post("invoice", invoice(customer, "2026-0043"), requestid="req-2").json() == refused.json()
    other = Api(fresh, REALM_OTHER, OTHER_REFRESH_TOKEN)  # the same id in another company is another request
    assert code(other.post("invoice", invoice("58"), requestid="req-1")) == (400, "2500")
    assert qbo(fresh).create_posts() == {"2026-0042": 3}
    assert len(qbo(fresh).booked()) == 1 and qbo(fresh).stats_snapshot()["replays"] == 2


# ------------------------------------------------------------------------- queries


def test_query_language_in_and_paging_count_and_order(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    for n in range(1, 6):
        api.post("invoice", invoice(customer, f"2026-00{n:02d}")).raise_for_status()
    found = api.query("SELECT * FROM Invoice WHERE DocNumber IN ('2026-0002', '2026-0004', 'x')")
    response = found.json()["QueryResponse"]
    assert [i["DocNumber"] for i in response["Invoice"]] == ["2026-0002", "2026-0004"]
    assert (response["startPosition"], response["maxResults"]) == (1, 2)
    both = api.get(
        "query", query=f"select * from Invoice where DocNumber = '2026-0003' and CustomerRef = '{customer}'"
    )
    assert [i["Id"] for i in both.json()["QueryResponse"]["Invoice"]] == ["147"]
    page = api.query("select * from invoice orderby DocNumber desc startposition 2 maxresults 2")
    assert [i["DocNumber"] for i in page.json()["QueryResponse"]["Invoice"]] == ["2026-0004", "2026-0003"]
    assert api.query("select count(*) from Invoice").json()["QueryResponse"] == {"totalCount": 5}
    assert api.query("select * from Invoice where DocNumber = 'none'").json()["QueryResponse"] == {}
    api.post("customer", {"DisplayName": "Bistro 't Hoekje"}).raise_for_status()
    for text in ("select * from Customer where DisplayName = 'Bistro \\'t Hoekje'",
                 "select * from Customer where DisplayName = 'Bistro ''t Hoekje'"):  # fmt: skip
        assert [c["DisplayName"] for c in api.query(text).json()["QueryResponse"]["Customer"]] == [
            "Bistro 't Hoekje"
        ]
    assert code(api.query("select * form Invoice")) == (400, "4000")
    assert code(api.query("select * from Invoice where Colour = 'red'")) == (400, "4001")
    assert code(api.query("select * from Nonsense")) == (400, "4001")


def test_inactive_names_only_show_when_asked_for(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    active = api.query("select * from Item").json()["QueryResponse"]["Item"]
    assert [i["Id"] for i in active] == [ITEM_SERVICES, ITEM_HOURS, ITEM_DISCOUNT]
    inactive = api.query("select * from Item where Active = false").json()["QueryResponse"]["Item"]
    assert [i["Id"] for i in inactive] == [ITEM_INACTIVE]
    codes = api.query("select * from TaxCode where Active in (true, false)").json()["QueryResponse"][
        "TaxCode"
    ]
    rates = {c["Id"]: c["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"]["value"] for c in codes}
    assert set(rates) == {
        TAX_CODE_21,
        TAX_CODE_9,
        TAX_CODE_0,
        TAX_CODE_INACTIVE,
        TAX_CODE_0_EU,
        TAX_CODE_0_EXPORT,
    }
    tax_rates = api.query("select * from TaxRate").json()["QueryResponse"]["TaxRate"]
    assert {r["Id"]: r["RateValue"] for r in tax_rates} == {"9": 21, "10": 9, "11": 0, "13": 0, "14": 0}
    assert api.get("item/1").json()["Item"]["IncomeAccountRef"] == {"value": "1", "name": "Services"}
    info = api.get(f"companyinfo/{REALM_DEMO}").json()["CompanyInfo"]
    assert (info["CompanyName"], info["Country"]) == ("Demo QuickBooks BV", "NL")
    prefs = api.get("preferences").json()["Preferences"]
    assert prefs["CurrencyPrefs"]["HomeCurrency"]["value"] == "EUR"
    assert prefs["SalesFormsPrefs"]["CustomTxnNumbers"] is True
    assert prefs["AccountingInfoPrefs"]["BookCloseDate"] == "2025-12-31"


# --------------------------------------------------------------------------- batch


def test_batch_answers_every_item_booked_or_refused(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    api.post("invoice", invoice(customer, "2026-0001")).raise_for_status()
    items = [
        {"bId": "a", "operation": "create", "Invoice": invoice(customer, "2026-0002")},
        {"bId": "b", "operation": "create", "Invoice": invoice(customer, "2026-0001")},
        {"bId": "c", "operation": "create", "CreditMemo": invoice(customer, "2026-0001")},
        {"bId": "d", "operation": "create", "Invoice": invoice(customer, "2026-0003", Line=[line(item="9")])},
        {"bId": "e", "Query": "select * from Invoice where DocNumber in ('2026-0001','2026-0002')"},
        {"bId": "f", "operation": "create", "Customer": {"DisplayName": "Batch Customer"}},
    ]
    answer = api.post("batch", {"BatchItemRequest": items}, requestid="batch-1")
    assert answer.status_code == 200 and "time" in answer.json()
    results = {r["bId"]: r for r in answer.json()["BatchItemResponse"]}
    assert list(results) == ["a", "b", "c", "d", "e", "f"]
    assert results["a"]["Invoice"]["DocNumber"] == "2026-0002"
    assert (
        results["b"]["Fault"]["Error"][0]["code"] == "6140"
        and results["b"]["Fault"]["type"] == "ValidationFault"
    )
    assert results["c"]["CreditMemo"]["DocNumber"] == "2026-0001"
    assert results["d"]["Fault"]["Error"][0]["code"] == "2500"
    assert len(results["e"]["QueryResponse"]["Invoice"]) == 2
    assert results["f"]["Customer"]["DisplayName"] == "Batch Customer"
    replay = api.post("batch", {"BatchItemRequest": items}, requestid="batch-1")
    assert replay.json() == answer.json()
    assert qbo(fresh).create_posts() == {"2026-0001": 3, "2026-0002": 1, "2026-0003": 1}
    too_many = [{"bId": str(n), "Query": "select * from Item"} for n in range(31)]
    refused = api.post("batch", {"BatchItemRequest": too_many})
    assert code(refused) == (400, "1040") and "at most 30" in error(refused)["Detail"]
    assert api.post("batch", {"BatchItemRequest": too_many[:30]}).status_code == 200


# ---------------------------------------------------------------------- limits


def _throttled(response: requests.Response) -> bool:
    if response.status_code != 429:
        return False
    assert response.json()["Fault"] == {
        "Error": [{"Message": THROTTLE, "Detail": "The request limit was reached.  Try again later",
                   "code": "3001", "element": ""}],
        "type": "SERVICE",
    }  # fmt: skip
    assert not [h for h in response.headers if "ratelimit" in h.lower() or h.lower() == "retry-after"]
    return True


def test_per_second_limit(fresh: SandboxHandle) -> None:
    qbo(fresh).configure(second_limit=3)
    api = Api(fresh)
    statuses = [api.get("item/1") for _ in range(8)]  # a sliding second: the 4th call within it is refused
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    assert any(_throttled(r) for r in statuses[3:])
    time.sleep(1.1)
    assert api.get("item/1").status_code == 200
    assert qbo(fresh).stats_snapshot()["rate_limited"] >= 1


def test_per_minute_limit_is_per_company_and_token_calls_do_not_count(fresh: SandboxHandle) -> None:
    qbo(fresh).configure(minute_limit=3)
    api = Api(fresh)
    assert [api.get("item/1").status_code for _ in range(3)] == [200, 200, 200]
    refresh(api.base, api.refresh_token).raise_for_status()
    assert _throttled(api.get("item/1"))
    other = Api(fresh, REALM_OTHER, OTHER_REFRESH_TOKEN)
    assert other.get("item/1").status_code == 200


def test_batch_minute_limit(fresh: SandboxHandle) -> None:
    qbo(fresh).configure(batch_minute_limit=2)
    api = Api(fresh)
    batch = {"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]}
    assert [api.post("batch", batch).status_code for _ in range(2)] == [200, 200]
    assert _throttled(api.post("batch", batch))
    assert api.query("select * from Item").status_code == 200  # other endpoints go on


def test_concurrency_limit(fresh: SandboxHandle) -> None:
    qbo(fresh).configure(concurrent_limit=2, processing_delay_s=1.0)
    api = Api(fresh)
    results: list[requests.Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(api.get("item/1", timeout=20))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    assert all(_throttled(r) for r in results if r.status_code == 429)
    qbo(fresh).configure(processing_delay_s=0.0)
    assert api.get("item/1").status_code == 200  # the places were given back


def test_limits_can_be_switched_off(fresh: SandboxHandle) -> None:
    qbo(fresh).configure(second_limit=1, limits_enabled=False)
    api = Api(fresh)
    assert {api.get("item/1").status_code for _ in range(4)} == {200}


def test_time_scale_shrinks_windows_and_token_lifetimes() -> None:
    handle = start_in_thread(time_scale=30)  # a sandbox minute lasts two real seconds
    try:
        qbo(handle).configure(minute_limit=2)
        api = Api(handle)
        first = refresh(api.base, api.refresh_token).json()
        assert first["expires_in"] == 120 and first["x_refresh_token_expires_in"] == 290880
        api.access_token = first["access_token"]
        statuses = [api.get("item/1").status_code for _ in range(3)]
        assert statuses[:2] == [200, 200] and statuses[2] in (200, 429)
        time.sleep(2.2)  # a sandbox minute and more: the window has slid past the calls
        assert api.get("item/1").status_code == 200
    finally:
        handle.stop()
    fast = start_in_thread(time_scale=1800)  # an access token's hour lasts two real seconds
    try:
        api = Api(fast)
        assert api.get("item/1").status_code == 200
        time.sleep(2.3)
        assert code(api.get("item/1")) == (401, "3200")
    finally:
        fast.stop()


# --------------------------------------------------------------------------- faults


def _set_faults(handle: SandboxHandle, *rules: dict[str, Any]) -> None:
    response = requests.post(f"{handle.url_of('quickbooks')}/_sandbox/faults", json=list(rules), timeout=5)
    response.raise_for_status()


def test_injected_faults_look_like_intuits(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    _set_faults(
        fresh,
        {"kind": "status", "method": "POST", "path": "/invoice$", "status": 503, "times": 1},
        {"kind": "rate_limit", "method": "GET", "path": "/item/", "times": 1},
    )
    failed = api.post("invoice", invoice(customer))
    assert code(failed) == (503, "10000") and failed.json()["Fault"]["type"] == "SystemFault"
    assert qbo(fresh).booked() == [] and qbo(fresh).create_posts() == {}
    assert _throttled(api.get("item/1"))
    assert api.post("invoice", invoice(customer)).status_code == 200
    assert qbo(fresh).stats_snapshot()["faults"] == {"status": 1, "rate_limit": 1}


def test_a_lost_answer_is_settled_by_the_requestid(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    _set_faults(fresh, {"kind": "commit_then_drop", "method": "POST", "path": "/invoice$", "times": 1})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.post("invoice", invoice(customer), requestid="lost-1").json()
    retry = api.post("invoice", invoice(customer), requestid="lost-1")
    assert retry.status_code == 200 and retry.json()["Invoice"]["Id"] == "145"
    assert len(qbo(fresh).booked()) == 1 and qbo(fresh).create_posts() == {"2026-0042": 1}


def test_fault_timeout_commits_nothing(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    _set_faults(fresh, {"kind": "timeout", "method": "POST", "path": "/invoice$", "delay_s": 5})
    with pytest.raises(requests.Timeout):
        api.post("invoice", invoice(customer), timeout=0.3)
    assert qbo(fresh).booked() == []


# ------------------------------------------------------------- control and persistence


def test_control_api_bookings_customers_stats_and_reset(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    api.post("invoice", invoice(api.customer())).raise_for_status()
    control = f"{api.base}/_sandbox"
    (booking,) = requests.get(f"{control}/bookings", timeout=5).json()
    assert (booking["reference"], booking["total_incl_vat"], booking["tenant"]) == (
        "2026-0042",
        "302.50",
        REALM_DEMO,
    )
    assert requests.get(f"{control}/bookings?tenant={REALM_OTHER}", timeout=5).json() == []
    assert [c["name"] for c in requests.get(f"{control}/customers", timeout=5).json()] == [
        "Atelier Verhoeven BV (TL-1042)"
    ]
    stats = requests.get(f"{control}/stats", timeout=5).json()
    assert stats["calls"] == {"create Customer": 1, "create Invoice": 1} and stats["total"] == 2
    assert stats["http"]["calls"]["POST /v3/company/{realm_id}/invoice"] == {"200": 1}
    assert stats["token_refreshes"] == 1
    assert requests.post(f"{control}/config", json={"minute_limit": "many"}, timeout=5).status_code == 400
    requests.post(f"{control}/reset", timeout=5).raise_for_status()
    assert qbo(fresh).booked() == [] and qbo(fresh).stats_snapshot()["total"] == 0
    assert refresh(api.base, BOOTSTRAP_REFRESH_TOKEN).status_code == 200


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox-state.json"
    first = start_in_thread(state_path=state)
    try:
        api = Api(first)
        api.post("invoice", invoice(api.customer()), requestid="persisted").raise_for_status()
    finally:
        first.stop()
    second = start_in_thread(state_path=state)
    try:
        assert [b["reference"] for b in qbo(second).booked()] == ["2026-0042"]
        assert (
            refresh(second.url_of("quickbooks"), BOOTSTRAP_REFRESH_TOKEN).status_code == 200
        )  # unused successor
        api.base = second.url_of("quickbooks")
        assert api.get("invoice/145").json()["Invoice"]["DocNumber"] == "2026-0042"
        replay = api.post("invoice", invoice("58"), requestid="persisted")
        assert replay.json()["Invoice"]["Id"] == "145" and qbo(second).create_posts() == {}
        assert code(api.post("invoice", invoice("58"))) == (400, "6140")
        assert (
            refresh(api.base, api.refresh_token).status_code == 200
        )  # rotation went on from the saved chain
        assert refresh(api.base, BOOTSTRAP_REFRESH_TOKEN).json() == {"error": "invalid_grant"}
        assert api.post("invoice", invoice("58", "2026-0043")).json()["Invoice"]["Id"] == "146"
    finally:
        second.stop()
    assert not list(tmp_path.glob(".sandbox-state.json.*"))


# ---------------------------------------------------------------- numbering, discounts, VAT regimes


def test_custom_transaction_numbers_off_numbers_documents_as_quickbooks_does(fresh: SandboxHandle) -> None:
    """Off, QuickBooks numbers a document sent without a number by incrementing the last one, and stores
    a number sent anyway as it is, even a taken one (Intuit API reference, Invoice ``DocNumber``)."""
    qbo(fresh).configure(custom_txn_numbers=False)
    api = Api(fresh)
    customer = api.customer()
    assert api.get("preferences").json()["Preferences"]["SalesFormsPrefs"]["CustomTxnNumbers"] is False
    first = api.post("invoice", invoice(customer, "2026-0042")).json()["Invoice"]
    numbered = api.post("invoice", invoice(customer, "")).json()["Invoice"]
    assert (first["DocNumber"], numbered["DocNumber"]) == ("2026-0042", "2026-0043")
    again = api.post("invoice", invoice(customer, "2026-0043"))
    assert again.status_code == 200 and again.json()["Invoice"]["DocNumber"] == "2026-0043"
    held = api.query("select * from Invoice where DocNumber = '2026-0043'").json()["QueryResponse"]
    assert len(held["Invoice"]) == 2  # the duplicate guard (6140) does not hold while the setting is off
    memo = api.post("creditmemo", invoice(customer, "")).json()["CreditMemo"]
    assert memo["DocNumber"] == "1001"  # credit memos count on their own


def test_custom_transaction_numbers_on_keeps_the_number_and_refuses_a_taken_one(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    assert api.post("invoice", invoice(customer, "2026-0042")).json()["Invoice"]["DocNumber"] == "2026-0042"
    assert code(api.post("invoice", invoice(customer, "2026-0042"))) == (400, "6140")


def test_negative_lines_are_booked_but_a_negative_total_is_refused(fresh: SandboxHandle) -> None:
    """A discount or a returned item is a negative line on a positive invoice; a negative total is a
    credit memo's business."""
    api = Api(fresh)
    customer = api.customer()
    lines = [line("100.00"), line("-10.00", item=ITEM_DISCOUNT)]
    body = api.post("invoice", invoice(customer, "N-1", Line=lines)).json()["Invoice"]
    assert Decimal(str(body["TotalAmt"])) == Decimal("108.90")
    assert [Decimal(str(x["Amount"])) for x in body["Line"][:2]] == [Decimal("100.00"), Decimal("-10.00")]
    refused = api.post("invoice", invoice(customer, "N-2", Line=[line("10.00"), line("-20.00")]))
    assert code(refused) == (400, "6000")
    assert qbo(fresh).create_posts().get("N-2") == 1 and len(qbo(fresh).booked()) == 1


def test_two_zero_rate_lines_of_different_tax_codes_stay_apart(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    lines = [line("100.00", tax_code=TAX_CODE_0), line("50.00", tax_code=TAX_CODE_0_EU)]
    body = api.post("invoice", invoice(customer, "Z-1", Line=lines)).json()["Invoice"]
    taxed = {t["TaxLineDetail"]["TaxRateRef"]["value"]: t for t in body["TxnTaxDetail"]["TaxLine"]}
    assert {rate: Decimal(str(t["TaxLineDetail"]["NetAmountTaxable"])) for rate, t in taxed.items()} == {
        "11": Decimal("100.00"),
        "13": Decimal("50.00"),
    }
    (booked,) = qbo(fresh).booked()
    assert [(x["tax_code"], x["amount"]) for x in booked["lines"]] == [
        (TAX_CODE_0, Decimal("100.00")),
        (TAX_CODE_0_EU, Decimal("50.00")),
    ]
