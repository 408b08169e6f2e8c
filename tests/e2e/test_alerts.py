"""Operators hear about a failed nightly run: the alert connection receives which integration failed, the
error class and a link to the task's log; the bookkeepers' bell stays silent (issue 14, item 9).

One SQLite nightly run without an alert connection (nothing is posted, the run is otherwise the same),
then one with it: two runs keep the suite's time down.
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from collections.abc import Iterator
from html import escape
from types import SimpleNamespace
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
    assert alert["text"] == f"{alert['title']}: {alert['message']} {alert['log_url']}"  # for chat webhooks

    with Session(demo.store.engine) as session:
        assert session.scalar(select(NotificationRow.id)) is None  # nightly runs ring no bell


class _Mailbox(socketserver.ThreadingTCPServer):
    """A loopback SMTP server speaking just enough of RFC 5321 for smtplib; it keeps every message."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _SmtpSession)


class _SmtpSession(socketserver.StreamRequestHandler):
    server: _Mailbox

    def handle(self) -> None:
        sender, recipients = "", []
        self.wfile.write(b"220 mailbox ready\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"MAIL":
                sender = line.decode().split(":", 1)[1].strip()
            elif verb == b"RCPT":
                recipients.append(line.decode().split(":", 1)[1].strip())
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b"".join(iter(self.rfile.readline, b".\r\n"))
                self.server.messages.append((sender, recipients, data))
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def mailbox() -> Iterator[_Mailbox]:
    server = _Mailbox()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_an_smtp_alert_connection_e_mails_the_alert(
    sqlite_demo: Any, mailbox: _Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's type chooses the channel: an smtp connection (Airflow's SMTP provider) e-mails the
    alert to the addresses in its extra's ``to``. The failure is handed to the callback directly: how a
    nightly reaches it is the test above."""
    from invoice_sync.airflow.alerts import alert_operators

    name = next(i.name for i in sqlite_demo.store.integrations([BROKEN]))
    port = mailbox.server_address[1]
    extra = {"to": "ops@example.test, oncall@example.test", "from_email": "airflow@example.test"}
    extra |= {"disable_ssl": True, "disable_tls": True, "timeout": 5}
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_INVOICE_SYNC_ALERTS", json.dumps(conn))
    monkeypatch.setenv(
        "INVOICE_SYNC_DB_URL", sqlite_demo.store.engine.url.render_as_string(hide_password=False)
    )
    log_url = f"{BASE_URL}dags/{NIGHTLY}/runs/scheduled__x/tasks/exact_online.sync/mapped/0"
    ti = SimpleNamespace(
        dag_id=NIGHTLY,
        run_id="scheduled__x",
        task_id="exact_online.sync",
        map_index=0,
        try_number=2,
        log_url=log_url,
    )
    context = {
        "ti": ti,
        "task": SimpleNamespace(integration_ids=[BROKEN]),
        "exception": RuntimeError(f"{name}: down"),
    }

    alert_operators(context)

    ((sender, recipients, data),) = mailbox.messages
    assert (sender, recipients) == ("<airflow@example.test>", ["<ops@example.test>", "<oncall@example.test>"])
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert mail["Subject"] == f"Nightly sync: task exact_online.sync failed for {name}"
    html = next(part for part in mail.walk() if part.get_content_type() == "text/html").get_content()
    assert f"{escape(name)}: RuntimeError" in html and escape(log_url) in html
