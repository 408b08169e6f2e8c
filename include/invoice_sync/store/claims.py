"""Leases on integrations, with fencing tokens.

Two task instances must never work on one integration at once, and Airflow really produces that case:
after a worker dies, its task process may run on, orphaned, while the scheduler retries the task
elsewhere. So a claim is a lease that expires unless renewed, and every write (ledger row, customer link,
write-back) first re-checks the lease in the same transaction: an orphan whose lease was taken over can no
longer write, and the engine checks before every push, so it can no longer push either.

Both steps are single conditional UPDATEs, which are atomic on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoice_sync.domain.errors import LeaseLostError
from invoice_sync.store.models import ClaimRow

DEFAULT_LEASE = timedelta(minutes=3)


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def acquire(engine: Engine, integration_id: int, holder: str, lease: timedelta = DEFAULT_LEASE) -> Claim:
    """Take the integration if it is free, its lease has run out, or ``holder`` already has it."""
    for _ in range(3):
        now = utcnow()
        with Session(engine) as session, session.begin():
            taken = session.execute(
                update(ClaimRow)
                .where(
                    ClaimRow.integration_id == integration_id,
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
                return Claim(integration_id, holder, taken, lease)
            current = session.get(ClaimRow, integration_id)
            if current is not None:
                raise ClaimHeldError(integration_id, current.holder)
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
    raise ClaimHeldError(integration_id, None)


def check(session: Session, claim: Claim) -> None:
    """Renew the lease inside the caller's transaction, or raise :class:`LeaseLostError`.

    Call this first in every transaction that writes on behalf of a claim: on PostgreSQL the UPDATE locks
    the claim row until commit, so a takeover cannot slip in between the check and the write.
    """
    now = utcnow()
    renewed = session.execute(
        update(ClaimRow)
        .where(
            ClaimRow.integration_id == claim.integration_id,
            ClaimRow.holder == claim.holder,
            ClaimRow.fencing_token == claim.fencing_token,
            ClaimRow.lease_expires_at >= now,
        )
        .values(lease_expires_at=now + claim.lease)
    ).rowcount
    if renewed != 1:
        raise LeaseLostError(
            f"lost the claim on integration {claim.integration_id} (fencing token {claim.fencing_token})"
        )


def release(engine: Engine, claim: Claim) -> None:
    """Give the integration back at once, so the next run need not wait for the lease to run out."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(ClaimRow)
            .where(
                ClaimRow.integration_id == claim.integration_id,
                ClaimRow.holder == claim.holder,
                ClaimRow.fencing_token == claim.fencing_token,
            )
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
