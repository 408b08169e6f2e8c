"""The Exact Online simulator over real HTTP: what the Exact connector relies on must behave like Exact."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from invoice_sync_dev.sandbox import odata
from invoice_sync_dev.sandbox.clock import SandboxClock
from invoice_sync_dev.sandbox.exact_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    DIVISION_BE,
    DIVISION_NL,
    GL_ACCOUNTS_123456,
    default_fixtures,
)
from invoice_sync_dev.sandbox.exact_online import ExactApiError, ExactOnlineSandbox
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread

GL_7000 = GL_ACCOUNTS_123456["7000"]


def _token_call(base: str, **form: str) -> requests.Response:
    data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET} | form
    return requests.post(f"{base}/api/oauth2/token", data=data, timeout=5)


def _refresh(base: str, refresh_token: str) -> requests.Response:
    return _token_call(base, grant_type="refresh_token", refresh_token=refresh_token)


class Api:
    """A minimal Exact client for the tests: one access token, JSON in and out."""

    def __init__(self, handle: SandboxHandle, division: int = DIVISION_BE) -> None:
        self.base = handle.exact_url
        self.division = division
        tokens = _refresh(self.base, BOOTSTRAP_REFRESH_TOKEN).json()
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"}

    def url(self, resource: str) -> str:
        return f"{self.base}/api/v1/{self.division}/{resource}"

    def get(self, resource: str, timeout: float = 5, **params: Any) -> requests.Response:
        return requests.get(self.url(resource), headers=self.headers, params=params, timeout=timeout)

    def post(self, resource: str, payload: Any, timeout: float = 5) -> requests.Response:
        return requests.post(self.url(resource), headers=self.headers, json=payload, timeout=timeout)

    def customer(self, code: int = 1042, name: str = "Atelier Verhoeven BV", status: str = "C") -> str:
        response = self.post("crm/Accounts", {"Code": f"{code:>18}", "Name": name, "Status": status})
        assert response.status_code == 201, response.text
        return response.json()["d"]["ID"]


def entry_payload(customer: str, **overrides: Any) -> dict[str, Any]:
    line = {"GLAccount": GL_7000, "AmountFC": "250.00", "VATCode": "4  ", "Description": "Consultancy"}
    payload = {
        "Journal": "70",
        "Customer": customer,
        "EntryDate": "2026-03-02T00:00:00Z",
        "YourRef": "2026/0042",
        "Description": "Invoice 2026/0042",
        "SalesEntryLines": [line],
    }
    return payload | overrides


def message(response: requests.Response) -> str:
    return response.json()["error"]["message"]["value"]


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxHandle]:
    """One server for the many validation cases; each case starts from the fixtures again."""
    handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def fresh(shared: SandboxHandle) -> SandboxHandle:
    shared.exact.reset()
    shared.exact.configure(error_budget_enabled=False)
    return shared


# ---------------------------------------------------------------------------- OAuth


def test_refresh_rotates_and_every_refresh_token_is_single_use(sandbox: SandboxHandle) -> None:
    first = _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN)
    assert first.status_code == 200
    tokens = first.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == "600"
    assert tokens["refresh_token"] != BOOTSTRAP_REFRESH_TOKEN

    reused = _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN)
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant", "error_description": "Old refresh token used."}
    unknown = _refresh(sandbox.exact_url, "never-issued")
    assert unknown.json()["error_description"] == "Invalid refresh token."
    wrong_secret = _token_call(
        sandbox.exact_url,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_secret="x",
    )
    assert (wrong_secret.status_code, wrong_secret.json()) == (400, {"error": "invalid_client"})

    sandbox.exact.expire_tokens()
    second = _refresh(sandbox.exact_url, tokens["refresh_token"])
    assert second.status_code == 200
    assert _refresh(sandbox.exact_url, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert sandbox.exact.stats_snapshot()["token_refreshes"] == 2


def test_early_refresh_is_refused_as_exact_does_and_the_tokens_stay_valid(sandbox: SandboxHandle) -> None:
    """HTTP 400 access_denied, as websmurf/laravel-exact-online issue #31 shows Exact's answer (not a 401)."""
    tokens = _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN).json()
    early = _refresh(sandbox.exact_url, tokens["refresh_token"])
    assert early.status_code == 400
    assert early.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }
    assert early.headers["Reason"] == "TooEarlyToRefreshTokens: Rate limit exceeded: access_token not expired"
    still = requests.get(
        f"{sandbox.exact_url}/api/v1/{DIVISION_BE}/crm/Accounts",
        headers={"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json"},
        timeout=5,
    )
    assert still.status_code == 200  # the current access token goes on working

    requests.post(f"{sandbox.exact_url}/_sandbox/expire-tokens", timeout=5).raise_for_status()
    assert _refresh(sandbox.exact_url, tokens["refresh_token"]).status_code == 200


def test_token_calls_of_a_day_are_counted_refused_ones_too(sandbox: SandboxHandle) -> None:
    sandbox.exact.configure(token_calls_per_day=3)
    tokens = _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN).json()  # 1
    assert _refresh(sandbox.exact_url, tokens["refresh_token"]).status_code == 400  # 2: too early
    sandbox.exact.expire_tokens()
    tokens = _refresh(sandbox.exact_url, tokens["refresh_token"]).json()  # 3
    sandbox.exact.expire_tokens()
    spent = _refresh(sandbox.exact_url, tokens["refresh_token"])
    assert spent.status_code == 400
    assert spent.json()["error"] == "access_denied"
    assert spent.json()["error_description"].startswith("Rate limit exceeded")
    sandbox.exact.configure(limits_enabled=False)
    assert _refresh(sandbox.exact_url, tokens["refresh_token"]).status_code == 200  # the token was not spent


def test_early_refresh_rule_can_be_switched_off(sandbox: SandboxHandle) -> None:
    requests.post(f"{sandbox.exact_url}/_sandbox/config", json={"early_refresh_rule": False}, timeout=5)
    tokens = _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN).json()
    assert _refresh(sandbox.exact_url, tokens["refresh_token"]).status_code == 200


def test_api_calls_need_a_live_bearer_token(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    anonymous = requests.get(api.url("crm/Accounts"), timeout=5)
    assert (anonymous.status_code, message(anonymous)) == (401, "Unauthorized")
    assert api.get("crm/Accounts").status_code == 200
    sandbox.exact.expire_tokens()
    expired = api.get("crm/Accounts")
    assert (expired.status_code, message(expired)) == (401, "Access token expired")


def test_consent_gives_a_refresh_token_and_a_single_use_code(sandbox: SandboxHandle) -> None:
    consent = requests.post(f"{sandbox.exact_url}/_sandbox/consent", json={"client_id": CLIENT_ID}, timeout=5)
    grant = consent.json()
    exchanged = _token_call(sandbox.exact_url, grant_type="authorization_code", code=grant["code"])
    assert exchanged.status_code == 200 and exchanged.json()["access_token"]
    again = _token_call(sandbox.exact_url, grant_type="authorization_code", code=grant["code"])
    assert again.json()["error"] == "invalid_grant"
    assert _refresh(sandbox.exact_url, grant["refresh_token"]).status_code == 200


def test_consent_limited_to_one_division_gets_wrong_division_elsewhere(sandbox: SandboxHandle) -> None:
    grant = sandbox.exact.consent(CLIENT_ID, divisions=[DIVISION_NL])
    access = _refresh(sandbox.exact_url, grant["refresh_token"]).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    me = requests.get(f"{sandbox.exact_url}/api/v1/current/Me", headers=headers, timeout=5).json()
    assert me["d"]["results"][0]["CurrentDivision"] == DIVISION_NL
    refused = requests.get(
        f"{sandbox.exact_url}/api/v1/{DIVISION_BE}/crm/Accounts", headers=headers, timeout=5
    )
    assert (refused.status_code, message(refused)) == (403, "Wrong Division")


# ------------------------------------------------------------------------- accounts


def test_accounts_are_created_and_found_by_their_padded_code(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    payload = {"Code": f"{1042:>18}", "Name": "Atelier Verhoeven BV", "Status": "C", "Email": "a@b.example"}
    created = api.post("crm/Accounts", payload)
    assert created.status_code == 201
    account = created.json()["d"]
    assert account["Code"] == "              1042" and len(account["ID"]) == 36

    found = api.get("crm/Accounts", **{"$filter": "Code eq '              1042'", "$select": "ID,Code,Name"})
    assert found.json() == {
        "d": {"results": [{"ID": account["ID"], "Code": account["Code"], "Name": payload["Name"]}]}
    }
    assert api.get("crm/Accounts", **{"$filter": "Code eq '1042'"}).json()["d"]["results"] == []
    duplicate = api.post("crm/Accounts", payload)
    assert (duplicate.status_code, message(duplicate)) == (400, "Already exists: Code")


def test_account_codes_are_stored_padded_whatever_the_client_sends(fresh: SandboxHandle) -> None:
    """Exact right-aligns a Code in 18 characters; only the padded form matches a filter (reference 12)."""
    api = Api(fresh)
    created = api.post("crm/Accounts", {"Code": "77", "Name": "Unpadded BV", "Status": "C"}).json()["d"]
    assert created["Code"] == " " * 16 + "77"
    assert api.get("crm/Accounts", **{"$filter": "Code eq '77'"}).json()["d"]["results"] == []
    padded = api.get("crm/Accounts", **{"$filter": f"Code eq '{'77':>18}'", "$select": "ID"})
    assert padded.json()["d"]["results"] == [{"ID": created["ID"]}]
    again = api.post("crm/Accounts", {"Code": f"{'77':>18}", "Name": "Same code BV", "Status": "C"})
    assert (again.status_code, message(again)) == (400, "Already exists: Code")
    too_long = api.post("crm/Accounts", {"Code": "1" * 19, "Name": "Long BV", "Status": "C"})
    assert (too_long.status_code, message(too_long)) == (400, "Too long: Code (max. 18)")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"Code": "1"}, "Mandatory: Name"),
        ({"Name": "Refused Customer NV", "Status": "C"}, "Invalid: Customer (Type)"),
        ({"Name": "Mail NV", "Email": "not-an-email"}, "Invalid: Email [not-an-email]"),
        ({"Name": "X", "Colour": "red"}, "Error processing request stream. The property name 'Colour'"),
    ],
)
def test_account_validation_errors(fresh: SandboxHandle, payload: dict[str, Any], expected: str) -> None:
    response = Api(fresh).post("crm/Accounts", payload)
    assert response.status_code == 400
    assert message(response).startswith(expected)
    assert fresh.exact.accounts() == []


# -------------------------------------------------------------------- sales entries


def test_sales_entries_get_consecutive_numbers_per_journal(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    numbers = [
        api.post("salesentry/SalesEntries", entry_payload(customer)).json()["d"]["EntryNumber"] for _ in "ab"
    ]
    credit = api.post(
        "salesentry/SalesEntries",
        entry_payload(
            customer, Journal="71", SalesEntryLines=[{"GLAccount": GL_7000, "AmountFC": -100, "VATCode": "4"}]
        ),
    )
    assert numbers == [26700001, 26700002]
    assert credit.status_code == 201
    assert credit.json()["d"]["EntryNumber"] == 26710001 and credit.json()["d"]["Type"] == 21
    explicit = api.post("salesentry/SalesEntries", entry_payload(customer, EntryNumber=26700010)).json()["d"]
    following = api.post("salesentry/SalesEntries", entry_payload(customer)).json()["d"]
    assert (explicit["EntryNumber"], following["EntryNumber"]) == (26700010, 26700011)


def test_sales_entry_amounts_dates_and_lines(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    lines = [
        {"GLAccount": GL_7000, "AmountFC": "0.50", "VATCode": "4"},  # 0.105 -> 0.11 (half up)
        {"GLAccount": GL_ACCOUNTS_123456["7010"], "AmountFC": 100, "VATCode": "1", "VATAmountFC": "5.99"},
    ]
    response = api.post("salesentry/SalesEntries", entry_payload(api.customer(), SalesEntryLines=lines))
    entry = response.json()["d"]
    assert response.status_code == 201
    assert (entry["Type"], entry["Status"], entry["Journal"], entry["Currency"]) == (20, 20, "70", "EUR")
    assert Decimal(str(entry["AmountFC"])) == Decimal("100.50") == Decimal(str(entry["AmountDC"]))
    assert Decimal(str(entry["VATAmountFC"])) == Decimal("6.10")
    assert (entry["ReportingYear"], entry["ReportingPeriod"], entry["PaymentCondition"]) == (2026, 3, "30")
    assert entry["EntryDate"] == "/Date(1772409600000)/"
    assert [line["LineNumber"] for line in entry["SalesEntryLines"]] == [1, 2]
    fetched = api.get(f"salesentry/SalesEntries(guid'{entry['EntryID']}')", **{"$select": "EntryID,YourRef"})
    assert fetched.json() == {"d": {"EntryID": entry["EntryID"], "YourRef": "2026/0042"}}
    assert api.get(f"salesentry/SalesEntries(guid'{GL_7000}')").status_code == 404


def test_due_date_is_stored_and_shown_back(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    entry = api.post(
        "salesentry/SalesEntries", entry_payload(api.customer(), DueDate="2026-04-17T00:00:00Z")
    ).json()["d"]
    assert entry["DueDate"] == "/Date(1776384000000)/"
    derived = api.post("salesentry/SalesEntries", entry_payload(api.customer(1043), YourRef="x")).json()["d"]
    assert derived["DueDate"] == "/Date(1775001600000)/"  # entry date + the 30 days of condition 30


def test_negative_lines_and_zero_rated_regimes_stay_apart_per_line(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    lines = [
        {"GLAccount": GL_7000, "AmountFC": "200.00", "VATCode": "4"},
        {"GLAccount": GL_7000, "AmountFC": "-20.00", "VATCode": "4", "Description": "Discount 10%"},
        {"GLAccount": GL_7000, "AmountFC": "50.00", "VATCode": "IC"},
        {"GLAccount": GL_7000, "AmountFC": "30.00", "VATCode": "EX "},
    ]
    response = api.post("salesentry/SalesEntries", entry_payload(api.customer(), SalesEntryLines=lines))
    assert response.status_code == 201, response.text
    entry = response.json()["d"]
    assert entry["Type"] == 20  # a positive entry with a negative line is still an invoice
    assert Decimal(str(entry["AmountFC"])) == Decimal("260.00")
    assert Decimal(str(entry["VATAmountFC"])) == Decimal("37.80")
    booked = [(line["VATCode"], Decimal(str(line["AmountFC"]))) for line in entry["SalesEntryLines"]]
    assert booked == [("4", 200), ("4", -20), ("IC", 50), ("EX", 30)]
    assert {line["VATPercentage"] for line in entry["SalesEntryLines"][2:]} == {0}


def _without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda payload: {k: v for k, v in payload.items() if k != key}


def _line(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(payload: dict[str, Any]) -> dict[str, Any]:
        line = {k: v for k, v in payload["SalesEntryLines"][0].items() if changes.get(k, ...) is not None}
        return payload | {"SalesEntryLines": [line | {k: v for k, v in changes.items() if v is not None}]}

    return mutate


def _set(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda payload: payload | changes


UNKNOWN_GUID = "00000000-0000-0000-0000-000000000001"
VALIDATION_CASES = [
    (_without("Journal"), "Mandatory: Journal"),
    (_set(Journal="99"), "Mandatory: Journal"),
    (_set(Journal="90"), "Invalid: Journal (type)"),
    (_without("Customer"), "Mandatory: Account"),
    (_set(Customer=UNKNOWN_GUID), "Klant werd niet gevonden in Exact"),
    ("prospect", "Invalid: Customer (Type)"),
    (_set(EntryDate="2028-03-01"), "Unknown: Financial year (Period-date table)"),
    (_set(EntryDate="2026-01-15T00:00:00Z"), "Periode is afgesloten: 2026-01"),
    (_set(ReportingYear=2025, ReportingPeriod=5), "Periode is afgesloten: 2025-05"),
    (_set(Currency="USD"), "Niet toegestaan: Wisselkoers"),
    (_set(SalesEntryLines=[]), "Mandatory: SalesEntryLines"),
    (_line(GLAccount=None), "Mandatory: Account"),
    (_line(GLAccount=UNKNOWN_GUID), f"Not found: Account ({UNKNOWN_GUID}) – G/L Account: Sales"),
    (_line(GLAccount=GL_ACCOUNTS_123456["7020"]), "Blocked: Ledger account"),
    (_line(VATCode="7"), "Invalid reference: VAT code"),
    (_line(VATCode="5  "), "Not allowed: VAT code"),
    (_line(VATCode="9"), "Not allowed: VAT code"),
    (_set(EntryNumber=26700001), "Already exists – Entry number: 26700001, Journal: 70"),
]


@pytest.mark.parametrize(("mutate", "expected"), VALIDATION_CASES, ids=[c[1] for c in VALIDATION_CASES])
def test_sales_entry_validation_errors(fresh: SandboxHandle, mutate: Any, expected: str) -> None:
    api = Api(fresh)
    customer = api.customer()
    api.post("salesentry/SalesEntries", entry_payload(customer, YourRef="existing")).raise_for_status()
    if mutate == "prospect":
        payload = entry_payload(api.customer(2000, "Prospect BV", status="P"))
    else:
        payload = mutate(entry_payload(customer))
    response = api.post("salesentry/SalesEntries", payload)
    assert (response.status_code, message(response)) == (400, expected)
    assert [e["YourRef"] for e in fresh.exact.entries()] == ["existing"]  # nothing committed


def test_missing_payment_condition_everywhere() -> None:
    fixtures = default_fixtures()
    division = replace(fixtures.divisions[DIVISION_BE], default_payment_condition=None)
    sandbox = ExactOnlineSandbox(fixtures=replace(fixtures, divisions={DIVISION_BE: division}))
    customer = sandbox.create_account(division, {"Name": "No Terms BV", "Status": "C"})
    with pytest.raises(ExactApiError, match="^Mandatory: Payment condition$"):
        sandbox.create_sales_entry(division, entry_payload(customer["ID"]))
    booked = sandbox.create_sales_entry(division, entry_payload(customer["ID"], PaymentCondition="15"))
    assert booked["DueDate"].day == 17 and sandbox.entries(DIVISION_BE)[0]["PaymentCondition"] == "15"


# -------------------------------------------------------------------------- queries


def test_filter_on_your_ref_with_or_and_quotes(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    customer = api.customer()
    for ref in ("2026/0001", "2026/0002", "O'Brien 3"):
        api.post("salesentry/SalesEntries", entry_payload(customer, YourRef=ref)).raise_for_status()
    query = "(YourRef eq '2026/0001' or YourRef eq 'O''Brien 3') and Journal eq '70'"
    found = api.get("salesentry/SalesEntries", **{"$filter": query, "$select": "EntryNumber,YourRef"})
    assert found.json()["d"]["results"] == [
        {"EntryNumber": 26700001, "YourRef": "2026/0001"},
        {"EntryNumber": 26700003, "YourRef": "O'Brien 3"},
    ]
    unknown = api.get("salesentry/SalesEntries", **{"$filter": "Colour eq 'red'"})
    assert unknown.status_code == 400 and "Colour" in message(unknown)
    assert api.get("salesentry/SalesEntries", **{"$select": "Nope"}).status_code == 400


def test_filter_parser_handles_typed_literals_and_precedence() -> None:
    fields = {"ID", "Date", "Amount", "Blocked", "Name"}
    row = {
        "ID": "b4f1c2d0-5a6e-4c1b-9a43-0d2e7f18c901",
        "Date": odata.parse_datetime("2026-03-02T00:00:00Z"),
        "Amount": Decimal("12.50"),
        "Blocked": False,
        "Name": "A",
    }
    assert odata.parse_filter("ID eq guid'B4F1C2D0-5A6E-4C1B-9A43-0D2E7F18C901'", fields)(row)
    assert odata.parse_filter("Date ge datetime'2026-03-01T00:00:00' and Amount gt 12", fields)(row)
    assert odata.parse_filter("Name eq 'B' or Name eq 'A' and Blocked eq false", fields)(row)
    assert not odata.parse_filter("(Name eq 'B' or Name eq 'A') and Blocked eq true", fields)(row)
    assert odata.parse_filter("not (Name ne 'A')", fields)(row)
    for broken in ("Name eq", "(Name eq 'A'", "Name eq 'A' Name", "Name 'A'"):
        with pytest.raises(odata.ODataError):
            odata.parse_filter(broken, fields)


def test_lists_are_paged_by_60_with_an_absolute_next_link(fresh: SandboxHandle) -> None:
    fresh.exact.configure(limits_enabled=False)
    api = Api(fresh)
    for number in range(1, 131):
        api.post("crm/Accounts", {"Code": f"{number:>18}", "Name": f"Customer {number}", "Status": "C"})
    pages, url = [], api.url("crm/Accounts") + "?$select=ID,Code&$filter=Status eq 'C'"
    while url:
        body = requests.get(url, headers=api.headers, timeout=5).json()["d"]
        pages.append(body["results"])
        url = body.get("__next")
        assert url is None or (url.startswith(api.url("crm/Accounts")) and "skiptoken=guid'" in url)
        assert url is None or "select=ID" in url
    assert [len(p) for p in pages] == [60, 60, 10]
    codes = [row["Code"].strip() for page in pages for row in page]
    assert codes == [str(n) for n in range(1, 131)]
    top = api.get("crm/Accounts", **{"$top": "5", "$orderby": "Name desc"}).json()["d"]
    assert len(top["results"]) == 5 and "__next" not in top and top["results"][0]["Name"] == "Customer 99"


def test_reference_lookups(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    journals = api.get("financial/Journals", **{"$filter": "Type eq 20"}).json()["d"]["results"]
    assert [j["Code"] for j in journals] == ["70", "71"]
    gl = api.get("financial/GLAccounts", **{"$filter": "Code eq '7000'", "$select": "ID"}).json()["d"][
        "results"
    ]
    assert gl == [{"ID": GL_7000}]
    vat = api.get("vat/VATCodes", **{"$filter": "Code eq '4'"}).json()["d"]["results"][0]
    assert (vat["Percentage"], vat["VATTransactionType"], vat["IsBlocked"]) == (0.21, "S", False)
    divisions = api.get("system/Divisions").json()["d"]["results"]
    assert [d["Code"] for d in divisions] == [DIVISION_BE, DIVISION_NL]
    assert api.get("hrm/Divisions", **{"$select": "Code,Description"}).status_code == 200


def test_overlong_url_is_refused(fresh: SandboxHandle) -> None:
    api = Api(fresh)
    query = " or ".join(f"YourRef eq '2026/{n:04d}'" for n in range(300))
    assert api.get("salesentry/SalesEntries", **{"$filter": query}).status_code == 414


# ---------------------------------------------------------------------- rate limits


def test_rate_limit_headers_and_minutely_429(sandbox: SandboxHandle) -> None:
    sandbox.exact.configure(minutely_limit=3)
    api = Api(sandbox)
    remaining = [api.get("crm/Accounts").headers["X-RateLimit-Minutely-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    requests.get(f"{api.base}/api/v1/current/Me", headers=api.headers, timeout=5).raise_for_status()
    limited = api.get("crm/Accounts")
    assert limited.status_code == 429 and message(limited)
    headers = limited.headers
    assert headers["X-RateLimit-Minutely-Limit"] == "3" and headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("5000", "4997")
    now_ms = time.time() * 1000
    assert now_ms < int(headers["X-RateLimit-Minutely-Reset"]) <= now_ms + 60_000
    assert now_ms < int(headers["X-RateLimit-Reset"]) <= now_ms + 86_400_000
    api.division = DIVISION_NL  # another division has its own counters
    assert api.get("crm/Accounts").headers["X-RateLimit-Minutely-Remaining"] == "2"
    assert sandbox.exact.stats_snapshot()["rate_limited"] == 1


def test_daily_limit(sandbox: SandboxHandle) -> None:
    sandbox.exact.configure(daily_limit=2)
    api = Api(sandbox)
    assert [api.get("crm/Accounts").status_code for _ in range(3)] == [200, 200, 429]
    assert api.get("crm/Accounts").headers["X-RateLimit-Remaining"] == "0"


def test_limits_can_be_switched_off(sandbox: SandboxHandle) -> None:
    sandbox.exact.configure(minutely_limit=1, limits_enabled=False)
    api = Api(sandbox)
    assert {api.get("crm/Accounts").status_code for _ in range(3)} == {200}


def _scaled_api(handle: SandboxHandle) -> tuple[Api, dict[str, str]]:
    tokens = _refresh(handle.exact_url, BOOTSTRAP_REFRESH_TOKEN).json()
    api = Api.__new__(Api)
    api.base, api.division = handle.exact_url, DIVISION_BE
    api.access_token, api.refresh_token = tokens["access_token"], tokens["refresh_token"]
    return api, tokens


def test_time_scale_makes_the_minute_window_pass_quickly() -> None:
    handle = start_in_thread(time_scale=120)  # a sandbox minute lasts half a real second
    try:
        handle.exact.configure(minutely_limit=1)
        api, _ = _scaled_api(handle)
        sent_ms = time.time() * 1000
        first = api.get("crm/Accounts")
        if first.status_code == 429:  # crossed a minute boundary between the calls; start over
            sent_ms = time.time() * 1000
            first = api.get("crm/Accounts")
        answered_ms = time.time() * 1000
        reset_ms = int(first.headers["X-RateLimit-Minutely-Reset"])
        # the window the call was counted in ends after it was sent and within a sandbox minute (500 ms)
        # of its answer; measured around the call, so a loaded machine cannot make it look past
        assert sent_ms < reset_ms <= answered_ms + 500
        second = api.get("crm/Accounts")
        assert second.status_code == 429 or int(second.headers["X-RateLimit-Minutely-Reset"]) > reset_ms
        time.sleep(max(0.0, reset_ms / 1000 - time.time()) + 0.02)
        assert api.get("crm/Accounts").status_code == 200
    finally:
        handle.stop()


def test_time_scale_shortens_token_lifetimes() -> None:
    handle = start_in_thread(time_scale=600)  # 600 sandbox seconds last one real second
    try:
        api, tokens = _scaled_api(handle)
        assert tokens["expires_in"] == "1"
        assert api.get("crm/Accounts").status_code == 200
        time.sleep(1.05)
        assert api.get("crm/Accounts").status_code == 401
        assert _refresh(handle.exact_url, tokens["refresh_token"]).status_code == 200
    finally:
        handle.stop()


def test_sandbox_clock_scale_and_conversion() -> None:
    clock = SandboxClock(time_scale=3600)
    start = clock.now()
    time.sleep(0.05)
    elapsed = (clock.now() - start).total_seconds()
    assert 150 <= elapsed <= 600
    assert clock.sandbox_seconds_to_real(3600) == 1.0
    later = clock.now()
    assert abs(clock.to_real_epoch_ms(later) - time.time() * 1000) < 50


def test_error_budget_blocks_the_endpoint_for_an_hour(sandbox: SandboxHandle) -> None:
    sandbox.exact.configure(error_budget=2)
    api = Api(sandbox)
    statuses = [api.post("salesentry/SalesEntries", {}).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    customer = api.customer()  # other endpoints are not blocked
    blocked = api.post("salesentry/SalesEntries", entry_payload(customer))
    assert blocked.status_code == 429 and "X-RateLimit-Remaining" in blocked.headers
    assert sandbox.exact.entries() == []


# --------------------------------------------------------------------------- faults


def _set_faults(handle: SandboxHandle, *rules: dict[str, Any]) -> None:
    response = requests.post(f"{handle.exact_url}/_sandbox/faults", json=list(rules), timeout=5)
    response.raise_for_status()


def test_fault_latency_and_status(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    customer = api.customer()
    _set_faults(
        sandbox,
        {"kind": "latency", "method": "GET", "path": "crm/Accounts$", "delay_s": 0.3, "times": 1},
        {"kind": "status", "method": "POST", "path": "SalesEntries", "status": 503, "times": 1},
    )
    started = time.monotonic()
    assert api.get("crm/Accounts").status_code == 200
    assert time.monotonic() - started >= 0.3
    failed = api.post("salesentry/SalesEntries", entry_payload(customer))
    assert (failed.status_code, message(failed)) == (503, "Injected fault")
    assert sandbox.exact.entries() == []
    assert api.post("salesentry/SalesEntries", entry_payload(customer)).status_code == 201
    assert sandbox.exact.stats_snapshot()["faults"] == {"latency": 1, "status": 1}


def test_fault_rate_limit_looks_like_exact(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    api.get("crm/Accounts")
    _set_faults(sandbox, {"kind": "rate_limit", "path": "^/api/v1/", "times": 1})
    limited = api.get("crm/Accounts")
    assert limited.status_code == 429 and message(limited)
    assert limited.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Remaining"] == "4999"
    assert api.get("crm/Accounts").status_code == 200


def test_fault_timeout_commits_nothing(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    customer = api.customer()
    _set_faults(sandbox, {"kind": "timeout", "method": "POST", "path": "SalesEntries", "delay_s": 5})
    with pytest.raises(requests.Timeout):
        api.post("salesentry/SalesEntries", entry_payload(customer), timeout=0.3)
    assert sandbox.exact.entries() == []


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("commit_then_timeout", requests.Timeout),
        ("commit_then_drop", requests.exceptions.ChunkedEncodingError),
        ("malformed", requests.JSONDecodeError),
    ],
)
def test_faults_after_commit_leave_the_entry_booked(sandbox: SandboxHandle, kind: str, error: type) -> None:
    api = Api(sandbox)
    customer = api.customer()
    _set_faults(sandbox, {"kind": kind, "method": "POST", "path": "SalesEntries", "delay_s": 5, "times": 1})
    with pytest.raises(error):
        response = api.post("salesentry/SalesEntries", entry_payload(customer), timeout=0.5)
        response.json()
    assert [e["YourRef"] for e in sandbox.exact.entries(DIVISION_BE)] == ["2026/0042"]
    assert sandbox.exact.stats_snapshot()["faults"] == {kind: 1}
    retry = api.post("salesentry/SalesEntries", entry_payload(customer, EntryNumber=26700001))
    assert message(retry) == "Already exists – Entry number: 26700001, Journal: 70"


def test_fault_probability_is_seeded_and_rules_can_be_cleared(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    _set_faults(sandbox, {"kind": "status", "path": "Journals", "status": 500, "probability": 0.5})
    statuses = [api.get("financial/Journals").status_code for _ in range(20)]
    assert 0 < statuses.count(500) < 20
    requests.delete(f"{sandbox.exact_url}/_sandbox/faults", timeout=5).raise_for_status()
    assert api.get("financial/Journals").status_code == 200
    bad = requests.post(f"{sandbox.exact_url}/_sandbox/faults", json=[{"kind": "gremlins"}], timeout=5)
    assert bad.status_code == 400


# ------------------------------------------------------------- control and persistence


def test_control_api_entries_stats_and_reset(sandbox: SandboxHandle) -> None:
    api = Api(sandbox)
    api.post("salesentry/SalesEntries", entry_payload(api.customer())).raise_for_status()
    control = f"{sandbox.exact_url}/_sandbox"
    assert [
        e["YourRef"] for e in requests.get(f"{control}/entries?division={DIVISION_BE}", timeout=5).json()
    ] == ["2026/0042"]
    assert requests.get(f"{control}/entries?division={DIVISION_NL}", timeout=5).json() == []
    assert len(requests.get(f"{control}/accounts", timeout=5).json()) == 1
    stats = requests.get(f"{control}/stats", timeout=5).json()
    assert stats["calls"]["POST /api/v1/{division}/salesentry/SalesEntries"] == {"201": 1}
    assert stats["by_status"]["201"] == 2 and stats["token_refreshes"] == 1
    bad_config = requests.post(f"{control}/config", json={"minutely_limit": "many"}, timeout=5)
    assert bad_config.status_code == 400
    requests.post(f"{control}/reset", timeout=5).raise_for_status()
    assert sandbox.exact.entries() == [] and sandbox.exact.stats_snapshot()["total"] == 0
    assert _refresh(sandbox.exact_url, BOOTSTRAP_REFRESH_TOKEN).status_code == 200


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox-state.json"
    first = start_in_thread(state_path=state)
    try:
        api = Api(first)
        api.post("salesentry/SalesEntries", entry_payload(api.customer())).raise_for_status()
    finally:
        first.stop()
    second = start_in_thread(state_path=state)
    try:
        assert [e["EntryNumber"] for e in second.exact.entries()] == [26700001]
        assert _refresh(second.exact_url, BOOTSTRAP_REFRESH_TOKEN).json()["error"] == "invalid_grant"
        api.base = second.exact_url
        assert api.get("crm/Accounts").json()["d"]["results"][0]["Name"] == "Atelier Verhoeven BV"
        second.exact.expire_tokens()
        rotated = _refresh(second.exact_url, api.refresh_token)
        assert rotated.status_code == 200
        api.access_token = rotated.json()["access_token"]
        customer = api.get("crm/Accounts").json()["d"]["results"][0]["ID"]
        booked = api.post("salesentry/SalesEntries", entry_payload(customer)).json()["d"]
        assert booked["EntryNumber"] == 26700002
    finally:
        second.stop()
    assert not list(tmp_path.glob(".sandbox-state.json.*"))  # no temp files left behind


def test_fields_longer_than_exact_accepts_are_refused_like_exact_does():
    """The simulator enforces the widths the connector checks first (see mapping.ACCOUNT_FIELD_LIMITS)."""
    from invoice_sync.connectors.exact_online import mapping
    from invoice_sync_dev.sandbox.exact_fixtures import DIVISION_BE
    from invoice_sync_dev.sandbox.exact_online import (
        ACCOUNT_FIELD_LIMITS,
        SALES_ENTRY_LINE_FIELD_LIMITS,
        ExactApiError,
        ExactOnlineSandbox,
    )

    assert ACCOUNT_FIELD_LIMITS == mapping.ACCOUNT_FIELD_LIMITS
    assert SALES_ENTRY_LINE_FIELD_LIMITS["Description"] == mapping.LINE_DESCRIPTION_MAX
    sandbox = ExactOnlineSandbox()
    division = sandbox.fixtures.divisions[DIVISION_BE]
    with pytest.raises(ExactApiError) as refused:
        sandbox.create_account(division, {"Code": "1".rjust(18), "Name": "x" * 51, "Status": "C"})
    assert (refused.value.status, refused.value.message) == (400, "Too long: Name (max. 50)")
    name = 'Smith & <Sons> "Ltd" \\ 😀' + "y" * 26
    assert len(name) == 50 and sandbox.create_account(division, {"Name": name, "Status": "C"})["Name"] == name
