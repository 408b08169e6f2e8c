"""The token vault a task opens takes Airflow's own Fernet keys, wherever Airflow reads them, and a run
without any key on a database that is not the demo's refuses to store tokens, as a configuration error of
the integrations whose connection needed one, while the others sync.

Airflow reads airflow.cfg once, at import: the file's own forms are tested through the command line
(``tests/deploy/test_tokens_cli.py``); here the environment's, which Airflow reads on every lookup.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.secrets import BaseSecretsBackend
from cryptography.fernet import Fernet
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from invoice_sync.airflow.runtime import open_vault
from invoice_sync.domain.ports import TokenSet
from invoice_sync.store.models import TokenRow
from invoice_sync.store.repository import SyncStore

LATER = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
TOKENS = TokenSet("access-1", "refresh-1", LATER)
SECRET_NAME = "invoice-sync-fernet-key"


class KeyBackend(BaseSecretsBackend):
    """A secrets backend holding configuration values only: what ``fernet_key_secret`` names."""

    def __init__(self, config: dict[str, str]) -> None:
        super().__init__()
        self.config = config

    def get_config(self, key: str) -> str | None:
        return self.config.get(key)


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where its key comes from; none is inherited from the shell or an earlier test."""
    for suffix in ("", "_CMD", "_SECRET"):
        monkeypatch.delenv(f"AIRFLOW__CORE__FERNET_KEY{suffix}", raising=False)


def _stored(store: SyncStore, conn_id: str) -> tuple[str | None, str | None]:
    with Session(store.engine) as session:
        row = session.get(TokenRow, conn_id)
        assert row is not None
        return row.access_token, row.refresh_token


def _sealed_under(store: SyncStore, conn_id: str, key: str) -> bool:
    """Whether the stored tokens are :data:`TOKENS` sealed under ``key`` (read with Fernet itself)."""
    stored = _stored(store, conn_id)
    if not all(value and value.startswith("fernet:") for value in stored):
        return False
    fernet = Fernet(key.encode())
    opened = [fernet.decrypt(value.removeprefix("fernet:").encode()).decode() for value in stored if value]
    return opened == [TOKENS.access_token, TOKENS.refresh_token]


def test_the_task_vault_takes_airflows_fernet_key_new_old(store: SyncStore, monkeypatch) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", old)
    open_vault(store).refresh("before", lambda _: TOKENS)
    assert _sealed_under(store, "before", old)

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", f"{new},{old}")
    vault = open_vault(store)  # read when the vault is made: the new key is heard at once
    assert vault.load("before") == TOKENS
    vault.refresh("after", lambda _: TOKENS)
    assert _sealed_under(store, "after", new)


def test_the_key_from_fernet_key_cmd(store: SyncStore, monkeypatch, tmp_path) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / "fernet.key").write_text(key + "\n")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY_CMD", f"cat {tmp_path / 'fernet.key'}")
    open_vault(store).refresh("cmd", lambda _: TOKENS)
    assert _sealed_under(store, "cmd", key)


def test_the_key_from_fernet_key_secret(store: SyncStore, monkeypatch) -> None:
    """``_SECRET`` names a value in the secrets backend, which Airflow asks through its ``get_config``."""
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", f"{__name__}.{KeyBackend.__name__}")
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"config": {SECRET_NAME: key}}))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY_SECRET", SECRET_NAME)
    open_vault(store).refresh("secret", lambda _: TOKENS)
    assert _sealed_under(store, "secret", key)


def test_no_key_outside_the_demo_fails_only_the_integrations_that_need_a_token_stored(
    store: SyncStore, sandbox: Any, monkeypatch
) -> None:
    """Through the connector operator, with no key on a database the demo did not mark: the integration
    whose connection needs new tokens is refused as a configuration error saying what to set, and nothing
    of it reaches the tool; the two whose connection's tokens were stored (in clear, before this version)
    and are still valid sync; the task fails without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from invoice_sync.airflow.operators import SyncIntegrationsOperator
    from invoice_sync.store.models import IntegrationRow, InvoiceRow, LedgerRow
    from invoice_sync_dev.sandbox import exact_fixtures
    from invoice_sync_dev.sandbox.demo import DEMO_MARK, seed
    from invoice_sync_dev.sandbox.exact_online import demo_connection

    seed(store.engine, tools=("exact_online",))
    with Session(store.engine) as session, session.begin():
        session.execute(delete(DEMO_MARK))  # a company's database, not the demo's
        second = session.get(IntegrationRow, 2)
        assert second is not None
        second.conn_id = "exact_new"
        issued = sandbox.exact.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": exact_fixtures.BOOTSTRAP_REFRESH_TOKEN,
                "client_id": exact_fixtures.CLIENT_ID,
                "client_secret": exact_fixtures.CLIENT_SECRET,
            }
        )
        session.add(
            TokenRow(
                conn_id="exact_demo",
                access_token=issued["access_token"],
                refresh_token=issued["refresh_token"],
                expires_at=datetime.now(UTC) + timedelta(seconds=int(issued["expires_in"])),
                lock_version=0,
                updated_at=datetime.now(UTC),
            )
        )
    consent = sandbox.exact.consent(exact_fixtures.CLIENT_ID)
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(demo_connection(sandbox.url)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_EXACT_NEW",
        json.dumps(demo_connection(sandbox.url, refresh_token=consent["refresh_token"])),
    )
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")  # Airflow's own configuration: no key
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    context = {
        "dag_run": SimpleNamespace(dag_id="invoice_sync_manual", run_id="manual__no_key"),
        "ti": SimpleNamespace(task_id="sync_exact_online", map_index=0, try_number=1),
    }
    operator = SyncIntegrationsOperator(
        task_id="sync_exact_online", tool="exact_online", integration_ids=[1, 2, 3]
    )

    with pytest.raises(AirflowFailException, match="'exact_new' would be stored in clear"):
        operator.execute(context)

    query = select(InvoiceRow.integration_id, InvoiceRow.number, LedgerRow).join(
        InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id
    )
    with Session(store.engine) as session:
        ledger = [(owner, number, row) for owner, number, row in session.execute(query)]
        assert session.get(TokenRow, "exact_new") is None  # nothing stored for it, not even a row
    refused = [row for owner, _, row in ledger if owner == 2]
    assert refused and all(row.state == "rejected" for row in refused)
    for_the_key = [
        row
        for row in refused
        if "set Airflow's [core] fernet_key (AIRFLOW__CORE__FERNET_KEY" in (row.error_message or "")
    ]
    # all but the demo's invoices that validation refuses before any call (a VAT rate, a missing field)
    assert len(for_the_key) > len(refused) // 2, [row.error_message for row in refused]
    assert all(row.error_class == "config" for row in for_the_key)
    assert {owner for owner, _, row in ledger if row.state == "booked"} == {1, 3}
    sent = {entry["YourRef"] for entry in sandbox.exact.entries()}
    assert sent and not sent & {number for owner, number, _ in ledger if owner == 2}
