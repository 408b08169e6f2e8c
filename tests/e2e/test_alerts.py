"""Operators hear about a failed nightly run: the alert connection receives which integration failed, the
error class and a link to the task's log; the bookkeepers' bell stays silent (issue 14, item 9).

One SQLite nightly run without an alert connection (nothing is posted, the run is otherwise the same),
then one with it: two runs keep the suite's time down.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from invoice_sync.store.models import IntegrationRow, LedgerRow, LedgerState, NotificationRow

pytestmark = pytest.mark.e2e

NIGHTLY = "invoice_sync_nightly"
BROKEN = 1
"""An Exact integration the nightly syncs; its division is set to words, a configuration error."""
SYNCED = (LedgerState.BOOKED, LedgerState.WRITTEN_BACK)
BASE_URL = "https://airflow.example.test/"


def test_a_failed_nightly_alerts_the_operators_not_the_bell(sqlite_demo: Any, webhook: Any) -> None:
    demo = sqlite_demo
    with Session(demo.store.engine) as session:
        row = session.get(IntegrationRow, BROKEN)
        assert row is not None and row.auto_sync and row.tool == "exact_online"
        broken_name = row.name
        settings = {**row.settings, "division": "twelve"}
        session.execute(update(IntegrationRow).where(IntegrationRow.id == BROKEN).values(settings=settings))
        session.commit()
    demo.extra_env["AIRFLOW__API__BASE_URL"] = BASE_URL

    # no alert connection: nothing is posted and the run goes as it would
    # the run itself succeeds (its closing tasks run whatever happened); the integration's task fails
    log = demo.run(NIGHTLY)
    assert "division is 'twelve'" in log
    assert webhook.received == []
    with Session(demo.store.engine) as session:
        synced = set(session.scalars(select(LedgerRow.integration_id).where(LedgerRow.state.in_(SYNCED))))
    assert synced and BROKEN not in synced, "the other integrations synced"

    # with the alert connection: one alert for the failed task, naming what the operator needs
    demo.extra_env["AIRFLOW_CONN_INVOICE_SYNC_ALERTS"] = json.dumps(
        {"conn_type": "http", "host": webhook.url}
    )
    demo.run(NIGHTLY)
    alerts = [body for body in webhook.received if body.get("kind") == "invoice_sync_alert"]
    assert len(alerts) == 1, webhook.received
    (alert,) = alerts
    assert alert["dag_id"] == NIGHTLY and alert["task_id"] == "exact_online.sync"
    assert [(i["integration"], i["error_class"]) for i in alert["integrations"]] == [(broken_name, "config")]
    assert "division is 'twelve'" in alert["message"]
    assert alert["log_url"].startswith(f"{BASE_URL}dags/{NIGHTLY}/runs/")
    assert "/tasks/exact_online.sync/mapped/" in alert["log_url"]
    assert broken_name in alert["title"]

    with Session(demo.store.engine) as session:
        assert session.scalar(select(NotificationRow.id)) is None  # nightly runs ring no bell
