"""Leases on integrations, with fencing tokens.

Two task instances must never work on one integration at once, and Airflow really produces that case:
after a worker dies, its task process may run on, orphaned, while the scheduler retries the task
elsewhere. So a claim is a lease that expires unless renewed, and every write (ledger row, customer link,
write-back) first re-checks the lease in the same transaction: an orphan whose lease was taken over can no
longer write, and the engine checks before every push, so it can no longer push either.

Both steps are single conditional UPDATEs, which are atomic on SQLite and PostgreSQL alike.

A lease that ran out is not the end of its holder's requests: a POST sent just before may still be on its
way to the tool, or being committed there. So a claim taken over from a holder that did not release it
carries that lease's end (:attr:`Claim.predecessor_lease_end`); the engine waits until then plus the
connector's request timeout before it looks anything up. :func:`release` sets the lease's end to
:data:`RELEASED` (nothing in flight), or, for a claim that was itself a takeover, back to its predecessor's
lease end, so a successor still waits for requests the orphan may have in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Table, bindparam, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import LeaseLostError
from invoice_sync.store.models import ClaimRow

DEFAULT_LEASE = timedelta(minutes=3)
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
"""``lease_expires_at`` of a claim given back with :func:`release`: none of its holder's requests is left."""


class ClaimHeldError(Exception):
    """Another run works on this integration; try again after its lease ends."""

    def __init__(self, integration_id: int, holder: str | None) -> None:
        super().__init__(
            f"integration {integration_id} is being synced by {holder or 'another run'}; retry later"
        )
        self.integration_id = integration_id
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Claim:
    integration_id: int
    holder: str
    fencing_token: int
    lease: timedelta = DEFAULT_LEASE
    predecessor_lease_end: datetime | None = None
    """When this claim was taken over from another holder whose lease ran out (it did not release it): when
    that lease ended. Requests that holder sent before may be in flight until then plus their timeout."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def acquire(engine: Engine, integration_id: int, holder: str, lease: timedelta = DEFAULT_LEASE) -> Claim:
    """Take the integration if it is free, its lease has run out, or ``holder`` already has it.

    A compare-and-set on the fencing token: the row is read, then updated only if nobody took it meanwhile,
    so the claim knows whose lease it replaced and when that lease ended.
    """
    for _ in range(5):
        now = utcnow()
        with Session(engine) as session:
            current = session.get(ClaimRow, integration_id)
            if current is not None:
                session.expunge(current)
        if current is None:
            try:
                with Session(engine) as session, session.begin():
                    session.execute(
                        insert(ClaimRow).values(
                            integration_id=integration_id,
                            holder=holder,
                            fencing_token=1,
                            lease_expires_at=now + lease,
                            acquired_at=now,
                        )
                    )
                return Claim(integration_id, holder, 1, lease)
            except IntegrityError:
                continue  # someone inserted first; the next round sees their row
        if current.holder != holder and current.lease_expires_at >= now:
            raise ClaimHeldError(integration_id, current.holder)
        predecessor_end = None
        handed_on = current.lease_expires_at < current.acquired_at  # released by a takeover (see release)
        if current.lease_expires_at > RELEASED and (current.holder != holder or handed_on):
            predecessor_end = current.lease_expires_at  # ran out without a release: maybe requests in flight
        with Session(engine) as session, session.begin():
            taken = session.execute(
                update(ClaimRow)
                .where(
                    ClaimRow.integration_id == integration_id,
                    ClaimRow.fencing_token == current.fencing_token,
                    (ClaimRow.lease_expires_at < now) | (ClaimRow.holder == holder),
                )
                .values(
                    holder=holder,
                    fencing_token=ClaimRow.fencing_token + 1,
                    lease_expires_at=now + lease,
                    acquired_at=now,
                )
                .returning(ClaimRow.fencing_token)
            ).scalar_one_or_none()
        if taken is not None:
            return Claim(integration_id, holder, taken, lease, predecessor_end)
        # someone took it (or renewed it) between the read and the update: look again
    raise ClaimHeldError(integration_id, None)


_CLAIMS = cast(Table, ClaimRow.__table__)
_RENEW = (
    update(_CLAIMS)
    .where(
        _CLAIMS.c.integration_id == bindparam("b_integration"),
        _CLAIMS.c.holder == bindparam("b_holder"),
        _CLAIMS.c.fencing_token == bindparam("b_token"),
        _CLAIMS.c.lease_expires_at >= bindparam("b_now"),
    )
    .values(lease_expires_at=bindparam("b_until"))
)
"""The renewal :func:`check` runs before every write of a run (once per invoice for a tool that books one
per call): built once, and on the table rather than the ORM class, whose UPDATE first works out which
loaded objects to refresh; that cost a fifth of such a tool's whole time per invoice."""


def check(session: Session, claim: Claim) -> None:
    """Renew the lease inside the caller's transaction, or raise :class:`LeaseLostError`.

    Call this first in every transaction that writes on behalf of a claim: on PostgreSQL the UPDATE locks
    the claim row until commit, so a takeover cannot slip in between the check and the write.
    """
    now = utcnow()
    result = session.execute(
        _RENEW,
        {
            "b_integration": claim.integration_id,
            "b_holder": claim.holder,
            "b_token": claim.fencing_token,
            "b_now": now,
            "b_until": now + claim.lease,
        },
    )
    # An UPDATE answers with a cursor result, which is what carries the row count.
    if cast(CursorResult[Any], result).rowcount != 1:
        raise LeaseLostError(
            f"lost the claim on integration {claim.integration_id} (fencing token {claim.fencing_token})"
        )


def release(engine: Engine, claim: Claim) -> None:
    """Give the integration back at once, so the next run need not wait for the lease to run out.

    A claim that was a takeover hands its predecessor's lease end on: the next holder then still waits for
    requests the orphan may have in flight (a no-op once that time is past).
    """
    with Session(engine) as session, session.begin():
        session.execute(
            update(ClaimRow)
            .where(
                ClaimRow.integration_id == claim.integration_id,
                ClaimRow.holder == claim.holder,
                ClaimRow.fencing_token == claim.fencing_token,
            )
            .values(lease_expires_at=claim.predecessor_lease_end or RELEASED)
        )
