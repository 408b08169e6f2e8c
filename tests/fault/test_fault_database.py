"""Faults of the invoicing database and of the fencing itself: the write-back transaction failing, every
connection to the database cut (a PostgreSQL restart, without restarting the shared server) in the middle
of a run, and the lease being checked right before every POST."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import runner
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from world import RUN_LEASE_S

from invoice_sync.store import claims
from invoice_sync.store.models import InvoiceRow, LedgerRow, LedgerState

BOTH_DATABASES = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
POSTGRES = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def _create(world, kind: str, times: int | None = None, **extra: Any) -> dict[str, Any]:
    return world.harness.create_rule(kind, times=times, **extra)


def _fail_updates_of(engine, invoice_id: int) -> None:
    """A trigger that makes the UPDATE of one invoice fail, as a constraint or a lock timeout would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER fail_write_back BEFORE UPDATE ON invoices WHEN NEW.id = {invoice_id} "
                    "BEGIN SELECT RAISE(ABORT, 'injected write-back failure'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION fail_write_back() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'injected write-back failure'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER fail_write_back BEFORE UPDATE ON invoices FOR EACH ROW "
                    f"WHEN (NEW.id = {invoice_id}) EXECUTE FUNCTION fail_write_back()"
                )
            )


def _drop_failing_trigger(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER fail_write_back"))
        else:
            conn.execute(text("DROP TRIGGER fail_write_back ON invoices"))
            conn.execute(text("DROP FUNCTION fail_write_back()"))


@BOTH_DATABASES
def test_a_failing_write_back_writes_nothing_and_the_next_one_writes_all(world):
    """One UPDATE of the write-back fails: the whole transaction rolls back (no invoice has its number
    while its ledger row says otherwise, or the reverse), and the next write-back writes every number."""
    from invariants import write_back

    first = world.sync()
    assert {r["status"] for r in first.values()} == {"ok"}
    with Session(world.store.engine) as session:
        booked = session.scalars(
            select(LedgerRow.invoice_id)
            .where(LedgerRow.integration_id == world.primary, LedgerRow.state == LedgerState.BOOKED)
            .order_by(LedgerRow.invoice_id)
        ).all()
    assert len(booked) == len(world.seeded.valid[world.primary])
    _fail_updates_of(world.store.engine, booked[len(booked) // 2])  # some UPDATEs succeed before it
    with pytest.raises(DBAPIError, match="injected write-back failure"):
        write_back(world.store, [world.primary])
    with Session(world.store.engine) as session:
        numbered = session.scalars(
            select(InvoiceRow.number).where(
                InvoiceRow.id.in_(booked), InvoiceRow.registration_number.is_not(None)
            )
        ).all()
        states = set(session.scalars(select(LedgerRow.state).where(LedgerRow.invoice_id.in_(booked))).all())
    assert numbered == [] and states == {LedgerState.BOOKED}
    _drop_failing_trigger(world.store.engine)
    world.check()  # the next write-back (then every invariant)


def _terminate_backends(admin_url: str, database: str, *, times: int, every_s: float, stop) -> list[int]:
    """What a PostgreSQL restart does to its clients, without restarting the shared server."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    killed = []
    try:
        for _ in range(times):
            if stop.wait(every_s):
                break
            with admin.connect() as conn:
                killed.append(
                    len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = :db AND pid <> pg_backend_pid()"
                            ),
                            {"db": database},
                        ).all()
                    )
                )
    finally:
        admin.dispose()
    return killed


@POSTGRES
def test_the_database_dropping_every_connection_mid_run(world, pg_admin_url):
    """Every backend of the invoicing database is terminated several times while a run works: the run
    completes (the pool reconnects) or fails cleanly with a database error, and the next run converges."""
    world.warm_up()
    world.harness.set_faults([_create(world, "latency", delay_s=0.25)])
    args, result = world.runner_args(lease_s=RUN_LEASE_S, batch_size=3)
    process = runner.start_forked(args)
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.extend(
            _terminate_backends(
                pg_admin_url, make_url(world.db_url).database, times=6, every_s=0.35, stop=stop
            )
        )
    )
    killer.start()
    process.join(timeout=60)
    stop.set()
    killer.join(timeout=10)
    outcome = runner.read_result(result)["integrations"][str(world.primary)]
    assert outcome["status"] in {"ok", "error"}
    if outcome["status"] == "ok":
        assert sum(killed) >= 3, killed  # it survived: connections really were cut, several times
    else:  # a cut it could not ride out ended it, cleanly
        assert sum(killed) >= 1, killed
        assert outcome["error_type"] in {"OperationalError", "InterfaceError", "DBAPIError"}, outcome
    world.converge()


def test_the_lease_is_checked_right_before_every_post(world, monkeypatch):
    """Between two POSTs of the create call (and before the first) there is always a fenced check of the
    lease, so a holder that lost its lease cannot send another invoice."""
    events: list[str] = []
    check, request = claims.check, requests.Session.request
    is_create = world.harness.is_create_request

    def checked(session, claim):
        check(session, claim)
        events.append("check")

    def sent(self, method, url, *args, **kwargs):
        if is_create(method, url, kwargs.get("data") or kwargs.get("json")):
            events.append("post")
        return request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(claims, "check", checked)
    monkeypatch.setattr(requests.Session, "request", sent)
    world.harness.set_faults([_create(world, "commit_then_drop", times=1)])  # an unknown outcome too
    world.sync(batch_size=3)
    assert events.count("post") == world.harness.create_calls() > 0
    previous = "check"
    for event in events:
        assert not (event == "post" and previous == "post"), events
        previous = event
    assert events[0] == "check"
    world.converge()
