"""Both DAGs end to end, on SQLite and PostgreSQL, checking the invoicing database and the sandbox's books.

The demo data (``invoice_sync_dev.sandbox.demo``) holds eleven integrations: Exact Online 1 (BE) and 2 (NL),
Yuki 4 (BE) and 8 (NL), Twinfield 5 (NL) and 9 (BE), Xero 6 (NL) and 10 (BE) and QuickBooks Online 7 (NL)
and 11 (BE) sync nightly, Exact 3 only by hand; drafts, paid, already-synced invoices, credit notes,
discount lines, invoice-level discounts, 0 % lines of different tax rates, and invoices that must be
rejected (by our checks or by the tool, next to valid ones of the same batch), each for a known reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import synced_books
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from synced_books import TOOL_OF, Booking

from invoice_sync.connectors.registry import TOOLS
from invoice_sync.store.models import InvoiceRow, LedgerRow, NotificationRow, RunRow
from invoice_sync_dev.sandbox.demo import INTEGRATIONS

pytestmark = pytest.mark.e2e

NIGHTLY, MANUAL = "invoice_sync_nightly", "invoice_sync_manual"
NIGHTLY_INTEGRATIONS = {integration.id for integration in INTEGRATIONS if integration.auto_sync}
"""The demo's integrations the nightly DAG syncs (every tool's, so a new tool's demo integration counts)."""


def invoices(demo: Any) -> list[InvoiceRow]:
    return synced_books.invoices(demo.store)


def ledger(demo: Any) -> dict[int, LedgerRow]:
    return synced_books.ledger(demo.store)


def books(demo: Any) -> dict[str, list[Booking]]:
    """Every simulator's bookings by our invoice number."""
    return synced_books.books(demo.sandbox)


def assert_synced_exactly_once(demo: Any, before: list[InvoiceRow], integration_ids: set[int]) -> set[str]:
    """``synced_books.assert_synced_exactly_once`` on the demo's database and sandbox."""
    return synced_books.assert_synced_exactly_once(
        demo.store, demo.sandbox, demo.seeded, before, integration_ids
    )


def test_nightly_syncs_auto_integrations_once_and_a_second_run_sends_nothing(demo: Any) -> None:
    before = invoices(demo)
    log = demo.run(NIGHTLY)
    for tool in TOOLS:  # each tool in its own group, own operator
        assert f"{tool}.sync" in log, tool
    synced = assert_synced_exactly_once(demo, before, NIGHTLY_INTEGRATIONS)
    assert len(synced) >= 60
    for integration_id in (4, 5, 6, 7):  # the batching tools booked part of a batch, refused the rest
        numbers = {row.number for row in before if row.integration_id == integration_id}
        assert numbers & synced and numbers & set(demo.seeded.expected_rejections)

    with Session(demo.store.engine) as session:
        run = session.scalars(select(RunRow).where(RunRow.dag_id == NIGHTLY)).one()
        assert session.scalar(select(NotificationRow.id)) is None  # nightly runs notify nobody
    assert run.counts["invoices_synced"] == len(synced)
    assert run.counts["errors"] == len(demo.seeded.expected_rejections)
    by_integration = {row["integration"]: row for row in run.counts["integrations"]}
    assert by_integration["Atelier Demo BV"]["skipped_before_cutover"] == 1
    assert by_integration["Atelier Demo BV"]["customers_created"] > 0

    # credit notes are booked as Exact credit notes (negative, Type 21) in the credit-note journal
    credit_notes = [row for row in before if row.kind == "credit_note" and row.number in synced]
    assert credit_notes, "the demo data has synced credit notes"
    for row in credit_notes:
        (booking,) = books(demo)[row.number]
        if booking.tool != "exact_online":
            continue
        entry = booking.record
        assert (entry["Journal"], entry["Type"]) == ("71", 21)
        assert Decimal(str(entry["AmountFC"])) == -row.total_excl_vat
        assert Decimal(str(entry["VATAmountFC"])) == -row.total_vat
    # every tool books exactly the app's totals, to the cent (discount lines and invoice-level discounts
    # among them)
    by_number = {row.number: row for row in before}
    for number in synced:
        (booking,) = books(demo)[number]
        row = by_number[number]
        sign = -1 if row.kind == "credit_note" else 1  # booked from the debtor's side
        assert booking.total_incl_vat == sign * row.total_incl_vat, number
        assert booking.total_vat == sign * row.total_vat, number
    discounted = [row for row in before if row.discount_percentage and row.number in synced]
    assert {TOOL_OF[row.integration_id] for row in discounted} == set(TOOLS)
    # 0 % lines of different tax rates reach each tool on their own VAT codes, BE and NL alike
    regimes = {n: codes for n, codes in synced_books.zero_rate_codes(demo.store).items() if n in synced}
    assert {by_number[number].integration_id for number in regimes} == NIGHTLY_INTEGRATIONS
    for number, codes in regimes.items():
        (booking,) = books(demo)[number]
        assert codes <= synced_books.line_values(booking), (number, codes)

    entries_posted, accounts_posted = demo.posts("SalesEntries"), demo.posts("Accounts")
    batch_creates = demo.batch_creates()
    demo.run(NIGHTLY)
    assert demo.posts("SalesEntries") == entries_posted, "the second run created a sales entry"
    assert demo.posts("Accounts") == accounts_posted, "the second run created an account"
    assert demo.batch_creates() == batch_creates, "the second run sent an invoice to a batching tool"
    assert_synced_exactly_once(demo, before, NIGHTLY_INTEGRATIONS)
    assert all(len(entries) == 1 for entries in books(demo).values())


def test_manual_run_syncs_the_chosen_integrations_and_notifies(demo: Any, webhook: Any) -> None:
    demo.extra_env["AIRFLOW_CONN_INVOICE_SYNC_WEBHOOK"] = json.dumps(
        {"conn_type": "http", "host": webhook.url}
    )
    before = invoices(demo)
    demo.run(MANUAL, {"integrations": ["Demo Nederland Projecten", 1]})
    synced = assert_synced_exactly_once(demo, before, {1, 3})

    with Session(demo.store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
    assert note.body["invoices_synced"] == len(synced)
    assert note.body["customers_synced"] > 0
    assert f"{len(synced)} invoices" in note.title
    errors = {e["invoice"]: e for e in note.body["errors"]}
    expected = {n: v for n, v in demo.seeded.expected_rejections.items() if n.startswith("2026/")}
    assert set(errors) == set(expected)
    for number, (error_class, fragment) in expected.items():
        assert errors[number]["error_class"] == error_class
        assert fragment in errors[number]["text"] and number in errors[number]["text"]
        assert errors[number]["hint"]
    # the same notification went to the webhook through the http provider's hook
    assert len(webhook.received) == 1
    assert webhook.received[0]["title"] == note.title
    assert webhook.received[0]["invoices_synced"] == len(synced)

    entries_posted = demo.posts("SalesEntries")
    demo.run(MANUAL, {"integrations": [1, 3]})
    # tool rejections are retried on a manual run; nothing valid is booked twice
    assert all(len(entries) == 1 for entries in books(demo).values())
    retried = demo.posts("SalesEntries") - entries_posted
    tool_rejections = sum(
        1
        for n, (c, f) in expected.items()
        if "not mapped" not in f and "Customer" not in f and "Email" not in f
    )
    assert retried == tool_rejections


def test_manual_dry_run_sends_and_writes_nothing(sqlite_demo: Any) -> None:
    demo = sqlite_demo
    demo.run(MANUAL, {"dry_run": True, "all_integrations": True})
    assert demo.posts("SalesEntries") == 0 and demo.posts("Accounts") == 0
    assert all(row.registration_number is None or row.synced_at is not None for row in invoices(demo))
    assert ledger(demo) == {}
    with Session(demo.store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
    assert note.title.startswith("Dry run")


def test_manual_run_names_unknown_integrations_clearly(sqlite_demo: Any) -> None:
    demo = sqlite_demo
    log = demo.run(MANUAL, {"integrations": ["Nope BV"]}, expect_success=False)
    assert "No integration is named 'Nope BV' (names are compared exactly)." in log
    assert "Choose from: 1 (Atelier Demo BV)" in log
    assert demo.posts("SalesEntries") == 0
    with Session(demo.store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
    assert note.title == "Sync could not start: no invoice was sent"


def test_manual_run_without_a_selection_asks_for_all_and_sends_nothing(sqlite_demo: Any) -> None:
    """The trigger form's defaults (no integration, all_integrations off) choose nothing (issue 14, 2)."""
    demo = sqlite_demo
    log = demo.run(MANUAL, {}, expect_success=False)
    assert "No integration chosen. List integration ids (numbers) or exact names in 'integrations', " in log
    assert "or switch on 'all_integrations' to sync every integration." in log
    assert demo.posts("SalesEntries") == 0 and ledger(demo) == {}
    with Session(demo.store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
    assert note.title == "Sync could not start: no invoice was sent"
    assert "all_integrations" in note.body["errors"][0]["hint"]


def test_edits_after_sync_are_reported_not_pushed(demo: Any) -> None:
    demo.run(NIGHTLY)
    with Session(demo.store.engine) as session, session.begin():
        edited = session.scalars(
            select(InvoiceRow)
            .where(InvoiceRow.integration_id == 1, InvoiceRow.synced_at > datetime(2026, 11, 20, tzinfo=UTC))
            .order_by(InvoiceRow.id)
            .limit(1)
        ).one()
        edited_id, number, registration_number = edited.id, edited.number, edited.registration_number
        session.execute(
            update(InvoiceRow)
            .where(InvoiceRow.id == edited_id)
            .values(
                total_vat=edited.total_vat + 1,
                total_incl_vat=edited.total_incl_vat + 1,
                updated_at=datetime.now(UTC),
            )
        )
    posted = demo.posts("SalesEntries")

    demo.run(MANUAL, {"integrations": [1]})
    assert len(books(demo)[number]) == 1
    assert demo.posts("SalesEntries") - posted == sum(
        1
        for n, (_, f) in demo.seeded.expected_rejections.items()
        if n.startswith("2026/") and f in ("Periode is afgesloten: 2026-01", "Blocked: Ledger account")
    ), "only the tool's earlier rejections were sent again"
    with Session(demo.store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
        run = session.scalars(select(RunRow).where(RunRow.dag_id == MANUAL)).one()
        invoice = session.get(InvoiceRow, edited_id)
    assert invoice.registration_number == registration_number  # untouched
    (changed,) = note.body["changed_after_sync"]
    assert (changed["number"], changed["registration_number"]) == (number, registration_number)
    assert "changed after it was synced" in changed["text"] and changed["hint"]
    assert "1 changed after sync (not sent)" in note.title
    (row,) = [r for r in run.counts["integrations"] if r["integration"] == "Atelier Demo BV"]
    assert row["changed_after_sync"] == 1
