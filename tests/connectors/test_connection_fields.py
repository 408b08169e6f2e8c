"""The task-start check of each tool's Airflow connection: a complete one passes, every empty field is named.

Connections come in the way a deployment gives them, as ``AIRFLOW_CONN_<ID>`` JSON (the sandbox's demo
connections, as the README prints them), and the connector is the one the task builds. No call leaves:
the sandbox URL below points nowhere, so a check that tried the network would fail loudly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from invoice_sync.connectors.registry import BY_NAME, TOOLS, connector_for
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import Integration, IntegrationSettings
from invoice_sync.domain.ports import Connector, TokenSet
from invoice_sync_dev.sandbox.demo import INTEGRATIONS
from invoice_sync_dev.sandbox.tools import sandbox_of

NOWHERE = "http://127.0.0.1:9"
"""The discard port: nothing answers there, so any network I/O would fail the test."""

DEMO = {tool: next(i for i in INTEGRATIONS if i.tool == tool) for tool in TOOLS}
"""One demo integration per tool, with its settings (division, administration, office, tenant, realm)."""

OAUTH_FIELDS = {
    "host": "Base URL (host)",
    "login": "Client ID (login)",
    "password": "Client secret (password)",
    "extra.refresh_token": "refresh_token (extra)",
}
REQUIRED = {tool: OAUTH_FIELDS for tool in TOOLS} | {
    "yuki": {"host": "Base URL (host)", "password": "Access key (password)"},
}
"""What each tool cannot work without, written out here rather than read from the hooks under test: the
OAuth fields, except where a tool authenticates otherwise (a new tool that does must be added here)."""
OAUTH_TOOLS = [tool for tool in TOOLS if REQUIRED[tool] is OAUTH_FIELDS]


def connector(tool: str, vault: Any) -> Connector:
    demo = DEMO[tool]
    integration = Integration(
        id=demo.id,
        name=demo.name,
        tool=demo.tool,
        conn_id=demo.conn_id,
        auto_sync=demo.auto_sync,
        sync_from=demo.sync_from,
        settings=IntegrationSettings.from_json(demo.settings),
    )
    return connector_for(integration, vault)


def set_connection(monkeypatch: pytest.MonkeyPatch, tool: str, *, without: tuple[str, ...] = ()) -> str:
    """Put the tool's demo connection in the environment, with the ``without`` fields emptied; its id."""
    conn_id = DEMO[tool].conn_id
    connection: dict[str, Any] = sandbox_of(tool).connection(NOWHERE)
    for name in without:
        if name.startswith("extra."):
            connection["extra"].pop(name.removeprefix("extra."), None)
        else:
            connection.pop(name, None)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


@pytest.mark.parametrize("tool", list(REQUIRED))
def test_the_demo_connection_is_complete(tool: str, monkeypatch: pytest.MonkeyPatch, vault: Any) -> None:
    set_connection(monkeypatch, tool)
    connector(tool, vault).check_connection()


@pytest.mark.parametrize(
    ("tool", "field", "label"),
    [(tool, field, label) for tool, fields in REQUIRED.items() for field, label in fields.items()],
)
def test_each_missing_field_is_named(
    tool: str, field: str, label: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    conn_id = set_connection(monkeypatch, tool, without=(field,))
    with pytest.raises(ConfigError) as raised:
        connector(tool, vault).check_connection()
    assert raised.value.message == (
        f"{BY_NAME[tool].label} connection {conn_id}: missing {label}; fill it in under Admin > Connections"
    )


def test_every_missing_field_is_named_in_one_message(monkeypatch: pytest.MonkeyPatch, vault: Any) -> None:
    set_connection(monkeypatch, "xero", without=("password", "extra.refresh_token"))
    with pytest.raises(ConfigError) as raised:
        connector("xero", vault).check_connection()
    assert raised.value.message == (
        "Xero connection xero_demo: missing Client secret (password) and refresh_token (extra); "
        "fill them in under Admin > Connections"
    )


def test_blank_fields_count_as_missing(monkeypatch: pytest.MonkeyPatch, vault: Any) -> None:
    """A form saved with a space in a field is as empty as one never filled in."""
    connection: dict[str, Any] = sandbox_of("exact_online").connection(NOWHERE)
    connection["login"] = "  "
    connection["extra"]["refresh_token"] = ""
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(connection))
    with pytest.raises(ConfigError, match=r"missing Client ID \(login\) and refresh_token \(extra\);"):
        connector("exact_online", vault).check_connection()


def test_yuki_needs_no_client_id(monkeypatch: pytest.MonkeyPatch, vault: Any) -> None:
    """Yuki authenticates with an access key alone: an empty login is fine."""
    set_connection(monkeypatch, "yuki", without=("login",))
    connector("yuki", vault).check_connection()


@pytest.mark.parametrize("tool", OAUTH_TOOLS)
def test_the_consent_is_not_needed_once_the_vault_holds_tokens(
    tool: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """The refresh token in the connection is spent once; afterwards the vault holds its successors, so a
    connection whose (stale) copy was cleared still works. The app's credentials are always needed."""
    conn_id = set_connection(monkeypatch, tool, without=("extra.refresh_token",))
    vault.tokens[conn_id] = TokenSet("access", "rotated", datetime.now(UTC) + timedelta(hours=1))
    connector(tool, vault).check_connection()

    set_connection(monkeypatch, tool, without=("extra.refresh_token", "password"))
    with pytest.raises(ConfigError, match=r": missing Client secret \(password\); fill it in"):
        connector(tool, vault).check_connection()


def test_a_connection_that_does_not_exist_is_named(monkeypatch: pytest.MonkeyPatch, vault: Any) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TWINFIELD_DEMO", raising=False)
    with pytest.raises(ConfigError) as raised:
        connector("twinfield", vault).check_connection()
    assert raised.value.message == (
        "Twinfield connection twinfield_demo does not exist; add it under Admin > Connections"
    )


def set_urls(monkeypatch: pytest.MonkeyPatch, tool: str, host: str, *, token_url: str | None = None) -> str:
    """Put the tool's demo connection in the environment with ``host`` (and a ``token_url`` extra); its id."""
    conn_id = DEMO[tool].conn_id
    connection: dict[str, Any] = sandbox_of(tool).connection(host)
    if token_url is not None:
        connection["extra"]["token_url"] = token_url
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


@pytest.mark.parametrize("tool", list(REQUIRED))
def test_a_host_off_this_machine_over_http_is_refused(
    tool: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """A production connection must use https: credentials and invoices never cross a network in clear
    (issue 14, item 8). The check reads the connection only, so no call is made to refuse it."""
    conn_id = set_urls(monkeypatch, tool, "http://accounting.example.com")
    connection = sandbox_of(tool).connection("http://accounting.example.com")
    refused = [("Base URL (host)", connection["host"])]
    if "token_url" in connection["extra"]:  # the sandbox's token endpoint sits on the same host
        refused.append(("token_url (extra)", connection["extra"]["token_url"]))
    with pytest.raises(ConfigError) as raised:
        connector(tool, vault).check_connection()
    assert raised.value.message == (
        f"{BY_NAME[tool].label} connection {conn_id}: "
        + "; ".join(
            f"{label} {url} is not on this machine and does not use https; "
            f"change it to {url.replace('http://', 'https://', 1)}"
            for label, url in refused
        )
        + " under Admin > Connections"
    )


@pytest.mark.parametrize("tool", list(REQUIRED))
@pytest.mark.parametrize(
    "host",
    [
        "https://accounting.example.com",
        "http://127.0.0.1:9",
        "http://127.1.2.3",
        "http://localhost:9",
        "http://[::1]:9",
    ],
)
def test_https_or_this_machine_is_accepted(
    tool: str, host: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """https anywhere, and the sandbox on loopback over plain http (every demo and test connection)."""
    set_urls(monkeypatch, tool, host)
    connector(tool, vault).check_connection()


@pytest.mark.parametrize("tool", list(REQUIRED))
def test_the_operators_plain_http_hosts_are_accepted_and_no_others(
    tool: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """Compose's sandbox service (``http://sandbox:8765``) is on a private network, not loopback: it passes
    only because the operator lists it in ``INVOICE_SYNC_PLAIN_HTTP_HOSTS``; a host not listed still fails."""
    monkeypatch.setenv("INVOICE_SYNC_PLAIN_HTTP_HOSTS", "Sandbox., other-sandbox")
    set_urls(monkeypatch, tool, "http://sandbox:8765")
    connector(tool, vault).check_connection()
    set_urls(monkeypatch, tool, "http://sandboxes.example.com")
    with pytest.raises(ConfigError, match="is not on this machine and does not use https"):
        connector(tool, vault).check_connection()


def test_a_host_without_a_scheme_is_judged_by_the_connection_schema(
    monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """Airflow's ``HttpHook`` prefixes a bare host with the connection's schema, ``http`` by default."""
    connection: dict[str, Any] = sandbox_of("xero").connection(NOWHERE)
    connection["host"] = "api.xero.com"
    monkeypatch.setenv("AIRFLOW_CONN_XERO_DEMO", json.dumps(connection))
    with pytest.raises(ConfigError, match=r"Base URL \(host\) http://api.xero.com is not on this machine"):
        connector("xero", vault).check_connection()

    connection["schema"] = "https"
    monkeypatch.setenv("AIRFLOW_CONN_XERO_DEMO", json.dumps(connection))
    connector("xero", vault).check_connection()


@pytest.mark.parametrize("tool", OAUTH_TOOLS)
def test_a_token_url_off_this_machine_over_http_is_refused(
    tool: str, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """The token request carries the client secret and the refresh token: its URL obeys the same rule."""
    conn_id = set_urls(monkeypatch, tool, NOWHERE, token_url="http://identity.example.com/connect/token")
    with pytest.raises(ConfigError) as raised:
        connector(tool, vault).check_connection()
    assert raised.value.message == (
        f"{BY_NAME[tool].label} connection {conn_id}: "
        "token_url (extra) http://identity.example.com/connect/token is not on this machine "
        "and does not use https; change it to https://identity.example.com/connect/token "
        "under Admin > Connections"
    )

    set_urls(monkeypatch, tool, NOWHERE, token_url="https://identity.example.com/connect/token")
    connector(tool, vault).check_connection()
    set_urls(monkeypatch, tool, NOWHERE, token_url="http://localhost:9/connect/token")
    connector(tool, vault).check_connection()
