"""Where the invoicing database is and how to open it.

``INVOICE_SYNC_DB_URL`` names it (PostgreSQL in production); the embedded default is a SQLite file in
the project's ``var/`` directory, so ``make run`` needs nothing installed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "invoicing.db"


def database_url() -> str:
    return os.environ.get("INVOICE_SYNC_DB_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def make_engine(url: str | None = None) -> Engine:
    """An engine tuned for many short transactions from several processes.

    SQLite gets WAL mode and a generous busy timeout, because Airflow runs mapped tasks in parallel
    processes that all write ledger rows.
    """
    url = url or database_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


@lru_cache(maxsize=8)
def shared_engine(url: str) -> Engine:
    """One engine (and pool) per URL and process."""
    return make_engine(url)
