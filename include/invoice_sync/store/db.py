"""Where the invoicing database is and how to open it.

``INVOICE_SYNC_DB_URL`` names it (see :mod:`invoice_sync.config`, which reads every environment variable).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from invoice_sync.config import database_url

__all__ = ["database_url", "make_engine", "shared_engine"]


def make_engine(url: str | None = None, *, flush_each_commit: bool = True) -> Engine:
    """An engine tuned for many short transactions from several processes.

    SQLite gets WAL mode and a generous busy timeout, because Airflow runs mapped tasks in parallel
    processes that all write ledger rows.

    :param flush_each_commit: False: a commit returns before it reaches the disk (SQLite's
        ``synchronous=NORMAL`` in WAL mode, PostgreSQL's ``synchronous_commit=off``). Such a commit is
        visible and atomic at once, and the next flushed commit makes it durable with itself; a crash of
        the machine (not of our process) in between loses it, and never corrupts anything. Only for
        writes whose loss the sync repairs (see :meth:`~invoice_sync.store.repository.SyncStore.record_all`).
    """
    url = url or database_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            if not flush_each_commit:
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    options = {} if flush_each_commit else {"connect_args": {"options": "-c synchronous_commit=off"}}
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4, **options)


@lru_cache(maxsize=8)
def shared_engine(url: str) -> Engine:
    """One engine (and pool) per URL and process."""
    return make_engine(url)
