"""The token vault: rotating refresh tokens are spent exactly once, however many workers need a token."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.ports import TokenSet
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import TokenRow
from invoice_sync.store.tokens import SqlTokenVault

CONN = "exact_demo"


class SingleUseRefresher:
    """What a connector's refresher does against a tool whose refresh tokens are single-use.

    Keeps the stored tokens while they are valid; otherwise spends the stored refresh token (slowly, to
    widen any race) and returns its successor. ``spent`` lists every refresh token sent to the "tool".
    """

    def __init__(self, spent: list[str] | None = None, lock: threading.Lock | None = None) -> None:
        self.spent = spent if spent is not None else []
        self.lock = lock or threading.Lock()

    def __call__(self, current: TokenSet | None) -> TokenSet:
        now = datetime.now(UTC)
        if current is not None and current.expires_at > now + timedelta(seconds=30):
            return current
        refresh_token = current.refresh_token if current else "consent-token"
        time.sleep(0.05)
        with self.lock:
            self.spent.append(refresh_token)
            generation = len(self.spent)
        return TokenSet(f"access-{generation}", f"refresh-{generation}", now + timedelta(minutes=10))


def expired(generation: int = 0) -> TokenSet:
    return TokenSet(f"access-{generation}", f"refresh-{generation}", datetime.now(UTC) - timedelta(minutes=1))


def test_load_and_refresh(store):
    vault = SqlTokenVault(store.engine)
    assert vault.load(CONN) is None
    refresher = SingleUseRefresher()

    first = vault.refresh(CONN, refresher)
    assert refresher.spent == ["consent-token"]
    assert vault.load(CONN) == first
    assert vault.load(CONN).expires_at.tzinfo is not None  # aware on SQLite too

    assert vault.refresh(CONN, refresher) == first  # still valid: nothing spent, nothing changed
    assert refresher.spent == ["consent-token"]

    _store_tokens(store.engine, expired(1))
    second = vault.refresh(CONN, refresher)
    assert refresher.spent == ["consent-token", "refresh-1"]
    assert vault.load(CONN) == second
    assert vault.load("other_conn") is None


def test_a_failing_refresher_keeps_the_stored_tokens(store):
    vault = SqlTokenVault(store.engine)
    _store_tokens(store.engine, expired(4))

    def dead(_current: TokenSet | None) -> TokenSet:
        raise RuntimeError("invalid_grant")

    with pytest.raises(RuntimeError):
        vault.refresh(CONN, dead)
    kept = vault.load(CONN)
    assert (kept.access_token, kept.refresh_token) == ("access-4", "refresh-4")


def test_threads_refreshing_at_once_spend_the_refresh_token_exactly_once(store):
    _store_tokens(store.engine, expired())
    vault = SqlTokenVault(store.engine)
    refresher = SingleUseRefresher()
    workers = 8
    barrier = threading.Barrier(workers)
    got: list[TokenSet | Exception] = []

    def worker() -> None:
        barrier.wait()
        try:
            got.append(vault.refresh(CONN, refresher))
        except Exception as exc:  # noqa: BLE001 - reported by the asserts
            got.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert refresher.spent == ["refresh-0"]
    assert len(got) == workers and all(isinstance(t, TokenSet) for t in got), got
    assert {t.access_token for t in got} == {"access-1"}
    assert vault.load(CONN).refresh_token == "refresh-1"


def test_the_refresh_lock_works_without_a_row_yet(store):
    """Many first-ever refreshes (no row stored) still spend the consent's token once."""
    vault = SqlTokenVault(store.engine)
    refresher = SingleUseRefresher()
    barrier = threading.Barrier(5)

    def worker() -> None:
        barrier.wait()
        vault.refresh(CONN, refresher)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert refresher.spent == ["consent-token"]


def _refresh_in_process(url: str, barrier, spent) -> None:
    class SharedLog(list):  # type: ignore[type-arg]  # a plain list of log lines
        def append(self, item: str) -> None:
            spent.put(item)
            super().append(item)

    engine = make_engine(url)
    try:
        barrier.wait(timeout=30)
        SqlTokenVault(engine).refresh(CONN, SingleUseRefresher(SharedLog()))
    finally:
        engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_refreshing_at_once_spend_the_refresh_token_exactly_once(db, request):
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    from invoice_sync.store.migrate import prepare

    engine = make_engine(url)
    prepare(engine)
    _store_tokens(engine, expired())
    context = multiprocessing.get_context("fork")
    workers = 5
    barrier, spent = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=_refresh_in_process, args=(url, barrier, spent)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * workers
    tokens = []
    while True:
        try:
            tokens.append(spent.get(timeout=0.5))
        except queue.Empty:
            break
    assert tokens == ["refresh-0"]
    assert SqlTokenVault(engine).load(CONN).refresh_token == "refresh-1"
    engine.dispose()


def _store_tokens(engine, tokens: TokenSet) -> None:
    with Session(engine) as session, session.begin():
        row = session.get(TokenRow, CONN) or TokenRow(conn_id=CONN, lock_version=0)
        row.access_token = tokens.access_token
        row.refresh_token = tokens.refresh_token
        row.expires_at = tokens.expires_at
        row.updated_at = datetime.now(UTC)
        session.add(row)


def test_tokens_are_encrypted_at_rest_when_a_key_is_set(store, monkeypatch):
    """With a Fernet key, the table holds no usable token; tokens written before the key stay readable
    and are sealed on their next rotation; a wrong or missing key is a clear configuration error."""
    expires = datetime.now(UTC) + timedelta(minutes=10)
    monkeypatch.delenv("INVOICE_SYNC_FERNET_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__FERNET_KEY", raising=False)
    SqlTokenVault(store.engine).refresh("plain", lambda _: TokenSet("access-plain", "refresh-plain", expires))

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("INVOICE_SYNC_FERNET_KEY", key)
    vault = SqlTokenVault(store.engine)
    assert vault.load("plain") == TokenSet("access-plain", "refresh-plain", expires)  # written before the key
    vault.refresh("sealed", lambda _: TokenSet("access-secret-1", "refresh-secret-1", expires))
    vault.refresh("plain", lambda _: TokenSet("access-plain-2", "refresh-plain-2", expires))
    with Session(store.engine) as session:
        stored = {row.conn_id: row for row in session.scalars(select(TokenRow))}
    for conn_id, secret in (("sealed", "secret-1"), ("plain", "plain-2")):
        assert (
            stored[conn_id].access_token.startswith("fernet:") and secret not in stored[conn_id].access_token
        )
        assert (
            stored[conn_id].refresh_token.startswith("fernet:")
            and secret not in stored[conn_id].refresh_token
        )
    assert vault.load("sealed") == TokenSet("access-secret-1", "refresh-secret-1", expires)

    with pytest.raises(ConfigError, match="another key"):
        SqlTokenVault(store.engine, key=Fernet.generate_key().decode()).load("sealed")
    monkeypatch.delenv("INVOICE_SYNC_FERNET_KEY")
    with pytest.raises(ConfigError, match="no key is set"):
        SqlTokenVault(store.engine).load("sealed")
