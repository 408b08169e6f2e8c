"""The engine against the Exact simulator over real HTTP, with demo data in a real database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import connector_for
from invoice_sync.engine.sync import IntegrationSync, SyncOptions
from invoice_sync.store.models import InvoiceRow, LedgerRow
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox.demo import SeedResult, seed
from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection

CLIENT_TIMEOUT_S = 1.0
SALES_ENTRIES_POST = "POST /api/v1/{division}/salesentry/SalesEntries"


@pytest.fixture
def exact(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sandbox, with the demo's Airflow connection pointing at it (short HTTP timeout)."""
    set_connection(monkeypatch, sandbox)
    return sandbox


def set_connection(monkeypatch: pytest.MonkeyPatch, handle: Any, **overrides: Any) -> None:
    connection = exact_online_connection(handle.url, **overrides)
    connection["extra"]["timeout"] = CLIENT_TIMEOUT_S  # type: ignore[index]  # the demo extra is a dict
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(connection))


@pytest.fixture
def demo(store: SyncStore) -> SeedResult:
    return seed(store.engine, tools=("exact_online",))


class Runner:
    """Runs one integration's sync the way the Airflow task does: real connector, SQL token vault."""

    def __init__(self, store: SyncStore, handle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.handle = handle
        self.monkeypatch = monkeypatch
        self.runs = 0

    def reconnect(self, **overrides: Any) -> None:
        """Point the demo connection at the sandbox again, e.g. with another refresh token."""
        set_connection(self.monkeypatch, self.handle, **overrides)

    def __call__(
        self, integration_id: int, *, run_id: str | None = None, holder: str | None = None, **options: Any
    ) -> Any:
        self.runs += 1
        run_id = run_id or f"run-{self.runs}"
        integration = self.store.integration(integration_id)
        connector = connector_for(integration, SqlTokenVault(self.store.engine))
        sync = IntegrationSync(
            self.store,
            connector,
            integration,
            run_id=run_id,
            holder=holder or f"{run_id}/try-1",
            options=SyncOptions(**options),
        )
        return sync.run()

    # -- what the sandbox saw ---------------------------------------------------------------------

    def posts(self) -> int:
        """SalesEntries POSTs that reached the simulated Exact (any status)."""
        calls = self.handle.exact.stats_snapshot()["calls"].get(SALES_ENTRIES_POST, {})
        return sum(calls.values())

    def entries(self, division: int | None = None) -> Counter[str]:
        """Booked sales entries per ``YourRef`` (our invoice number)."""
        return Counter(entry["YourRef"] for entry in self.handle.exact.entries(division))

    def entry_numbers(self, division: int) -> dict[str, str]:
        return {e["YourRef"]: str(e["EntryNumber"]) for e in self.handle.exact.entries(division)}

    def after_each_change(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Run ``callback`` inside the simulator after each mutation, before Exact answers.

        This is the simulator's persistence hook (``on_change``); using it lets a test act at an exact
        point of a run (say, right after Exact committed the second entry) without timing games.
        """
        self.handle.exact._on_change = callback

    # -- what the database holds ------------------------------------------------------------------

    def ledger(self, integration_id: int | None = None) -> dict[str, LedgerRow]:
        """Ledger rows by invoice number."""
        query = select(InvoiceRow.number, LedgerRow).join(InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id)
        if integration_id is not None:
            query = query.where(LedgerRow.integration_id == integration_id)
        with Session(self.store.engine) as session:
            return {number: row for number, row in session.execute(query)}

    def invoices(self, integration_id: int) -> list[InvoiceRow]:
        with Session(self.store.engine) as session:
            query = (
                select(InvoiceRow).where(InvoiceRow.integration_id == integration_id).order_by(InvoiceRow.id)
            )
            return list(session.scalars(query))


@pytest.fixture
def run(store: SyncStore, exact: Any, monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(store, exact, monkeypatch)


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """SQLite unless a test asks for both databases (``BOTH_DATABASES`` in the test modules).

    The engine's database work is the store's, which ``tests/store`` proves on both; here PostgreSQL
    runs the end-to-end paths where concurrency or transactions matter, to keep the suite fast.
    """
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
