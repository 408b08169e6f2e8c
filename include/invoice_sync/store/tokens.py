"""The durable, process-safe token vault behind every OAuth connector.

Refresh tokens rotate: whoever spends one must store its successor before anyone else tries, or the
connection is dead and a person has to consent again. ``refresh`` therefore runs the HTTP refresh while
holding a write lock on the connection's row. The lock is taken with an UPDATE of ``lock_version``, which
locks the row on PostgreSQL and the database on SQLite, so the same code is single-flight on both.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoice_sync.connectors.base import TokenSet
from invoice_sync.store.claims import utcnow
from invoice_sync.store.models import TokenRow


class SqlTokenVault:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, conn_id: str) -> TokenSet | None:
        with Session(self._engine) as session:
            return _token_set(session.get(TokenRow, conn_id))

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet:
        self._ensure_row(conn_id)
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(TokenRow)
                .where(TokenRow.conn_id == conn_id)
                .values(lock_version=TokenRow.lock_version + 1)
            )
            row = session.execute(select(TokenRow).where(TokenRow.conn_id == conn_id)).scalar_one()
            current = _token_set(row)
            fresh = refresher(current)
            if fresh != current:
                row.access_token = fresh.access_token
                row.refresh_token = fresh.refresh_token
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


def _token_set(row: TokenRow | None) -> TokenSet | None:
    if row is None or not row.access_token or not row.refresh_token or row.expires_at is None:
        return None
    return TokenSet(row.access_token, row.refresh_token, row.expires_at)
