"""The exactly-once invariants every fault test ends with (design section 6, invariants 2 and 3)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from harness import Seeded, ToolHarness
from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_sync.store.claims import ClaimHeldError
from invoice_sync.store.models import InvoiceRow, LedgerRow, LedgerState
from invoice_sync.store.repository import SyncStore


def write_back(
    store: SyncStore, integration_ids: Iterable[int], *, holder: str = "write-back", wait_s: float = 15.0
) -> int:
    """What the DAG's ``write_back_registration_numbers`` task does, waiting for a claim still held."""
    written = 0
    for integration_id in integration_ids:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                claim = store.acquire(integration_id, holder)
                break
            except ClaimHeldError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            written += store.write_back(claim)
        finally:
            store.release(claim)
    return written


def assert_exactly_once(
    harness: ToolHarness, store: SyncStore, seeded: Seeded, integration_ids: Iterable[int] | None = None
) -> None:
    """After the write-back: every valid invoice of ``integration_ids`` booked exactly once, with its
    registration number in the app; no duplicate anywhere; no invoice sent again after the tool processed
    it (unknown outcomes were resolved by lookup); no attempt left unsettled."""
    ids = list(integration_ids or seeded.integration_ids)
    expected = {ref for i in ids for ref in seeded.valid[i]}
    everything_valid = {ref for refs in seeded.valid.values() for ref in refs}
    bookings = harness.bookings()

    duplicates = {ref: n for ref, n in bookings.items() if n > 1}
    assert not duplicates, f"booked more than once: {duplicates}"
    missing = sorted(ref for ref in expected if bookings[ref] != 1)
    assert not missing, f"valid invoices not booked: {missing}: {_ledger_of(store, missing)}"
    strays = sorted(set(bookings) - everything_valid)
    assert not strays, f"booked although invalid: {strays}"

    # A refusal whose answer was lost leaves nothing a lookup could find, so sending it again is the only
    # way to learn the outcome (and it is refused again); sending again what the tool booked is blind.
    reposts = {ref: n for ref, n in harness.posts().items() if n > 1 and ref not in seeded.refused}
    assert not reposts, f"sent again after the tool had processed them (a blind re-post): {reposts}"

    numbers = harness.registration_numbers()
    with Session(store.engine) as session:
        invoices = {
            row.number: row
            for row in session.scalars(select(InvoiceRow).where(InvoiceRow.integration_id.in_(ids)))
        }
        ledger = session.execute(
            select(InvoiceRow.number, LedgerRow.state)
            .join(InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id)
            .where(LedgerRow.integration_id.in_(ids))
        ).all()
    not_written_back = {
        ref: invoices[ref].registration_number
        for ref in expected
        if invoices[ref].registration_number != numbers.get(ref)
    }
    assert not not_written_back, f"booked without its registration number in the app: {not_written_back}"
    unsettled = {number: state for number, state in ledger if state not in _SETTLED}
    assert not unsettled, f"ledger rows left unsettled: {unsettled}"
    wrongly_rejected = {number for number, state in ledger if state == LedgerState.REJECTED} - seeded.refused
    assert not wrongly_rejected, f"valid invoices left rejected: {sorted(wrongly_rejected)}"


_SETTLED = {LedgerState.WRITTEN_BACK, LedgerState.REJECTED}


def _ledger_of(store: SyncStore, numbers: list[str]) -> dict[str, tuple[str, str | None, str | None]]:
    """State, error class and message of the ledger rows of ``numbers``, to say why they were not booked."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from invoice_sync.store.models import InvoiceRow, LedgerRow

    query = (
        select(InvoiceRow.number, LedgerRow.state, LedgerRow.error_class, LedgerRow.error_message)
        .join(LedgerRow, LedgerRow.invoice_id == InvoiceRow.id)
        .where(InvoiceRow.number.in_(numbers))
    )
    with Session(store.engine) as session:
        return {number: (state, cls, msg) for number, state, cls, msg in session.execute(query)}
