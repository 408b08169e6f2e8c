"""No secret (client secret, refresh or access token, webhook password) leaks out of a real run.

Both DAGs run with recognisable secrets in every connection; afterwards every place a secret could end
up is searched: the run's console output (where ``airflow dags test`` writes every task's log), any
task log file, every XCom value in Airflow's metadata DB, every column of every table of the invoicing
DB (the token store included: with a key set it holds tokens only encrypted), the notification and what
the webhook received. (The Invoice sync page does not exist yet; its responses join this test with it.)
"""

from __future__ import annotations

import ast
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from invoice_sync.store.models import TokenRow
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox import (
    exact_fixtures,
    quickbooks_fixtures,
    twinfield_fixtures,
    xero_fixtures,
    yuki_fixtures,
)

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_PASSWORD = "whk-PASSWORD-7f3a9c2e"


def test_no_secret_in_logs_xcom_tables_or_notifications(sqlite_demo: Any, webhook: Any) -> None:
    demo = sqlite_demo
    consent = requests.post(
        f"{demo.sandbox.exact_url}/_sandbox/consent", json={"client_id": exact_fixtures.CLIENT_ID}, timeout=10
    ).json()
    refresh_token = consent["refresh_token"]
    connection = json.loads(demo.env()["AIRFLOW_CONN_EXACT_DEMO"])
    connection["extra"]["refresh_token"] = refresh_token
    demo.extra_env["AIRFLOW_CONN_EXACT_DEMO"] = json.dumps(connection)
    demo.extra_env["AIRFLOW_CONN_INVOICE_SYNC_WEBHOOK"] = json.dumps(
        {"conn_type": "http", "host": webhook.url, "login": "bell", "password": WEBHOOK_PASSWORD}
    )

    key = Fernet.generate_key().decode()
    demo.extra_env["AIRFLOW__CORE__FERNET_KEY"] = key  # Airflow's key seals the tokens at rest too

    output = demo.run("invoice_sync_nightly") + demo.run("invoice_sync_manual", {"integrations": [3]})

    with Session(demo.store.engine) as session:
        conn_ids = session.scalars(select(TokenRow.conn_id)).all()
    tokens = [SqlTokenVault(demo.store.engine, keys=(key,)).load(conn_id) for conn_id in conn_ids]
    assert tokens and all(t is not None for t in tokens)
    secrets = {exact_fixtures.CLIENT_SECRET, refresh_token, WEBHOOK_PASSWORD}
    secrets |= {yuki_fixtures.ACCESS_KEY, twinfield_fixtures.CLIENT_SECRET}
    secrets |= {twinfield_fixtures.BOOTSTRAP_REFRESH_TOKEN}
    secrets |= {xero_fixtures.CLIENT_SECRET, xero_fixtures.BOOTSTRAP_REFRESH_TOKEN}
    secrets |= {quickbooks_fixtures.CLIENT_SECRET, quickbooks_fixtures.BOOTSTRAP_REFRESH_TOKEN}
    # Yuki's session id is stored as an access token without a refresh token ("")
    secrets |= {t.access_token for t in tokens} | {t.refresh_token for t in tokens if t.refresh_token}
    assert {t.refresh_token for t in tokens} >= {""}, "the Yuki session is in the token store too"

    places: dict[str, str] = {"console output of the runs": output}
    home = Path(os.environ["AIRFLOW_HOME"])
    for log_file in (home / "logs").rglob("*"):
        if log_file.is_file():
            places[f"log {log_file.relative_to(home)}"] = log_file.read_text(errors="replace")
    with sqlite3.connect(home / "airflow.db") as airflow_db:
        places["xcom"] = "\n".join(str(row) for row in airflow_db.execute("SELECT key, value FROM xcom"))
        places["dag_run conf"] = "\n".join(str(row) for row in airflow_db.execute("SELECT conf FROM dag_run"))
    engine = demo.store.engine
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():  # the token store included: it holds them encrypted
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()  # table names from the schema
            places[f"table {table}"] = "\n".join(str(tuple(row)) for row in rows)
    places["webhook"] = json.dumps(webhook.received)
    assert webhook.received, "the notification reached the webhook"
    # `airflow dags test` writes the task logs to its console output: make sure they are in what we search
    assert "unsynced registered invoices to consider" in output and "Sync summary for" in output
    assert "synced" in places["table notifications"]

    leaks = [
        (where, secret[:6] + "...")
        for where, content in places.items()
        for secret in secrets
        if secret in content
    ]
    assert leaks == []


def test_sql_is_parameterised_everywhere() -> None:
    """No SQL text is built by string formatting in the package: every value travels as a parameter."""
    offenders = []
    for path in (ROOT / "include" / "invoice_sync").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in {"text", "execute", "exec_driver_sql"} and isinstance(
                node.args[0], ast.JoinedStr | ast.BinOp
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
