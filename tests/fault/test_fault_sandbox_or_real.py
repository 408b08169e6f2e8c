"""Production cannot book into the sandbox (issue 14, item 8), for every tool.

A production integration whose connection points at invoice-sync's sandbox (a copied connection, a
forgotten demo URL) would otherwise "book" its invoices there and write the sandbox's numbers back as if the
tool had booked them: the invoices would never reach the books, and nobody would know. The sandbox marks
every answer, so the first one (the token or session request) stops such an integration with a
configuration error, before anything is booked or written back.
"""

from __future__ import annotations

from invariants import write_back
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from world import statuses

from invoice_sync.store.claims import utcnow
from invoice_sync.store.models import IntegrationRow, InvoiceRow


def _set_demo(world, demo: bool) -> None:
    with Session(world.store.engine) as session, session.begin():
        row = session.get(IntegrationRow, world.primary)
        assert row is not None and row.settings.get("demo") is not demo
        session.execute(
            update(IntegrationRow)
            .where(IntegrationRow.id == world.primary)
            .values(settings={**row.settings, "demo": demo}, updated_at=utcnow())  # as the app saves it
        )


def _written_back(world) -> int:
    with Session(world.store.engine) as session:
        return session.scalar(
            select(func.count()).where(
                InvoiceRow.integration_id == world.primary, InvoiceRow.registration_number.is_not(None)
            )
        )


def test_an_integration_not_marked_as_a_demo_books_nothing_into_the_sandbox(world):
    _set_demo(world, False)
    synced_before = _written_back(world)  # the demo data has some invoices synced long ago

    (outcome,) = world.sync().values()

    assert (outcome["status"], outcome["error_type"]) == ("error", "ConfigError"), outcome
    assert "invoice-sync's sandbox" in outcome["error"] and '"demo": true' in outcome["error"], outcome
    assert sum(world.harness.bookings().values()) == 0
    write_back(world.store, [world.primary])  # the ledger holds no booking to write back
    assert _written_back(world) == synced_before

    _set_demo(world, True)  # marked as the demo it is: the same data syncs, nothing lost
    second = world.sync()
    assert statuses(second) == {"ok"}, second
    world.converge()
