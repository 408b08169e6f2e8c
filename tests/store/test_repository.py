"""SyncStore: the candidate query, the atomic write-back, and the reporting queries, on both databases."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import LeaseLostError
from invoice_sync.domain.models import Booked, ErrorClass, Rejected, Unknown
from invoice_sync.store import claims
from invoice_sync.store.models import InvoiceRow, LedgerRow, LedgerState

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # when the builders in conftest.py register invoices


@pytest.fixture
def claim(store, data):
    data.integration(1)
    data.integration(2)
    return claims.acquire(store.engine, 1, "run-1/try-1")


# -- candidates -------------------------------------------------------------------------------------


def test_candidates_page_by_id_and_skip_drafts_and_numbered_invoices(store, data, claim):
    registered = data.invoices(3)
    data.invoices(2, status="draft", number=None)
    paid = data.invoices(1, status="paid")
    data.synced(2)
    others = data.invoices(2, integration_id=2)  # another integration's
    more = data.invoices(3)
    expected = registered + paid + more

    seen, after = [], 0
    while page := store.candidates(1, after_id=after, limit=2):
        assert len(page) <= 2
        assert [c.invoice_id for c in page] == sorted(c.invoice_id for c in page)
        seen += page
        after = page[-1].invoice_id
    assert [c.invoice_id for c in seen] == expected
    assert seen[0].number == "2026/00001" and seen[0].updated_at == T0 and seen[0].ledger is None
    assert store.count_candidates(1) == len(expected)
    assert [c.invoice_id for c in store.candidates(2)] == others


def test_candidates_carry_their_ledger_row_and_honour_numbers(store, data, claim):
    ids = data.invoices(5)
    store.record(claim, Rejected(ids[1], ErrorClass.DATA, "nope"), "run-1")
    store.mark(claim, [ids[2]], LedgerState.CLAIMED, "run-1", count_attempt=True)
    by_id = {c.invoice_id: c for c in store.candidates(1)}
    assert by_id[ids[0]].ledger is None
    assert (by_id[ids[1]].ledger.state, by_id[ids[1]].ledger.error_class) == ("rejected", "data")
    assert (by_id[ids[2]].ledger.state, by_id[ids[2]].ledger.attempts) == ("claimed", 1)

    wanted = ["2026/00002", "2026/00004", "NOPE"]
    assert [c.invoice_id for c in store.candidates(1, numbers=wanted)] == [ids[1], ids[3]]
    assert [c.invoice_id for c in store.candidates(1, numbers=wanted, after_id=ids[1])] == [ids[3]]
    assert [c.invoice_id for c in store.candidates(1, numbers=wanted, limit=1)] == [ids[1]]
    assert store.count_candidates(1, numbers=wanted) == 2
    assert store.candidates(1, numbers=[]) == store.candidates(1)  # empty means "all"


def test_candidate_query_uses_the_partial_index(store, data, claim):
    """Finding the unsynced invoices must cost in proportion to them, not to the history."""
    if store.engine.dialect.name == "sqlite":
        data.synced(50)
        data.invoices(5)
        plan = _explain_candidates(store, "EXPLAIN QUERY PLAN ")
        assert "ix_invoices_unsynced" in plan, plan
        assert "SCAN invoices" not in plan.replace("SCAN invoices USING", ""), plan
        return
    # With a handful of rows PostgreSQL's planner rightly prefers a sequential scan, so give it a
    # history: 5,000 synced invoices and 20 unsynced ones, with fresh statistics.
    data.synced(5_000)
    data.invoices(20)
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE invoices"))
        conn.execute(text("ANALYZE sync_ledger"))
    plan = _explain_candidates(store, "EXPLAIN ")
    assert "ix_invoices_unsynced" in plan, plan
    assert "Seq Scan on invoices" not in plan, plan


def _explain_candidates(store, prefix: str) -> str:
    """The plan of exactly the statement ``SyncStore.candidates`` sends (captured, then explained)."""
    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM invoices" in statement and "sync_ledger" in statement:
            captured.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.candidates(1, after_id=0, limit=50)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    (statement, parameters), *_ = captured
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(prefix + statement, parameters)
        return "\n".join(" ".join(str(col) for col in row) for row in cursor.fetchall())
    finally:
        raw.close()


# -- write-back -------------------------------------------------------------------------------------


def test_write_back_copies_numbers_and_moves_the_ledger_in_one_go(store, data, claim):
    ids = data.invoices(4)
    store.record(claim, Booked(ids[0], "26700001", "guid-1"), "run-1")
    store.record(claim, Booked(ids[1], "26700002", "guid-2"), "run-1")
    store.record(claim, Rejected(ids[2], ErrorClass.CONFIG, "no journal"), "run-1")
    store.record(claim, Unknown(ids[3], "no answer"), "run-1")

    assert store.write_back(claim) == 2
    with Session(store.engine) as session:
        invoices = {row.id: row for row in session.scalars(select(InvoiceRow))}
        ledger = {row.invoice_id: row for row in session.scalars(select(LedgerRow))}
    assert invoices[ids[0]].registration_number == "26700001"
    assert invoices[ids[1]].registration_number == "26700002"
    assert invoices[ids[0]].synced_at is not None and invoices[ids[0]].synced_at >= T0
    assert invoices[ids[0]].synced_at.tzinfo is not None
    assert invoices[ids[2]].registration_number is None and invoices[ids[3]].registration_number is None
    assert [ledger[i].state for i in ids] == ["written_back", "written_back", "rejected", "unknown"]
    assert ledger[ids[3]].error_class == "transient"
    assert [c.invoice_id for c in store.candidates(1)] == ids[2:]  # synced ones left the candidates
    assert store.write_back(claim) == 0  # nothing booked is left


def test_write_back_is_all_or_nothing(store, data, claim):
    ids = data.invoices(3)
    for n, invoice_id in enumerate(ids, start=1):
        store.record(claim, Booked(invoice_id, f"2670000{n}", f"guid-{n}"), "run-1")
    _fail_updates_of_invoice(store.engine, ids[1])

    with pytest.raises(DBAPIError, match="refused by test trigger"):
        store.write_back(claim)
    with Session(store.engine) as session:
        assert session.scalars(select(InvoiceRow.registration_number)).all() == [None, None, None]
        assert session.scalars(select(InvoiceRow.synced_at)).all() == [None, None, None]
        assert set(session.scalars(select(LedgerRow.state))) == {LedgerState.BOOKED}


def _fail_updates_of_invoice(engine, invoice_id: int) -> None:
    """A database trigger that refuses any UPDATE of one invoice, as a constraint or a lock timeout would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_update BEFORE UPDATE ON invoices WHEN NEW.id = {invoice_id} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_update BEFORE UPDATE ON invoices FOR EACH ROW "
                    f"WHEN (NEW.id = {invoice_id}) EXECUTE FUNCTION refuse_update()"
                )
            )


# -- ledger writes ----------------------------------------------------------------------------------


def test_mark_creates_and_moves_rows_and_counts_attempts(store, data, claim):
    ids = data.invoices(2)
    store.mark(claim, ids, LedgerState.CLAIMED, "run-1", count_attempt=True)
    store.mark(claim, ids[:1], LedgerState.CLAIMED, "run-2", count_attempt=True)
    store.mark(claim, ids[1:], LedgerState.DEFERRED, "run-2", error_class="quota", error_message="later")
    store.mark(claim, [], LedgerState.DEFERRED, "run-3")  # nothing to do, no error
    with Session(store.engine) as session:
        rows = {r.invoice_id: r for r in session.scalars(select(LedgerRow))}
    assert (rows[ids[0]].state, rows[ids[0]].attempts, rows[ids[0]].run_id) == ("claimed", 2, "run-2")
    assert (rows[ids[1]].state, rows[ids[1]].attempts, rows[ids[1]].error_class) == ("deferred", 1, "quota")
    assert store.ledger_needing_lookup(1) == {ids[0]: "2026/00001"}


def _flushes_each_commit(session: Session) -> bool:
    if session.get_bind().dialect.name == "sqlite":
        return session.scalar(text("PRAGMA synchronous")) == 2  # FULL
    return session.scalar(text("SHOW synchronous_commit")) == "on"


def test_a_calls_outcomes_commit_without_waiting_for_the_disk_but_the_claimed_mark_waits(
    store, data, claim, monkeypatch
):
    """The ``claimed`` mark must reach the disk before a request leaves (a lost mark would let the next
    run push again without looking up). A call's outcomes need not: a lost one leaves its invoice
    ``claimed``, which the next run looks up; not waiting for the disk took a fifth of Exact's cost per
    invoice. Both are visible to every reader at once, and the fence checks the claim in both."""
    seen: list[bool] = []
    fenced = type(store).fenced

    def recording(self, claim, *, flushed=True):
        with fenced(self, claim, flushed=flushed) as session:
            seen.append(_flushes_each_commit(session))
            yield session

    monkeypatch.setattr(type(store), "fenced", contextmanager(recording))
    ids = data.invoices(2)
    store.mark(claim, ids, LedgerState.CLAIMED, "run-1", count_attempt=True)
    outcomes = [Booked(ids[0], "70001", "e-1"), Rejected(ids[1], ErrorClass.DATA, "no")]
    store.record_all(claim, outcomes, "run-1")
    assert seen == [True, False]
    with Session(store.engine) as session:
        rows = {r.invoice_id: r for r in session.scalars(select(LedgerRow))}
    assert [(rows[i].state, rows[i].attempts) for i in ids] == [("booked", 1), ("rejected", 1)]
    assert rows[ids[0]].registration_number == "70001"
    assert rows[ids[1]].error_message == "no"

    with Session(store.engine) as session, session.begin():  # another holder took the integration
        session.execute(text("UPDATE sync_claims SET fencing_token = fencing_token + 1"))
    with pytest.raises(LeaseLostError):
        store.record_all(claim, [Booked(ids[0], "70002", "e-2")], "run-1")


# -- reporting --------------------------------------------------------------------------------------


def test_skip_counts_and_changed_after_sync(store, data, claim):
    data.invoices(2, status="draft", number=None)
    data.synced(3)
    edited = data.synced(2, updated_at=T0 + timedelta(days=2))  # edited after the sync (T0 + 1 day)
    data.invoices(4, invoice_date=date(2025, 12, 31))  # before the cut-over set below
    data.invoices(5)  # candidates: not skipped
    data.invoices(1, integration_id=2, status="draft", number=None)

    assert store.skip_counts(1) == {"draft": 2, "already_synced": 3, "changed_after_sync": 2}
    with Session(store.engine) as session, session.begin():
        session.execute(text("UPDATE integrations SET sync_from = '2026-01-01' WHERE id = 1"))
    counts = store.skip_counts(1)
    assert counts == {"draft": 2, "already_synced": 3, "changed_after_sync": 2, "before_cutover": 4}
    assert store.skip_counts(2) == {"draft": 1}

    changed = store.changed_after_sync(1)
    assert sorted(item["invoice_id"] for item in changed) == edited
    assert {item["registration_number"] for item in changed} == {f"2570{i}" for i in edited}
    assert {item["number"] for item in changed} == {f"2026/{i:05d}" for i in edited}
    assert store.changed_after_sync(2) == []


def test_ledger_frame_has_the_rows_of_one_run(store, data, claim):
    ids = data.invoices(3)
    other = data.invoices(1, integration_id=2)
    store.record(claim, Booked(ids[0], "26700001", "guid-1"), "run-1")
    store.record(claim, Rejected(ids[1], ErrorClass.CONFIG, "VAT rate 9% is not mapped"), "run-1")
    store.record(claim, Booked(ids[2], "26700003", "guid-3"), "run-0")
    claim_2 = claims.acquire(store.engine, 2, "run-1/try-1")
    store.record(claim_2, Unknown(other[0], "no answer"), "run-1")

    frame = store.ledger_frame("run-1")
    assert list(frame.columns) == [
        "integration_id",
        "invoice_id",
        "number",
        "state",
        "error_class",
        "error_message",
        "registration_number",
    ]
    rows = {r.invoice_id: r for r in frame.itertuples()}
    assert set(rows) == {ids[0], ids[1], other[0]}
    assert (rows[ids[0]].state, rows[ids[0]].registration_number) == ("booked", "26700001")
    assert (rows[ids[1]].error_class, rows[ids[1]].number) == ("config", "2026/00002")
    assert rows[other[0]].state == "unknown"
    assert set(store.ledger_frame("run-1", [2])["invoice_id"]) == {other[0]}
    assert store.ledger_frame("run-9").empty
    assert store.count_rejected(1) == 1


# -- integrations -----------------------------------------------------------------------------------
# Runs choose integrations by id (a number) or by name (text, compared exactly), so a name that reads as an
# id, or one two integrations share, is refused when saved (issue 14, item 2).


def test_saving_an_integration_refuses_a_name_of_digits_or_one_already_taken(store):
    from invoice_sync.domain.selection import IntegrationNameError

    first = store.save_integration(name="Atelier Demo BV", tool="exact_online", conn_id="exact_demo")
    assert store.integration(first).name == "Atelier Demo BV"

    with pytest.raises(IntegrationNameError, match=r"'12' is digits only"):
        store.save_integration(name="12", tool="exact_online", conn_id="exact_demo")
    with pytest.raises(
        IntegrationNameError, match=rf"'Atelier Demo BV' is already the name of integration #{first}"
    ):
        store.save_integration(name="Atelier Demo BV", tool="yuki", conn_id="yuki_demo")
    with pytest.raises(IntegrationNameError, match="is empty"):
        store.save_integration(name=" ", tool="yuki", conn_id="yuki_demo")
    assert [i.id for i in store.integrations()] == [first]  # nothing refused was written

    second = store.save_integration(name="atelier demo bv", tool="yuki", conn_id="yuki_demo", auto_sync=False)
    renamed = store.save_integration(  # saving an integration under its own name is no clash
        integration_id=first, name="Atelier Demo BV", tool="exact_online", conn_id="exact_demo",
        settings={"division": 123456},
    )  # fmt: skip
    assert renamed == first and store.integration(first).settings.extra == {"division": 123456}
    with pytest.raises(IntegrationNameError, match=rf"already the name of integration #{first}"):
        store.save_integration(
            integration_id=second, name="Atelier Demo BV", tool="yuki", conn_id="yuki_demo"
        )
    assert store.integration(second).name == "atelier demo bv"  # different case: a different name


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_settings_that_are_not_json_at_all_make_only_their_integration_unreadable(store, data):
    """SQLite keeps a JSON column as text: the app can store anything there. PostgreSQL refuses it."""
    data.integration(1)
    data.integration(2)
    data.integration(3)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE integrations SET settings = 'division: 123456' WHERE id = 2"))

    listed = {i.id: i for i in store.integrations()}
    assert sorted(listed) == [1, 2, 3]
    assert listed[1].unreadable is None and listed[3].unreadable is None
    assert listed[2].unreadable == (
        "integrations.settings of integration #2 cannot be read: the settings are 'division: 123456', "
        "which is not JSON; correct the integration's settings"
    )
