"""The Exact Online connector against the Exact simulator over real HTTP on loopback.

The Airflow connection comes from an ``AIRFLOW_CONN_*`` variable, tokens live in an in-memory vault
with a real lock, and faults are injected through the simulator's control API, so every test exercises
the same code path a task runs in production.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
import uvicorn

from invoice_sync.connectors.exact_online.connector import ExactOnlineConnector
from invoice_sync.connectors.exact_online.hook import ExactOnlineHook
from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
from invoice_sync.connectors.hooks import SANDBOX_HEADER
from invoice_sync.connectors.registry import connector_for
from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    QuotaExceededError,
    TransientError,
)
from invoice_sync.domain.models import Booked, ErrorClass, InvoiceKind, Rejected, Unknown
from invoice_sync.domain.ports import CustomerLinkFailure, TokenSet
from invoice_sync_dev.sandbox.exact_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    DIVISION_BE,
    GL_ACCOUNTS_123456,
)
from invoice_sync_dev.sandbox.server import build_simulators, create_root_app, start_in_thread

CONN_ID = "exact_test"
CLIENT_TIMEOUT_S = 1.0


def set_connection(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> None:
    """Give the hook its Airflow connection the way deployments do: an ``AIRFLOW_CONN_*`` variable."""
    extra = {"refresh_token": BOOTSTRAP_REFRESH_TOKEN, "timeout": CLIENT_TIMEOUT_S, **extra}
    conn = {"conn_type": "http", "host": host, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def control(sandbox: Any, path: str, body: Any = None) -> Any:
    """Call the simulator's control API (``/_sandbox/...``)."""
    url = f"{sandbox.exact_url}/_sandbox/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def exact(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    set_connection(monkeypatch, sandbox.exact_url)
    return sandbox


@pytest.fixture
def fast_exact(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A simulator whose clock runs 60x: a rate-limit minute passes in one real second."""
    handle = start_in_thread(time_scale=60)
    set_connection(monkeypatch, handle.exact_url)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def settings(builders: Any) -> Any:
    return builders.settings(
        gl_accounts=dict(GL_ACCOUNTS_123456),
        default_gl_account=GL_ACCOUNTS_123456["7000"],
        division=DIVISION_BE,
    )


@pytest.fixture
def connect(builders: Any, vault: Any, settings: Any) -> Callable[..., ExactOnlineConnector]:
    """Build a connector; keyword arguments go to the hook (short back-off, no real waiting)."""

    def build(*, integration_settings: Any = None, token_vault: Any = None, **hook_options: Any):
        options = {"backoff_s": 0.01, "refresh_margin_s": 0.4, **hook_options}
        integration = builders.integration(integration_settings or settings, conn_id=CONN_ID)
        hook = ExactOnlineHook(
            exact_online_conn_id=CONN_ID,
            vault=token_vault or vault,
            division=ExactOnlineSettings.of(integration).division,
            **options,
        )
        return ExactOnlineConnector(ExactOnlineSettings.of(integration).applied_to(integration), hook)

    return build


def book(connector: ExactOnlineConnector, builders: Any, *invoices: Any) -> list[Any]:
    """Link the invoices' customers, push the invoices and return the outcomes."""
    customers = {invoice.customer.id: invoice.customer for invoice in invoices}
    links = connector.ensure_customers(list(customers.values()))
    return list(connector.push(list(invoices), links))


# -- customers ----------------------------------------------------------------------------------------


def test_customers_are_created_once_and_found_again(exact, connect, builders):
    connector = connect()
    customers = [builders.customer(1042), builders.customer(7, name="O'Neill & Zonen", email=None)]
    first = connector.ensure_customers(customers)
    assert all(isinstance(guid, str) for guid in first.values())

    again = connect().ensure_customers([*customers, customers[0]])
    assert again == first
    accounts = exact.exact.accounts(DIVISION_BE)
    assert sorted(a["Code"] for a in accounts) == [" " * 17 + "7", "              1042"]
    assert {a["Status"] for a in accounts} == {"C"}
    calls = control(exact, "stats")["calls"]
    assert calls["POST /api/v1/{division}/crm/Accounts"] == {"201": 2}
    assert calls["GET /api/v1/{division}/crm/Accounts"] == {"200": 2}  # one batched lookup per call


def test_a_proxy_named_in_the_environment_is_used_and_read_once_per_host(
    exact, connect, builders, monkeypatch
):
    """requests reads proxy variables again for every call when left to itself (half a millisecond a
    call in a worker); the hook reads them once per host and still goes through the proxy they name."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{unused.getsockname()[1]}"  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    through_proxy = connect()
    with pytest.raises(TransientError, match="ProxyError"):
        through_proxy.ensure_customers([builders.customer(1042)])

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = connect()
    assert all(isinstance(guid, str) for guid in direct.ensure_customers([builders.customer(1042)]).values())
    assert not direct.hook.session.trust_env  # requests would read the environment per call
    monkeypatch.delenv("NO_PROXY")
    direct.ensure_customers([builders.customer(1043)])  # what this host's first call read still holds


def test_a_refused_customer_does_not_stop_the_others(exact, connect, builders):
    refused = builders.customer(1, name="Refused Customer NV")
    bad_email = builders.customer(2, email="not-an-email")
    good = builders.customer(3)
    links = connect().ensure_customers([refused, bad_email, good])
    assert links[1] == CustomerLinkFailure("data", "Exact Online division 123456: Invalid: Customer (Type)")
    assert isinstance(links[2], CustomerLinkFailure) and "Invalid: Email [not-an-email]" in links[2].message
    assert isinstance(links[3], str)


# -- booking ------------------------------------------------------------------------------------------


def test_invoice_and_credit_note_are_booked_with_exacts_numbers(exact, connect, builders):
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [builders.line("2.05", "21")]
    invoice = builders.invoice(lines, invoice_id=1, total_vat="2.42")
    credit_note = builders.invoice(
        [builders.line("100.00", "6", gl_account="7010")],
        invoice_id=2,
        number="CN-2026/0001",
        kind=InvoiceKind.CREDIT_NOTE,
    )
    outcomes = book(connect(), builders, invoice, credit_note)

    assert [type(o) for o in outcomes] == [Booked, Booked]
    assert [o.registration_number for o in outcomes] == ["26700001", "26710001"]
    entries = {e["YourRef"]: e for e in exact.exact.entries(DIVISION_BE)}
    assert entries["2026/0042"]["EntryID"] == outcomes[0].external_id
    assert Decimal(str(entries["2026/0042"]["VATAmountFC"])) == Decimal("2.42")  # to the cent
    assert Decimal(str(entries["2026/0042"]["AmountFC"])) == Decimal("11.50")
    assert Decimal(str(entries["CN-2026/0001"]["AmountFC"])) == Decimal("-100.00")
    assert entries["CN-2026/0001"]["Type"] == 21


def test_discounts_regimes_and_due_dates_reach_exacts_books(exact, connect, builders, settings):
    """A negative line, an invoice-level 10 % discount on the discount account, two 0 % regimes, a due
    date: what Exact books adds up to the app's totals to the cent, each line on its own VAT code."""
    connector = connect(
        integration_settings=replace(
            settings,
            tax_rates={"intra_community": "IC", "export": "EX"},
            discount_gl_account=GL_ACCOUNTS_123456["7010"],
        )
    )
    with_negative_line = replace(
        builders.invoice(
            [builders.line("200.00", "21"), builders.line("-20.00", "21", position=2, description="Loyalty")],
            invoice_id=1,
            number="N-1",
        ),
        due_date=date(2026, 4, 17),
    )
    discounted = builders.invoice(  # 270.00 + 43.20
        [builders.line("200.00", "21"), builders.line("100.00", "6", position=2)],
        invoice_id=2,
        number="N-2",
        discount="10",
    )
    regimes = builders.invoice(
        [
            replace(builders.line("50.00", "0"), tax_rate="intra_community"),
            replace(builders.line("30.00", "0", position=2), tax_rate="export"),
        ],
        invoice_id=3,
        number="N-3",
    )
    outcomes = book(connector, builders, with_negative_line, discounted, regimes)
    assert [type(o) for o in outcomes] == [Booked, Booked, Booked], outcomes

    entries = {e["YourRef"]: e for e in exact.exact.entries(DIVISION_BE)}
    for invoice in (with_negative_line, discounted, regimes):
        entry = entries[invoice.number]
        assert entry["Type"] == 20
        assert Decimal(str(entry["AmountFC"])) == invoice.total_excl_vat
        assert Decimal(str(entry["VATAmountFC"])) == invoice.total_vat
    assert entries["N-1"]["DueDate"] == "/Date(1776384000000)/"
    discount_lines = entries["N-2"]["SalesEntryLines"][2:]
    assert [(line["GLAccountCode"], line["VATCode"], line["AmountFC"]) for line in discount_lines] == [
        ("7010", "4", -20.0),
        ("7010", "1", -10.0),
    ]
    assert [line["VATCode"] for line in entries["N-3"]["SalesEntryLines"]] == ["IC", "EX"]


def test_rejections_carry_exacts_text_and_do_not_stop_the_batch(exact, connect, builders, settings):
    vat_codes = {**settings.vat_codes, "12": "5"}  # 5 is blocked in the simulator
    connector = connect(integration_settings=replace(settings, vat_codes=vat_codes))
    invoices = [
        builders.invoice(invoice_id=1, number="A-1", invoice_date=date(2026, 1, 15)),  # closed period
        builders.invoice([builders.line("10.00", "12")], invoice_id=2, number="A-2"),
        builders.invoice([builders.line("10.00", gl_account="7020")], invoice_id=3, number="A-3"),
        builders.invoice(invoice_id=4, number="A-4"),
    ]
    outcomes = book(connector, builders, *invoices)
    assert outcomes[:3] == [
        Rejected(1, ErrorClass.DATA, "Exact Online division 123456: Periode is afgesloten: 2026-01"),
        Rejected(2, ErrorClass.CONFIG, "Exact Online division 123456: Not allowed: VAT code"),
        Rejected(3, ErrorClass.CONFIG, "Exact Online division 123456: Blocked: Ledger account"),
    ]
    assert isinstance(outcomes[3], Booked)


def test_invalid_invoices_are_rejected_without_a_call(exact, connect, builders):
    outcomes = book(connect(), builders, builders.invoice([builders.line("10.00", "9")]))
    assert outcomes == [
        Rejected(
            1, ErrorClass.CONFIG, "VAT rate 9% is not mapped to an Exact VAT code for Exact division 123456"
        )
    ]
    assert "POST /api/v1/{division}/salesentry/SalesEntries" not in control(exact, "stats")["calls"]


def test_find_booked_batches_forty_references_and_keeps_to_its_journals(exact, connect, builders, settings):
    connector = connect(integration_settings=replace(settings, credit_note_journal=None))
    mine = [builders.invoice(invoice_id=n, number=f"2026/{n:04d}") for n in (1, 2)]
    mine.append(builders.invoice(invoice_id=3, number="O'Brien-1"))
    booked = book(connector, builders, *mine)
    other_journal = connect(integration_settings=replace(settings, journal="71"))
    book(other_journal, builders, builders.invoice(invoice_id=9, number="2026/0009"))

    references = [f"2026/{n:04d}" for n in range(1, 44)] + ["O'Brien-1"]
    found = connector.find_booked(references)

    assert {ref: b.registration_number for ref, b in found.items()} == {
        "2026/0001": "26700001",
        "2026/0002": "26700002",
        "O'Brien-1": "26700003",
    }
    assert found["O'Brien-1"].external_id == booked[2].external_id
    assert control(exact, "stats")["calls"]["GET /api/v1/{division}/salesentry/SalesEntries"] == {"200": 2}


# -- OAuth --------------------------------------------------------------------------------------------


def age_stored_token(vault: Any, seconds_left: float = 0.0) -> TokenSet:
    """Let time pass for our side too: the stored token now expires in ``seconds_left``."""
    stored = vault.load(CONN_ID)
    vault.tokens[CONN_ID] = replace(stored, expires_at=datetime.now(UTC) + timedelta(seconds=seconds_left))
    return stored


def test_an_expired_token_is_refreshed_once_and_the_call_retried(exact, connect, builders, vault):
    connector = connect()
    connector.find_booked(["x"])
    first = vault.load(CONN_ID)
    assert first.refresh_token != BOOTSTRAP_REFRESH_TOKEN  # rotated and persisted

    control(exact, "expire-tokens", {})  # ten minutes pass, for Exact ...
    age_stored_token(vault)  # ... and for us, whose task still holds the old token
    assert connector.find_booked(["x"]) == {}
    second = vault.load(CONN_ID)
    assert second.refresh_token not in (first.refresh_token, BOOTSTRAP_REFRESH_TOKEN)
    stats = control(exact, "stats")
    assert stats["token_refreshes"] == 2
    assert stats["calls"]["GET /api/v1/{division}/salesentry/SalesEntries"] == {"200": 2, "401": 1}

    connect().find_booked(["x"])  # another task: reuses the stored tokens, no refresh
    assert control(exact, "stats")["token_refreshes"] == 2


def test_a_401_on_a_young_stored_token_is_reported_without_a_refresh(exact, connect, vault):
    """Exact would refuse the refresh as too early, so the hook must not send one (reference section 2)."""
    connect().find_booked(["x"])
    control(exact, "expire-tokens", {})  # Exact no longer takes it, though it is two seconds old for us
    with pytest.raises(AuthError, match="no refresh was sent") as caught:
        connect().find_booked(["x"])
    assert "give consent again" not in caught.value.message
    stats = control(exact, "stats")
    assert stats["calls"]["POST /api/oauth2/token"] == {"200": 1}  # only the first task's


def test_a_401_after_another_worker_rotated_the_token_uses_the_stored_one(exact, connect, vault):
    """The refused token is no longer the stored one: the vault is read again and nothing is refreshed."""
    mine = connect()
    mine.find_booked(["x"])  # this task holds token 1 in memory
    control(exact, "expire-tokens", {})
    age_stored_token(vault)
    connect().find_booked(["x"])  # another worker refreshed and stored token 2
    assert control(exact, "stats")["token_refreshes"] == 2
    stored = vault.load(CONN_ID)

    assert mine.find_booked(["x"]) == {}  # 401 on token 1, then token 2 from the vault
    assert vault.load(CONN_ID) == stored
    stats = control(exact, "stats")
    assert stats["token_refreshes"] == 2
    assert stats["calls"]["POST /api/oauth2/token"] == {"200": 2}


def test_a_refresh_refused_as_too_early_keeps_the_current_tokens(exact, connect, vault):
    connect().find_booked(["x"])
    # Our clock says the token is about to expire, Exact's says it is young: it refuses the refresh.
    stored = age_stored_token(vault, seconds_left=0.1)
    connector = connect()
    assert connector.find_booked(["x"]) == {}
    assert connector.find_booked(["x"]) == {}  # kept: not asked again at once
    assert vault.load(CONN_ID).refresh_token == stored.refresh_token
    stats = control(exact, "stats")
    assert stats["token_refreshes"] == 1
    assert stats["calls"]["POST /api/oauth2/token"] == {"200": 1, "400": 1}
    assert stats["calls"]["GET /api/v1/{division}/salesentry/SalesEntries"] == {"200": 3}


def test_the_hook_stops_at_its_daily_token_calls(exact, connect, vault):
    connector = connect(token_calls_per_day=1)
    connector.find_booked(["x"])  # its one token call of the day
    control(exact, "expire-tokens", {})
    age_stored_token(vault)
    with pytest.raises(QuotaExceededError, match="1 token calls sent today") as caught:
        connector.find_booked(["x"])
    assert caught.value.resets_at is not None and caught.value.resets_at > datetime.now(UTC)
    stats = control(exact, "stats")
    assert stats["calls"]["POST /api/oauth2/token"] == {"200": 1}  # nothing more went out


def test_exacts_refusal_of_the_days_token_calls_is_a_quota_error_not_a_reconsent(exact, connect, vault):
    control(exact, "config", {"token_calls_per_day": 1})
    connect().find_booked(["x"])
    control(exact, "expire-tokens", {})
    age_stored_token(vault)
    with pytest.raises(QuotaExceededError, match="Rate limit exceeded") as caught:
        connect().find_booked(["x"])
    assert "consent" not in caught.value.message
    assert control(exact, "stats")["calls"]["POST /api/oauth2/token"] == {"200": 1, "400": 1}


def test_dead_refresh_token_asks_to_reconnect(exact, connect, builders, monkeypatch):
    connect().find_booked(["x"])  # spends the consent's refresh token
    stranger = builders.vault()  # a vault that never saw the rotation
    with pytest.raises(AuthError, match="Old refresh token used.*reconnect the integration"):
        connect(token_vault=stranger).find_booked(["x"])

    set_connection(monkeypatch, exact.exact_url, refresh_token="not-a-token")
    with pytest.raises(AuthError, match="Invalid refresh token"):
        connect(token_vault=builders.vault()).find_booked(["x"])


def test_two_workers_refreshing_at_once_spend_the_refresh_token_once(exact, connect):
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work() -> None:
        connector = connect()
        barrier.wait()
        try:
            connector.find_booked(["x"])
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert control(exact, "stats")["token_refreshes"] == 1


def test_wrong_division_is_an_auth_error(exact, connect, builders, settings):
    connector = connect(integration_settings=replace(settings, extra={**settings.extra, "division": 999999}))
    with pytest.raises(AuthError, match="Wrong Division"):
        connector.find_booked(["x"])


# -- rate limits --------------------------------------------------------------------------------------


def test_a_low_minutely_limit_is_waited_out_without_a_single_429(fast_exact, connect):
    control(fast_exact, "config", {"minutely_limit": 3})
    connector = connect()
    for _ in range(7):
        connector.find_booked(["x"])
    stats = control(fast_exact, "stats")
    assert stats["rate_limited"] == 0
    assert stats["calls"]["GET /api/v1/{division}/salesentry/SalesEntries"] == {"200": 7}
    assert connector.hook.budget.waited_s > 0


def test_an_unforeseen_429_is_waited_out_and_retried(fast_exact, connect, builders):
    control(
        fast_exact, "faults", [{"method": "POST", "path": "SalesEntries", "kind": "rate_limit", "times": 1}]
    )
    outcomes = book(connect(), builders, builders.invoice())
    assert [type(o) for o in outcomes] == [Booked]
    assert len(fast_exact.exact.entries(DIVISION_BE)) == 1


def test_spent_daily_limit_stops_the_batch_before_sending(exact, connect, builders):
    control(exact, "config", {"daily_limit": 4})
    connector = connect()
    invoices = [builders.invoice(invoice_id=n, number=f"D-{n}") for n in range(1, 4)]
    links = connector.ensure_customers([invoices[0].customer])  # calls 1 and 2: look up, create
    outcomes: list[Any] = []
    with pytest.raises(QuotaExceededError, match="daily API limit") as caught:
        for outcome in connector.push(invoices, links):  # calls 3 and 4, then the budget is spent
            outcomes.append(outcome)
    assert [type(o) for o in outcomes] == [Booked, Booked]
    assert caught.value.resets_at is not None and caught.value.resets_at > datetime.now(UTC)
    assert control(exact, "stats")["rate_limited"] == 0


def test_a_daily_429_is_a_quota_error(exact, connect):
    control(exact, "config", {"daily_limit": 0})
    with pytest.raises(QuotaExceededError):
        connect().find_booked(["x"])


# -- faults and exactly-once --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "commit_then_drop"},
        {"kind": "commit_then_timeout", "delay_s": CLIENT_TIMEOUT_S + 2},
        {"kind": "malformed"},
    ],
    ids=lambda fault: fault["kind"],
)
def test_a_lost_answer_after_commit_is_unknown_and_found_by_lookup(exact, connect, builders, fault):
    control(exact, "faults", [{"method": "POST", "path": "SalesEntries", "times": 1, **fault}])
    connector = connect()
    outcomes = book(connector, builders, builders.invoice())
    assert [type(o) for o in outcomes] == [Unknown]
    assert "look it up before resending" in outcomes[0].message

    found = connector.find_booked(["2026/0042"])
    assert found["2026/0042"].registration_number == "26700001"
    assert len(exact.exact.entries(DIVISION_BE)) == 1


def test_a_5xx_on_post_is_unknown_and_nothing_was_booked(exact, connect, builders):
    control(exact, "faults", [{"method": "POST", "path": "SalesEntries", "kind": "status", "status": 503}])
    connector = connect()
    outcomes = book(connector, builders, builders.invoice())
    assert [type(o) for o in outcomes] == [Unknown]
    assert connector.find_booked(["2026/0042"]) == {}


def test_a_5xx_on_get_is_retried(exact, connect):
    control(exact, "faults", [{"method": "GET", "path": "SalesEntries", "kind": "status", "times": 2}])
    assert connect().find_booked(["x"]) == {}
    stats = control(exact, "stats")
    assert stats["faults"] == {"status": 2}
    assert stats["calls"]["GET /api/v1/{division}/salesentry/SalesEntries"] == {"200": 1}


def test_connection_refused_is_transient_and_nothing_was_sent(monkeypatch, connect, builders, vault):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    set_connection(monkeypatch, f"http://127.0.0.1:{port}/exact")
    valid = TokenSet("access", "refresh", datetime.now(UTC) + timedelta(minutes=10))
    vault.tokens[CONN_ID] = valid
    connector = connect(get_attempts=1)
    with pytest.raises(TransientError) as caught:
        list(connector.push([builders.invoice()], {1042: "guid"}))
    assert type(caught.value) is TransientError  # not OutcomeUnknownError: the request never left


# -- wiring -------------------------------------------------------------------------------------------


def test_registry_builds_the_exact_connector_and_refuses_unknown_tools(builders, vault, settings):
    integration = builders.integration(settings, conn_id=CONN_ID)
    assert isinstance(connector_for(integration, vault), ExactOnlineConnector)
    with pytest.raises(ConfigError, match="no connector for accounting tool 'sage'"):
        connector_for(replace(integration, tool="sage"), vault)


def test_hook_keeps_secrets_out_of_headers_and_does_no_io_when_built(monkeypatch, vault):
    ExactOnlineHook(exact_online_conn_id="does_not_exist", vault=vault, division=1)  # no lookup yet
    set_connection(monkeypatch, "https://start.exactonline.be", **{"X-Custom": "kept"})
    hook = ExactOnlineHook(exact_online_conn_id=CONN_ID, vault=vault, division=1)
    session = hook.session
    assert session.auth is None  # the client secret goes only to the token endpoint
    assert "refresh_token" not in session.headers
    assert session.headers["X-Custom"] == "kept"
    assert session.headers["Accept"] == "application/json"
    assert hook.timeout_s == CLIENT_TIMEOUT_S
    assert BOOTSTRAP_REFRESH_TOKEN not in repr(vars(hook))


# -- the sandbox or the real tool (issue 14, item 8) -------------------------------------------------------


class _Unmarked:
    """The sandbox with its mark removed: a stand-in for the real Exact, which answers the same calls the
    same way but never says it is a sandbox."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def unmarked(message: Any) -> None:
            if message["type"] == "http.response.start":
                mark = SANDBOX_HEADER.lower().encode()
                message = {**message, "headers": [h for h in message["headers"] if h[0].lower() != mark]}
            await send(message)

        await self.app(scope, receive, unmarked)


@pytest.fixture
def real_looking_exact(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    simulators = build_simulators()
    config = uvicorn.Config(
        _Unmarked(create_root_app(simulators=simulators)), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    set_connection(monkeypatch, f"http://127.0.0.1:{port}/exact")
    try:
        yield simulators.exact
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def test_a_demo_integration_books_nothing_into_a_tool_that_is_not_the_sandbox(
    real_looking_exact, connect, builders, settings, vault
):
    """A demo integration whose connection reaches the real tool would book the demo's invoices for real.
    Its first call after the token refresh is refused, before any customer or invoice is sent; the
    refreshed tokens are kept (the tool has spent the old refresh token, so losing the new one would cost a
    new consent)."""
    assert settings.demo  # the builders' settings are the sandbox's, marked as a demo
    connector = connect()

    with pytest.raises(ConfigError, match=r"answered as the real Exact.*marked as a demo: nothing is booked"):
        book(connector, builders, builders.invoice(invoice_id=1, number="2026/0001"))

    assert real_looking_exact.entries() == [] and real_looking_exact.accounts() == []
    assert vault.load(CONN_ID) is not None  # the refreshed tokens were kept


def test_a_production_integration_books_nothing_into_the_sandbox(exact, connect, builders, settings):
    connector = connect(integration_settings=replace(settings, demo=False))
    books_before = (len(exact.exact.entries()), len(exact.exact.accounts()))

    with pytest.raises(ConfigError, match=r"answered from invoice-sync's sandbox .* not marked as a demo"):
        book(connector, builders, builders.invoice(invoice_id=1, number="2026/0001"))

    assert (len(exact.exact.entries()), len(exact.exact.accounts())) == books_before
