"""The notify task against the real store and a real webhook receiver on loopback: one bell entry and one
post per run however often the task is retried, payloads of bounded size, and no webhook secret in logs or
errors."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from invoice_sync.store.models import LedgerRow, NotificationRow
from invoice_sync.store.repository import SyncStore

WEBHOOK_CONN = "invoice_sync_webhook"
DAG_ID = "invoice_sync_manual"
RUN_ID = "manual__notify"


class Receiver:
    """A webhook on loopback that records every POST body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                posts.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    handle = Receiver()
    yield handle
    handle.close()


@pytest.fixture
def task_env(store: SyncStore, monkeypatch: pytest.MonkeyPatch) -> SyncStore:
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    return store


def webhook(monkeypatch: pytest.MonkeyPatch, host: str, **fields: Any) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{WEBHOOK_CONN.upper()}", json.dumps({"conn_type": "http", "host": host, **fields})
    )


def context(try_number: int) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id=DAG_ID, run_id=RUN_ID, run_type="manual", start_date=None, triggering_user_name="anna"
    )
    return {"dag_run": dag_run, "ti": SimpleNamespace(task_id="notify", map_index=-1, try_number=try_number)}


def notify(extracted: list[dict[str, Any]], try_number: int = 1) -> int:
    from invoice_sync.airflow import tasks

    return tasks.notify(extracted, context(try_number), dry_run=False, webhook_conn_id=WEBHOOK_CONN)


def bell(store: SyncStore) -> list[NotificationRow]:
    with Session(store.engine) as session:
        return list(session.scalars(select(NotificationRow)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns: connection refused


def test_a_retried_notify_writes_one_bell_entry_and_posts_once(task_env, receiver, monkeypatch):
    webhook(monkeypatch, f"http://127.0.0.1:{receiver.port}")
    first = notify([])
    second = notify([], try_number=2)  # the task retried after it had done its work (e.g. a lost heartbeat)
    assert second == first
    assert len(bell(task_env)) == 1
    assert len(receiver.posts) == 1


def test_a_retry_posts_what_the_failed_try_could_not(task_env, receiver, monkeypatch):
    from invoice_sync.airflow.tasks import WebhookPostError

    webhook(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(WebhookPostError):
        notify([])
    webhook(monkeypatch, f"http://127.0.0.1:{receiver.port}")
    notify([], try_number=2)
    notify([], try_number=3)
    assert len(bell(task_env)) == 1
    assert len(receiver.posts) == 1


def test_notification_and_payload_list_at_most_a_screenful_with_exact_counts(
    task_env, data, receiver, monkeypatch
):
    from invoice_sync.engine.summary import LISTED_AT_MOST

    webhook(monkeypatch, f"http://127.0.0.1:{receiver.port}")
    integration = data.integration()
    invoices = data.invoices(500, integration)
    now = data_time()
    with Session(task_env.engine) as session, session.begin():
        session.execute(
            insert(LedgerRow),
            [
                {
                    "integration_id": integration,
                    "invoice_id": invoice_id,
                    "state": "rejected",
                    "run_id": f"{DAG_ID}:{RUN_ID}",
                    "attempts": 1,
                    "error_class": "auth",
                    "error_message": "The token was revoked",
                    "created_at": now,
                    "updated_at": now,
                }
                for invoice_id in invoices
            ],
        )
    notify([{"integration_id": integration, "tool": "exact_online"}])
    (row,) = bell(task_env)
    (posted,) = receiver.posts
    assert "500 errors" in row.title and "500 errors" in posted["title"]
    assert posted["text"] == posted["title"]  # what a chat webhook (Slack) shows, and requires
    for body in (row.body, posted):
        assert len(body["errors"]) == LISTED_AT_MOST == 50
        assert body["errors_count"] == 500
        assert body["errors_more"] == "and 450 more"
        assert body["integrations"][0]["failed_auth"] == 500
    assert len(json.dumps(posted)) < 50_000


def data_time() -> Any:
    from invoice_sync.store.claims import utcnow

    return utcnow()


SECRETS = ("pa55word-secret", "XXsecretPATHtoken", "qTOKENsecret")


def test_a_failed_post_masks_the_webhook_secrets(task_env, monkeypatch, caplog, capsys):
    from invoice_sync.airflow.tasks import WebhookPostError

    caplog.set_level(logging.DEBUG)
    port = closed_port()
    webhook(
        monkeypatch,
        f"http://hooks:{SECRETS[0]}@127.0.0.1:{port}/services/T0001/B0001/{SECRETS[1]}?token={SECRETS[2]}",
        password=SECRETS[0],
    )
    with pytest.raises(WebhookPostError) as failure:
        notify([])
    out, err = capsys.readouterr()  # structlog's output (the hook logs through it)
    text = f"{failure.value}\n{failure.value.__cause__}\n{failure.value.__context__}\n{caplog.text}{out}{err}"
    assert "refused" in str(failure.value), failure.value  # the reason stays
    for secret in SECRETS:
        assert secret not in text, secret
