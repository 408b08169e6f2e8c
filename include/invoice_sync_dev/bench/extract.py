"""``extract``: the unsynced-invoice query's time for 1,000 unsynced among 1,000,000 invoices over the same
1,000 among 10,000 (target at most 2; ideal 1.0).

"Which invoices still need a registration number?" must cost in proportion to the answer, not to the
history: the partial index ``ix_invoices_unsynced`` covers only rows without a registration number, so
999,000 synced invoices should be invisible to it. The timed work is exactly what the engine does to
find its work: :meth:`~invoice_sync.store.repository.SyncStore.count_candidates` once, then
:meth:`~invoice_sync.store.repository.SyncStore.candidates` page by page (the engine's page size) until a
page comes back empty.

On SQLite, the embedded default. The history is written with :mod:`sqlite3` directly (a million rows
through SQLAlchemy would take longer than everything else this scenario does); the 1,000 unsynced
invoices, their lines and the integration go through the shared seeder. Each database is queried once to
warm the page cache and the connection pool, then timed as the best of several rounds, so the figure is
the query's cost rather than the disk's.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from invoice_sync.connectors.registry import TOOLS
from invoice_sync.engine.sync import SyncOptions
from invoice_sync.store.db import make_engine
from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.bench import common

UNSYNCED = 1_000
TOTALS = (10_000, 1_000_000)
QUICK_UNSYNCED = 100
QUICK_TOTALS = (1_000, 50_000)
ROUNDS = 5
INTEGRATION_ID = 1


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    unsynced = QUICK_UNSYNCED if quick else UNSYNCED
    small, large = QUICK_TOTALS if quick else TOTALS
    workdir = common.fresh_dir(workdir / "extract")
    times: dict[int, float] = {}
    for total in (small, large):
        path = workdir / f"invoicing-{total}.db"
        common.note(f"extract: seeding {unsynced} unsynced among {total} invoices")
        build(path, total=total, unsynced=unsynced)
        times[total], found = query_time(common.sqlite_url(path))
        if found != unsynced:
            raise RuntimeError(f"the candidate query found {found} invoices, expected {unsynced}")
    return [
        {
            "scenario": "extract",
            "ratio": round(times[large] / times[small], 3),
            "unsynced": unsynced,
            "invoices": [small, large],
            "query_ms": [round(times[small] * 1000, 2), round(times[large] * 1000, 2)],
        }
    ]


def build(path: Path, *, total: int, unsynced: int) -> None:
    """A database with ``total - unsynced`` synced invoices (ids first) and ``unsynced`` newer ones."""
    history = total - unsynced
    engine = common.open_db(common.sqlite_url(path))
    common.seed_tenants(
        engine,
        [common.Tenant(INTEGRATION_ID, TOOLS[0], unsynced)],  # any tool: the query never looks at it
        first_invoice_id=history + 1,
    )
    engine.dispose()
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO invoices (id, integration_id, kind, number, status, customer_id, invoice_date, "
                "due_date, currency, total_excl_vat, total_vat, total_incl_vat, registered_at, updated_at, "
                "registration_number, synced_at) VALUES (?, ?, 'invoice', ?, 'registered', 1, ?, ?, 'EUR', "
                "100, 21, 121, ?, ?, ?, ?)",
                _history_rows(history),
            )
    finally:
        connection.close()


def _history_rows(count: int) -> Any:
    for invoice_id in range(1, count + 1):
        day = f"2025-{1 + invoice_id % 12:02d}-{1 + invoice_id % 28:02d}"
        registered = f"{day} 09:00:00.000000"
        yield (
            invoice_id,
            INTEGRATION_ID,
            f"H{INTEGRATION_ID}-{invoice_id:08d}",
            day,
            day,
            registered,
            registered,
            str(80_000_000 + invoice_id),
            f"{day} 10:00:00.000000",
        )


def query_time(db_url: str) -> tuple[float, int]:
    """Best of :data:`ROUNDS` (after one warm-up) of the engine's candidate paging; and what it found."""
    engine = make_engine(db_url)
    store = SyncStore(engine)
    page = SyncOptions().batch_size
    try:
        found = _page_through(store, page)
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            _page_through(store, page)
            best = min(best, time.perf_counter() - started)
    finally:
        engine.dispose()
    return best, found


def _page_through(store: SyncStore, page: int) -> int:
    total = store.count_candidates(INTEGRATION_ID)
    found, after = 0, 0
    while candidates := store.candidates(INTEGRATION_ID, after_id=after, limit=page):
        found += len(candidates)
        after = candidates[-1].invoice_id
    if found != total:
        raise RuntimeError(f"count_candidates said {total}, paging found {found}")
    return found
