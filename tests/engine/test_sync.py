"""IntegrationSync end to end: demo data in a real database, the real connector, the simulator over HTTP."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import AuthError, LeaseLostError
from invoice_sync.engine.sync import IntegrationSync, SyncOptions
from invoice_sync.store import claims
from invoice_sync.store.models import ClaimRow, CustomerLinkRow, InvoiceLineRow, InvoiceRow, LedgerRow
from invoice_sync_dev.sandbox.exact_fixtures import DIVISION_BE, DIVISION_NL

DIVISIONS = {1: DIVISION_BE, 2: DIVISION_NL, 3: DIVISION_NL}

BOTH_DATABASES = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def valid_numbers(run, demo, integration_id: int) -> list[str]:
    """Registered, unsynced invoices on or after the cut-over that nothing should refuse."""
    integration = run.store.integration(integration_id)
    return [
        row.number
        for row in run.invoices(integration_id)
        if row.status != "draft"
        and row.registration_number is None
        and (integration.sync_from is None or row.invoice_date >= integration.sync_from)
        and row.number not in demo.expected_rejections
    ]


@BOTH_DATABASES
def test_demo_sync_books_every_valid_invoice_exactly_once(run, demo, store):
    before = {i: {row.id: row for row in run.invoices(i)} for i in (1, 2, 3)}
    reports = {i: run(i, run_id="nightly-1") for i in (1, 2, 3)}

    for integration_id, division in DIVISIONS.items():
        valid = valid_numbers(run, demo, integration_id)
        assert valid, "the demo has regular invoices for every integration"
        entries = run.entries(division)
        numbers = run.entry_numbers(division)
        ledger = run.ledger(integration_id)
        for number in valid:
            assert entries[number] == 1, number
            assert ledger[number].state == "booked"
            assert ledger[number].registration_number == numbers[number]
            assert ledger[number].run_id == "nightly-1" and ledger[number].attempts == 1
        assert reports[integration_id].booked == len(valid)

        # Drafts, numbered (already synced) and pre-cut-over invoices are untouched.
        for row in before[integration_id].values():
            if row.status == "draft" or row.registration_number or row.number in demo.before_cutover:
                assert row.number is None or entries[row.number] == 0
                assert row.id not in {r.invoice_id for r in ledger.values()}
    assert reports[1].skipped["before_cutover"] == len(demo.before_cutover) == 1

    # The deliberately broken invoices fail with their class and a message a bookkeeper can act on.
    ledger = run.ledger()
    for number, (error_class, fragment) in demo.expected_rejections.items():
        assert ledger[number].state == "rejected", number
        assert ledger[number].error_class == error_class, number
        assert fragment in ledger[number].error_message, (number, ledger[number].error_message)
        assert run.entries()[number] == 0
    assert sum(sum(r.rejected.values()) for r in reports.values()) == len(demo.expected_rejections)

    # Nothing was written back yet: the invoices themselves still look unsynced.
    assert all(row.registration_number is None for row in run.invoices(3) if row.id in before[3] and
               before[3][row.id].registration_number is None)  # fmt: skip


@BOTH_DATABASES
def test_after_write_back_a_second_run_posts_nothing(run, demo, store):
    valid = {i: valid_numbers(run, demo, i) for i in (1, 2, 3)}
    for integration_id in (1, 2, 3):
        run(integration_id)
        claim = claims.acquire(store.engine, integration_id, "write-back")
        written = store.write_back(claim)
        claims.release(store.engine, claim)
        assert written == len(valid[integration_id])
    posts = run.posts()
    entries = run.entries()

    numbers = {}
    for division in DIVISIONS.values():
        numbers.update(run.entry_numbers(division))
    for integration_id in (1, 2, 3):
        synced = {row.number: row for row in run.invoices(integration_id)}
        for number in valid[integration_id]:
            assert synced[number].registration_number == numbers[number]
            assert synced[number].synced_at is not None
            assert run.ledger(integration_id)[number].state == "written_back"

    reports = {i: run(i, run_id="nightly-2") for i in (1, 2, 3)}
    assert run.posts() == posts
    assert run.entries() == entries
    assert all(r.booked == 0 for r in reports.values())
    # the refused invoices did not change, so they are not resent (Exact's error budget)
    assert sum(r.still_rejected for r in reports.values()) == len(demo.expected_rejections)
    assert set(store.ledger_frame("nightly-2")["state"]) <= {"rejected"}


@pytest.mark.parametrize(
    "fault",
    [{"kind": "commit_then_drop"}, {"kind": "commit_then_timeout", "delay_s": 3}],
    ids=lambda fault: fault["kind"],
)
def test_a_lost_answer_is_settled_by_lookup_in_the_same_run(run, demo, fault):
    run.handle.faults.set_rules([{"method": "POST", "path": "SalesEntries$", "times": 1, **fault}])
    report = run(3)
    valid = valid_numbers(run, demo, 3)
    assert run.entries(DIVISION_NL) == dict.fromkeys(valid, 1)
    assert run.posts() == len(valid)  # not one resend
    assert {row.state for row in run.ledger(3).values()} == {"booked"}
    assert report.booked == len(valid) and report.unknown == 0


@pytest.mark.parametrize(
    "fault",
    [{"kind": "commit_then_drop"}, {"kind": "commit_then_timeout", "delay_s": 3}],
    ids=lambda fault: fault["kind"],
)
def test_an_unknown_outcome_is_resolved_by_the_next_run_without_a_post(run, demo, fault):
    run.handle.faults.set_rules([{"method": "POST", "path": "SalesEntries$", "times": 1, **fault}])
    lookups_broken = []

    def break_lookups_after_first_entry(state):  # the lookup right after the lost answer fails too
        if not lookups_broken and any(state["entries"].values()):
            lookups_broken.append(True)
            run.handle.faults.set_rules(
                [{"method": "GET", "path": "SalesEntries$", "kind": "status", "status": 400, "times": 1}]
            )

    run.after_each_change(break_lookups_after_first_entry)
    first = run(3)
    valid = valid_numbers(run, demo, 3)
    (lost,) = [n for n, row in run.ledger(3).items() if row.state == "unknown"]
    assert first.unknown == 1 and first.booked == len(valid) - 1
    assert run.entries(DIVISION_NL)[lost] == 1  # Exact did book it
    assert run.ledger(3)[lost].registration_number is None
    posts = run.posts()

    second = run(3)
    assert run.posts() == posts  # resolved by lookup: no POST at all
    assert run.entries(DIVISION_NL) == dict.fromkeys(valid, 1)
    assert second.resolved_by_lookup == 1
    row = run.ledger(3)[lost]
    assert (row.state, row.registration_number) == ("booked", run.entry_numbers(DIVISION_NL)[lost])


def test_a_5xx_before_commit_is_unknown_then_pushed_again_exactly_once(run, demo):
    run.handle.faults.set_rules(
        [{"method": "POST", "path": "SalesEntries$", "kind": "status", "status": 503, "times": 1}]
    )
    first = run(3)
    valid = valid_numbers(run, demo, 3)
    (lost,) = [n for n, row in run.ledger(3).items() if row.state == "unknown"]
    assert first.unknown == 1
    assert run.ledger(3)[lost].error_class == "transient"
    assert run.entries(DIVISION_NL)[lost] == 0
    posts = run.posts()

    second = run(3)
    assert run.posts() == posts + 1
    assert run.entries(DIVISION_NL) == dict.fromkeys(valid, 1)
    assert second.booked == 1 and second.resolved_by_lookup == 0
    assert run.ledger(3)[lost].state == "booked" and run.ledger(3)[lost].attempts == 2


@pytest.mark.parametrize("daily_limit", [3, 8, 14, 19])
def test_a_spent_daily_limit_defers_the_rest_to_the_next_run(run, demo, daily_limit):
    valid = valid_numbers(run, demo, 3)
    run.handle.exact.configure(daily_limit=daily_limit)
    first = run(3, batch_size=4)
    ledger = run.ledger(3)
    assert set(ledger) == set(valid)  # every invoice got an answer: booked or deferred
    deferred = [n for n, row in ledger.items() if row.state == "deferred"]
    assert deferred, "the limit must run out during the run"
    assert {row.state for row in ledger.values()} <= {"booked", "deferred"}
    assert all(ledger[n].error_class == "quota" for n in deferred)
    assert all("daily API limit" in ledger[n].error_message for n in deferred)
    assert first.deferred == len(deferred) and not first.rejected
    assert all(run.entries(DIVISION_NL)[n] == 0 for n in deferred)
    assert run.handle.exact.stats_snapshot()["rate_limited"] == 0  # stopped before Exact had to refuse

    run.handle.exact.configure(daily_limit=5000)
    second = run(3, batch_size=4)
    assert run.entries(DIVISION_NL) == dict.fromkeys(valid, 1)
    assert {row.state for row in run.ledger(3).values()} == {"booked"}
    assert second.booked + second.resolved_by_lookup == len(deferred)


def test_a_spent_daily_limit_while_looking_up_earlier_attempts_defers_too(run, demo):
    run.handle.faults.set_rules(
        [{"method": "POST", "path": "SalesEntries$", "kind": "status", "status": 503, "times": 1}]
    )
    run(3)
    (lost,) = [n for n, row in run.ledger(3).items() if row.state == "unknown"]
    run.handle.exact.configure(daily_limit=1)  # already used up today

    report = run(3)  # the lookup of the unknown outcome is the first call: no exception, deferred
    assert report.deferred == 1
    assert (run.ledger(3)[lost].state, run.ledger(3)[lost].error_class) == ("deferred", "quota")

    run.handle.exact.configure(daily_limit=5000)
    run(3)
    assert run.entries(DIVISION_NL)[lost] == 1
    assert run.ledger(3)[lost].state == "booked"


@BOTH_DATABASES
def test_a_dead_refresh_token_raises_and_marks_the_rest_auth(run, demo):
    run.reconnect(refresh_token="revoked-by-the-user")
    with pytest.raises(AuthError, match="reconnect the integration"):
        run(3, batch_size=4)
    ledger = run.ledger(3)
    assert set(ledger) == set(valid_numbers(run, demo, 3))
    assert {(row.state, row.error_class) for row in ledger.values()} == {("rejected", "auth")}
    assert all("reconnect" in row.error_message for row in ledger.values())
    assert run.posts() == 0

    # once reconnected, everything is sent (auth failures are retried without any change)
    run.reconnect()
    report = run(3, batch_size=4)
    assert report.booked == len(ledger)
    assert run.entries(DIVISION_NL) == dict.fromkeys(ledger, 1)


@BOTH_DATABASES
def test_an_orphan_that_lost_its_lease_stops_pushing(run, demo, store):
    valid = valid_numbers(run, demo, 3)
    taken_over = []

    def take_over_after_second_entry(state):
        if not taken_over and sum(len(e) for e in state["entries"].values()) == 2:
            # The orphan's lease ran out (its worker hung) and the retry took the integration.
            with Session(store.engine) as session, session.begin():
                session.execute(
                    update(ClaimRow).values(lease_expires_at=claims.utcnow() - timedelta(seconds=1))
                )
            taken_over.append(claims.acquire(store.engine, 3, "nightly/try-2"))

    run.after_each_change(take_over_after_second_entry)
    with pytest.raises(LeaseLostError):
        run(3, run_id="nightly", holder="nightly/try-1", batch_size=50)
    assert taken_over
    assert run.posts() == 2  # nothing more was pushed after the takeover
    ledger = run.ledger(3)
    assert [ledger[n].state for n in valid[:2]] == ["booked", "claimed"]  # 2nd outcome was fenced out
    assert all(ledger[n].state == "claimed" for n in valid[2:])

    claims.release(store.engine, taken_over[0])
    run.after_each_change(lambda state: None)
    report = run(3, run_id="nightly", holder="nightly/try-2")
    assert report.resolved_by_lookup == 1  # the orphan's last entry, found instead of resent
    assert run.posts() == 2 + len(valid) - 2
    assert run.entries(DIVISION_NL) == dict.fromkeys(valid, 1)


def test_dry_run_posts_nothing_and_writes_nothing(run, demo, store):
    with Session(store.engine) as session:
        numbered = session.scalar(select(func.count()).where(InvoiceRow.registration_number.is_not(None)))
    report = run(1, dry_run=True)
    assert run.handle.exact.stats_snapshot()["total"] == 0
    assert run.entries() == {}
    with Session(store.engine) as session:
        assert session.scalar(select(func.count()).select_from(LedgerRow)) == 0
        assert session.scalar(select(func.count()).select_from(CustomerLinkRow)) == 0
        assert (
            session.scalar(select(func.count()).where(InvoiceRow.registration_number.is_not(None)))
            == numbered
        )
    # what it would do: the valid ones, plus those only Exact itself refuses
    refused_by_exact = [
        n
        for n, (_, fragment) in demo.expected_rejections.items()
        if "not mapped" not in fragment and "e-mail" not in fragment  # both found without a call
    ]
    refused_by_exact = [n for n in refused_by_exact if n.startswith("2026/")]
    assert report.would_push == len(valid_numbers(run, demo, 1)) + len(refused_by_exact)
    assert report.rejected == {"config": 1, "data": 1}  # unmapped VAT rate, bad e-mail: found without a call


def test_retry_failed_only_leaves_never_attempted_invoices_alone(run, demo, store):
    run.handle.faults.set_rules(
        [{"method": "POST", "path": "SalesEntries$", "kind": "status", "status": 503, "times": 1}]
    )
    run(3)
    (failed,) = [n for n, row in run.ledger(3).items() if row.state == "unknown"]
    new_number = clone_invoice(store, run.invoices(3)[-1].id, "P2026-9999")
    posts = run.posts()

    report = run(3, retry_failed_only=True)
    assert run.posts() == posts + 1
    assert report.booked == 1
    assert run.ledger(3)[failed].state == "booked"
    assert new_number not in run.ledger(3) and run.entries(DIVISION_NL)[new_number] == 0

    run(3)
    assert run.entries(DIVISION_NL)[new_number] == 1


def test_invoice_numbers_limit_the_run(run, demo):
    wanted = valid_numbers(run, demo, 3)[:2]
    report = run(3, invoice_numbers=tuple(wanted))
    assert report.booked == 2
    assert run.entries() == dict.fromkeys(wanted, 1)
    assert set(run.ledger()) == set(wanted)


def clone_invoice(store, invoice_id: int, number: str) -> str:
    """A new registered invoice like ``invoice_id`` (a bookkeeper registered one more)."""
    with Session(store.engine) as session, session.begin():
        source = session.get(InvoiceRow, invoice_id)
        columns = {c.key: getattr(source, c.key) for c in InvoiceRow.__table__.columns}
        new_id = session.scalar(select(func.max(InvoiceRow.id))) + 1
        session.add(InvoiceRow(**{**columns, "id": new_id, "number": number, "kind": "invoice",
                                  "credited_invoice_id": None, "registration_number": None,
                                  "synced_at": None}))  # fmt: skip
        session.flush()
        for line in session.scalars(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice_id)):
            values = {c.key: getattr(line, c.key) for c in InvoiceLineRow.__table__.columns if c.key != "id"}
            session.add(InvoiceLineRow(**{**values, "invoice_id": new_id}))
    return number


def test_a_credit_note_held_for_its_invoice_follows_once_that_invoice_is_booked(run, demo, store):
    """A nightly run resends a held-back credit note as soon as the invoice it credits got its number,
    although neither the credit note nor the integration changed."""
    closed = next(n for n, (_, fragment) in demo.expected_rejections.items() if "afgesloten" in fragment)
    copied = ("position", "description", "quantity", "unit_price", "vat_rate", "amount", "gl_account")
    with Session(store.engine) as session, session.begin():
        invoice = session.scalars(select(InvoiceRow).where(InvoiceRow.number == closed)).one()
        columns = [c for c in InvoiceRow.__table__.columns.keys() if c not in {"id", "number", "kind"}]
        credit = InvoiceRow(
            **{c: getattr(invoice, c) for c in columns}, number="2026/CN-1", kind="credit_note"
        )
        credit.credited_invoice_id = invoice.id
        credit.invoice_date = invoice.invoice_date + timedelta(days=40)
        credit.due_date = credit.invoice_date + timedelta(days=30)
        session.add(credit)
        session.flush()
        for line in session.scalars(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice.id)):
            session.add(InvoiceLineRow(**{c: getattr(line, c) for c in copied}, invoice_id=credit.id))
        invoice_id = invoice.id

    run(1, run_id="nightly-1")
    held = run.ledger(1)["2026/CN-1"]
    assert (held.state, held.error_class) == ("rejected", "data")
    assert closed in held.error_message and "2026/CN-1" not in run.entries()

    # The bookkeeper moves the invoice into an open period; a run for it alone books it.
    with Session(store.engine) as session, session.begin():
        invoice = session.get(InvoiceRow, invoice_id)
        invoice.invoice_date += timedelta(days=31)
        invoice.due_date += timedelta(days=31)
        invoice.updated_at = claims.utcnow()
    run(1, run_id="manual-1", invoice_numbers=(closed,))
    claim = claims.acquire(store.engine, 1, "write-back")
    store.write_back(claim)
    claims.release(store.engine, claim)
    assert run.entries()[closed] == 1

    report = run(1, run_id="nightly-2")
    assert report.booked == 1
    assert run.entries()["2026/CN-1"] == 1
    assert run.ledger(1)["2026/CN-1"].state == "booked"


def test_a_credit_note_refused_for_its_unknown_invoice_is_booked_with_it_in_the_next_run(run, demo, store):
    """The invoice's answer was lost, so its credit note was refused ("not booked yet"). The next run
    books the invoice and, in the same page, the credit note after it: no third run and no write-back
    in between are needed."""
    first_valid = next(
        row.number
        for row in run.invoices(3)
        if row.kind == "invoice" and row.number in valid_numbers(run, demo, 3)
    )
    copied = ("position", "description", "quantity", "unit_price", "vat_rate", "amount", "gl_account")
    with Session(store.engine) as session, session.begin():
        invoice = session.scalars(select(InvoiceRow).where(InvoiceRow.number == first_valid)).one()
        columns = [c for c in InvoiceRow.__table__.columns.keys() if c not in {"id", "number", "kind"}]
        credit = InvoiceRow(
            **{c: getattr(invoice, c) for c in columns}, number="P2026-CN-1", kind="credit_note"
        )
        credit.credited_invoice_id = invoice.id
        session.add(credit)
        session.flush()
        for line in session.scalars(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice.id)):
            session.add(InvoiceLineRow(**{c: getattr(line, c) for c in copied}, invoice_id=credit.id))
    run.handle.faults.set_rules(
        [{"method": "POST", "path": "SalesEntries$", "kind": "status", "status": 503, "times": 1}]
    )

    run(3, run_id="manual-1", invoice_numbers=(first_valid, "P2026-CN-1"))
    assert run.ledger(3)[first_valid].state == "unknown"
    held = run.ledger(3)["P2026-CN-1"]
    assert (held.state, held.error_class) == ("rejected", "data")
    assert first_valid in held.error_message

    report = run(3, run_id="nightly-2")
    assert report.still_rejected == 0
    assert run.entries(DIVISION_NL)[first_valid] == 1
    assert run.entries(DIVISION_NL)["P2026-CN-1"] == 1
    assert run.ledger(3)["P2026-CN-1"].state == "booked"


def test_write_back_in_pages_writes_every_number_once(run, demo, store):
    """The write-back pages through the booked rows; every page lands, and a second pass finds nothing."""
    run(3)
    booked = {n: row.registration_number for n, row in run.ledger(3).items() if row.state == "booked"}
    assert len(booked) > 3
    claim = claims.acquire(store.engine, 3, "write-back")
    assert store.write_back(claim, page_size=2) == len(booked)
    assert store.write_back(claim, page_size=2) == 0
    claims.release(store.engine, claim)
    numbers = {row.number: row.registration_number for row in run.invoices(3)}
    assert {n: numbers[n] for n in booked} == booked
    assert {row.state for n, row in run.ledger(3).items() if n in booked} == {"written_back"}


@pytest.mark.parametrize(
    ("batch_size", "per_call", "page"),
    [(50, 30, 30), (50, 25, 50), (50, 1, 50), (100, 30, 90), (3, 30, 3), (50, 50, 50)],
)
def test_pages_hold_whole_create_calls(batch_size: int, per_call: int, page: int) -> None:
    """A page is the asked size rounded down to whole calls of the connector, never a part-filled call
    at every page end (QuickBooks: 30 invoices a call, so pages of 30, not 50 = 30 + 20)."""
    sync = IntegrationSync(
        None,  # type: ignore[arg-type]  # deliberately missing values
        SimpleNamespace(invoices_per_call=per_call),  # type: ignore[arg-type]  # deliberately missing values
        SimpleNamespace(id=1, name="Paged BV", tool="quickbooks"),  # type: ignore[arg-type]  # deliberately missing values
        run_id="run",
        holder="run/1",
        options=SyncOptions(batch_size=batch_size),
    )
    assert sync._page_size() == page
