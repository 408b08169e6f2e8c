"""The durable, process-safe token vault behind every OAuth connector.

Refresh tokens rotate: whoever spends one must store its successor before anyone else tries, or the
connection is dead and a person has to consent again. ``refresh`` therefore runs the HTTP refresh while
holding a write lock on the connection's row. The lock is taken with an UPDATE of ``lock_version``, which
locks the row on PostgreSQL and the database on SQLite, so the same code is single-flight on both.

Tokens are encrypted at rest with Fernet when a key is configured (``INVOICE_SYNC_FERNET_KEY``, else
Airflow's own ``AIRFLOW__CORE__FERNET_KEY``), the way Airflow keeps connection passwords. Without a key
they are stored as they are, as Airflow does without one. Encrypted values carry a ``fernet:`` prefix, so
tokens stored before a key was set stay readable and are encrypted on their next rotation.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoice_sync.config import token_key
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.ports import TokenSet
from invoice_sync.store.claims import utcnow
from invoice_sync.store.models import TokenRow

ENCRYPTED_PREFIX = "fernet:"


class TokenCipher:
    """Encrypts tokens for the ``sync_tokens`` table, and reads plain ones written before a key was set."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return ENCRYPTED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str | None) -> str | None:
        if value is None or not value.startswith(ENCRYPTED_PREFIX):
            return value
        if self._fernet is None:
            raise ConfigError(
                "the stored OAuth tokens are encrypted but no key is set: set INVOICE_SYNC_FERNET_KEY "
                "(or AIRFLOW__CORE__FERNET_KEY) to the key they were written with"
            )
        try:
            return self._fernet.decrypt(value.removeprefix(ENCRYPTED_PREFIX).encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "the stored OAuth tokens were encrypted with another key than INVOICE_SYNC_FERNET_KEY "
                "(or AIRFLOW__CORE__FERNET_KEY); restore that key or reconnect the integration"
            ) from None


class SqlTokenVault:
    """:param key: Fernet key for tokens at rest; ``None`` reads it from the environment (see above)."""

    def __init__(self, engine: Engine, *, key: str | None = None) -> None:
        self._engine = engine
        self._cipher = TokenCipher(key if key is not None else token_key())

    def load(self, conn_id: str) -> TokenSet | None:
        with Session(self._engine) as session:
            return self._token_set(session.get(TokenRow, conn_id))

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet:
        self._ensure_row(conn_id)
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(TokenRow)
                .where(TokenRow.conn_id == conn_id)
                .values(lock_version=TokenRow.lock_version + 1)
            )
            row = session.execute(select(TokenRow).where(TokenRow.conn_id == conn_id)).scalar_one()
            current = self._token_set(row)
            fresh = refresher(current)
            if fresh != current:
                row.access_token = self._cipher.seal(fresh.access_token)
                row.refresh_token = self._cipher.seal(fresh.refresh_token)
                row.expires_at = fresh.expires_at
                row.updated_at = utcnow()
            return fresh

    def _ensure_row(self, conn_id: str) -> None:
        with Session(self._engine) as session:
            if session.get(TokenRow, conn_id) is not None:
                return
        try:
            with Session(self._engine) as session, session.begin():
                session.add(TokenRow(conn_id=conn_id, lock_version=0, updated_at=utcnow()))
        except IntegrityError:
            pass  # another process created it first

    def _token_set(self, row: TokenRow | None) -> TokenSet | None:
        # An empty refresh token is a session that cannot be refreshed (Yuki), not a missing one.
        if row is None or not row.access_token or row.refresh_token is None or row.expires_at is None:
            return None
        access, refresh = self._cipher.open(row.access_token), self._cipher.open(row.refresh_token)
        assert access is not None and refresh is not None
        return TokenSet(access, refresh, row.expires_at)
