"""The QuickBooks Online connector against the QuickBooks simulator over real HTTP on loopback.

The Airflow connection comes from an ``AIRFLOW_CONN_*`` variable, tokens live in an in-memory vault with a
real lock, and faults are injected through the simulator's control API, so every test runs the code path a
task runs in production. Assertions look at the simulator's books, the outcomes and the calls made. Limit
tests use a simulator whose clock runs 60x (a QuickBooks minute lasts one real second) and tell the
connector so through the connection's ``minute_s``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flows import book, connector_factory

from invoice_sync.connectors.quickbooks.connector import QuickBooksConnector, build_connector
from invoice_sync.connectors.quickbooks.hook import BATCH_MAX, QuickBooksHook, SlidingBudget
from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError
from invoice_sync.domain.models import Booked, Booking, ErrorClass, InvoiceKind, Rejected, Unknown
from invoice_sync.domain.ports import BudgetLeft, CustomerLinkFailure
from invoice_sync_dev.sandbox.quickbooks import demo_connection as quickbooks_connection
from invoice_sync_dev.sandbox.quickbooks_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    ITEM_DISCOUNT,
    ITEM_HOURS,
    ITEM_INACTIVE,
    ITEM_SERVICES,
    REALM_DEMO,
    REALM_OTHER,
    TAX_CODE_0,
    TAX_CODE_0_EU,
    TAX_CODE_9,
    TAX_CODE_21,
)
from invoice_sync_dev.sandbox.server import start_in_thread

CONN_ID = "quickbooks_test"
CLIENT_TIMEOUT_S = 2.0
WHERE = f"QuickBooks company {REALM_DEMO}"
BATCH = "batch#create"
QUERY = "query"
PREFERENCES = "read Preferences"
"""Read once per connector (a run), before its first write: custom transaction numbers must be on."""


def set_connection(monkeypatch: pytest.MonkeyPatch, base: str, **extra: Any) -> None:
    conn = quickbooks_connection(base)
    conn["extra"] = {**conn["extra"], "timeout": CLIENT_TIMEOUT_S, **extra}  # type: ignore[dict-item]  # the demo connection's extra is a mapping of strings
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def control(handle: Any, path: str, body: Any = None) -> Any:
    url = f"{handle.url_of('quickbooks')}/_sandbox/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


def sim(handle: Any) -> Any:
    return handle.simulator("quickbooks")


def calls(handle: Any) -> dict[str, int]:
    """Calls by operation, every batch that creates counted as ``batch#create`` whatever it creates."""
    counted: dict[str, int] = {}
    for operation, count in sim(handle).stats_snapshot()["calls"].items():
        key = BATCH if operation.startswith(BATCH) else operation
        counted[key] = counted.get(key, 0) + count
    return counted


@pytest.fixture
def quickbooks(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    set_connection(monkeypatch, sandbox.url)
    return sandbox


@pytest.fixture
def fast_quickbooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A simulator whose clock runs 60x; the connection says a minute lasts one second."""
    handle = start_in_thread(time_scale=60)
    set_connection(monkeypatch, handle.url, minute_s=1)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def settings(builders: Any) -> Any:
    return builders.settings(
        journal=None,
        credit_note_journal=None,
        vat_codes={"21": TAX_CODE_21, "9": TAX_CODE_9, "0": TAX_CODE_0},
        gl_accounts={"7000": ITEM_SERVICES, "7010": ITEM_HOURS},
        default_gl_account=None,
        payment_condition=None,
        division=None,
        realm_id=REALM_DEMO,
    )


@pytest.fixture
def connect(builders: Any, vault: Any, settings: Any) -> Callable[..., QuickBooksConnector]:
    """Build a connector; keyword arguments go to the hook (short back-off)."""
    return connector_factory("quickbooks", CONN_ID, builders, vault, settings)


def customer(builders: Any, customer_id: int, name: str = "Atelier Verhoeven BV") -> Any:
    return builders.customer(customer_id, name=name, country_code="nl", vat_number="NL001234567B01")


# -- booking --------------------------------------------------------------------------------------------


def test_a_batch_books_the_good_invoices_and_refuses_the_bad_with_quickbooks_text(
    quickbooks, connect, builders, settings
):
    connector = connect(
        integration_settings=replace(
            settings, gl_accounts={"7000": ITEM_SERVICES, "7010": ITEM_INACTIVE, "7020": "99"}
        )
    )
    alice = customer(builders, 1)
    invoices = [
        builders.invoice(invoice_id=1, number="Q-1", customer=alice),
        builders.invoice(
            [builders.line("10.00", gl_account="7010")], invoice_id=2, number="Q-2", customer=alice
        ),
        builders.invoice(
            [builders.line("10.00", gl_account="7020")], invoice_id=3, number="Q-3", customer=alice
        ),
        builders.invoice(invoice_id=4, number="Q-4", customer=alice, invoice_date=date(2025, 6, 30)),
        builders.invoice([builders.line("99.99", "9")], invoice_id=5, number="Q-5", customer=alice),
    ]
    outcomes = book(connector, *invoices)

    assert outcomes[0] == Booked(1, "Q-1", "145")
    assert outcomes[4] == Booked(5, "Q-5", "146")
    assert outcomes[1] == Rejected(
        2,
        ErrorClass.DATA,
        f"{WHERE}: A business validation error has occurred while processing your request: Business "
        "Validation Error: Something you're trying to use has been made inactive. Check the fields with "
        "accounts, customers, items, vendors or employees. (Item 3) (code 6000)",
    )
    assert outcomes[2] == Rejected(
        3,
        ErrorClass.CONFIG,
        f"{WHERE}: Invalid Reference Id: Invalid Reference Id : Item element id 99 not found (code 2500) (a "
        "reference QuickBooks does not know: check that the integration's item and tax code mappings name "
        "active QuickBooks items and tax codes)",
    )
    assert isinstance(outcomes[3], Rejected) and outcomes[3].error_class is ErrorClass.CONFIG
    assert "Account Period Closed" in outcomes[3].message
    assert "ask the accountant to reopen the period" in outcomes[3].message  # the closed-period advice
    books = sim(quickbooks).booked()
    assert [(b["reference"], b["external_id"], b["kind"]) for b in books] == [
        ("Q-1", "145", "invoice"),
        ("Q-5", "146", "invoice"),
    ]
    assert sim(quickbooks).create_posts() == {f"Q-{n}": 1 for n in range(1, 6)}
    assert calls(quickbooks)[BATCH] == 2  # one for the customer, one for the five invoices


def test_booked_totals_equal_the_apps_to_the_cent(quickbooks, connect, builders):
    """Multi-rate invoices whose VAT the app rounded per rate, not per line: booked as the app says."""
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [
        builders.line("2.05", "21", position=9)
    ]
    lines += [builders.line("0.15", "9", position=10 + n, gl_account="7010") for n in range(3)]
    # Per line QuickBooks would compute 9 x 0.22 + 0.43 + 3 x 0.01 = 2.44; the app says 2.42 + 0.04.
    awkward = builders.invoice(
        lines, invoice_id=1, number="R-1", total_vat="2.46", customer=customer(builders, 2)
    )
    mixed = builders.invoice(
        [
            builders.line("33.33", "21"),
            builders.line("66.67", "9", position=2),
            builders.line("10.00", "0", position=3),
            builders.line("1.00", "21", position=4, quantity="8"),  # 8 x 0.125: an exact unit price
        ],
        invoice_id=2,
        number="R-2",
        customer=customer(builders, 3),
    )
    outcomes = book(connect(), awkward, mixed)
    assert [type(o) for o in outcomes] == [Booked, Booked]

    books = {b["reference"]: b for b in sim(quickbooks).booked()}
    for invoice in (awkward, mixed):
        booking = books[invoice.number]
        assert booking["total_excl_vat"] == invoice.total_excl_vat
        assert booking["total_vat"] == invoice.total_vat
        assert booking["total_incl_vat"] == invoice.total_incl_vat
    assert books["R-1"]["total_vat"] == Decimal("2.46")
    assert [line["item"] for line in books["R-1"]["lines"]][-3:] == [ITEM_HOURS] * 3


def test_a_credit_note_is_booked_as_a_credit_memo_and_found_by_number(quickbooks, connect, builders):
    credit_note = builders.invoice(
        [builders.line("100.00", "21")], invoice_id=7, number="CN-1", kind=InvoiceKind.CREDIT_NOTE,
        customer=customer(builders, 4),
    )  # fmt: skip
    invoice = builders.invoice(
        invoice_id=8, number="CN-1", customer=customer(builders, 4)
    )  # own number space
    connector = connect()
    assert book(connector, credit_note, invoice) == [Booked(7, "CN-1", "145"), Booked(8, "CN-1", "146")]
    memo, _ = sim(quickbooks).booked()
    assert (memo["entity"], memo["kind"], memo["total_amt"]) == (
        "CreditMemo",
        "credit_note",
        Decimal("121.00"),
    )
    assert memo["total_incl_vat"] == Decimal("-121.00")  # the simulator signs from the debtor's side
    # both records hold CN-1; the oldest (the credit memo) wins, every time
    assert connector.find_booked(["CN-1", "CN-2"]) == {"CN-1": Booking("CN-1", "CN-1", "145")}


def test_batches_of_thirty_and_their_outcomes_yielded_before_the_next_call(quickbooks, connect, builders):
    alice = customer(builders, 1)
    invoices = [builders.invoice(invoice_id=n, number=f"B-{n}", customer=alice) for n in range(1, 36)]
    connector = connect()
    links = connector.ensure_customers([alice])
    outcomes = connector.push(invoices, links)
    first = [next(outcomes) for _ in range(BATCH_MAX)]
    assert len(sim(quickbooks).booked()) == BATCH_MAX  # the second call has not left yet
    rest = list(outcomes)
    assert [o.registration_number for o in first + rest] == [f"B-{n}" for n in range(1, 36)]
    assert calls(quickbooks)[BATCH] == 3  # customer, then 30 + 5 invoices


def test_every_call_names_minor_version_75_and_every_write_a_request_id(quickbooks, connect, builders):
    connector = connect()
    sent: list[tuple[str, str]] = []
    request = connector.hook.session.request

    def spy(method: str, url: str, **kwargs: Any) -> Any:
        prepared = requests.Request(method, url, params=kwargs.get("params")).prepare()
        sent.append((method, str(prepared.url)))
        return request(method, url, **kwargs)

    connector.hook.session.request = spy  # type: ignore[method-assign]  # a spy replaces the session's request
    book(connector, builders.invoice(number="M-1", customer=customer(builders, 1)))
    connector.find_booked(["M-1"])
    api = [url for _, url in sent if "/v3/company/" in url]
    # preferences, customer query, customer batch, invoice batch, lookup batch
    assert len(api) == 5 and urlsplit(api[0]).path.endswith("/preferences")
    for url in api:
        params = parse_qs(urlsplit(url).query)
        assert urlsplit(url).path.startswith(f"/quickbooks/v3/company/{REALM_DEMO}/")
        assert params["minorversion"] == ["75"]
    writes = [parse_qs(urlsplit(url).query)["requestid"][0] for url in api[2:4]]
    assert len(set(writes)) == 2 and all(len(rid) == 36 for rid in writes)
    assert "requestid" not in parse_qs(urlsplit(api[4]).query)  # a lookup may simply be repeated


# -- exactly-once ---------------------------------------------------------------------------------------


def test_a_resent_batch_is_answered_from_the_request_id_and_not_booked_twice(quickbooks, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    invoices = [builders.invoice(invoice_id=n, number=f"P-{n}", customer=alice) for n in (1, 2)]
    first = list(connector.push(invoices, links))
    again = list(connect().push(invoices, links))  # another worker resends the very same request
    assert first == again == [Booked(1, "P-1", "145"), Booked(2, "P-2", "146")]
    assert sim(quickbooks).create_posts() == {"P-1": 1, "P-2": 1}
    assert sim(quickbooks).stats_snapshot()["replays"] == 1
    assert len(sim(quickbooks).booked()) == 2


@pytest.mark.parametrize("kind", ["commit_then_drop", "malformed"])
def test_a_lost_answer_is_unknown_then_settled_by_lookup_and_a_resend_is_replayed(
    quickbooks, connect, builders, kind
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(quickbooks, "faults", [{"method": "POST", "path": "/batch#create/", "kind": kind, "times": 1}])
    invoices = [builders.invoice(invoice_id=n, number=f"L-{n}", customer=alice) for n in (1, 2)]
    outcomes = list(connector.push(invoices, links))
    assert [type(o) for o in outcomes] == [Unknown, Unknown]
    assert "look it up before resending" in outcomes[0].message

    found = connector.find_booked(["L-1", "L-2", "L-3"])
    assert {ref: (b.registration_number, b.external_id) for ref, b in found.items()} == {
        "L-1": ("L-1", "145"),
        "L-2": ("L-2", "146"),
    }
    # Even without the lookup, a resend of the same request is answered from QuickBooks' memory.
    assert list(connector.push(invoices, links)) == [Booked(1, "L-1", "145"), Booked(2, "L-2", "146")]
    assert sim(quickbooks).create_posts() == {"L-1": 1, "L-2": 1}


def test_a_duplicate_number_is_settled_by_lookup(quickbooks, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    assert list(connector.push([builders.invoice(invoice_id=1, number="D-1", customer=alice)], links)) == [
        Booked(1, "D-1", "145")
    ]
    # The same number again, changed since (a new request id): QuickBooks refuses it with 6140.
    changed = builders.invoice([builders.line("260.00")], invoice_id=1, number="D-1", customer=alice)
    other = builders.invoice(invoice_id=2, number="D-2", customer=alice)
    assert list(connector.push([changed, other], links)) == [Booked(1, "D-1", "145"), Booked(2, "D-2", "146")]
    assert sim(quickbooks).create_posts() == {"D-1": 2, "D-2": 1}
    assert [b["reference"] for b in sim(quickbooks).booked()] == ["D-1", "D-2"]


def test_a_500_on_a_write_is_unknown_and_on_a_lookup_is_retried(quickbooks, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(
        quickbooks,
        "faults",
        [{"method": "POST", "path": "/batch#", "kind": "status", "status": 503, "times": 2}],
    )
    outcomes = list(connector.push([builders.invoice(number="F-1", customer=alice)], links))
    assert [type(o) for o in outcomes] == [Unknown]
    assert "An application error has occurred" in outcomes[0].message
    assert connector.find_booked(["F-1"]) == {}  # nothing was booked; the lookup was repeated once
    assert sim(quickbooks).stats_snapshot()["faults"] == {"status": 2}


def test_a_fault_in_a_200_answer_is_a_refusal(quickbooks, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    fault = {"Fault": {"Error": [{"Message": "Invalid Company Status", "Detail": "Subscription ended",
                                  "code": "6190"}], "type": "ValidationFault"}}  # fmt: skip
    control(
        quickbooks,
        "faults",
        [{"path": "/batch#create/", "kind": "status", "status": 200, "body": fault, "times": 1}],
    )
    with pytest.raises(QuotaExceededError, match="subscription is not active"):
        list(connector.push([builders.invoice(number="S-1", customer=alice)], links))
    business = {"Fault": {"Error": [{"Message": "A business validation error", "code": "6000"}]}}
    control(
        quickbooks,
        "faults",
        [{"path": "/batch#create/", "kind": "status", "status": 200, "body": business, "times": 1}],
    )
    assert list(connector.push([builders.invoice(number="S-1", customer=alice)], links)) == [
        Rejected(1, ErrorClass.DATA, f"{WHERE}: A business validation error (code 6000)")
    ]
    assert sim(quickbooks).booked() == []


# -- customers ------------------------------------------------------------------------------------------


def test_customers_are_matched_not_duplicated_across_runs(quickbooks, connect, builders):
    customers = [customer(builders, n, name=f"Klant {n}") for n in (1, 2, 3)]
    first = connect().ensure_customers(customers)
    assert first == {1: "58", 2: "59", 3: "60"}
    assert calls(quickbooks) == {PREFERENCES: 1, QUERY: 1, BATCH: 1}

    newcomer = builders.customer(4, name="O'Brien & Zn")
    second = connect().ensure_customers([*customers, newcomer, customers[0]])
    assert second == {**first, 4: "61"}
    # per run (connector): its preferences, one query for the page; one batch for the newcomer
    assert calls(quickbooks) == {PREFERENCES: 2, QUERY: 2, BATCH: 2}
    names = sorted(c["name"] for c in sim(quickbooks).customers())
    assert names == ["Klant 1 (1)", "Klant 2 (2)", "Klant 3 (3)", "O'Brien & Zn (4)"]


def test_a_name_taken_meanwhile_is_linked_when_ours_and_refused_otherwise(
    quickbooks, connect, builders, monkeypatch
):
    ours, theirs = customer(builders, 5, name="Race BV"), customer(builders, 6, name="Vendor Ltd")
    connect().ensure_customers([ours])  # another run created it meanwhile
    # someone made a customer with the name we would give #6 inactive: our query does not see it
    held = connect().ensure_customers([theirs])[6]
    deactivate = {"Id": held, "SyncToken": "0", "sparse": True, "Active": False}
    connect().hook.api("POST", "customer", json=deactivate, safe=False)

    connector = connect()
    real = connector._customers_named  # noqa: SLF001
    seen: list[int] = []

    def racing(names: Any) -> dict[str, str]:
        seen.append(1)
        return {} if len(seen) == 1 else real(names)  # the first query ran before the other run's create

    monkeypatch.setattr(connector, "_customers_named", racing)
    links = connector.ensure_customers([ours, theirs])
    assert links[5] == "58"
    assert links[6] == CustomerLinkFailure(
        "data",
        f"{WHERE}: Duplicate Name Exists Error: The name supplied already exists. : Another customer, "
        "vendor or employee is already using this name. Please use a different name. Id=59 (code 6240) "
        "(QuickBooks uses the name Vendor Ltd (6) for a vendor, an employee or an inactive customer: "
        "rename that one, or "
        "make the customer active again if it is this one)",
    )
    assert len(sim(quickbooks).customers()) == 2


def test_a_lost_customer_batch_is_settled_by_asking_again(quickbooks, connect, builders):
    control(quickbooks, "faults", [{"path": "/batch#create/", "kind": "commit_then_drop", "times": 1}])
    links = connect().ensure_customers([customer(builders, 1), customer(builders, 2, name="Other")])
    assert links == {1: "58", 2: "59"}
    assert calls(quickbooks) == {PREFERENCES: 1, QUERY: 2, BATCH: 1}


# -- OAuth ----------------------------------------------------------------------------------------------


def test_an_access_token_expiring_mid_run_is_refreshed_once_and_shared_through_the_vault(
    quickbooks, connect, builders, vault
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    first = list(connector.push([builders.invoice(invoice_id=1, number="E-1", customer=alice)], links))
    stored = vault.load(CONN_ID)
    assert stored.refresh_token != BOOTSTRAP_REFRESH_TOKEN  # rotated, and kept

    assert sim(quickbooks).expire_tokens() == 1
    second = list(connector.push([builders.invoice(invoice_id=2, number="E-2", customer=alice)], links))
    assert [type(o) for o in first + second] == [Booked, Booked]
    assert sim(quickbooks).create_posts() == {"E-1": 1, "E-2": 1}
    assert sim(quickbooks).stats_snapshot()["token_refreshes"] == 2
    renewed = vault.load(CONN_ID)
    assert renewed.access_token != stored.access_token
    connect().find_booked(["E-1"])  # another task: takes the stored token, asks for none
    assert sim(quickbooks).stats_snapshot()["token_refreshes"] == 2
    assert vault.saved == 2


def test_a_refused_refresh_asks_to_reconnect(quickbooks, connect, monkeypatch):
    set_connection(monkeypatch, quickbooks.url, refresh_token="not-a-token")
    with pytest.raises(AuthError, match=r"invalid_grant.*reconnect the integration to QuickBooks"):
        connect().find_booked(["x"])


def test_a_company_the_consent_does_not_cover_is_an_auth_error(quickbooks, connect, settings):
    other = replace(settings, extra={**settings.extra, "realm_id": REALM_OTHER})
    with pytest.raises(AuthError, match=r"ApplicationAuthorizationFailed.*\(code 3100\).*reconnect"):
        connect(integration_settings=other).find_booked(["x"])


def test_build_connector_needs_a_realm(builders, vault, settings):
    integration = builders.integration(replace(settings, extra={}), conn_id=CONN_ID)
    with pytest.raises(ConfigError, match=r"realm_id is not set; it must be a QuickBooks company's realm ID"):
        build_connector(integration, vault)


# -- custom transaction numbers, discounts, VAT regimes --------------------------------------------------


def test_the_connection_test_names_custom_transaction_numbers_when_they_are_off(quickbooks, connect):
    hook = connect().hook
    assert hook.test_connection() == (True, "Connection successfully tested")
    sim(quickbooks).configure(custom_txn_numbers=False)
    ok, message = hook.test_connection()
    assert not ok
    assert message.startswith(f"{WHERE} has custom transaction numbers switched off")
    assert "Account and settings > Sales > Sales form content > Custom transaction numbers" in message


def test_with_custom_transaction_numbers_off_a_run_writes_nothing(quickbooks, connect, builders):
    """QuickBooks would number the invoices itself and keep taken numbers: nothing may be created."""
    sim(quickbooks).configure(custom_txn_numbers=False)
    connector = connect()
    invoice = builders.invoice(number="P-1", customer=customer(builders, 1))
    with pytest.raises(ConfigError, match=r"custom transaction numbers switched off") as refused:
        connector.ensure_customers([invoice.customer])
    assert refused.value.error_class is ErrorClass.CONFIG
    with pytest.raises(ConfigError, match=r"Sales form content > Custom transaction numbers"):
        list(connector.push([invoice], {invoice.customer.id: "58"}))
    assert sim(quickbooks).booked() == [] and sim(quickbooks).customers() == []
    assert sim(quickbooks).create_posts() == {} and BATCH not in calls(quickbooks)


def test_discounts_and_zero_rate_regimes_are_booked_to_the_cent(quickbooks, connect, builders, settings):
    regimes = replace(
        settings,
        tax_rates={"exempt": TAX_CODE_0, "intra_community": TAX_CODE_0_EU},
        discount_gl_account=ITEM_DISCOUNT,
    )
    negative = builders.invoice(
        [builders.line("100.00"), builders.line("-10.00", position=2)],
        invoice_id=1, number="D-1", customer=customer(builders, 1),
    )  # fmt: skip
    discounted = builders.invoice(  # 270.00 + 45.90
        [builders.line("200.00", "21"), builders.line("100.00", "9", position=2, gl_account="7010")],
        invoice_id=2, number="D-2", customer=customer(builders, 1), discount="10",
    )  # fmt: skip
    zero = builders.invoice(
        [
            replace(builders.line("100.00", "0"), tax_rate="exempt"),
            replace(builders.line("50.00", "0", position=2), tax_rate="intra_community"),
        ],
        invoice_id=3, number="D-3", customer=customer(builders, 1),
    )  # fmt: skip
    outcomes = book(connect(integration_settings=regimes), negative, discounted, zero)
    assert [type(o) for o in outcomes] == [Booked] * 3
    books = {b["reference"]: b for b in sim(quickbooks).booked()}
    for invoice in (negative, discounted, zero):
        booking = books[invoice.number]
        assert (booking["total_excl_vat"], booking["total_vat"], booking["total_incl_vat"]) == (
            invoice.total_excl_vat, invoice.total_vat, invoice.total_incl_vat,
        )  # fmt: skip
    assert [(x["amount"], x["item"], x["tax_code"]) for x in books["D-2"]["lines"]] == [
        (Decimal("200.00"), ITEM_SERVICES, TAX_CODE_21),
        (Decimal("100.00"), ITEM_HOURS, TAX_CODE_9),
        (Decimal("-20.00"), ITEM_DISCOUNT, TAX_CODE_21),
        (Decimal("-10.00"), ITEM_DISCOUNT, TAX_CODE_9),
    ]
    assert [x["tax_code"] for x in books["D-3"]["lines"]] == [TAX_CODE_0, TAX_CODE_0_EU]


# -- limits ---------------------------------------------------------------------------------------------


def test_an_injected_429_is_waited_out_and_the_call_repeated(fast_quickbooks, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(fast_quickbooks, "faults", [{"path": "/batch#create/", "kind": "rate_limit", "times": 1}])
    outcomes = list(connector.push([builders.invoice(number="T-1", customer=alice)], links))
    assert [type(o) for o in outcomes] == [Booked]
    assert sim(fast_quickbooks).create_posts() == {"T-1": 1}
    assert sim(fast_quickbooks).stats_snapshot()["rate_limited"] == 1
    assert connector.hook.budget.waited_s >= 1.0  # a whole (scaled) minute


def test_a_throttle_fault_in_a_200_is_waited_out_too(fast_quickbooks, connect, builders):
    throttle = {"Fault": {"Error": [{"Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                     "code": "3001"}], "type": "SERVICE"}}  # fmt: skip
    control(
        fast_quickbooks,
        "faults",
        [{"path": "/query$", "kind": "status", "status": 200, "body": throttle, "times": 1}],
    )
    connector = connect()
    assert connector.ensure_customers([customer(builders, 1)]) == {1: "58"}
    assert connector.hook.budget.waited_s >= 1.0


def test_request_and_batch_limits_are_never_overrun_in_steady_state(
    fast_quickbooks, connect, builders, monkeypatch
):
    """Limits lowered on both sides (a shared client id, say): the sync waits instead of meeting a 429."""
    sim(fast_quickbooks).configure(minute_limit=4, batch_minute_limit=2, second_limit=2)
    set_connection(
        monkeypatch, fast_quickbooks.url, minute_s=1, requests_per_minute=4, batches_per_minute=2,
        requests_per_second=2,
    )  # fmt: skip
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])  # a query and a batch
    for _ in range(5):  # five more queries: the request windows bind
        assert connector.ensure_customers([alice]) == links
    assert connector.hook.budget.waited_s > 0
    for number in range(1, 4):  # three more batch calls: the batch window binds
        invoice = builders.invoice(invoice_id=number, number=f"C-{number}", customer=alice)
        assert [type(o) for o in connector.push([invoice], links)] == [Booked]
    assert connector.hook.batch_budget.waited_s > 0
    stats = sim(fast_quickbooks).stats_snapshot()
    assert stats["rate_limited"] == 0
    assert calls(fast_quickbooks) == {PREFERENCES: 1, QUERY: 6, BATCH: 4}


# -- the whole --------------------------------------------------------------------------------------------


def test_api_calls_per_invoice_for_a_hundred_invoice_sync(quickbooks, connect, builders):
    customers = [customer(builders, n, name=f"Klant {n}") for n in range(1, 17)]
    invoices = [
        builders.invoice(
            [builders.line("120.00", "21"), builders.line("45.50", "9", position=2, gl_account="7010")],
            invoice_id=n,
            number=f"2026-{n:04d}",
            customer=customers[n % 16],
            invoice_date=date(2026, 3, 1 + n % 28),
            kind=InvoiceKind.CREDIT_NOTE if n % 10 == 0 else InvoiceKind.INVOICE,
        )
        for n in range(1, 101)
    ]
    outcomes = book(connect(), *invoices)
    assert [type(o) for o in outcomes] == [Booked] * 100
    stats = sim(quickbooks).stats_snapshot()
    api_calls = stats["total"]
    http_calls = api_calls + stats["token_refreshes"]
    print(
        f"\n100-invoice QuickBooks sync: {http_calls} HTTP calls incl. the token "
        f"({http_calls / 100:.2f}/invoice), {api_calls} API calls ({api_calls / 100:.2f}/invoice)"
    )
    # preferences, customer query, customer batch, four invoice batches
    assert calls(quickbooks) == {PREFERENCES: 1, QUERY: 1, BATCH: 5}
    assert stats["token_refreshes"] == 1
    assert stats["rate_limited"] == 0
    books = sim(quickbooks).booked()
    assert len(books) == 100 and len(sim(quickbooks).customers()) == 16
    assert sum(b["total_incl_vat"] for b in books) == sum(
        -i.total_incl_vat if i.kind is InvoiceKind.CREDIT_NOTE else i.total_incl_vat for i in invoices
    )


def test_request_timeout_comes_from_the_connection(quickbooks, connect):
    connector = connect()
    assert connector.request_timeout_s == CLIENT_TIMEOUT_S
    assert isinstance(connector.hook, QuickBooksHook)
    assert connector.hook.session.auth is None  # the client secret goes to the token endpoint only
    assert "refresh_token" not in connector.hook.session.headers
    assert (CLIENT_ID, CLIENT_SECRET) == (
        quickbooks_connection("x")["login"],
        quickbooks_connection("x")["password"],
    )


def test_the_sliding_budget_dates_a_call_by_its_answer():
    """Pure: a window of 2 calls a second; the third call waits until the first *answer* is a second old."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    budget = SlidingBudget(
        label="test",
        windows=[(2, 1.0)],
        throttle_wait_s=60.0,
        sleep=sleep,
        clock=lambda: now[0],
        margin_s=0.0,
    )
    budget.acquire()
    now[0] = 0.3  # the answer took 0.3 s: QuickBooks counted the call somewhere before this
    budget.settle()
    budget.acquire()
    now[0] = 0.5
    budget.settle()
    budget.acquire()  # waits until the first answer (not the first request) is a second old
    assert waits == [pytest.approx(0.8)] and now[0] == pytest.approx(1.3)
    budget.throttled()
    assert budget.waited_s == pytest.approx(60.8)


def test_the_budget_left_counts_the_calls_in_the_sliding_minute() -> None:
    """Progress lines report what the local minute window may still spend (QuickBooks announces nothing)."""
    now = [0.0]
    budget = SlidingBudget(
        label="QuickBooks company 1",
        windows=[(500, 60.0), (10, 1.0)],
        throttle_wait_s=60.0,
        clock=lambda: now[0],
        sleep=lambda _s: None,
    )
    assert budget.left() == BudgetLeft(short=500, long=None)
    for _ in range(3):
        budget.acquire()
    assert budget.left().describe() == "497 calls left this minute"
    now[0] = 61.0  # the three calls have left the minute
    assert budget.left().short == 500
