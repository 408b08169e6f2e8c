"""The durable, process-safe token vault behind every OAuth connector.

Refresh tokens rotate: whoever spends one must store its successor before anyone else tries, or the
connection is dead and a person has to consent again. ``refresh`` therefore runs the HTTP refresh while
holding a write lock on the connection's row. The lock is taken with an UPDATE of ``lock_version``, which
locks the row on PostgreSQL and the database on SQLite, so the same code is single-flight on both.

Tokens at rest are sealed with Fernet, the way Airflow keeps connection passwords, under the keys the
caller hands the vault: the Airflow layer hands it Airflow's own ``[core] fernet_key``
(:func:`invoice_sync.airflow.runtime.token_keys`), so there is one key to keep and to rotate. As in
Airflow, ``new,old`` seals with the first key and opens with any, and :meth:`SqlTokenVault.rotate`
reseals every stored token under the newest, after which the old key can go. Sealed values carry a
``fernet:`` prefix, so tokens stored in clear before a key was set stay readable and are sealed on
their next rotation.

Without a key, tokens are stored in clear only in a demo database (:mod:`invoice_sync.store.demo_mark`:
``make run`` on a fresh machine). Anywhere else ``refresh`` refuses with a :class:`ConfigError` saying
what to set, before the refresher runs: a refresh token spent at the tool but not stored would leave the
connection dead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoice_sync.deployment_secrets import FERNET_KEY_COMMAND
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.ports import TokenSet
from invoice_sync.store.claims import utcnow
from invoice_sync.store.demo_mark import is_demo_database
from invoice_sync.store.models import TokenRow

ENCRYPTED_PREFIX = "fernet:"
KEY_SETTING = (
    "Airflow's [core] fernet_key (AIRFLOW__CORE__FERNET_KEY, or AIRFLOW__CORE__FERNET_KEY_CMD / "
    "AIRFLOW__CORE__FERNET_KEY_SECRET, or fernet_key, fernet_key_cmd or fernet_key_secret in airflow.cfg)"
)
"""Where the vault's keys come from, in every message about them: Airflow's, wherever Airflow reads them."""
SET_A_KEY = f"set {KEY_SETTING}; generate a key with: {FERNET_KEY_COMMAND}"


class TokenCipher:
    """Seals tokens for the ``sync_tokens`` table under the first of ``keys`` and opens them under any
    (rotation: ``new,old``); reads plain ones written before a key was set.

    :raises ConfigError: one of ``keys`` is not a Fernet key (naming which one, never its value).
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([_fernet(key, n) for n, key in enumerate(keys, 1)]) if keys else None

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return ENCRYPTED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str | None, conn_id: str) -> str | None:
        if value is None or not value.startswith(ENCRYPTED_PREFIX):
            return value
        fernet = self._sealed_with_a_key(conn_id)
        try:
            return fernet.decrypt(value.removeprefix(ENCRYPTED_PREFIX).encode()).decode()
        except InvalidToken:
            raise ConfigError(_unopenable(conn_id)) from None

    def reseal(self, value: str | None, conn_id: str) -> str | None:
        """``value`` sealed under the newest key: sealed ones re-encrypted, plain ones sealed."""
        if value is None or not value.startswith(ENCRYPTED_PREFIX):
            return None if value is None else self.seal(value)
        fernet = self._sealed_with_a_key(conn_id)
        try:
            return ENCRYPTED_PREFIX + fernet.rotate(value.removeprefix(ENCRYPTED_PREFIX).encode()).decode()
        except InvalidToken:
            raise ConfigError(_unopenable(conn_id)) from None

    def _sealed_with_a_key(self, conn_id: str) -> MultiFernet:
        if self._fernet is None:
            raise ConfigError(
                f"the stored OAuth tokens of connection {conn_id!r} are encrypted but no key is set: "
                f"set {KEY_SETTING} to the key they were written with"
            )
        return self._fernet


def _fernet(key: str, n: int) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:  # binascii.Error included
        raise ConfigError(
            f"key {n} of Airflow's [core] fernet_key is not a Fernet key (32 url-safe base64-encoded "
            f"bytes; keys are separated by commas, newest first); generate one with: {FERNET_KEY_COMMAND}"
        ) from None


def _unopenable(conn_id: str) -> str:
    return (
        f"the stored OAuth tokens of connection {conn_id!r} were encrypted with a key that is not in "
        "Airflow's [core] fernet_key; add that key after the new one (new,old) or reconnect the integration"
    )


@dataclass
class Rotation:
    """What :meth:`SqlTokenVault.rotate` did."""

    resealed: int = 0
    """Connections whose stored tokens are now sealed under the newest key."""
    unopenable: dict[str, str] = field(default_factory=dict)
    """conn_id -> why its tokens were left as they were (no configured key opens them)."""


class SqlTokenVault:
    """:param keys: Fernet keys for tokens at rest, newest first; none: tokens are stored in clear, in a
    demo database only (see above)."""

    def __init__(self, engine: Engine, *, keys: Sequence[str] = ()) -> None:
        self._engine = engine
        self._cipher = TokenCipher(keys)

    def load(self, conn_id: str) -> TokenSet | None:
        with Session(self._engine) as session:
            return self._token_set(session.get(TokenRow, conn_id))

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet:
        """:raises ConfigError: no key and not a demo database (before ``refresher`` runs)."""
        self._refuse_clear_storage(conn_id)
        self._ensure_row(conn_id)
        with Session(self._engine) as session, session.begin():
            row = self._locked(session, conn_id)
            assert row is not None  # _ensure_row made it; rows are never deleted
            current = self._token_set(row)
            fresh = refresher(current)
            if fresh != current:
                row.access_token = self._cipher.seal(fresh.access_token)
                row.refresh_token = self._cipher.seal(fresh.refresh_token)
                row.expires_at = fresh.expires_at
                row.updated_at = utcnow()
            return fresh

    def rotate(self) -> Rotation:
        """Reseal every stored token (access and refresh) under the newest key: after Airflow's fernet_key
        became ``new,old``, so that ``old`` can be dropped. Each row under the lock ``refresh`` takes, in
        a transaction of its own: a refresh never overwrites a resealed row with old ciphertext, and a row
        no key opens is left whole while the others are resealed.

        :raises ConfigError: no key is configured.
        """
        if not self._cipher.has_key:
            raise ConfigError(f"no key to seal the stored OAuth tokens with: {SET_A_KEY}")
        with Session(self._engine) as session:
            conn_ids = session.scalars(select(TokenRow.conn_id).order_by(TokenRow.conn_id)).all()
        rotation = Rotation()
        for conn_id in conn_ids:
            try:
                rotation.resealed += self._reseal(conn_id)
            except ConfigError as exc:
                rotation.unopenable[conn_id] = exc.message
        return rotation

    def _reseal(self, conn_id: str) -> bool:
        with Session(self._engine) as session, session.begin():
            row = self._locked(session, conn_id)
            if row is None or (row.access_token is None and row.refresh_token is None):
                return False
            access = self._cipher.reseal(row.access_token, conn_id)
            refresh = self._cipher.reseal(row.refresh_token, conn_id)
            row.access_token, row.refresh_token = access, refresh
            return True

    def _refuse_clear_storage(self, conn_id: str) -> None:
        if self._cipher.has_key or is_demo_database(self._engine):
            return
        raise ConfigError(
            f"the OAuth tokens of connection {conn_id!r} would be stored in clear: no Fernet key is "
            f"configured, and outside the demo's database tokens are only stored encrypted; {SET_A_KEY}"
        )

    @staticmethod
    def _locked(session: Session, conn_id: str) -> TokenRow | None:
        """The connection's row, write-locked until the session's transaction ends."""
        session.execute(
            update(TokenRow).where(TokenRow.conn_id == conn_id).values(lock_version=TokenRow.lock_version + 1)
        )
        return session.execute(select(TokenRow).where(TokenRow.conn_id == conn_id)).scalar_one_or_none()

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
        access = self._cipher.open(row.access_token, row.conn_id)
        refresh = self._cipher.open(row.refresh_token, row.conn_id)
        assert access is not None and refresh is not None
        return TokenSet(access, refresh, row.expires_at)
