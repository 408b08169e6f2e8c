"""Typed per-tool settings: each tool's own fields are read once, a bad or missing one is refused naming the
field and the value, a good one round-trips, and a bad one fails its integration alone."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
from invoice_sync.connectors.quickbooks.settings import QuickBooksSettings
from invoice_sync.connectors.registry import DESCRIPTORS, connector_for
from invoice_sync.connectors.settings import ToolSettings, with_tool_settings
from invoice_sync.connectors.twinfield.settings import TwinfieldSettings
from invoice_sync.connectors.xero.settings import XeroSettings
from invoice_sync.connectors.yuki.settings import YukiSettings
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import Integration, IntegrationSettings, SettingsError

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

GOOD: dict[type[ToolSettings], dict[str, Any]] = {
    ExactOnlineSettings: {"division": 123456},
    TwinfieldSettings: {"office": "NLA001", "debtors_account": "1300", "customer_code_offset": 20000},
    YukiSettings: {"administration_id": GUID, "administration": "Demo Yuki BV"},
    XeroSettings: {"tenant_id": GUID, "tenant": "Demo Xero Ltd", "currencies": ["EUR", "USD"]},
    QuickBooksSettings: {"realm_id": "9341452710923456", "home_currency": "EUR", "currencies": ["USD"]},
}
SHARED = {"journal": "70", "vat_codes": {"21": "4"}, "gl_accounts": {"7000": "8000"}, "app_note": "kept"}


def parse(kind: type[ToolSettings], own: dict[str, Any]) -> ToolSettings:
    return kind.parse(IntegrationSettings.from_json({**SHARED, **own}))


def test_every_tool_names_its_settings_class() -> None:
    assert {descriptor.load_settings() for descriptor in DESCRIPTORS} == set(GOOD)


@pytest.mark.parametrize("kind", list(GOOD), ids=lambda kind: kind.__name__)
def test_good_settings_round_trip_with_the_shared_ones_and_unknown_keys_kept(
    kind: type[ToolSettings],
) -> None:
    settings = parse(kind, GOOD[kind])
    assert isinstance(settings, kind) and isinstance(settings, IntegrationSettings)
    for key, value in GOOD[kind].items():
        read = getattr(settings, key)
        assert (list(read) if isinstance(read, tuple) else read) == value
    assert (settings.journal, settings.vat_codes, settings.gl_accounts) == (
        "70",
        {"21": "4"},
        {"7000": "8000"},
    )
    assert settings.extra == {"app_note": "kept"}  # the tool's own keys are read, the app's others kept
    assert kind.parse(settings) is settings  # read once: settings read for the tool are taken as they are


def test_values_are_read_the_way_people_type_them() -> None:
    exact = ExactOnlineSettings.parse(IntegrationSettings.from_json({"division": " 123456 "}))
    assert exact.division == 123456
    twinfield = TwinfieldSettings.parse(
        IntegrationSettings.from_json({"office": " NLA001 ", "debtors_account": 1300})
    )
    assert (twinfield.office, twinfield.debtors_account, twinfield.customer_code_offset) == (
        "NLA001",
        "1300",
        1000,
    )
    yuki = YukiSettings.parse(IntegrationSettings.from_json({"administration_id": GUID.upper()}))
    assert (yuki.administration_id, yuki.administration, yuki.label) == (GUID, None, GUID)
    xero = XeroSettings.parse(
        IntegrationSettings.from_json({"tenant": "Demo Xero Ltd", "currencies": ["eur", "EUR"]})
    )
    assert (xero.tenant_id, xero.label, xero.currencies) == (None, "Demo Xero Ltd", ("EUR",))
    quickbooks = QuickBooksSettings.parse(IntegrationSettings.from_json({"realm_id": 9341452710923456}))
    assert (quickbooks.realm_id, quickbooks.accepted_currencies) == ("9341452710923456", ["EUR"])
    other_home = replace(quickbooks, home_currency="USD", currencies=("EUR", "USD"))
    assert other_home.accepted_currencies == ["USD", "EUR"]


BAD = [
    # (settings class, the tool's own settings, the message's fragment naming field and value)
    (ExactOnlineSettings, {}, "division is not set; it must be the division number"),
    (ExactOnlineSettings, {"division": "twelve"}, "division is 'twelve'; it must be the division number"),
    (ExactOnlineSettings, {"division": True}, "division is True; it must be the division number"),
    (ExactOnlineSettings, {"division": 12.5}, "division is 12.5; it must be the division number"),
    (ExactOnlineSettings, {"division": 0}, "division is 0; it must be the division number"),
    # int() reads these; a division typed so is a typo, not a number (issue 14 review)
    (ExactOnlineSettings, {"division": "１２３"}, "division is '１２３'; it must be the division number"),
    (ExactOnlineSettings, {"division": "123_456"}, "division is '123_456'; it must be the division number"),
    (ExactOnlineSettings, {"division": "+123456"}, "division is '+123456'; it must be the division number"),
    (TwinfieldSettings, {"debtors_account": "1300"}, "office is not set; it must be a Twinfield office code"),
    (
        TwinfieldSettings,
        {"office": 12.5, "debtors_account": "1300"},
        "office is 12.5; it must be a Twinfield office code",
    ),
    (
        TwinfieldSettings,
        {"office": "NLA001"},
        "debtors_account is not set; it must be the code of Twinfield's debtors control account",
    ),
    (
        TwinfieldSettings,
        {"office": "NLA001", "debtors_account": ["1300"]},
        "debtors_account is ['1300']; it must be the code",
    ),
    (
        TwinfieldSettings,
        {"office": "NLA001", "debtors_account": "1300", "customer_code_offset": "1k"},
        "customer_code_offset is '1k'; it must be a whole number of 0 or more",
    ),
    (
        TwinfieldSettings,
        {"office": "NLA001", "debtors_account": "1300", "customer_code_offset": -5},
        "customer_code_offset is -5; it must be a whole number of 0 or more",
    ),
    (
        YukiSettings,
        {},
        "administration_id is not set; it must be a Yuki administration ID (a GUID), or set administration",
    ),
    (
        YukiSettings,
        {"administration_id": "demo-be"},
        "administration_id is 'demo-be'; it must be a Yuki administration ID (a GUID)",
    ),
    (
        YukiSettings,
        {"administration_id": GUID, "administration": {"name": "x"}},
        "administration is {'name': 'x'}; it must be the name of a Yuki administration",
    ),
    (XeroSettings, {"tenant": ""}, "tenant_id is not set; it must be a Xero tenant id (a GUID"),
    (XeroSettings, {"tenant_id": 42}, "tenant_id is '42'; it must be a Xero tenant id (a GUID"),
    (XeroSettings, {"tenant": ["Demo"]}, "tenant is ['Demo']; it must be the name of a Xero organisation"),
    (
        XeroSettings,
        {"tenant_id": GUID, "currencies": "EUR"},
        "currencies is 'EUR'; it must be a list of three-letter currency codes",
    ),
    (
        XeroSettings,
        {"tenant_id": GUID, "currencies": ["EUR", "euro"]},
        "currencies[1] is 'euro'; it must be a three-letter currency code",
    ),
    (QuickBooksSettings, {}, "realm_id is not set; it must be a QuickBooks company's realm ID (digits)"),
    (
        QuickBooksSettings,
        {"realm_id": "demo company"},
        "realm_id is 'demo company'; it must be a QuickBooks company's realm ID",
    ),
    (
        QuickBooksSettings,
        {"realm_id": "1", "home_currency": "Euro"},
        "home_currency is 'Euro'; it must be a three-letter currency code",
    ),
    (
        QuickBooksSettings,
        {"realm_id": "1", "currencies": [None]},
        "currencies[0] is None; it must be a three-letter currency code",
    ),
]


@pytest.mark.parametrize(
    ("kind", "own", "fragment"), BAD, ids=[fragment.split(";")[0] for _, _, fragment in BAD]
)
def test_a_bad_or_missing_field_is_refused_naming_the_field_and_the_value(
    kind: type[ToolSettings], own: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        kind.parse(IntegrationSettings.from_json(own))
    assert fragment in str(raised.value)


def integration(tool: str, settings: dict[str, Any], *, integration_id: int = 7) -> Integration:
    return Integration(
        id=integration_id,
        name=f"Demo {tool}",
        tool=tool,
        conn_id=f"{tool}_demo",
        auto_sync=True,
        sync_from=None,
        settings=IntegrationSettings.from_json(settings),
    )


def test_a_bad_setting_is_the_integrations_configuration_error_in_the_stores_words(builders: Any) -> None:
    bad = integration("twinfield", {"office": 12.5, "debtors_account": "1300"})
    expected = (
        "integrations.settings of integration #7 cannot be read: office is 12.5; it must be a Twinfield "
        "office code (e.g. NLA001); correct the integration's settings"
    )
    with pytest.raises(ConfigError) as raised:
        TwinfieldSettings.of(bad)
    assert raised.value.message == expected
    with pytest.raises(ConfigError, match="office is 12.5"):  # the registry's path builds no client for it
        connector_for(bad, builders.vault())
    marked = with_tool_settings(bad)
    assert marked.unreadable == expected and marked.settings is bad.settings


def test_with_tool_settings_reads_once_and_leaves_what_it_cannot_judge(builders: Any) -> None:
    good = integration("twinfield", {"office": "NLA001", "debtors_account": "1300", "journal": "VRK"})
    typed = with_tool_settings(good)
    assert isinstance(typed.settings, TwinfieldSettings) and typed.unreadable is None
    assert with_tool_settings(typed).settings is typed.settings
    assert connector_for(typed, builders.vault()).settings is typed.settings  # the connector reads no more
    unknown_tool = replace(good, tool="sage")
    assert with_tool_settings(unknown_tool) is unknown_tool  # the operator names the known tools
    unreadable = replace(good, unreadable="integrations.tool of integration #7 is empty (NULL)")
    assert with_tool_settings(unreadable) is unreadable


# -- through the operator: a bad tool setting fails its integration alone ------------------------------------


def test_an_integration_with_a_bad_tool_setting_fails_alone_while_another_of_the_run_syncs(
    store: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector task of the demo's three Exact integrations, one of which has its division in words:
    that one is refused at task start naming the field and the value (each of its invoices says so, none is
    sent), the other two book their invoices in the same task, and the task fails without retry."""
    from airflow.sdk.exceptions import AirflowFailException
    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    from invoice_sync.airflow.operators import SyncIntegrationsOperator
    from invoice_sync.store.models import IntegrationRow, InvoiceRow, LedgerRow
    from invoice_sync_dev.sandbox.demo import seed
    from invoice_sync_dev.sandbox.exact_online import demo_connection

    seed(store.engine, tools=("exact_online",))
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(demo_connection(sandbox.url)))
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    with Session(store.engine) as session, session.begin():
        row = session.get(IntegrationRow, 2)
        assert row is not None
        settings = {**row.settings, "division": "twelve"}
        session.execute(update(IntegrationRow).where(IntegrationRow.id == 2).values(settings=settings))
    context = {
        "dag_run": SimpleNamespace(dag_id="invoice_sync_manual", run_id="manual__bad_setting"),
        "ti": SimpleNamespace(task_id="sync_exact_online", map_index=0, try_number=1),
    }
    operator = SyncIntegrationsOperator(
        task_id="sync_exact_online", tool="exact_online", integration_ids=[1, 2, 3]
    )
    message = (
        "integrations.settings of integration #2 cannot be read: division is 'twelve'; it must be the "
        "division number"
    )
    with pytest.raises(AirflowFailException, match=message):
        operator.execute(context)

    query = select(InvoiceRow.integration_id, LedgerRow).join(
        InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id
    )
    with Session(store.engine) as session:
        ledger = [
            (owner, row.state, row.error_class, row.error_message) for owner, row in session.execute(query)
        ]
    refused = [entry for entry in ledger if entry[0] == 2]
    assert refused and all(
        state == "rejected" and error_class == "config" and message in (text or "")
        for _, state, error_class, text in refused
    )
    assert {owner for owner, state, _, _ in ledger if state == "booked"} == {1, 3}
    with Session(store.engine) as session:
        numbers = set(session.scalars(select(InvoiceRow.number).where(InvoiceRow.integration_id == 2)))
    sent = {entry["YourRef"] for entry in sandbox.exact.entries()}
    assert numbers and not sent & numbers  # nothing of the refused integration reached Exact
