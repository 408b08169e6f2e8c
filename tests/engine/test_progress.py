"""What a task log tells the person watching a run: progress per page with the tool's budget and the time
left, a table at the end of each integration's run, and (at task start) a connection filled in halfway
named for the integration it belongs to, while the task's other integrations still sync."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from invoice_sync.connectors.http import RateBudget, Window
from invoice_sync.connectors.registry import connector_for
from invoice_sync.domain.ports import BudgetLeft
from invoice_sync.store.models import IntegrationRow
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection
from invoice_sync_dev.sandbox.twinfield import demo_connection as twinfield_connection

PROGRESS = re.compile(
    r"Atelier Demo BV \(exact_online, integration 1\): (?P<done>\d+)/(?P<total>\d+) invoices done "
    r"\(booked (?P<booked>\d+), rejected \d+, deferred \d+\), "
    r"budget: (?P<minute>[\d,]+) calls left this minute, (?P<day>[\d,]+) today, "
    r"about (?P<eta>\d+ s|\d+ min \d+ s) left$"
)


@pytest.fixture(autouse=True)
def airflow_logging_configured() -> None:
    """Airflow sets up logging the first time a process reads a connection, replacing the root logger's
    handlers (caplog's among them); let that happen before the test, not in the middle of it."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    with contextlib.suppress(AirflowNotFoundException):
        BaseHook.get_connection("no_such_connection")


def engine_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "invoice_sync.engine.sync"]


def test_each_page_logs_done_of_total_budget_left_and_time_left(run, demo, caplog):
    caplog.set_level(logging.INFO, logger="invoice_sync.engine.sync")
    report = run(1, batch_size=5)

    matches = [m for line in engine_lines(caplog) if (m := PROGRESS.match(line))]
    assert len(matches) >= 3, engine_lines(caplog)
    done = [int(m["done"]) for m in matches]
    total = {int(m["total"]) for m in matches}
    assert done == sorted(done) and done[0] == 5 and len(total) == 1 and done[-1] == total.pop()
    assert int(matches[-1]["booked"]) == report.booked
    # The budget is what Exact's headers said; it only goes down within one run.
    minutes = [int(m["minute"].replace(",", "")) for m in matches]
    days = [int(m["day"].replace(",", "")) for m in matches]
    assert days == sorted(days, reverse=True) and days[0] > days[-1]
    assert all(0 <= n <= 1_000 for n in minutes)
    assert matches[-1]["eta"] == "0 s"


def test_the_end_of_each_run_logs_a_table_of_its_counts(run, demo, caplog):
    caplog.set_level(logging.INFO, logger="invoice_sync.engine.sync")
    report = run(1)

    table = next(line for line in engine_lines(caplog) if "run summary" in line)
    assert table.startswith("Atelier Demo BV (exact_online, integration 1): run summary\n")
    rows = dict(re.findall(r"^  (\S.*?\S)  +(\S.*)$", table, flags=re.MULTILINE))
    assert int(rows["booked"]) == report.booked > 0
    assert int(rows["customers created"]) == report.customers_created > 0
    assert report.rejected and all(
        int(rows[f"rejected ({error_class})"]) == n for error_class, n in report.rejected.items()
    )
    assert int(rows["skipped (before cutover)"]) == report.skipped["before_cutover"] == 1
    assert int(rows["deferred to the next run"]) == 0
    assert "would be sent (dry run)" not in rows
    assert re.fullmatch(r"\d+ s", rows["duration"])


def test_a_missing_connection_field_stops_only_its_own_integration(run, demo, store, monkeypatch, caplog):
    """The connector task of three Exact integrations, one of which uses a connection without its client
    secret: that one fails at task start naming the field (and each of its invoices is refused with that
    text), the other two are booked, the task fails."""
    from airflow.sdk.exceptions import AirflowFailException

    from invoice_sync.airflow.operators import SyncIntegrationsOperator

    broken = exact_online_connection(run.handle.url)
    del broken["password"]
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_BROKEN", json.dumps(broken))
    with Session(store.engine) as session, session.begin():
        session.execute(update(IntegrationRow).where(IntegrationRow.id == 2).values(conn_id="exact_broken"))
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    context = {
        "dag_run": SimpleNamespace(dag_id="invoice_sync_manual", run_id="manual__test"),
        "ti": SimpleNamespace(task_id="sync_exact_online", map_index=0, try_number=1),
    }
    operator = SyncIntegrationsOperator(
        task_id="sync_exact_online", tool="exact_online", integration_ids=[1, 2, 3]
    )

    caplog.set_level(logging.INFO)
    message = "Exact Online connection exact_broken: missing Client secret (password); fill it in under Admin"
    with pytest.raises(AirflowFailException, match=re.escape(message)):
        operator.execute(context)

    assert any(message in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    ledger = run.ledger()
    assert {row.integration_id for row in ledger.values()} == {1, 2, 3}
    assert all(row.state in ("booked", "rejected") for row in ledger.values())
    assert sum(row.state == "booked" for row in ledger.values()) > 0
    # Nothing of the broken one was pushed; each of its invoices says why (summary, bell and page read it).
    broken_rows = [row for row in ledger.values() if row.integration_id == 2]
    assert broken_rows and all(
        (row.state, row.error_class) == ("rejected", "config") and message in (row.error_message or "")
        for row in broken_rows
    )


def test_budget_left_is_what_the_windows_still_hold() -> None:
    now = [1_000.0]
    announced = RateBudget(label="announced", clock=lambda: now[0])
    assert announced.left() == BudgetLeft(None, None)  # nothing said yet
    announced.observe(short=Window(37, 1_030.0), long=Window(4_812, 50_000.0))
    assert announced.left() == BudgetLeft(37, 4_812)
    now[0] = 1_031.0  # the minute passed: its new size comes with the next answer
    assert announced.left() == BudgetLeft(None, 4_812)

    counted = RateBudget(label="counted", clock=lambda: now[0], short_limit=1_000, long_limit=5_000)
    assert counted.left() == BudgetLeft(1_000, 5_000)  # a fresh window is full
    counted.acquire(3)
    assert counted.left() == BudgetLeft(997, 4_997)


def test_budget_wording() -> None:
    assert BudgetLeft(37, 4812).describe() == "37 calls left this minute, 4,812 today"
    assert BudgetLeft(None, 812).describe() == "812 calls left today"
    assert BudgetLeft(1000, None, "credits").describe() == "1,000 credits left this minute"
    assert BudgetLeft(None, None).describe() == "not announced yet"


def test_twinfield_counts_credits(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget's unit comes from the tool's hook; the numbers from the connection's credit allowance."""
    from invoice_sync_dev.sandbox.demo import INTEGRATIONS, seed

    seed(store.engine, tools=("twinfield",))
    demo = next(i for i in INTEGRATIONS if i.tool == "twinfield")
    connection = twinfield_connection("http://127.0.0.1:9")
    connection["extra"]["credits_per_minute"] = 600  # type: ignore[index]  # the demo extra is a dict
    monkeypatch.setenv("AIRFLOW_CONN_TWINFIELD_DEMO", json.dumps(connection))
    connector = connector_for(store.integration(demo.id), SqlTokenVault(store.engine))
    assert connector.budget_left.describe() == "600 credits left this minute"
