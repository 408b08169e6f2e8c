"""The mark the demo leaves on a database it filled: a row in ``invoice_sync_dev_demo``.

The runtime reads it, because a demo database is the one place where OAuth tokens may be stored in clear
(no Fernet key configured, as on a fresh machine running ``make run``); everywhere else that is refused
(:mod:`invoice_sync.store.tokens`). The development tools write it (the demo seeding, the bench) and check
it before a wipe. The table is in neither the app's nor the sync's metadata: ``prepare`` never creates it,
a wipe never empties it, and a production database never has it.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
)

DEMO_MARK = Table(
    "invoice_sync_dev_demo",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("marked_at", DateTime(timezone=True), nullable=False),
    Column("marked_by", String(64), nullable=False),
)
"""The demo's mark on a database it filled. Not in the app's or the sync's metadata: ``prepare`` never
creates it and a wipe never empties it."""


def is_demo_database(engine: Engine) -> bool:
    """Whether the demo seeding (or the bench) filled ``engine``'s database and marked it."""
    with engine.connect() as conn:
        return is_marked(conn)


def is_marked(conn: Connection) -> bool:
    """:func:`is_demo_database` on an open connection (inside the caller's transaction)."""
    if not inspect(conn).has_table(DEMO_MARK.name):
        return False
    return bool(conn.scalar(select(func.count()).select_from(DEMO_MARK)))
