"""A batching tool's outcomes are recorded per call, not per invoice (issue 15, overhead under 2 ms).

Each ledger commit is a durable write (an fsync on SQLite, a WAL flush on PostgreSQL); one per invoice was
most of what a Yuki invoice cost us. The guarantee stays the same: a call's outcomes are committed before
the next call leaves.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import connector_for
from invoice_sync.engine.sync import IntegrationSync
from invoice_sync.store.models import InvoiceRow, LedgerRow
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.bench.common import Tenant, seed_tenants, template_of
from invoice_sync_dev.sandbox.demo import mark_as_demo
from invoice_sync_dev.sandbox.yuki import demo_connection as yuki_connection

INVOICES = 100
YUKI_PER_CALL = 25


def test_a_batching_tool_commits_once_per_call_not_once_per_invoice(
    store: SyncStore, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = template_of("yuki").conn_id
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(yuki_connection(sandbox.url)))
    seed_tenants(store.engine, [Tenant(1, "yuki", INVOICES)])
    with store.engine.begin() as conn:  # a demo database may keep Yuki's session id without a Fernet key
        mark_as_demo(conn, "test")
    integration = store.integration(1)
    connector = connector_for(integration, SqlTokenVault(store.engine))
    assert connector.invoices_per_call == YUKI_PER_CALL
    commits = 0

    def count(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(store.engine, "commit", count)
    report = IntegrationSync(store, connector, integration, run_id="run-1", holder="run-1/try-1").run()
    event.remove(store.engine, "commit", count)

    assert report.booked == INVOICES
    with Session(store.engine) as session:
        booked = session.scalar(select(func.count()).where(LedgerRow.state == "booked"))
        assert booked == INVOICES
        assert session.scalar(select(func.count()).where(InvoiceRow.registration_number.is_not(None))) == 0
    calls = INVOICES // YUKI_PER_CALL
    # one record per call and a `claimed` mark per page of 50, plus a few (claim, release, Yuki's session
    # id); one record per invoice made it over a hundred
    assert commits <= calls + INVOICES // 50 + 6, commits
