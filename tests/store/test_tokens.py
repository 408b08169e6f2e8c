"""The token vault: rotating refresh tokens are spent exactly once, however many workers need a token;
tokens at rest are sealed under the newest of the given keys, opened under any, and resealed by ``rotate``;
without a key they are stored in clear only in a demo database."""

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

from invoice_sync.deployment_secrets import FERNET_KEY_COMMAND
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.ports import TokenSet
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import TokenRow
from invoice_sync.store.tokens import Rotation, SqlTokenVault

CONN = "exact_demo"
KEYS = (Fernet.generate_key().decode(),)
"""The tests' databases are no demo's: tokens are only stored there under a key."""


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
    vault = SqlTokenVault(store.engine, keys=KEYS)
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
    vault = SqlTokenVault(store.engine, keys=KEYS)
    _store_tokens(store.engine, expired(4))

    def dead(_current: TokenSet | None) -> TokenSet:
        raise RuntimeError("invalid_grant")

    with pytest.raises(RuntimeError):
        vault.refresh(CONN, dead)
    kept = vault.load(CONN)
    assert (kept.access_token, kept.refresh_token) == ("access-4", "refresh-4")


def test_threads_refreshing_at_once_spend_the_refresh_token_exactly_once(store):
    _store_tokens(store.engine, expired())
    vault = SqlTokenVault(store.engine, keys=KEYS)
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
    vault = SqlTokenVault(store.engine, keys=KEYS)
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
        SqlTokenVault(engine, keys=KEYS).refresh(CONN, SingleUseRefresher(SharedLog()))
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
    assert SqlTokenVault(engine, keys=KEYS).load(CONN).refresh_token == "refresh-1"
    engine.dispose()


def _store_tokens(engine, tokens: TokenSet) -> None:
    with Session(engine) as session, session.begin():
        row = session.get(TokenRow, CONN) or TokenRow(conn_id=CONN, lock_version=0)
        row.access_token = tokens.access_token
        row.refresh_token = tokens.refresh_token
        row.expires_at = tokens.expires_at
        row.updated_at = datetime.now(UTC)
        session.add(row)


def _raw(engine) -> dict[str, tuple[str | None, str | None, int]]:
    """conn_id -> (access token, refresh token, lock_version) as stored."""
    with Session(engine) as session:
        rows = session.scalars(select(TokenRow))
        return {row.conn_id: (row.access_token, row.refresh_token, row.lock_version) for row in rows}


def _key() -> str:
    return Fernet.generate_key().decode()


LATER = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def _tokens(name: str) -> TokenSet:
    return TokenSet(f"access-{name}", f"refresh-{name}", LATER)


def test_tokens_are_sealed_at_rest_and_plain_ones_stay_readable(store):
    """With a key, the table holds no usable token; tokens written in clear before a key was set stay
    readable and are sealed on their next rotation; a wrong or missing key is a clear configuration
    error naming the connection."""
    _store_tokens(store.engine, _tokens("plain"))  # written in clear, before a key was set
    vault = SqlTokenVault(store.engine, keys=KEYS)
    assert vault.load(CONN) == _tokens("plain")
    sealed = vault.refresh("sealed", lambda _: _tokens("secret-1"))
    vault.refresh(CONN, lambda _: _tokens("plain-2"))
    stored = _raw(store.engine)
    for conn_id, secret in (("sealed", "secret-1"), (CONN, "plain-2")):
        access, refresh, _ = stored[conn_id]
        assert access.startswith("fernet:") and secret not in access
        assert refresh.startswith("fernet:") and secret not in refresh
    assert vault.load("sealed") == sealed

    with pytest.raises(ConfigError, match="'sealed' were encrypted with a key that is not in"):
        SqlTokenVault(store.engine, keys=(_key(),)).load("sealed")
    with pytest.raises(ConfigError, match="'sealed' are encrypted but no key is set"):
        SqlTokenVault(store.engine).load("sealed")


def test_new_old_keys_seal_with_the_first_and_open_with_either(store):
    """Airflow's rotation form, ``new,old``: what the old key sealed still opens, what is stored now is
    sealed under the new one."""
    new, old = _key(), _key()
    before = SqlTokenVault(store.engine, keys=(old,)).refresh("before", lambda _: _tokens("before"))
    rotating = SqlTokenVault(store.engine, keys=(new, old))
    assert rotating.load("before") == before
    after = rotating.refresh("after", lambda _: _tokens("after"))

    assert SqlTokenVault(store.engine, keys=(new,)).load("after") == after
    with pytest.raises(ConfigError, match="'after' were encrypted with a key that is not in"):
        SqlTokenVault(store.engine, keys=(old,)).load("after")
    with pytest.raises(ConfigError, match="'before' were encrypted with a key that is not in"):
        SqlTokenVault(store.engine, keys=(new,)).load("before")  # until rotate reseals it


def test_rotate_reseals_every_stored_token_so_the_old_key_can_go(store):
    """``rotate`` under ``new,old`` reseals tokens sealed under either key and those stored in clear
    (a session without a refresh token too), each under the row lock ``refresh`` takes; a row no key
    opens is named and left whole, the others are resealed all the same; a row without tokens is no
    token."""
    new, old, lost = _key(), _key(), _key()
    expected = {
        "old": SqlTokenVault(store.engine, keys=(old,)).refresh("old", lambda _: _tokens("old")),
        "new": SqlTokenVault(store.engine, keys=(new,)).refresh("new", lambda _: _tokens("new")),
        "session": SqlTokenVault(store.engine, keys=(old,)).refresh(
            "session", lambda _: TokenSet("yuki-session", "", LATER)
        ),
    }
    _store_tokens(store.engine, _tokens("plain"))  # in clear, from before any key
    expected[CONN] = SqlTokenVault(store.engine, keys=KEYS).load(CONN)
    SqlTokenVault(store.engine, keys=(lost,)).refresh("lost", lambda _: _tokens("lost"))
    with Session(store.engine) as session, session.begin():
        session.add(TokenRow(conn_id="empty", lock_version=0, updated_at=datetime.now(UTC)))
    before = _raw(store.engine)

    rotation = SqlTokenVault(store.engine, keys=(new, old)).rotate()

    assert rotation.resealed == 4
    assert list(rotation.unopenable) == ["lost"]
    assert "connection 'lost'" in rotation.unopenable["lost"]
    after = _raw(store.engine)
    assert after["lost"] == before["lost"] and after["empty"][:2] == (None, None)
    only_new = SqlTokenVault(store.engine, keys=(new,))
    for conn_id, tokens in expected.items():
        assert only_new.load(conn_id) == tokens, conn_id
        assert after[conn_id][0].startswith("fernet:") and after[conn_id][1].startswith("fernet:")
        assert after[conn_id][2] == before[conn_id][2] + 1, f"{conn_id} resealed under the row lock"

    with pytest.raises(
        ConfigError, match=r"no key to seal the stored OAuth tokens with: set Airflow's \[core\]"
    ):
        SqlTokenVault(store.engine).rotate()


def test_rotate_waits_for_a_refresh_in_progress_and_keeps_its_tokens(store):
    """A refresh holds the connection's row; ``rotate`` waits for it, then reseals what it stored, never
    the tokens it read before (which would bring a spent refresh token back)."""
    new, old = _key(), _key()
    SqlTokenVault(store.engine, keys=(old,)).refresh(CONN, lambda _: expired(0))
    vault = SqlTokenVault(store.engine, keys=(new, old))
    refreshing, release = threading.Event(), threading.Event()

    def slow_refresh(_current: TokenSet | None) -> TokenSet:
        refreshing.set()
        assert release.wait(30)
        return _tokens("1")

    rotations: list[Rotation] = []
    refresher = threading.Thread(target=vault.refresh, args=(CONN, slow_refresh))
    rotator = threading.Thread(target=lambda: rotations.append(vault.rotate()))
    refresher.start()
    assert refreshing.wait(30)
    rotator.start()
    rotator.join(timeout=1.0)
    waited = rotator.is_alive()
    release.set()
    refresher.join(timeout=60)
    rotator.join(timeout=60)

    assert waited, "rotate did not wait for the refresh holding the row"
    assert [rotation.resealed for rotation in rotations] == [1]
    assert SqlTokenVault(store.engine, keys=(new,)).load(CONN).refresh_token == "refresh-1"


def test_without_a_key_tokens_are_stored_in_clear_only_in_a_demo_database(store):
    """No key and not the demo's database: the refresh is refused, saying what to set, before the tool is
    asked (a refresh token spent but not stored would leave the connection dead) and before anything is
    written. Once the demo has marked the database, tokens are stored in clear as the demo always did."""
    from invoice_sync_dev.sandbox.demo import mark_as_demo

    vault = SqlTokenVault(store.engine)
    asked: list[TokenSet | None] = []

    def refresher(current: TokenSet | None) -> TokenSet:
        asked.append(current)
        return _tokens("1")

    with pytest.raises(ConfigError) as refused:
        vault.refresh(CONN, refresher)
    message = refused.value.message
    assert "connection 'exact_demo' would be stored in clear: no Fernet key is configured" in message
    assert (
        "set Airflow's [core] fernet_key (AIRFLOW__CORE__FERNET_KEY, or AIRFLOW__CORE__FERNET_KEY_CMD"
        in message
    )
    assert (
        "AIRFLOW__CORE__FERNET_KEY_SECRET" in message
        and f"generate a key with: {FERNET_KEY_COMMAND}" in message
    )
    assert asked == [] and _raw(store.engine) == {}

    with store.engine.begin() as conn:
        mark_as_demo(conn, by="test")
    assert vault.refresh(CONN, refresher) == _tokens("1")
    assert _raw(store.engine)[CONN][:2] == ("access-1", "refresh-1")


def test_a_key_that_is_no_fernet_key_is_named_never_shown(store):
    with pytest.raises(
        ConfigError, match=r"key 2 of Airflow's \[core\] fernet_key is not a Fernet key"
    ) as bad:
        SqlTokenVault(store.engine, keys=(_key(), "not-a-fernet-key-at-all"))
    assert "not-a-fernet-key-at-all" not in bad.value.message
