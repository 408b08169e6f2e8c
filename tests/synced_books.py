"""The "exactly once" check, shared by the end-to-end DAG tests and the distributed-topology test, and
the one-off engine sync the page tests start from.

Both ``tests/e2e/test_sync_dags.py`` and ``tests/deploy/test_distributed.py`` must judge a sync the same way:
every valid invoice booked once in its tool and written back, everything else untouched. This module is the
one definition of that, read from the invoicing database and the in-process sandbox
(``invoice_sync_dev.sandbox.server.start_in_thread()``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import connector_for
from invoice_sync.engine.sync import IntegrationSync, SyncOptions
from invoice_sync.store.models import IntegrationRow, InvoiceLineRow, InvoiceRow, LedgerRow
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox.demo import INTEGRATIONS, SeedResult
from invoice_sync_dev.sandbox.tools import Booking, sandbox_tools

TOOL_OF: dict[int, str] = {integration.id: integration.tool for integration in INTEGRATIONS}
"""The accounting tool of each demo integration (``invoice_sync_dev.sandbox.demo``)."""


def books(sandbox: Any) -> dict[str, list[Booking]]:
    """Every booking in every simulator of ``sandbox``, by our invoice number."""
    found: dict[str, list[Booking]] = {}
    for tool in sandbox_tools():
        for booking in tool.bookings(sandbox.simulator(tool.name)):
            found.setdefault(booking.reference, []).append(booking)
    return found


def line_values(booking: Booking) -> set[str]:
    """Every value on the booked lines of a booking, as text (the VAT codes among them)."""
    lines = booking.record.get("SalesEntryLines") or booking.record.get("lines") or []
    return {str(value) for line in lines for value in line.values() if isinstance(value, str | int)}


def zero_rate_codes(store: SyncStore) -> dict[str, set[str]]:
    """Per invoice number with 0 % lines of two or more tax rates that its integration maps to different
    VAT codes: those codes (each must reach the tool on its own line)."""
    with Session(store.engine) as session:
        settings = {row.id: row.settings for row in session.scalars(select(IntegrationRow))}
        rows = session.execute(
            select(InvoiceRow.number, InvoiceRow.integration_id, InvoiceLineRow.tax_rate)
            .join(InvoiceLineRow, InvoiceLineRow.invoice_id == InvoiceRow.id)
            .where(InvoiceLineRow.vat_rate == 0, InvoiceLineRow.tax_rate.is_not(None))
        )
        codes: dict[str, set[str]] = {}
        for number, integration_id, tax_rate in rows:
            mapped = (settings[integration_id] or {}).get("tax_rates", {}).get(tax_rate)
            if number and mapped:
                codes.setdefault(number, set()).add(mapped)
    return {number: found for number, found in codes.items() if len(found) > 1}


def invoices(store: SyncStore) -> list[InvoiceRow]:
    """Every invoice in the invoicing database, by id."""
    with Session(store.engine) as session:
        return list(session.scalars(select(InvoiceRow).order_by(InvoiceRow.id)))


def ledger(store: SyncStore) -> dict[int, LedgerRow]:
    """The sync ledger, by invoice id."""
    with Session(store.engine) as session:
        return {row.invoice_id: row for row in session.scalars(select(LedgerRow))}


def assert_synced_exactly_once(
    store: SyncStore,
    sandbox: Any,
    seeded: SeedResult,
    before: list[InvoiceRow],
    integration_ids: set[int],
) -> set[str]:
    """Every valid registered invoice of ``integration_ids`` is booked once and carries its entry number;
    everything else is untouched. Returns the numbers that were synced."""
    after = {row.id: row for row in invoices(store)}
    booked = books(sandbox)
    rows = ledger(store)
    expected = seeded.expected_rejections
    synced: set[str] = set()
    for old in before:
        new = after[old.id]
        if old.status == "draft":
            assert new.registration_number is None and old.id not in rows
            continue
        if old.registration_number is not None:  # synced before this test: never pushed again
            assert new.registration_number == old.registration_number
            assert old.number not in booked and old.id not in rows
            continue
        if old.integration_id not in integration_ids or old.number in seeded.before_cutover:
            assert new.registration_number is None and old.id not in rows and old.number not in booked
            continue
        if old.number in expected:
            error_class, fragment = expected[old.number]
            row = rows[old.id]
            assert (row.state, row.error_class) == ("rejected", error_class), (old.number, row.error_message)
            assert fragment in (row.error_message or "")
            assert new.registration_number is None and new.synced_at is None
            continue
        entries = booked.get(old.number, [])
        assert len(entries) == 1, f"{old.number} booked {len(entries)} times"
        assert entries[0].tool == TOOL_OF[old.integration_id]
        assert new.registration_number == entries[0].registration_number
        assert new.synced_at is not None
        assert rows[old.id].state == "written_back"
        if entries[0].external_id is not None:
            assert rows[old.id].external_id == entries[0].external_id
        synced.add(old.number)
    # nothing in the books that is not ours and synced now
    assert set(booked) == synced
    return synced


def sync_and_write_back(store: SyncStore, integration_ids: Iterable[int], *, holder: str) -> None:
    """Sync each integration once through the engine with its real connector (the connections must point
    at a sandbox), then write the registration numbers back: a history with real bookings and real
    rejections for the page tests to show."""
    vault = SqlTokenVault(store.engine)
    for integration_id in integration_ids:
        integration = store.integration(integration_id)
        connector = connector_for(integration, vault)
        IntegrationSync(
            store, connector, integration, run_id=holder, holder=holder, options=SyncOptions()
        ).run()
        claim = store.acquire(integration_id, f"{holder}-write-back")
        store.write_back(claim)
        store.release(claim)
