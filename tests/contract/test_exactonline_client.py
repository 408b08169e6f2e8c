"""Contract tests: the ``exactonline`` client from PyPI (0.4.0 by OSSO B.V., LGPL, unmodified) drives the
Exact Online simulator.

The client is written against the real Exact Online: its ``Relations`` manager filters account codes
right-aligned in 18 characters, its ``Invoices`` manager finds sales entries by ``YourRef`` (40 to a filter)
and follows a GET's deferred ``SalesEntryLines`` link, its ``Unwrap`` insists on ``{"d": ...}`` envelopes
and follows ``__next``, and its ``Autorefresh`` refreshes 30 seconds before expiry. When it works against
the sandbox unchanged, the sandbox answers the way Exact does, not just the way our connector expects.

How the client is pointed at the sandbox, with configuration only:

- Its storage's ``[server]`` section names the REST root, token and auth URLs (``rest_url``, ``token_url``,
  ``auth_url``): the client's own ``IniStorage``, as its README shows, read from a file in ``tmp_path``.
- Its transport allows https only (``exactonline.http.opt_secure.protocols``). The sandbox listens on
  plain http on loopback, so the ``loopback_http`` fixture widens that tuple with pytest's ``monkeypatch``
  (restored after each test). Certificates are still verified for any https URL. No client code changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from exactonline.api import ExactApi
from exactonline.http import HTTPError, opt_secure
from exactonline.storage.ini import IniStorage

from invoice_sync_dev.sandbox import exact_fixtures as fx
from invoice_sync_dev.sandbox.exact_online import TOO_EARLY, ExactOnlineSandbox
from invoice_sync_dev.sandbox.server import SandboxHandle

GL_7000 = fx.GL_ACCOUNTS_123456["7000"]


@pytest.fixture
def exact(server: SandboxHandle) -> ExactOnlineSandbox:
    simulator: ExactOnlineSandbox = server.simulator("exact_online")
    simulator.reset()
    return simulator


@pytest.fixture
def loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the client speak plain http to the loopback sandbox (see the module docstring)."""
    monkeypatch.setattr(opt_secure, "protocols", ("http", "https"))


def storage(server: SandboxHandle, tmp_path: Path) -> IniStorage:
    """The client's INI storage: the sandbox's URLs, the demo app, the consent's refresh token."""
    base = server.url_of("exact_online")
    path = tmp_path / "exactonline.ini"
    path.write_text(
        "[server]\n"
        f"auth_url = {base}/api/oauth2/auth\n"
        f"rest_url = {base}/api\n"
        f"token_url = {base}/api/oauth2/token\n"
        "[application]\n"
        "base_url = https://invoice-sync.example/exact/callback\n"
        f"client_id = {fx.CLIENT_ID}\n"
        f"client_secret = {fx.CLIENT_SECRET}\n"
        "[transient]\n"
        "access_expiry = 0\n"
        "access_token = none-yet\n"
        f"refresh_token = {fx.BOOTSTRAP_REFRESH_TOKEN}\n"
        f"division = {fx.DIVISION_BE}\n"
    )
    return IniStorage(str(path))


@pytest.fixture
def api(server: SandboxHandle, exact: ExactOnlineSandbox, loopback_http: None, tmp_path: Path) -> ExactApi:
    return ExactApi(storage=storage(server, tmp_path))


def customer(api: ExactApi, code: str = "1042", name: str = "Atelier Verhoeven BV") -> dict[str, Any]:
    return api.relations.create({"Code": code, "Name": name, "Status": "C"})


def entry(customer_id: str, your_ref: str, **overrides: Any) -> dict[str, Any]:
    line = {"GLAccount": GL_7000, "AmountFC": "250.00", "VATCode": "4  ", "Description": "Consultancy"}
    payload = {
        "Journal": "70",
        "Customer": customer_id,
        "EntryDate": "2026-03-02T00:00:00Z",
        "YourRef": your_ref,
        "Description": f"Invoice {your_ref}",
        "SalesEntryLines": [line],
    }
    return payload | overrides


def test_an_account_sent_unpadded_is_found_by_its_code(api: ExactApi, exact: ExactOnlineSandbox) -> None:
    created = customer(api)  # the client's first call refreshes the token through [server] token_url
    assert created["Code"] == "1042".rjust(18)  # Exact stores it padded whatever was sent

    found = api.relations.get(relation_code="1042")  # the client filters Code eq '%18s'
    assert found == {"ID": created["ID"], "Code": created["Code"], "Name": "Atelier Verhoeven BV"}
    assert api.relations.filter(relation_code="999") == []
    assert exact.stats_snapshot()["token_refreshes"] == 1


def test_a_sales_entry_is_created_found_by_your_ref_and_mapped_back(api: ExactApi) -> None:
    account = customer(api)
    booked = [
        api.invoices.create(entry(account["ID"], reference, DueDate="2026-04-17T00:00:00Z"))
        for reference in ("2026/0042", "O'Brien-7")
    ]
    assert [e["EntryNumber"] for e in booked] == [26700001, 26700002]

    found = api.invoices.get(invoice_number="O'Brien-7")  # follows the deferred SalesEntryLines link
    assert (found["EntryID"], found["YourRef"], found["DueDate"]) == (
        booked[1]["EntryID"],
        "O'Brien-7",
        "/Date(1776384000000)/",
    )
    assert [(line["GLAccount"], line["AmountFC"]) for line in found["SalesEntryLines"]] == [(GL_7000, 250.0)]

    numbers = [e["InvoiceNumber"] for e in booked]
    assert api.invoices.map_exact2foreign_invoice_numbers([*numbers, 1]) == {
        numbers[0]: "2026/0042",
        numbers[1]: "O'Brien-7",
        1: None,
    }
    assert api.invoices.map_foreign2exact_invoice_numbers(["2026/0042", "2026/9999"]) == {
        "2026/0042": numbers[0],
        "2026/9999": None,
    }


def test_lists_are_paged_as_the_client_follows_them(api: ExactApi, exact: ExactOnlineSandbox) -> None:
    for number in range(1, 62):  # over one page of 60
        exact.create_account(
            exact.fixtures.divisions[fx.DIVISION_BE], {"Code": str(number), "Name": f"C {number}"}
        )
    rows = api.relations.filter(select="ID,Code")
    assert sorted(int(row["Code"]) for row in rows) == list(range(1, 62))


def test_a_refused_entry_is_the_clients_own_error_with_exacts_text(api: ExactApi) -> None:
    account = customer(api)
    with pytest.raises(HTTPError) as refused:
        api.invoices.create(entry(account["ID"], "2026/0043", Journal="90"))
    assert refused.value.code == 400
    error = json.loads(refused.value.response)
    assert error["error"]["message"]["value"] == "Invalid: Journal (type)"


def test_an_early_refresh_is_answered_as_exact_does(api: ExactApi, exact: ExactOnlineSandbox) -> None:
    customer(api)  # a token issued just now
    with pytest.raises(HTTPError) as early:
        api.refresh_token()
    assert early.value.code == 400
    assert json.loads(early.value.response) == {"error": "access_denied", "error_description": TOO_EARLY}
    assert early.value.hdrs["Reason"] == f"TooEarlyToRefreshTokens: {TOO_EARLY}"
    assert api.relations.get(relation_code="1042")["Name"] == "Atelier Verhoeven BV"  # still good

    exact.expire_tokens()
    api.storage.set_access_expiry(int(time.time()))  # ten minutes pass for the client as well
    assert api.relations.get(relation_code="1042")["Code"] == "1042".rjust(18)  # refreshed, then read
    assert exact.stats_snapshot()["token_refreshes"] == 2
