"""The Yuki connector against the Yuki simulator over real HTTP on loopback.

The Airflow connection comes from an ``AIRFLOW_CONN_*`` variable, the session lives in an in-memory vault
with a real lock, and faults are injected into the simulator, so every test exercises the code path a
task runs in production. Assertions look at the simulator's books and call counts, not only at outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from invoice_sync.connectors.yuki import mapping as yuki_mapping
from invoice_sync.connectors.yuki.connector import YukiConnector, build_connector
from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError
from invoice_sync.domain.models import (
    Booked,
    CustomerKind,
    ErrorClass,
    IntegrationSettings,
    InvoiceKind,
    Rejected,
    Unknown,
)
from invoice_sync_dev.sandbox.yuki import YukiSandbox
from invoice_sync_dev.sandbox.yuki import demo_connection as yuki_connection
from invoice_sync_dev.sandbox.yuki_fixtures import (
    ADMINISTRATION_ID,
    ADMINISTRATION_NAME,
    LIMITED_ACCESS_KEY,
    SECOND_ADMINISTRATION_ID,
)

CONN_ID = "yuki_test"
PROCESS_RULE = r"/ws/Sales\.asmx#ProcessSalesInvoices$"


def set_connection(monkeypatch: pytest.MonkeyPatch, sandbox_url: str, **changes: Any) -> None:
    conn = yuki_connection(sandbox_url)
    extra = {**conn["extra"], "timeout": 5, **changes.pop("extra", {})}  # type: ignore[dict-item]  # the demo connection's extra is a mapping of strings
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({**conn, "extra": extra, **changes}))


def yuki_settings(**overrides: Any) -> IntegrationSettings:
    data: dict[str, Any] = {
        "vat_codes": {"21": "2", "12": "2", "6": "2", "0": "5"},
        "gl_accounts": {"7000": "7000", "7010": "7010"},
        "default_gl_account": "7000",
        "administration_id": ADMINISTRATION_ID,
        "demo": True,  # it books into the sandbox
    }
    data.update(overrides)
    return IntegrationSettings.from_json(data)


@pytest.fixture
def yuki(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> YukiSandbox:
    set_connection(monkeypatch, sandbox.url)
    simulator: YukiSandbox = sandbox.simulator("yuki")
    return simulator


@pytest.fixture
def connect(builders: Any, vault: Any) -> Callable[..., YukiConnector]:
    """Build a connector through ``build_connector``; keyword arguments go to the hook."""

    def build(settings: IntegrationSettings | None = None, *, token_vault: Any = None, **hook_options: Any):
        integration = builders.integration(settings or yuki_settings(), conn_id=CONN_ID)
        options = {"backoff_s": 0.01, "sleep": lambda _s: None, **hook_options}
        return build_connector(integration, token_vault or vault, **options)

    return build


def push(connector: YukiConnector, *invoices: Any) -> list[Any]:
    links = connector.ensure_customers([invoice.customer for invoice in invoices])
    return list(connector.push(list(invoices), links))  # type: ignore[arg-type]  # links may hold failures on purpose


def numbered(builders: Any, count: int, start: int = 1, **options: Any) -> list[Any]:
    return [
        builders.invoice(invoice_id=n, number=f"2026/{n:04d}", **options) for n in range(start, start + count)
    ]


def calls(simulator: YukiSandbox) -> dict[str, int]:
    return simulator.stats_snapshot()["calls"]


# -- booking -----------------------------------------------------------------------------------------


def test_a_bad_vat_type_mapping_rejects_those_invoices_and_books_the_rest(yuki, connect, builders):
    connector = connect(yuki_settings(vat_codes={"21": "2", "12": "9"}))
    invoices = [
        builders.invoice(
            [builders.line("100.00", "12" if n % 3 == 0 else "21")], invoice_id=n, number=f"2026/{n:04d}"
        )
        for n in range(1, 11)
    ]
    outcomes = push(connector, *invoices)
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert [o.invoice_id for o in rejected] == [3, 6, 9]
    assert all(o.error_class is ErrorClass.CONFIG for o in rejected)
    assert rejected[0].message == "Yuki administration " + ADMINISTRATION_ID + (
        ": No tax code for VATPercentage 12 & VATType 9"
    )
    assert [o.invoice_id for o in outcomes if isinstance(o, Booked)] == [1, 2, 4, 5, 7, 8, 10]
    assert sorted(b["reference"] for b in yuki.booked()) == sorted(
        f"2026/{n:04d}" for n in (1, 2, 4, 5, 7, 8, 10)
    )
    assert calls(yuki) == {"Authenticate": 1, "ProcessSalesInvoices": 1}


def test_totals_equal_the_apps_to_the_cent(yuki, connect, builders):
    line = builders.line
    awkward = [
        [line("10.01", position=1), line("10.01", position=2), line("10.01", position=3)],
        [line("0.05", "21", position=1), line("0.05", "6", position=2), line("0.07", "12", position=3)],
        [line("100.00", "21", quantity="3", position=1), line("19.99", "0", position=2)],
        [line("33.35", "6", quantity="7", position=1), line("-5.00", "21", position=2)],
    ]
    invoices = [
        builders.invoice(lines, invoice_id=n, number=f"T{n}") for n, lines in enumerate(awkward, start=1)
    ]
    assert all(isinstance(o, Booked) for o in push(connect(), *invoices))
    booked = {b["reference"]: b for b in yuki.booked()}
    for invoice in invoices:
        entry = booked[invoice.number]
        assert (entry["total_excl_vat"], entry["total_vat"], entry["total_incl_vat"]) == (
            invoice.total_excl_vat,
            invoice.total_vat,
            invoice.total_incl_vat,
        ), invoice.number
    assert booked["T1"]["total_vat"] == Decimal("6.31")  # not the 6.30 of per-line rounding


def test_a_credit_note_is_booked_negative(yuki, connect, builders):
    note = builders.invoice(
        [builders.line("99.99", "21", quantity="3")],
        invoice_id=5,
        number="CN-1",
        kind=InvoiceKind.CREDIT_NOTE,
    )
    assert push(connect(), note) == [Booked(5, "CN-1", "")]
    entry = yuki.booked()[0]
    assert entry["total_incl_vat"] == -note.total_incl_vat and entry["total_vat"] == Decimal("-21.00")
    assert entry["lines"][0]["quantity"] == Decimal("-3") and entry["lines"][0]["sales_price"] == Decimal(
        "33.33"
    )
    assert connect().find_booked(["CN-1"])["CN-1"].external_id == entry["item_id"]


def discounted(builders: Any, **options: Any) -> Any:
    """200.00 at 21 % on 7000 and 50.00 at 6 % on 7010, with a 10 % invoice-level discount."""
    return builders.invoice(  # 225.00 + 40.50
        [builders.line("200.00", "21"), builders.line("50.00", "6", position=2, gl_account="7010")],
        discount="10",
        **options,
    )


@pytest.mark.parametrize(("discount_account", "accounts"), [(None, ["7000", "7010"]), ("7020", ["7020"])])
def test_an_invoice_level_discount_is_booked_to_the_cent(yuki, connect, builders, discount_account, accounts):
    connector = connect(yuki_settings(discount_gl_account=discount_account))
    assert push(connector, discounted(builders)) == [Booked(1, "2026/0042", "")]
    entry = yuki.booked()[0]
    assert (entry["total_excl_vat"], entry["total_vat"]) == (Decimal("225.00"), Decimal("40.50"))
    discount_lines = [ln for ln in entry["lines"] if ln["amount"] < 0]
    assert [ln["amount"] for ln in discount_lines] == [Decimal("-20.00"), Decimal("-5.00")]
    assert sorted({ln["gl_account"] for ln in discount_lines}) == accounts


def test_a_negative_line_on_an_invoice_is_booked_as_yuki_takes_it(yuki, connect, builders):
    invoice = builders.invoice([builders.line("100.00"), builders.line("-20.00", position=2)])
    assert push(connect(), invoice) == [Booked(1, "2026/0042", "")]
    entry = yuki.booked()[0]
    assert entry["total_incl_vat"] == Decimal("96.80")
    assert [(ln["quantity"], ln["sales_price"]) for ln in entry["lines"]] == [
        (Decimal("1"), Decimal("100.00")),
        (Decimal("-1"), Decimal("20.00")),
    ]


def test_two_zero_rate_regimes_book_on_their_own_vat_types(yuki, connect, builders):
    exempt = replace(builders.line("100.00", "0"), tax_rate="exempt")
    intra = replace(builders.line("300.00", "0", position=2), tax_rate="intra_community")
    connector = connect(yuki_settings(tax_rates={"exempt": "5", "intra_community": "3"}))
    assert push(connector, builders.invoice([exempt, intra])) == [Booked(1, "2026/0042", "")]
    lines = yuki.booked()[0]["lines"]
    assert [(ln["vat_percentage"], ln["vat_type"], ln["amount"]) for ln in lines] == [
        ("0", "5", Decimal("100.00")),
        ("0", "3", Decimal("300.00")),
    ]


def test_awkward_customer_names_arrive_intact(yuki, connect, builders):
    smith = builders.customer(7, name='Smith & <Sons> "Ltd"')
    emoji = builders.customer(8, name="Zoë's Café 😀", kind=CustomerKind.CONTACT)
    invoices = [
        builders.invoice(invoice_id=1, number="N1", customer=smith),
        builders.invoice(invoice_id=2, number="N2", customer=emoji),
    ]
    assert all(isinstance(o, Booked) for o in push(connect(), *invoices))
    contacts = {c["code"]: c for c in yuki.customers()}
    assert contacts["7"]["name"] == 'Smith & <Sons> "Ltd"' and contacts["8"]["name"] == "Zoë's Café 😀"
    assert contacts["8"]["type"] == "Person" and contacts["7"]["vat_number"] == "BE0123456749"
    assert {b["customer_name"] for b in yuki.booked()} == {'Smith & <Sons> "Ltd"', "Zoë's Café 😀"}


def test_customers_are_linked_by_code_without_a_call(yuki, connect, builders):
    links = connect().ensure_customers([builders.customer(1042), builders.customer(7, name=" ")])
    assert links[1042] == "1042" and links[7].error_class == "data"
    assert yuki.stats_snapshot()["total"] == 0


def test_skipped_invoices_are_sent_again_in_a_following_call(yuki, connect, builders):
    # GL 7999 is mapped in the app but unknown to Yuki: validation cannot see it, Yuki refuses it.
    connector = connect(yuki_settings(gl_accounts={"7000": "7000", "4000": "7999"}))
    faulty = numbered(builders, 7, lines=[builders.line("10.00", gl_account="4000")])
    good = numbered(builders, 3, start=8)
    outcomes = push(connector, *faulty, *good)
    assert sorted(o.invoice_id for o in outcomes) == list(range(1, 11))
    assert {o.invoice_id for o in outcomes if isinstance(o, Booked)} == {8, 9, 10}
    assert all("GLAccountCode '7999'" in o.message for o in outcomes if isinstance(o, Rejected))
    assert calls(yuki)["ProcessSalesInvoices"] == 2
    assert set(yuki.create_posts().values()) == {1}


def test_a_schema_failure_rejects_every_invoice_of_the_call(yuki, connect, builders, monkeypatch):
    # A mapping bug the XSD catches: a quantity with five decimals (ProductQuantity allows four).
    monkeypatch.setattr(yuki_mapping, "quantity_and_price", lambda line: (Decimal("1.00001"), line.amount))
    outcomes = push(connect(), *numbered(builders, 3))
    assert [type(o) for o in outcomes] == [Rejected] * 3
    assert all(o.error_class is ErrorClass.DATA and "SalesInvoices.xsd" in o.message for o in outcomes)
    assert "fractional digits" in outcomes[0].message and yuki.booked() == []


# -- sessions ----------------------------------------------------------------------------------------


def test_an_expired_session_is_renewed_once_and_nothing_is_lost(yuki, connect, builders, vault):
    connector = connect()
    assert all(isinstance(o, Booked) for o in push(connector, *numbered(builders, 2)))
    assert yuki.expire_tokens() == 1
    assert all(isinstance(o, Booked) for o in push(connector, *numbered(builders, 2, start=3)))
    assert len(yuki.booked()) == 4 and set(yuki.create_posts().values()) == {1}
    stats = yuki.stats_snapshot()
    assert stats["token_refreshes"] == 2 and stats["calls"]["ProcessSalesInvoices"] == 3  # one refused
    assert vault.saved == 2 and connector.hook.authentications == 2


def test_two_connectors_share_one_session_through_the_vault(yuki, connect, builders, vault):
    push(connect(), *numbered(builders, 1))
    push(connect(), *numbered(builders, 1, start=2))
    connect().find_booked(["2026/0001"])
    assert calls(yuki)["Authenticate"] == 1 and yuki.stats_snapshot()["token_refreshes"] == 1


def test_a_bad_access_key_is_an_auth_error(yuki, connect, builders, monkeypatch, sandbox):
    set_connection(monkeypatch, sandbox.url, password="revoked-key")
    with pytest.raises(AuthError, match="invalid access key"):
        push(connect(), *numbered(builders, 1))
    assert yuki.create_posts() == {}


@pytest.mark.parametrize(
    ("settings", "password", "match"),
    [
        ({"administration_id": "00000000-0000-0000-0000-000000000000"}, None, "Unknown administration ID"),
        ({"administration_id": SECOND_ADMINISTRATION_ID}, None, "invoicing bundle"),
        ({}, LIMITED_ACCESS_KEY, "not allowed for this access key"),
        ({"administration_id": None, "administration": "Nope BV"}, None, "sees no administration called"),
    ],
)
def test_whole_call_faults_are_config_errors_raised_before_anything_is_booked(
    yuki, connect, builders, monkeypatch, sandbox, settings, password, match
):
    if password:
        set_connection(monkeypatch, sandbox.url, password=password)
    with pytest.raises(ConfigError, match=match):
        push(connect(yuki_settings(**settings)), *numbered(builders, 2))
    assert yuki.booked() == [] and yuki.create_posts() == {}


def test_build_connector_needs_an_administration(builders, vault):
    with pytest.raises(ConfigError, match="administration_id is not set; it must be a Yuki"):
        build_connector(builders.integration(yuki_settings(administration_id=None)), vault)


def test_request_timeout_comes_from_the_connection(yuki, connect):
    assert connect().request_timeout_s == 5.0


# -- limits ------------------------------------------------------------------------------------------


def test_yukis_daily_limit_stops_the_push_after_the_calls_it_allowed(yuki, connect, builders):
    yuki.configure(daily_limit=2)  # Authenticate + the first batch
    outcomes: list[Any] = []
    with pytest.raises(QuotaExceededError, match="Daily call limit exceeded"):
        for outcome in connect().push(numbered(builders, 30), {1042: "1042"}):
            outcomes.append(outcome)
    assert len(outcomes) == 25 and all(isinstance(o, Booked) for o in outcomes)
    assert len(yuki.booked()) == 25 and len(yuki.create_posts()) == 25


def test_the_local_budget_stops_before_the_domains_allowance_is_spent(
    yuki, connect, builders, monkeypatch, sandbox
):
    set_connection(monkeypatch, sandbox.url, extra={"daily_limit": 2})
    connector = connect()
    push(connector, *numbered(builders, 1))
    with pytest.raises(QuotaExceededError, match="daily API limit is used up"):
        push(connector, *numbered(builders, 1, start=2))
    assert yuki.stats_snapshot()["total"] == 2 and len(yuki.booked()) == 1


# -- unknown outcomes and re-pushes -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["commit_then_drop", "malformed"])
def test_a_lost_answer_is_unknown_and_find_booked_settles_it(yuki, connect, builders, kind):
    yuki.faults.set_rules([{"kind": kind, "method": "POST", "path": PROCESS_RULE, "times": 1}])
    invoices = numbered(builders, 3)
    outcomes = push(connect(), *invoices)
    assert [type(o) for o in outcomes] == [Unknown] * 3
    found = connect().find_booked([invoice.number for invoice in invoices])
    items = {b["reference"]: b["item_id"] for b in yuki.booked()}
    assert {ref: (b.registration_number, b.external_id) for ref, b in found.items()} == {
        ref: (ref, item) for ref, item in items.items()
    }
    assert len(found) == 3 and set(yuki.create_posts().values()) == {1}


@pytest.mark.parametrize(("status", "kind"), [(500, "status"), (502, "status"), (None, "timeout")])
def test_an_unrecognised_fault_or_gateway_error_on_a_write_is_unknown(yuki, connect, builders, status, kind):
    rule: dict[str, Any] = {"kind": kind, "path": PROCESS_RULE, "times": 1}
    if status:
        rule["status"] = status
    else:
        rule["delay_s"] = 10
    yuki.faults.set_rules([rule])
    connector = connect()
    connector.hook.session  # noqa: B018 (reads the connection's timeout, which the next line shortens)
    connector.hook.timeout_s = 1.0
    outcomes = push(connector, *numbered(builders, 2))
    assert [type(o) for o in outcomes] == [Unknown, Unknown]
    assert "look it up before resending" in outcomes[0].message
    assert connector.find_booked(["2026/0001", "2026/0002"]) == {} and yuki.create_posts() == {}


def test_a_repush_of_a_booked_reference_is_settled_by_lookup_not_booked_twice(yuki, connect, builders):
    invoice = numbered(builders, 1)[0]
    assert push(connect(), invoice) == [Booked(1, "2026/0001", "")]
    again = push(connect(), invoice)
    assert again == [Booked(1, "2026/0001", yuki.booked()[0]["item_id"])]
    assert len(yuki.booked()) == 1 and yuki.create_posts() == {"2026/0001": 2}
    assert calls(yuki)["CheckOutstandingItemAdmin"] == 1


def test_a_paid_invoice_whose_outcome_is_unknown_is_never_booked_twice(yuki, connect, builders):
    """Issue #12: a lookup that finds nothing is no proof. The invoice was booked, its answer lost (the
    ledger row says unknown), and the customer paid before the next run, so it left Yuki's outstanding
    items. The engine's lookups find nothing and it sends the invoice again: Yuki's duplicate refusal is
    the guard, and the connector reports it for a bookkeeper instead of calling it booked or fixable."""
    yuki.faults.set_rules([{"kind": "commit_then_drop", "method": "POST", "path": PROCESS_RULE, "times": 1}])
    connector = connect()
    invoice = numbered(builders, 1)[0]
    assert [type(o) for o in push(connector, invoice)] == [Unknown]
    assert len(yuki.booked()) == 1  # Yuki booked it; we never saw the answer
    assert yuki.mark_paid("2026/0001") == 1
    assert connector.find_booked(["2026/0001"]) == {}  # what the engine asks first, and again before a push
    outcomes = push(connector, invoice)
    assert len(yuki.booked()) == 1 and yuki.create_posts() == {"2026/0001": 2}
    assert isinstance(outcomes[0], Rejected) and outcomes[0].error_class is ErrorClass.DATA
    assert "already exists" in outcomes[0].message and "not booked again" in outcomes[0].message
    assert "paid since" in outcomes[0].message


def test_find_booked_prefers_the_first_item_and_reads_the_text_form(yuki, connect, builders):
    connector = connect()
    push(connector, *numbered(builders, 1))
    first = yuki.booked()[0]["item_id"]
    yuki.add_outstanding_item("2026/0001", Decimal("1.00"))
    assert connector.find_booked(["2026/0001", "2026/0001", "2026/9999"]) == {
        "2026/0001": connector.find_booked(["2026/0001"])["2026/0001"]
    }
    assert connector.find_booked(["2026/0001"])["2026/0001"].external_id == first
    yuki.configure(response_as_text=True)
    assert all(isinstance(o, Booked) for o in push(connector, *numbered(builders, 2, start=2)))


# -- cost ---------------------------------------------------------------------------------------------


def test_api_calls_per_invoice_for_a_100_invoice_sync(yuki, connect, builders):
    connector = connect(yuki_settings(administration_id=None, administration=ADMINISTRATION_NAME))
    customers = [builders.customer(n, name=f"Klant {n}") for n in range(1, 21)]
    invoices = [
        builders.invoice(
            [builders.line("120.00", "21"), builders.line("15.50", "6", position=2)],
            invoice_id=n,
            number=f"2026/{n:04d}",
            customer=customers[n % 20],
        )
        for n in range(1, 101)
    ]
    outcomes = push(connector, *invoices)
    assert len(outcomes) == 100 and all(isinstance(o, Booked) for o in outcomes)
    stats = yuki.stats_snapshot()
    per_invoice = stats["total"] / len(invoices)
    print(f"\nYuki API calls for a 100-invoice sync: {stats['calls']} = {per_invoice:.2f} per invoice")
    assert stats["calls"] == {"Authenticate": 1, "Administrations": 1, "ProcessSalesInvoices": 4}
    assert per_invoice == pytest.approx(0.06)
    assert len(yuki.customers()) == 20
