"""The project's Airflow provider: a connection type per tool, its form, and a Test that calls the tool.

The provider info is checked against Airflow's own schemas and read back through Airflow's
``ProvidersManager``, the way the api-server builds the Connections form. The Test button is run the way
the api-server runs it (``POST /api/v2/connections/test``): an ``airflow.models.Connection`` with the
form's values, published as ``AIRFLOW_CONN_<ID>`` under its URI, then ``Connection.test_connection()``,
which builds the hook with nothing but its connection id. The tools are the sandbox's simulators.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

import jsonschema
import pytest
from airflow.models.connection import Connection

from invoice_sync.airflow.provider import PACKAGE_NAME, get_provider_info
from invoice_sync.connectors.descriptor import ToolDescriptor
from invoice_sync.connectors.registry import BY_NAME, DESCRIPTORS, TOOLS
from invoice_sync_dev.sandbox import exact_fixtures
from invoice_sync_dev.sandbox.demo import INTEGRATIONS
from invoice_sync_dev.sandbox.exact_fixtures import DIVISION_BE
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread
from invoice_sync_dev.sandbox.tools import demo_connections

STANDARD_FIELDS = {"host", "schema", "login", "password", "port", "extra", "description"}
DEMO_CONN_IDS = {tool: next(i.conn_id for i in INTEGRATIONS if i.tool == tool) for tool in TOOLS}
LABELS = {descriptor.conn_type: descriptor.label for descriptor in DESCRIPTORS}
"""Connection type -> the name people see: what the provider, the hooks and Airflow's form must all show."""


def _airflow_schema(name: str) -> dict[str, Any]:
    return dict(json.loads(resources.files("airflow").joinpath(name).read_text()))


def _entries() -> dict[str, dict[str, Any]]:
    return {entry["connection-type"]: entry for entry in get_provider_info()["connection-types"]}


def test_the_entry_point_gives_airflow_a_valid_provider_info() -> None:
    ours = [
        e for e in entry_points(group="apache_airflow_provider") if e.dist and e.dist.name == PACKAGE_NAME
    ]
    (entry,) = ours
    assert entry.value == "invoice_sync.airflow.provider:get_provider_info"
    assert entry.dist is not None
    info = entry.load()()
    jsonschema.validate(info, _airflow_schema("provider_info.schema.json"))
    assert info["package-name"] == PACKAGE_NAME == "invoice-sync"
    assert info["versions"] == [entry.dist.version]


@pytest.mark.parametrize("descriptor", DESCRIPTORS, ids=[d.name for d in DESCRIPTORS])
def test_each_tool_has_a_name_for_people(descriptor: ToolDescriptor) -> None:
    """The label is the tool's own name (capitalised, as its vendor writes it), never the snake name."""
    assert descriptor.label.strip() == descriptor.label and descriptor.label[0].isupper()
    assert descriptor.label != descriptor.name and "_" not in descriptor.label
    assert len(set(LABELS.values())) == len(LABELS), "two tools share a name in the Connections form"


def test_one_connection_type_per_tool_of_the_registry() -> None:
    entries = _entries()
    assert list(entries) == [descriptor.conn_type for descriptor in DESCRIPTORS] == list(LABELS)
    for tool, entry in entries.items():
        assert entry["hook-name"] == LABELS[tool]
        hook = BY_NAME[tool].load_hook()
        assert entry["hook-class-name"] == f"{hook.__module__}.{hook.__qualname__}"
        # What ProvidersManager checks before it lists a hook.
        assert hook.conn_type == tool and hook.hook_name == LABELS[tool]
        assert hook.default_conn_name and hook.conn_name_attr == f"{tool}_conn_id"


@pytest.mark.parametrize("tool", list(LABELS))
def test_each_form_is_valid_and_names_only_real_fields(tool: str) -> None:
    entry = _entries()[tool]
    behaviour = entry["ui-field-behaviour"]
    as_python = {key.replace("-", "_"): value for key, value in behaviour.items()}
    jsonschema.validate(as_python, _airflow_schema("customized_form_field_behaviours.schema.json"))
    extras = entry["conn-fields"]
    assert set(behaviour["hidden-fields"]) <= STANDARD_FIELDS
    assert set(behaviour["relabeling"]) <= STANDARD_FIELDS
    assert set(behaviour["placeholders"]) <= STANDARD_FIELDS | set(extras)
    assert "host" not in behaviour["hidden-fields"] and "password" not in behaviour["hidden-fields"]
    assert "timeout" in extras
    for key, spec in extras.items():
        assert spec["label"] and spec["description"], key
        assert "null" in spec["schema"]["type"], f"{key} must be optional in the form"
    # The refresh token is a secret: masked in the form, never shown again.
    if "refresh_token" in extras:
        assert extras["refresh_token"]["schema"]["format"] == "password"
        assert behaviour["relabeling"]["login"] == "Client ID"
        assert behaviour["relabeling"]["password"] == "Client secret"


def test_airflow_builds_the_connections_form_from_it() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    types = {meta.connection_type: meta for meta in manager.iter_connection_type_hook_ui_metadata()}
    for tool, label in LABELS.items():
        assert types[tool].hook_name == label
        assert manager.field_behaviours[tool]["relabeling"]["host"] in {"Base URL", "Login host"}
    widgets = set(manager.connection_form_widgets)
    assert {"extra__exact_online__refresh_token", "extra__yuki__daily_limit"} <= widgets
    assert manager.connection_form_widgets["extra__xero__refresh_token"].is_sensitive


# -- the Test button -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    handle = start_in_thread()
    try:
        yield handle
    finally:
        handle.stop()


def _form(tool: str, sandbox: SandboxHandle, **changes: Any) -> Connection:
    """The demo connection as a person types it into the form, with the tool's connection type."""
    values: dict[str, Any] = dict(demo_connections(sandbox.url)[DEMO_CONN_IDS[tool]])
    values.update(changes)
    return Connection(
        conn_id=f"form_test_{tool}",
        conn_type=tool,
        host=values["host"],
        login=values.get("login"),
        password=values.get("password"),
        extra=json.dumps(values["extra"]),
    )


def _press_test(connection: Connection, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str]:
    """What the api-server's ``/connections/test`` does with the form's values."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{connection.conn_id.upper()}", connection.get_uri())
    status, message = connection.test_connection()
    return bool(status), str(message)


@pytest.mark.parametrize("tool", list(LABELS))
def test_test_passes_for_the_right_credentials(
    tool: str, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = _press_test(_form(tool, sandbox), monkeypatch)
    assert ok, message


@pytest.mark.parametrize(
    ("tool", "words"),
    [
        ("exact_online", "invalid_client"),
        ("twinfield", "invalid_client"),
        ("xero", "invalid_client"),
        ("quickbooks", "invalid_client"),
        ("yuki", "invalid access key"),
    ],
)
def test_test_fails_with_the_tools_words_for_a_wrong_secret(
    tool: str, words: str, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = _press_test(_form(tool, sandbox, password="not-the-secret"), monkeypatch)
    assert not ok
    assert words in message
    assert "not-the-secret" not in message


def test_test_names_what_the_form_left_empty(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = _press_test(_form("exact_online", sandbox, password=None), monkeypatch)
    assert not ok
    assert "Client secret (password)" in message


def test_test_does_not_spend_a_rotating_refresh_token(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, vault: Any
) -> None:
    """Exact replaces a refresh token when it is used; the form's Test keeps no tokens, so it must leave
    the consent's token for the first run, which then still gets its tokens with it."""
    from invoice_sync.connectors.exact_online.hook import ExactOnlineHook

    consent = sandbox.simulators.exact.consent(exact_fixtures.CLIENT_ID)["refresh_token"]
    form = _form("exact_online", sandbox)
    form.extra = json.dumps({"refresh_token": consent})
    ok, message = _press_test(form, monkeypatch)
    assert ok and "refresh token was not tried" in message, message

    hook = ExactOnlineHook(exact_online_conn_id=str(form.conn_id), vault=vault, division=DIVISION_BE)
    assert hook.test_connection() == (True, "Connection successfully tested")
