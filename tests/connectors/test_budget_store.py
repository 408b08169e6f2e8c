"""The shared budget store (Redis, SQLite, PostgreSQL) and the rate budget's use of it.

Windows here are long (1,000 s) so that the real clock the stores read cannot move a claim into another
window while a test runs; the waits the stores answer are checked against those window lengths.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from test_shared_budgets import REDIS_URL, _redis_or_skip, with_tables

from invoice_sync.connectors.http import SHARED_MARGIN_S, RateBudget
from invoice_sync.connectors.quickbooks.hook import QuickBooksHook
from invoice_sync.connectors.twinfield.hook import TwinfieldHook
from invoice_sync.connectors.xero.hook import XeroHook
from invoice_sync.connectors.yuki.hook import YukiHook
from invoice_sync.domain.errors import QuotaExceededError, RateLimitedError
from invoice_sync.domain.ports import BudgetStore, Reservation, SharedWindow
from invoice_sync.store.budgets import RedisBudgetStore, SqlBudgetStore
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import RateWindowRow, TokenRow
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox import xero as xero_sandbox
from invoice_sync_dev.sandbox import xero_fixtures
from invoice_sync_dev.sandbox import yuki as yuki_sandbox
from invoice_sync_dev.sandbox.server import start_in_thread

PERIOD_S = 1000.0


@pytest.fixture(params=["redis", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def budgets(request: pytest.FixtureRequest, tmp_path) -> Iterator[BudgetStore]:
    if request.param == "redis":
        _redis_or_skip()
        import redis

        yield RedisBudgetStore(redis.Redis.from_url(REDIS_URL), prefix=f"test:{uuid.uuid4().hex}:")
        return
    url = (
        f"sqlite:///{tmp_path / 'invoicing.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = make_engine(with_tables(url, RateWindowRow.__table__))
    yield SqlBudgetStore(engine)
    engine.dispose()


def test_claims_are_granted_in_arrival_order_across_windows(budgets: BudgetStore) -> None:
    """A full window passes claims on to the next one in the order they came: a tenant that keeps
    claiming queues behind one that waits, and nothing is reserved past the caller's longest wait."""
    window = SharedWindow("twinfield:client:fifo:minute", 2, PERIOD_S)
    waits = [budgets.reserve(window, 1, max_wait_s=1500) for _ in range(4)]
    assert all(w.granted for w in waits)
    assert [round(w.wait_s / PERIOD_S) for w in waits] == [0, 0, 1, 1]
    refused = budgets.reserve(window, 1, max_wait_s=1500)
    assert not refused.granted and round(refused.wait_s / PERIOD_S) == 2
    # The refusal reserved nothing: a caller that may wait longer still gets the third window's first unit.
    third = budgets.reserve(window, 2, max_wait_s=2500)
    assert third.granted and round(third.wait_s / PERIOD_S) == 2
    assert not budgets.reserve(window, 1, max_wait_s=2500).granted
    with pytest.raises(ValueError, match="can never fit"):
        budgets.reserve(window, 3, max_wait_s=1e9)


def test_windows_are_counted_per_key(budgets: BudgetStore) -> None:
    one = SharedWindow("xero:app:one:minute", 1, PERIOD_S)
    other = SharedWindow("xero:app:other:minute", 1, PERIOD_S)
    assert budgets.reserve(one, 1, max_wait_s=0).granted
    assert budgets.reserve(other, 1, max_wait_s=0).granted
    assert not budgets.reserve(one, 1, max_wait_s=0).granted


def test_concurrent_claims_never_overspend(budgets: BudgetStore) -> None:
    """Eight threads claim 40 units each from a window of 100: exactly 100 are granted."""
    window = SharedWindow("twinfield:client:race:minute", 100, PERIOD_S)
    granted: list[int] = []

    def claim() -> None:
        granted.append(sum(budgets.reserve(window, 1, max_wait_s=0).granted for _ in range(40)))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 100


def test_the_rate_budget_waits_through_its_sleep_and_gives_up_past_max_wait(budgets: BudgetStore) -> None:
    slept: list[float] = []
    window = SharedWindow("twinfield:client:wait:minute", 1, PERIOD_S)
    budget = RateBudget(label="t", sleep=slept.append, max_wait_s=1500, shared=[window], store=budgets)
    budget.acquire()
    assert slept == []
    budget.acquire()
    assert slept == [pytest.approx(PERIOD_S + 0.05 + SHARED_MARGIN_S, abs=5)]
    with pytest.raises(RateLimitedError, match="twinfield:client:wait:minute") as raised:
        budget.acquire()
    assert raised.value.retry_at is not None
    assert len(slept) == 1


def test_a_spent_shared_day_stops_the_run(budgets: BudgetStore) -> None:
    day = SharedWindow("xero:tenant:t1:day", 1, 86_400.0, daily=True)
    budget = RateBudget(label="t", sleep=lambda s: None, shared=[day], store=budgets)
    budget.acquire()
    with pytest.raises(QuotaExceededError, match="daily"):
        budget.acquire()


def test_the_hooks_wait_for_a_shared_window_renews_the_claim(
    budgets: BudgetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared window's wait goes through the hook's sleep, which renews the run's claim lease."""
    client = f"client-{uuid.uuid4().hex}"
    connection: dict[str, object] = {
        "conn_type": "twinfield",
        "host": "http://127.0.0.1:9",
        "login": client,
        "password": "s",
        "extra": {"credits_per_minute": 1, "minute_s": 10.0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_TWF_SHARED", json.dumps(connection))
    slept: list[float] = []
    renewed: list[int] = []
    hooks = [
        TwinfieldHook(
            twinfield_conn_id="twf_shared", office=office, sleep=slept.append, shared_budgets=budgets
        )
        for office in ("A", "B")
    ]
    hooks[1].keep_alive_while_waiting(lambda: renewed.append(1), every_s=4.0)
    hooks[0].budget.acquire()
    hooks[1].budget.acquire()  # another office, the same client id: waits for the next minute
    assert sum(slept) == pytest.approx(10.0 + 10.0 / 60 + SHARED_MARGIN_S, abs=0.5)
    assert len(renewed) == 3  # 4 s + 4 s + the rest, each followed by a renewal


def test_the_administrations_of_one_yuki_domain_share_its_day(
    budgets: BudgetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Yuki counts calls per domain, for every administration its access key reaches: two tasks on two
    administrations stop together when the domain's day is spent, and another key's day is untouched."""
    key = f"key-{uuid.uuid4().hex}"
    for conn_id, access_key in (("yuki_one", key), ("yuki_two", key), ("yuki_other", f"other-{key}")):
        connection = {"conn_type": "yuki", "host": "http://127.0.0.1:9", "password": access_key}
        connection["extra"] = {"daily_limit": 3}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    first, second = (
        YukiHook(yuki_conn_id=conn_id, administration=name, shared_budgets=budgets)
        for conn_id, name in (("yuki_one", "North"), ("yuki_two", "South"))
    )
    for hook in (first, second, first):
        hook.budget.acquire()
    with pytest.raises(QuotaExceededError, match="daily"):
        second.budget.acquire()
    assert key not in repr(first.budget._shared)  # only a digest of the access key is kept
    YukiHook(yuki_conn_id="yuki_other", administration="West", shared_budgets=budgets).budget.acquire()


def test_tasks_that_follow_each_other_on_one_quickbooks_company_share_its_second(
    budgets: BudgetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QuickBooks sends no rate headers, so each task starts with an empty count of the company's second:
    a night whose tasks followed each other on one company drew 429s and a minute's wait each. With a
    store the second is shared per company and app, at half the limit per window (Intuit's slides), and
    another company's is untouched."""
    realm = uuid.uuid4().hex
    connection = {"conn_type": "quickbooks", "host": "http://127.0.0.1:9", "login": "app", "password": "-"}
    # A "second" of 30 s (within a task's longest wait), 4 requests in any of them.
    second_s = 30.0
    connection["extra"] = {"minute_s": 60 * second_s, "requests_per_second": 4}
    monkeypatch.setenv("AIRFLOW_CONN_QBO_SHARED", json.dumps(connection))
    slept: list[float] = []

    def task(realm_id: str) -> QuickBooksHook:
        return QuickBooksHook(
            quickbooks_conn_id="qbo_shared", realm_id=realm_id, shared_budgets=budgets, sleep=slept.append
        )

    first, second = task(realm), task(realm)
    first.budget.acquire()
    first.budget.acquire()
    assert slept == []
    second.budget.acquire()  # its own count is empty; the company's shared second is not
    assert sum(slept) == pytest.approx(second_s + SHARED_MARGIN_S, abs=1.0)
    task(f"other-{realm}").budget.acquire()
    assert sum(slept) == pytest.approx(second_s + SHARED_MARGIN_S, abs=1.0)


def test_a_unit_of_a_shared_window_is_reserved_once_the_token_is_in_hand(
    tmp_path, monkeypatch: pytest.MonkeyPatch, builders
) -> None:
    """A token refresh can wait seconds on another process's. A unit reserved before it reaches the tool
    in a later window than the one it was counted in: eight Xero processes whose first refresh queued for
    3.8 s drew eight 429s of the app minute that way."""
    events: list[str] = []

    class RecordingStore(SqlBudgetStore):
        def reserve(self, window: SharedWindow, cost: int, *, max_wait_s: float) -> Reservation:
            events.append("reserve")
            return super().reserve(window, cost, max_wait_s=max_wait_s)

    class RecordingVault(builders.vault):  # type: ignore[name-defined,misc]  # a class the fixture hands over
        def refresh(self, conn_id, refresher):
            events.append("token")
            return super().refresh(conn_id, refresher)

    url = with_tables(f"sqlite:///{tmp_path / 'invoicing.db'}", RateWindowRow.__table__)
    handle = start_in_thread()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_XERO_ORDER", json.dumps(xero_sandbox.demo_connection(handle.url)))
        hook = XeroHook(
            xero_conn_id="xero_order",
            vault=RecordingVault(),
            tenant_id=xero_fixtures.DEMO_TENANT_ID,
            shared_budgets=RecordingStore(make_engine(url)),
        )
        hook.get_all("TaxRates", "TaxRates", {})
    finally:
        handle.stop()
    assert events == ["token", "reserve"]


@pytest.mark.timeout(30)
def test_a_yuki_session_opens_with_the_day_and_the_session_in_one_sqlite_file(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authenticate spends one of the domain's calls. Reserved under the vault's lock, it waited on that
    lock's own transaction where both live in one SQLite file (the whole file is locked): the Yuki task of
    a chaos run hung there."""
    engine = make_engine(
        with_tables(f"sqlite:///{tmp_path / 'invoicing.db'}", RateWindowRow.__table__, TokenRow.__table__)
    )
    handle = start_in_thread()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_YUKI_ONE_FILE", json.dumps(yuki_sandbox.demo_connection(handle.url)))
        hook = YukiHook(
            yuki_conn_id="yuki_one_file",
            vault=SqlTokenVault(engine, keys=[Fernet.generate_key().decode()]),
            shared_budgets=SqlBudgetStore(engine),
        )
        assert hook.administrations()
    finally:
        handle.stop()
    assert hook.authentications == 1
    assert hook.budget.left().long is None  # counted in the file, not in the hook


def test_redis_is_chosen_when_configured_else_the_database(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from invoice_sync import config
    from invoice_sync.airflow.runtime import open_budgets
    from invoice_sync.store.repository import SyncStore

    monkeypatch.delenv(config.REDIS_URL_ENV, raising=False)
    assert config.redis_url(None) is None
    assert config.redis_url("amqp://guest@rabbit//") is None
    assert config.redis_url("redis://broker:6379/0") == "redis://broker:6379/0"
    store = SyncStore(make_engine(f"sqlite:///{tmp_path / 'invoicing.db'}"))
    # The celery provider's default broker (redis://redis:6379/0) counts only under the CeleryExecutor.
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert isinstance(open_budgets(store), SqlBudgetStore)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "redis://broker:6379/3")
    assert isinstance(open_budgets(store), RedisBudgetStore)
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "amqp://guest@rabbit//")
    assert isinstance(open_budgets(store), SqlBudgetStore)
    monkeypatch.setenv(config.REDIS_URL_ENV, "redis://elsewhere:6379/1")
    assert config.redis_url("redis://broker:6379/3") == "redis://elsewhere:6379/1"
    assert isinstance(open_budgets(store), RedisBudgetStore)
