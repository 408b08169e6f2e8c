"""The Twinfield connector against the Twinfield simulator over real HTTP on loopback.

The Airflow connection comes from an ``AIRFLOW_CONN_*`` variable, tokens live in an in-memory vault with a
real lock, and faults are injected through the simulator's control API, so every test runs the code path a
task runs in production. Assertions look at the simulator's books, the outcomes and the calls made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import requests
from flows import book, connector_factory
from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_sync.connectors.http import RateBudget
from invoice_sync.connectors.registry import connector_for
from invoice_sync.connectors.twinfield.connector import BATCH_SIZE, TwinfieldConnector, build_connector
from invoice_sync.connectors.twinfield.hook import TwinfieldHook
from invoice_sync.domain.errors import AuthError, ConfigError
from invoice_sync.domain.models import Booked, ErrorClass, InvoiceKind, Rejected, Unknown
from invoice_sync.domain.ports import CustomerLinkFailure
from invoice_sync.engine.sync import IntegrationSync
from invoice_sync.store.models import InvoiceRow, LedgerRow
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox.demo import TWINFIELD_CONN_ID, seed
from invoice_sync_dev.sandbox.server import start_in_thread
from invoice_sync_dev.sandbox.twinfield import demo_connection as twinfield_connection
from invoice_sync_dev.sandbox.twinfield_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    DAYBOOK,
    DEBTORS_ACCOUNT,
    DISCOUNT_ACCOUNT,
    FOREIGN_OFFICE,
    INACTIVE_VAT_CODE,
    OFFICE,
    ZERO_RATE_VAT_CODES,
)

CONN_ID = "twinfield_test"
CLIENT_TIMEOUT_S = 2.0
TRANSACTIONS = "POST /cluster/webservices/processxml.asmx#ProcessXmlString/transactions"
COLUMNS = "POST /cluster/webservices/processxml.asmx#ProcessXmlString/columns"
DIMENSIONS = "POST /cluster/webservices/processxml.asmx#ProcessXmlString/dimensions"
TOKEN = "POST /auth/authentication/connect/token"
VALIDATION = "GET /auth/authentication/connect/accesstokenvalidation"
TWINFIELD_INTEGRATION = 5
"""The demo's Twinfield integration (``invoice_sync_dev.sandbox.demo``)."""


def set_connection(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> None:
    extra = {"refresh_token": BOOTSTRAP_REFRESH_TOKEN, "timeout": CLIENT_TIMEOUT_S, **extra}
    conn = {"conn_type": "http", "host": host, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def control(handle: Any, path: str, body: Any = None) -> Any:
    url = f"{handle.url_of('twinfield')}/_sandbox/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def twinfield(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    set_connection(monkeypatch, sandbox.url_of("twinfield"))
    return sandbox


@pytest.fixture
def fast_twinfield(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A simulator whose clock runs 60x: a credit minute passes in one real second."""
    handle = start_in_thread(time_scale=60)
    set_connection(monkeypatch, handle.url_of("twinfield"))
    try:
        yield handle
    finally:
        handle.stop()


def sim(handle: Any) -> Any:
    return handle.simulator("twinfield")


@pytest.fixture
def settings(builders: Any) -> Any:
    return builders.settings(
        journal=DAYBOOK,
        credit_note_journal=None,
        vat_codes={"21": "VH", "9": "VL", "0": "VN"},
        gl_accounts={"7000": "8000", "7010": "8010"},
        default_gl_account="8020",
        payment_condition=None,
        division=None,
        office=OFFICE,
        debtors_account=DEBTORS_ACCOUNT,
    )


@pytest.fixture
def connect(builders: Any, vault: Any, settings: Any) -> Callable[..., TwinfieldConnector]:
    """Build a connector; keyword arguments go to the hook (short back-off)."""
    return connector_factory("twinfield", CONN_ID, builders, vault, settings)


def ledger_by_number(store: SyncStore) -> dict[str, LedgerRow]:
    query = select(InvoiceRow.number, LedgerRow).join(InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id)
    with Session(store.engine) as session:
        return {number: row for number, row in session.execute(query)}


def customer(builders: Any, customer_id: int, name: str = "Atelier Verhoeven BV") -> Any:
    return builders.customer(customer_id, name=name, country_code="nl", vat_number="NL001234567B01")


# -- booking --------------------------------------------------------------------------------------------


def test_a_batch_books_the_good_transactions_and_refuses_the_bad_with_twinfields_text(
    twinfield, connect, builders, settings
):
    vat_codes = {**settings.vat_codes, "12": INACTIVE_VAT_CODE}
    assert INACTIVE_VAT_CODE == "VX"
    connector = connect(
        integration_settings=replace(
            settings, vat_codes=vat_codes, gl_accounts={"7000": "8000", "7999": "8999"}
        )
    )
    alice = customer(builders, 1)
    invoices = [
        builders.invoice(invoice_id=1, number="T-1", customer=alice),
        builders.invoice([builders.line("10.00", "12")], invoice_id=2, number="T-2", customer=alice),
        builders.invoice(
            [builders.line("10.00", gl_account="7999")], invoice_id=3, number="T-3", customer=alice
        ),
        builders.invoice([builders.line("99.99", "9")], invoice_id=4, number="T-4", customer=alice),
    ]
    outcomes = book(connector, *invoices)

    assert outcomes == [
        Booked(1, "202600001", f"{OFFICE}/{DAYBOOK}/202600001"),
        Rejected(
            2,
            ErrorClass.CONFIG,
            f"Twinfield office {OFFICE}: btw-code(VX): VAT VX does not exist or is not (yet) active",
        ),
        Rejected(
            3,
            ErrorClass.CONFIG,
            f"Twinfield office {OFFICE}: Dimension 8999 with financial level 1 not found",
        ),
        Booked(4, "202600002", f"{OFFICE}/{DAYBOOK}/202600002"),
    ]
    books = sim(twinfield).booked()
    assert [(b["reference"], b["registration_number"], b["customer_code"]) for b in books] == [
        ("T-1", "202600001", "1001"),
        ("T-4", "202600002", "1001"),
    ]
    assert sim(twinfield).create_posts() == {"T-1": 1, "T-2": 1, "T-3": 1, "T-4": 1}
    assert control(twinfield, "stats")["calls"][TRANSACTIONS] == {"200": 1}  # one call for the batch


def test_booked_totals_equal_the_apps_to_the_cent(twinfield, connect, builders):
    """Multi-rate invoices whose VAT the app rounded on the total, not per line: booked as the app says."""
    lines_a = [builders.line("1.05", "21", position=n) for n in range(9)] + [
        builders.line("2.05", "21", position=9)
    ]
    lines_a += [builders.line("0.15", "9", position=10 + n, gl_account="7010") for n in range(3)]
    # Per line: 21 % of 1.05 = 0.2205 -> 0.22 (x9) and 0.4305 -> 0.43; 9 % of 0.15 -> 0.01 (x3).
    # The app rounds per rate: 21 % of 11.50 = 2.415 -> 2.42 and 9 % of 0.45 = 0.0405 -> 0.04.
    awkward = builders.invoice(
        lines_a, invoice_id=1, number="R-1", total_vat="2.46", customer=customer(builders, 2)
    )
    mixed = builders.invoice(
        [
            builders.line("33.33", "21"),
            builders.line("66.67", "9", position=2),
            builders.line("10.00", "0", position=3),
        ],
        invoice_id=2,
        number="R-2",
        customer=customer(builders, 3),
    )
    outcomes = book(connect(), awkward, mixed)
    assert [type(o) for o in outcomes] == [Booked, Booked]

    books = {b["reference"]: b for b in sim(twinfield).booked()}
    for invoice in (awkward, mixed):
        booking = books[invoice.number]
        assert booking["total_incl_vat"] == invoice.total_incl_vat
        assert booking["total_vat"] == invoice.total_vat
    assert books["R-1"]["vat_by_code"] == {"VH": Decimal("2.42"), "VL": Decimal("0.04")}
    assert books["R-2"]["vat_by_code"] == {"VH": Decimal("7.00"), "VL": Decimal("6.00"), "VN": Decimal("0")}


def test_a_credit_note_is_booked_with_debit_and_credit_swapped(twinfield, connect, builders):
    credit_note = builders.invoice(
        [builders.line("100.00", "21")], invoice_id=7, number="CN-1", kind=InvoiceKind.CREDIT_NOTE,
        customer=customer(builders, 4),
    )  # fmt: skip
    assert book(connect(), credit_note) == [Booked(7, "202600001", f"{OFFICE}/{DAYBOOK}/202600001")]
    (booking,) = sim(twinfield).booked()
    assert booking["total_incl_vat"] == Decimal("-121.00")
    assert booking["total_vat"] == Decimal("-21.00")
    sides = {line["type"]: line["debitcredit"] for line in booking["lines"]}
    assert sides == {"total": "credit", "detail": "debit", "vat": "debit"}


def test_customer_names_with_markup_and_emoji_arrive_intact(twinfield, connect, builders):
    smith = customer(builders, 5, name='Smith & <Sons> "Ltd"')
    rocket = customer(builders, 6, name="Café Raket 🚀 BV")
    connector = connect()
    links = connector.ensure_customers([smith, rocket, smith])
    assert links == {5: "1005", 6: "1006"}
    names = {c["code"]: c["name"] for c in sim(twinfield).customers()}
    assert names == {"1005": 'Smith & <Sons> "Ltd"', "1006": "Café Raket 🚀 BV"}
    outcomes = list(connector.push([builders.invoice(number="S&<1>", customer=smith)], links))
    assert [type(o) for o in outcomes] == [Booked]
    (booking,) = sim(twinfield).booked()
    assert (booking["reference"], booking["customer_name"]) == ("S&<1>", 'Smith & <Sons> "Ltd"')
    assert connector.find_booked(["S&<1>"])["S&<1>"].registration_number == "202600001"
    assert control(twinfield, "stats")["calls"][DIMENSIONS] == {"200": 1}  # one upsert for the page


def test_a_refused_customer_gets_twinfields_text_and_the_others_are_linked(
    twinfield, connect, builders, settings
):
    connector = connect(
        integration_settings=replace(settings, extra={**settings.extra, "customer_code_offset": 0})
    )
    links = connector.ensure_customers([customer(builders, 5), customer(builders, 1500)])
    assert links == {
        5: CustomerLinkFailure(
            "data",
            f"Twinfield office {OFFICE}: debtor 5: The code does not conform to the format 1[0-9]{{3,5}}",
        ),
        1500: "1500",
    }


def test_invalid_invoices_are_rejected_without_a_call(twinfield, connect, builders):
    outcomes = list(connect().push([builders.invoice([builders.line("10.00", "6")])], {1042: "2042"}))
    assert outcomes == [
        Rejected(
            1,
            ErrorClass.CONFIG,
            f"VAT rate 6% is not mapped to a Twinfield VAT code for Twinfield office {OFFICE}",
        )
    ]
    assert TRANSACTIONS not in control(twinfield, "stats")["calls"]


def test_batches_of_twenty_five_and_their_outcomes_yielded_before_the_next_call(twinfield, connect, builders):
    alice = customer(builders, 1)
    invoices = [builders.invoice(invoice_id=n, number=f"B-{n}", customer=alice) for n in range(1, 31)]
    connector = connect()
    links = connector.ensure_customers([alice])
    outcomes = connector.push(invoices, links)
    first = [next(outcomes) for _ in range(BATCH_SIZE)]
    assert len(sim(twinfield).booked()) == BATCH_SIZE  # the second call has not left yet
    rest = list(outcomes)
    assert [o.registration_number for o in first + rest] == [str(202600000 + n) for n in range(1, 31)]
    assert control(twinfield, "stats")["calls"][TRANSACTIONS] == {"200": 2}


# -- OAuth ----------------------------------------------------------------------------------------------


def test_an_access_token_expiring_mid_run_is_refreshed_once_and_nothing_is_lost(
    twinfield, connect, builders, vault
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    first = list(connector.push([builders.invoice(invoice_id=1, number="E-1", customer=alice)], links))
    stored = vault.load(CONN_ID)
    assert stored.refresh_token == BOOTSTRAP_REFRESH_TOKEN  # not rotated: kept

    assert sim(twinfield).expire_tokens() == 1
    second = list(connector.push([builders.invoice(invoice_id=2, number="E-2", customer=alice)], links))
    assert [type(o) for o in first + second] == [Booked, Booked]
    assert [b["reference"] for b in sim(twinfield).booked()] == ["E-1", "E-2"]
    assert sim(twinfield).create_posts() == {"E-1": 1, "E-2": 1}
    stats = control(twinfield, "stats")
    assert stats["token_refreshes"] == 2
    assert stats["calls"][TRANSACTIONS] == {"200": 2, "500": 1}  # the refused call, then its repeat
    assert stats["calls"][VALIDATION] == {"200": 2}  # the cluster asked again for the new token
    assert vault.load(CONN_ID).access_token != stored.access_token


def test_a_refused_refresh_asks_to_reconnect(twinfield, connect, builders, monkeypatch):
    set_connection(monkeypatch, twinfield.url_of("twinfield"), refresh_token="not-a-token")
    with pytest.raises(AuthError, match=r"invalid_grant.*reconnect the integration to Twinfield"):
        connect().find_booked(["x"])

    set_connection(monkeypatch, twinfield.url_of("twinfield"))
    vault = builders.vault()
    connect(token_vault=vault).find_booked(["x"])
    sim(twinfield).revoke()  # the user withdrew the app's access
    sim(twinfield).expire_tokens()
    with pytest.raises(AuthError, match="reconnect"):
        connect(token_vault=vault).find_booked(["x"])


def test_tokens_are_shared_through_the_vault(twinfield, connect, vault):
    connect().find_booked(["x"])
    connect().find_booked(["y"])  # another task: reuses the stored access token
    stats = control(twinfield, "stats")
    assert stats["token_refreshes"] == 1
    assert stats["calls"][TOKEN] == {"200": 1}
    assert stats["calls"][VALIDATION] == {"200": 2}  # each hook learns its cluster once
    assert vault.saved == 1


def test_an_office_outside_the_organisation_is_a_config_error(twinfield, connect, settings):
    connector = connect(
        integration_settings=replace(settings, extra={**settings.extra, "office": FOREIGN_OFFICE})
    )
    with pytest.raises(ConfigError, match=f"Geen toegang tot administratie {FOREIGN_OFFICE}"):
        connector.find_booked(["x"])


def test_build_connector_needs_an_office(builders, vault, settings):
    integration = builders.integration(replace(settings, extra={}), conn_id=CONN_ID)
    with pytest.raises(ConfigError, match="office is not set; it must be a Twinfield office code"):
        build_connector(integration, vault)


# -- faults and exactly-once ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["commit_then_drop", "malformed"])
def test_a_lost_answer_is_unknown_for_the_whole_call_and_found_by_lookup(twinfield, connect, builders, kind):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(twinfield, "faults", [{"path": "#ProcessXmlString/transactions$", "kind": kind, "times": 1}])
    invoices = [builders.invoice(invoice_id=n, number=f"L-{n}", customer=alice) for n in (1, 2)]
    outcomes = list(connector.push(invoices, links))
    assert [type(o) for o in outcomes] == [Unknown, Unknown]
    assert "look it up before resending" in outcomes[0].message

    found = connector.find_booked(["L-1", "L-2", "L-3"])
    assert {ref: (b.registration_number, b.external_id) for ref, b in found.items()} == {
        "L-1": ("202600001", f"{OFFICE}/{DAYBOOK}/202600001"),
        "L-2": ("202600002", f"{OFFICE}/{DAYBOOK}/202600002"),
    }
    assert sim(twinfield).create_posts() == {"L-1": 1, "L-2": 1}
    assert control(twinfield, "stats")["calls"][COLUMNS] == {"200": 3}  # one browse per reference


def test_an_unrecognised_fault_on_a_write_is_unknown_and_on_a_read_is_retried(twinfield, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(
        twinfield,
        "faults",
        [
            {"path": "#ProcessXmlString/transactions$", "kind": "status", "status": 500, "times": 1},
            {"path": "#ProcessXmlString/columns$", "kind": "status", "status": 500, "times": 1},
        ],
    )
    outcomes = list(connector.push([builders.invoice(number="F-1", customer=alice)], links))
    assert [type(o) for o in outcomes] == [Unknown]
    assert "Injected fault" in outcomes[0].message
    assert connector.find_booked(["F-1"]) == {}  # nothing was booked; the browse was repeated
    assert control(twinfield, "stats")["faults"] == {"status": 2}


def test_the_lookup_keeps_to_its_office_and_daybooks_and_the_lowest_number_wins(
    twinfield, connect, builders, settings
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    twice = [builders.invoice(invoice_id=n, number="D-1", customer=alice) for n in (1, 2)]
    list(connector.push(twice, links))  # Twinfield does not refuse a repeated invoicenumber
    second_office = connect(
        integration_settings=replace(settings, extra={**settings.extra, "office": "NLA002"})
    )
    second_links = second_office.ensure_customers([alice])
    list(second_office.push([builders.invoice(number="D-2", customer=alice)], second_links))

    assert {r: b.registration_number for r, b in connector.find_booked(["D-1", "D-2"]).items()} == {
        "D-1": "202600001"
    }
    other_daybook = connect(integration_settings=replace(settings, journal="MEMO"))
    assert other_daybook.find_booked(["D-1"]) == {}


def test_an_injected_429_is_waited_out_and_the_call_repeated(fast_twinfield, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(
        fast_twinfield,
        "faults",
        [{"path": "#ProcessXmlString/transactions$", "kind": "rate_limit", "times": 1}],
    )
    outcomes = list(connector.push([builders.invoice(number="Q-1", customer=alice)], links))
    assert [type(o) for o in outcomes] == [Booked]
    assert sim(fast_twinfield).create_posts() == {"Q-1": 1}
    stats = control(fast_twinfield, "stats")
    assert stats["rate_limited"] == 1
    assert connector.hook.budget.waited_s >= 1.0  # Retry-After: 1


def test_credits_are_never_overspent_in_steady_state(fast_twinfield, connect, builders):
    """A sync needing more than a minute of credits waits for the next minute instead of meeting a 429."""
    sim(fast_twinfield).configure(credits_per_minute=30)
    budget = RateBudget(label="test", short_limit=30, short_period_s=1.0, margin_s=0.1)
    connector = connect(budget=budget)
    alice = customer(builders, 1)
    links = connector.ensure_customers([alice])  # 3 credits
    invoices = [builders.invoice(invoice_id=n, number=f"C-{n}", customer=alice) for n in range(1, 6)]
    for invoice in invoices:  # 5 calls of 3 credits
        list(connector.push([invoice], links))
    found = connector.find_booked([f"C-{n}" for n in range(1, 41)])  # 40 credits
    assert len(found) == 5
    stats = control(fast_twinfield, "stats")
    assert stats["rate_limited"] == 0
    assert stats["credits_used"] == {CLIENT_ID: 58}
    assert budget.waited_s > 0


def test_api_calls_and_credits_per_invoice_for_a_hundred_invoice_sync(twinfield, connect, builders):
    customers = [customer(builders, n, name=f"Klant {n}") for n in range(1, 17)]
    invoices = [
        builders.invoice(
            [builders.line("120.00", "21"), builders.line("45.50", "9", position=2, gl_account="7010")],
            invoice_id=n,
            number=f"2026-{n:04d}",
            customer=customers[n % 16],
            invoice_date=date(2026, 3, 1 + n % 28),
        )
        for n in range(1, 101)
    ]
    outcomes = book(connect(), *invoices)
    assert [type(o) for o in outcomes] == [Booked] * 100
    stats = control(twinfield, "stats")
    calls = stats["total"]
    credits = stats["credits_used"][CLIENT_ID]
    print(f"\n100-invoice Twinfield sync: {calls} HTTP calls ({calls / 100:.2f}/invoice), {credits} credits")
    assert stats["calls"][DIMENSIONS] == {"200": 1}
    assert stats["calls"][TRANSACTIONS] == {"200": 4}
    assert calls == 7  # token, validation, one dimensions upsert, four transaction batches
    assert credits == 15  # 3 per write call, whatever its size
    assert sum(b["total_incl_vat"] for b in sim(twinfield).booked()) == sum(
        i.total_incl_vat for i in invoices
    )


def test_request_timeout_comes_from_the_connection(twinfield, connect):
    connector = connect()
    assert connector.request_timeout_s == CLIENT_TIMEOUT_S
    assert isinstance(connector.hook, TwinfieldHook)
    assert connector.hook.session.auth is None  # the client secret goes to the token endpoint only
    assert "refresh_token" not in connector.hook.session.headers


# -- discounts and VAT regimes (issue #12, items 5 and 6) -----------------------------------------------


def test_negative_and_discount_lines_are_booked_to_the_cent(twinfield, connect, builders, settings):
    goodwill = builders.invoice(
        [builders.line("200.00", "21"), builders.line("-25.00", "21", position=2, description="Goodwill")],
        invoice_id=1,
        number="N-1",
        customer=customer(builders, 1),
    )
    lines = [builders.line("100.00", "21"), builders.line("33.33", "9", position=2, gl_account="7010")]
    # 10 % off: cuts 10.00 and 3.33; VAT 21 % of 90.00 = 18.90 and 9 % of 30.00 = 2.70.
    discount = builders.invoice(lines, customer=customer(builders, 1), discount="10")
    assert (discount.total_excl_vat, discount.total_vat) == (Decimal("120.00"), Decimal("21.60"))
    plain = replace(discount, id=2, number="D-1")
    on_account = replace(discount, id=3, number="D-2")
    assert book(connect(), goodwill, plain) == [
        Booked(1, "202600001", f"{OFFICE}/{DAYBOOK}/202600001"),
        Booked(2, "202600002", f"{OFFICE}/{DAYBOOK}/202600002"),
    ]
    with_account = connect(integration_settings=replace(settings, discount_gl_account=DISCOUNT_ACCOUNT))
    assert [type(o) for o in book(with_account, on_account)] == [Booked]

    books = {b["reference"]: b for b in sim(twinfield).booked()}
    for invoice in (goodwill, plain, on_account):
        booking = books[invoice.number]
        assert (booking["total_incl_vat"], booking["total_vat"]) == (
            invoice.total_incl_vat,
            invoice.total_vat,
        )

    def details(reference: str) -> list[tuple[str, Decimal]]:
        return [
            (line["dim1"], line["signed"]) for line in books[reference]["lines"] if line["type"] == "detail"
        ]

    assert details("N-1") == [("8000", Decimal("-200.00")), ("8000", Decimal("25.00"))]
    assert details("D-1") == [
        ("8000", Decimal("-100.00")), ("8010", Decimal("-33.33")), ("8000", Decimal("10.00")),
        ("8010", Decimal("3.33")),
    ]  # fmt: skip
    assert details("D-2")[2:] == [(DISCOUNT_ACCOUNT, Decimal("10.00")), (DISCOUNT_ACCOUNT, Decimal("3.33"))]
    assert books["D-1"]["vat_by_code"] == {"VH": Decimal("18.90"), "VL": Decimal("2.70")}


def test_zero_rate_lines_of_different_tax_rates_book_on_their_own_vat_codes(
    twinfield, connect, builders, settings
):
    regimes = replace(settings, tax_rates={**ZERO_RATE_VAT_CODES, "standard": "VH"})
    invoice = builders.invoice(
        [
            replace(builders.line("400.00", "0"), tax_rate="intra_community"),
            replace(builders.line("300.00", "0", position=2), tax_rate="export"),
            replace(builders.line("100.00", "21", position=3), tax_rate="standard"),
        ],
        number="Z-1",
        customer=customer(builders, 1),
    )
    assert [type(o) for o in book(connect(integration_settings=regimes), invoice)] == [Booked]
    (booking,) = sim(twinfield).booked()
    assert booking["vat_by_code"] == {"VEU": Decimal("0"), "VEX": Decimal("0"), "VH": Decimal("21.00")}
    turnover = {line["vatcode"]: line["vatturnover"] for line in booking["lines"] if line["type"] == "vat"}
    assert turnover == {"VEU": Decimal("400.00"), "VEX": Decimal("300.00"), "VH": Decimal("100.00")}


# -- a browse that ignores its filter (issue #12, item 2) -----------------------------------------------


def test_a_browse_that_ignores_its_filter_finds_nothing_of_ours(twinfield, connect, builders):
    connector = connect()
    book(
        connector,
        *(builders.invoice(invoice_id=n, number=f"O-{n}", customer=customer(builders, 1)) for n in (1, 2)),
    )
    sim(twinfield).configure(browse_ignores_filters=True)
    assert connector.find_booked(["NEVER-BOOKED"]) == {}
    assert {r: b.registration_number for r, b in connector.find_booked(["O-2", "O-1"]).items()} == {
        "O-2": "202600002",
        "O-1": "202600001",
    }


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """The engine test below runs on SQLite: the store's own tests cover PostgreSQL."""
    return sqlite_url


def test_an_unknown_invoice_is_never_recorded_as_booked_under_someone_elses_number(
    twinfield, connect, builders, store, monkeypatch
):
    """Through the engine: invoices left ``unknown`` by a lost call, then a run whose browses answer every
    transaction of the office. Each must be pushed and booked with its own number, never "found" in a
    hand-made booking or in another invoice's."""
    seeded = seed(store.engine, tools=("twinfield",))
    connection = twinfield_connection(twinfield.url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{TWINFIELD_CONN_ID.upper()}", json.dumps(connection))
    integration = store.integration(TWINFIELD_INTEGRATION)

    def run(run_id: str) -> Any:
        connector = connector_for(integration, SqlTokenVault(store.engine))
        return IntegrationSync(store, connector, integration, run_id=run_id, holder=run_id).run()

    control(
        twinfield,
        "faults",
        [{"path": "#ProcessXmlString/transactions$", "kind": "status", "status": 503, "times": 1}],
    )
    first = run("run-1")
    # The call that failed leaves its invoices unknown; the run stops there, so the page's invoices that
    # were on their way in the next call stay claimed: both are settled by lookup before any new push.
    # A credit note of one of them is held back (refused until its invoice is booked): it follows then.
    states = {n: row.state for n, row in ledger_by_number(store).items()}
    unknown = {n for n, state in states.items() if state in ("unknown", "claimed", "rejected")}
    assert first.unknown == sum(state == "unknown" for state in states.values()) > 1
    # Someone books a transaction by hand in the same office and daybook.
    hand = builders.invoice(invoice_id=999, number="HAND-1", customer=customer(builders, 1))
    assert [type(o) for o in book(connect(), hand)] == [Booked]
    hand_number = sim(twinfield).booked()[-1]["registration_number"]

    sim(twinfield).configure(browse_ignores_filters=True)
    second = run("run-2")
    assert second.resolved_by_lookup == 0
    booked = {}
    for item in sim(twinfield).booked():
        booked.setdefault(item["reference"], []).append(item["registration_number"])
    rows = ledger_by_number(store)
    assert second.booked == len(unknown - set(seeded.expected_rejections)) > 1
    for number in unknown:
        row = rows[number]
        if number in seeded.expected_rejections:  # refused by Twinfield on the push: not booked
            assert (row.state, row.registration_number, number in booked) == ("rejected", None, False)
            continue
        assert len(booked[number]) == 1, number  # pushed again, exactly once
        assert (row.state, row.registration_number) == ("booked", booked[number][0])
    assert hand_number not in {row.registration_number for row in rows.values()}
