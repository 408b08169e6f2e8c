"""Leases with fencing tokens: one holder at a time, and a holder that lost its lease writes nothing."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import LeaseLostError
from invoice_sync.domain.models import Booked, Rejected
from invoice_sync.store import claims
from invoice_sync.store.claims import ClaimHeldError
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import ClaimRow, InvoiceRow, LedgerRow, LedgerState

SHORT = timedelta(milliseconds=300)


def wait_out(lease: timedelta) -> None:
    time.sleep(lease.total_seconds() + 0.1)


def test_acquire_renew_release(store):
    engine = store.engine
    first = claims.acquire(engine, 1, "run-a/try-1")
    assert first.fencing_token == 1
    with Session(engine) as session, session.begin():
        expires_before = session.get(ClaimRow, 1).lease_expires_at
    time.sleep(0.02)
    with Session(engine) as session, session.begin():
        claims.check(session, first)  # renews
    with Session(engine) as session:
        row = session.get(ClaimRow, 1)
        assert row.holder == "run-a/try-1"
        assert row.lease_expires_at > expires_before

    again = claims.acquire(engine, 1, "run-a/try-1")  # the same holder may re-enter
    assert again.fencing_token == 2
    with pytest.raises(LeaseLostError):  # and the older token of that holder is fenced off
        with Session(engine) as session, session.begin():
            claims.check(session, first)

    claims.release(engine, again)
    taken = claims.acquire(engine, 1, "run-b/try-1")  # free at once, no need to wait for expiry
    assert taken.fencing_token == 3
    with pytest.raises(LeaseLostError):
        with Session(engine) as session, session.begin():
            claims.check(session, again)


def test_release_of_a_lost_claim_does_not_free_the_new_holder(store):
    old = claims.acquire(store.engine, 1, "old", lease=SHORT)
    wait_out(SHORT)
    new = claims.acquire(store.engine, 1, "new")
    claims.release(store.engine, old)
    with pytest.raises(ClaimHeldError):
        claims.acquire(store.engine, 1, "third")
    with Session(store.engine) as session, session.begin():
        claims.check(session, new)


def test_claims_are_per_integration(store):
    claims.acquire(store.engine, 1, "a")
    assert claims.acquire(store.engine, 2, "b").fencing_token == 1


def test_second_holder_is_refused_while_the_lease_is_valid_and_takes_over_after_expiry(store, data):
    data.integration()
    invoice_a, invoice_b = data.invoices(2)
    old = claims.acquire(store.engine, 1, "run-1/try-1", SHORT)
    store.mark(old, [invoice_a], LedgerState.CLAIMED, "run-1", count_attempt=True)  # writes while valid

    with pytest.raises(ClaimHeldError) as refused:
        claims.acquire(store.engine, 1, "run-2/try-1", SHORT)
    assert refused.value.holder == "run-1/try-1"
    assert "run-1/try-1" in str(refused.value)

    wait_out(SHORT)
    new = claims.acquire(store.engine, 1, "run-2/try-1", timedelta(minutes=5))
    assert new.fencing_token == old.fencing_token + 1

    # The orphan notices at its next write, and none of its fenced writes land.
    with pytest.raises(LeaseLostError):
        with Session(store.engine) as session, session.begin():
            claims.check(session, old)
    with pytest.raises(LeaseLostError):
        store.mark(old, [invoice_b], LedgerState.CLAIMED, "run-1")
    with pytest.raises(LeaseLostError):
        store.record(old, Booked(invoice_a, "26700001", "entry-guid"), "run-1")
    with pytest.raises(LeaseLostError):
        store.record(old, Rejected(invoice_b, "data", "nope"), "run-1")
    with pytest.raises(LeaseLostError):
        store.save_customer_links(old, {1: "account-guid"}, "run-1")

    # A booked row the new holder wrote is not written back by the orphan either.
    store.record(new, Booked(invoice_a, "26700001", "entry-guid"), "run-2")
    with pytest.raises(LeaseLostError):
        store.write_back(old)
    with Session(store.engine) as session:
        ledger = {row.invoice_id: row for row in session.scalars(select(LedgerRow))}
        assert set(ledger) == {invoice_a}
        assert (ledger[invoice_a].state, ledger[invoice_a].run_id) == (LedgerState.BOOKED, "run-2")
        assert session.get(InvoiceRow, invoice_a).registration_number is None
        assert session.scalar(select(func.count()).select_from(ClaimRow)) == 1
    assert store.customer_links(1, [1]) == {}

    assert store.write_back(new) == 1  # the rightful holder can


def test_an_expired_lease_nobody_took_over_is_not_renewed(store):
    """An expired lease is lost even if nobody took it yet: another run may be about to."""
    claim = claims.acquire(store.engine, 1, "slow", SHORT)
    wait_out(SHORT)
    with pytest.raises(LeaseLostError):
        with Session(store.engine) as session, session.begin():
            claims.check(session, claim)


def _race_threads(engine, holders: list[str]) -> dict[str, str]:
    barrier = threading.Barrier(len(holders))
    results: dict[str, str] = {}

    def contend(holder: str) -> None:
        barrier.wait()
        try:
            claim = claims.acquire(engine, 7, holder)
            results[holder] = f"won:{claim.fencing_token}"
        except ClaimHeldError:
            results[holder] = "held"
        except Exception as exc:  # noqa: BLE001 - any other outcome fails the test below
            results[holder] = f"error:{exc!r}"

    threads = [threading.Thread(target=contend, args=(holder,)) for holder in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_threads_racing_for_one_integration_exactly_one_wins(store):
    holders = [f"run-{n}" for n in range(8)]
    for _round in range(3):  # first the insert race, then two update races on the existing row
        results = _race_threads(store.engine, holders)
        assert len(results) == len(holders)
        won = [h for h, outcome in results.items() if outcome.startswith("won")]
        assert len(won) == 1, results
        assert all(outcome == "held" for h, outcome in results.items() if h not in won), results
        with Session(store.engine) as session, session.begin():
            row = session.get(ClaimRow, 7)
            assert row.holder == won[0]
            row.lease_expires_at = claims.utcnow() - timedelta(seconds=1)  # free it for the next round


def _acquire_in_process(url: str, holder: str, barrier, results) -> None:
    engine = make_engine(url)
    try:
        barrier.wait(timeout=30)
        claim = claims.acquire(engine, 7, holder)
        results.put((holder, f"won:{claim.fencing_token}"))
    except ClaimHeldError:
        results.put((holder, "held"))
    except Exception as exc:  # noqa: BLE001
        results.put((holder, f"error:{exc!r}"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_processes_racing_for_one_integration_exactly_one_wins(pg_url):
    from invoice_sync.store.migrate import prepare

    engine = make_engine(pg_url)
    prepare(engine)
    engine.dispose()
    context = multiprocessing.get_context("fork")
    workers = 6
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=_acquire_in_process, args=(pg_url, f"proc-{n}", barrier, results))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    assert [h for h, o in outcomes.items() if o == "won:1"] != [], outcomes
    assert sorted(outcomes.values()) == ["held"] * (workers - 1) + ["won:1"], outcomes
