"""Queries and writes the engine and the Airflow tasks need, in the domain's words.

Reads return domain value objects; writes on behalf of a claim go through :meth:`SyncStore.fenced`, which
re-checks the lease in the same transaction.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    Engine,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload

from invoice_sync.domain.models import (
    Booked,
    Customer,
    CustomerKind,
    Integration,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Outcome,
    Rejected,
    RelatedInvoice,
    SettingsError,
    Unknown,
    shown,
    unreadable_settings,
)
from invoice_sync.domain.rules import SYNCABLE_STATUSES
from invoice_sync.domain.selection import check_name
from invoice_sync.store import claims
from invoice_sync.store.claims import Claim, utcnow
from invoice_sync.store.db import make_engine
from invoice_sync.store.models import (
    CustomerLinkRow,
    CustomerRow,
    IntegrationRow,
    InvoiceLineRow,
    InvoiceRow,
    LedgerRow,
    LedgerState,
    NotificationRow,
    RunRow,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)

SYNCABLE = tuple(str(status) for status in SYNCABLE_STATUSES)
DRAFT = str(InvoiceStatus.DRAFT)
OFFERED = or_(InvoiceRow.status.is_(None), InvoiceRow.status != DRAFT)
"""Invoices the sync considers: every one that is not a draft. A status the domain does not know (or none)
is among them so that it is refused, naming the value, instead of being passed over in silence."""
CHANGED_SINCE_SYNC = and_(
    InvoiceRow.registration_number.is_not(None),
    InvoiceRow.synced_at.is_not(None),
    InvoiceRow.updated_at > InvoiceRow.synced_at,
)
"""Synced, then edited in the app: reported as changed after sync, never pushed again."""
CHANGED_AFTER_SYNC = "changed_after_sync"
NEW = "new"
"""The state of an unsynced invoice no run has tried yet (it has no ledger row)."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    invoice_id: int
    state: str
    attempts: int
    error_class: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """An unsynced, registered invoice as the candidate query sees it (no lines, no customer yet)."""

    invoice_id: int
    number: str | None
    updated_at: datetime | None
    ledger: LedgerEntry | None
    credited_synced_at: datetime | None = None
    """For a credit note: when the invoice it credits got its registration number (None if not yet)."""
    credited_invoice_id: int | None = None
    credited_booked_at: datetime | None = None
    """For a credit note: when the invoice it credits was recorded as booked in the tool (None if not)."""


class SyncStore:
    """:param lease: how long a claim lasts without renewal (every fenced write renews it)."""

    def __init__(self, engine: Engine, *, lease: timedelta = claims.DEFAULT_LEASE) -> None:
        self.engine = engine
        self.lease = lease

    @cached_property
    def _unflushed_engine(self) -> Engine:
        """An engine on the same database whose commits do not wait for the disk (see
        :meth:`record_all`); an in-memory SQLite database exists in one engine only, so it keeps that."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            return self.engine
        return make_engine(url.render_as_string(hide_password=False), flush_each_commit=False)

    # -- integrations -------------------------------------------------------------------------

    def integrations(
        self,
        ids: Sequence[int] | None = None,
        *,
        auto_sync_only: bool = False,
        tool: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Integration]:
        """The integrations (of ``ids``, of ``tool``), by id, each readable or carrying why not: one row's
        mistake is its own. ``limit`` and ``offset`` give the Invoice sync page one page of them.

        The settings are read as text and parsed here, row by row: SQLite keeps a JSON column as text the
        app may fill with anything, and a value that is not JSON must not stop the listing of the others.
        """
        columns = [c for c in cast(Table, IntegrationRow.__table__).c if c.key != "settings"]
        settings_text = sa_cast(IntegrationRow.settings, Text).label("settings_text")
        query = _integrations_where(select(*columns, settings_text), ids, tool)
        if auto_sync_only:
            query = query.where(IntegrationRow.auto_sync.is_(True))
        query = query.order_by(IntegrationRow.id).offset(offset).limit(limit)
        with Session(self.engine) as session:
            return [_integration(row) for row in session.execute(query)]

    def count_integrations(self, ids: Sequence[int] | None = None, *, tool: str | None = None) -> int:
        """How many integrations :meth:`integrations` would list with the same filters."""
        with Session(self.engine) as session:
            return session.scalar(_integrations_where(select(func.count(IntegrationRow.id)), ids, tool)) or 0

    def integration(self, integration_id: int) -> Integration:
        found = self.integrations([integration_id])
        if not found:
            raise LookupError(f"integration {integration_id} does not exist")
        return found[0]

    def save_integration(
        self,
        *,
        name: str,
        tool: str,
        conn_id: str,
        auto_sync: bool = True,
        sync_from: date | None = None,
        settings: dict[str, Any] | None = None,
        integration_id: int | None = None,
    ) -> int:
        """Insert an integration, or update ``integration_id``'s; returns its id.

        Runs choose integrations by exact name as well as by id, so a name of digits only or one another
        integration has is refused (:class:`~invoice_sync.domain.selection.IntegrationNameError`, naming the
        name and that integration) and nothing is written. The app writes its own rows too: a run refuses
        such a name again when someone chooses by it.
        """
        with Session(self.engine) as session, session.begin():
            others = select(IntegrationRow.id, IntegrationRow.name).where(IntegrationRow.name == name)
            if integration_id is not None:
                others = others.where(IntegrationRow.id != integration_id)
            check_name(name, [(row.id, row.name) for row in session.execute(others)])
            row = session.get(IntegrationRow, integration_id) if integration_id is not None else None
            if row is None:
                row = IntegrationRow(id=integration_id)
                session.add(row)
            row.name, row.tool, row.conn_id = name, tool, conn_id
            row.auto_sync, row.sync_from, row.settings = auto_sync, sync_from, dict(settings or {})
            row.updated_at = utcnow()
            session.flush()
            return row.id

    # -- claims -------------------------------------------------------------------------------

    def acquire(self, integration_id: int, holder: str, *, lease: timedelta | None = None) -> Claim:
        return claims.acquire(self.engine, integration_id, holder, lease or self.lease)

    def release(self, claim: Claim) -> None:
        claims.release(self.engine, claim)

    @contextmanager
    def fenced(self, claim: Claim, *, flushed: bool = True) -> Iterator[Session]:
        """A transaction that writes only while ``claim`` still holds its integration.

        :param flushed: False: its commit does not wait for the disk (see :meth:`record_all`).
        """
        with Session(self.engine if flushed else self._unflushed_engine) as session, session.begin():
            claims.check(session, claim)
            yield session

    # -- candidates ---------------------------------------------------------------------------

    def candidates(
        self,
        integration_id: int,
        *,
        after_id: int = 0,
        limit: int = 500,
        numbers: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """The next page of registered invoices without a registration number, by id.

        Served by the partial index over unsynced rows, so its cost follows the unsynced invoices,
        not the history.
        """
        credited = aliased(InvoiceRow)
        credited_ledger = aliased(LedgerRow)
        booked = (LedgerState.BOOKED, LedgerState.WRITTEN_BACK)
        query = (
            select(
                InvoiceRow.id,
                InvoiceRow.number,
                InvoiceRow.updated_at,
                LedgerRow,
                credited.synced_at,
                InvoiceRow.credited_invoice_id,
                credited_ledger.updated_at.label("credited_booked_at"),
            )
            .outerjoin(
                LedgerRow,
                and_(LedgerRow.invoice_id == InvoiceRow.id, LedgerRow.integration_id == integration_id),
            )
            .outerjoin(credited, credited.id == InvoiceRow.credited_invoice_id)
            .outerjoin(
                credited_ledger,
                and_(
                    credited_ledger.invoice_id == InvoiceRow.credited_invoice_id,
                    credited_ledger.integration_id == integration_id,
                    credited_ledger.state.in_(booked),
                ),
            )
            .where(
                InvoiceRow.integration_id == integration_id,
                InvoiceRow.registration_number.is_(None),
                InvoiceRow.id > after_id,
                OFFERED,
            )
            .order_by(InvoiceRow.id)
            .limit(limit)
        )
        if numbers:
            query = query.where(InvoiceRow.number.in_(list(numbers)))
        with Session(self.engine) as session:
            return [
                Candidate(
                    row.id,
                    row.number,
                    row.updated_at,
                    _ledger_entry(row.LedgerRow),
                    row.synced_at,
                    row.credited_invoice_id,
                    row.credited_booked_at,
                )
                for row in session.execute(query)
            ]

    def count_candidates(self, integration_id: int, *, numbers: Sequence[str] | None = None) -> int:
        query = select(func.count()).where(
            InvoiceRow.integration_id == integration_id,
            InvoiceRow.registration_number.is_(None),
            OFFERED,
        )
        if numbers:
            query = query.where(InvoiceRow.number.in_(list(numbers)))
        with Session(self.engine) as session:
            return session.scalar(query) or 0

    def count_rejected(self, integration_id: int) -> int:
        """Invoices whose last attempt was rejected, whichever run that was."""
        query = select(func.count()).where(
            LedgerRow.integration_id == integration_id, LedgerRow.state == LedgerState.REJECTED
        )
        with Session(self.engine) as session:
            return session.scalar(query) or 0

    def ledger_needing_lookup(self, integration_id: int) -> dict[int, str]:
        """Invoices whose last attempt's outcome is unknown: {invoice id: invoice number}."""
        query = (
            select(LedgerRow.invoice_id, InvoiceRow.number)
            .join(InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id)
            .where(
                LedgerRow.integration_id == integration_id,
                LedgerRow.state.in_(LedgerState.NEEDS_LOOKUP),
            )
        )
        with Session(self.engine) as session:
            return {invoice_id: number for invoice_id, number in session.execute(query) if number is not None}

    def load_invoices(self, invoice_ids: Iterable[int]) -> list[Invoice | UnreadableInvoice]:
        """The invoices with their lines and customers; a row the domain cannot read comes back as an
        :class:`UnreadableInvoice` saying why, so the engine refuses it alone."""
        ids = list(invoice_ids)
        if not ids:
            return []
        query = (
            select(InvoiceRow, CustomerRow)
            .outerjoin(CustomerRow, CustomerRow.id == InvoiceRow.customer_id)
            .where(InvoiceRow.id.in_(ids))
            .options(selectinload(InvoiceRow.lines))
            .order_by(InvoiceRow.id)
        )
        with Session(self.engine) as session:
            return [_readable_invoice(row, customer) for row, customer in session.execute(query)]

    def invoices_sharing_numbers(
        self, integration_id: int, numbers: Iterable[str]
    ) -> dict[str, list[RelatedInvoice]]:
        """Of ``numbers``, those two or more registered invoices of the integration carry, with them all.

        Synced ones count too: the tool is searched by our number, so an unsynced invoice with the number
        of a booked one would be taken for it. Served by the (integration, number) index.
        """
        wanted = sorted({number for number in numbers if number})
        if not wanted:
            return {}
        query = self._related_query(integration_id).where(
            InvoiceRow.integration_id == integration_id,
            InvoiceRow.status.in_(SYNCABLE),
            InvoiceRow.number.in_(wanted),
        )
        found: dict[str, list[RelatedInvoice]] = {}
        with Session(self.engine) as session:
            for row, state, error in session.execute(query):
                related = _readable_related(row, state, error)
                if related is not None:
                    found.setdefault(row.number, []).append(related)
        return {number: rows for number, rows in found.items() if len(rows) > 1}

    def related_invoices(self, integration_id: int, invoice_ids: Iterable[int]) -> dict[int, RelatedInvoice]:
        """Invoices by id (say, those credit notes credit) with their sync state in this integration."""
        ids = sorted(set(invoice_ids))
        if not ids:
            return {}
        query = self._related_query(integration_id).where(InvoiceRow.id.in_(ids))
        with Session(self.engine) as session:
            read = {
                row.id: _readable_related(row, state, error) for row, state, error in session.execute(query)
            }
        return {invoice_id: related for invoice_id, related in read.items() if related is not None}

    @staticmethod
    def _related_query(integration_id: int) -> Any:
        return select(InvoiceRow, LedgerRow.state, LedgerRow.error_message).outerjoin(
            LedgerRow,
            and_(LedgerRow.invoice_id == InvoiceRow.id, LedgerRow.integration_id == integration_id),
        )

    # -- customers ----------------------------------------------------------------------------

    def customer_links(self, integration_id: int, customer_ids: Iterable[int]) -> dict[int, str]:
        ids = list(set(customer_ids))
        if not ids:
            return {}
        query = select(CustomerLinkRow.customer_id, CustomerLinkRow.external_id).where(
            CustomerLinkRow.integration_id == integration_id, CustomerLinkRow.customer_id.in_(ids)
        )
        with Session(self.engine) as session:
            return dict(session.execute(query).all())

    def save_customer_links(self, claim: Claim, links: dict[int, str], run_id: str) -> None:
        if not links:
            return
        now = utcnow()
        with self.fenced(claim) as session:
            session.execute(
                insert(CustomerLinkRow),
                [
                    {
                        "integration_id": claim.integration_id,
                        "customer_id": customer_id,
                        "external_id": external_id,
                        "run_id": run_id,
                        "created_at": now,
                    }
                    for customer_id, external_id in links.items()
                ],
            )

    # -- ledger -------------------------------------------------------------------------------

    def mark(
        self,
        claim: Claim,
        invoice_ids: Iterable[int],
        state: str,
        run_id: str,
        *,
        error_class: str | None = None,
        error_message: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """Move ledger rows of ``invoice_ids`` to ``state`` (creating them), fenced by ``claim``."""
        ids = list(invoice_ids)
        if not ids:
            return
        with self.fenced(claim) as session:
            self._upsert(
                session,
                claim.integration_id,
                {
                    invoice_id: {
                        "state": state,
                        "error_class": error_class,
                        "error_message": error_message,
                    }
                    for invoice_id in ids
                },
                run_id,
                count_attempt=count_attempt,
            )

    def record(self, claim: Claim, outcome: Outcome, run_id: str) -> None:
        """Store one outcome before the next request goes out (see :meth:`record_all`)."""
        self.record_all(claim, [outcome], run_id)

    def record_all(self, claim: Claim, outcomes: Sequence[Outcome], run_id: str) -> None:
        """Store one call's outcomes in one transaction before the next request goes out: one commit per
        call rather than per invoice, which was most of a batching tool's cost per invoice.

        The commit renews and checks the claim as every write does, so a holder that lost it still stops
        before its next request. It does not wait for the disk, though: for a tool that books one invoice
        per call that wait (an fsync) was a fifth of our whole cost per invoice. The next flushed commit
        (the next page's ``claimed`` mark, the write-back) makes these outcomes durable along with itself.
        A crash of the machine before that loses them, and losing them is safe: their invoices are still
        durably ``claimed``, so the next run looks them up in the tool instead of pushing them again. The
        lease outlasts the unflushed span by far (minutes against well under a second on PostgreSQL), so a
        renewal that was lost can never let a successor in while our requests may still land.
        """
        if not outcomes:
            return
        with self.fenced(claim, flushed=False) as session:
            self._upsert(
                session,
                claim.integration_id,
                {outcome.invoice_id: _outcome_values(outcome) for outcome in outcomes},
                run_id,
            )

    def _upsert(
        self,
        session: Session,
        integration_id: int,
        values_by_invoice: dict[int, dict[str, Any]],
        run_id: str,
        *,
        count_attempt: bool = False,
    ) -> None:
        """Set ``values`` on the ledger rows of these invoices, creating the rows that do not exist yet.

        Plain statements (an INSERT for the new rows, an UPDATE per set of changed columns) rather than ORM
        objects: a tool that books one invoice per call records each outcome in a transaction of its own,
        and loading and flushing the row through the ORM took a third of that transaction's time.
        """
        now = utcnow()
        wanted = {"b_integration": integration_id, "b_ids": list(values_by_invoice)}
        existing = set(session.scalars(_EXISTING_LEDGER, wanted))
        new_rows = [
            {
                **dict.fromkeys(_LEDGER_VALUES),
                **values,
                "integration_id": integration_id,
                "invoice_id": invoice_id,
                "attempts": 1 if count_attempt else 0,
                "run_id": run_id,
                "created_at": now,
                "updated_at": now,
            }
            for invoice_id, values in values_by_invoice.items()
            if invoice_id not in existing
        ]
        if new_rows:
            session.execute(insert(_LEDGER), new_rows)
        changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for invoice_id, values in values_by_invoice.items():
            if invoice_id in existing:
                bound = {f"b_{key}": value for key, value in values.items()}
                changes.setdefault(tuple(values), []).append(
                    {
                        "b_integration": integration_id,
                        "b_invoice": invoice_id,
                        "b_run": run_id,
                        "b_now": now,
                        **bound,
                    }
                )
        for columns, params in changes.items():
            session.execute(_ledger_update(columns, count_attempt), params)

    def write_back(self, claim: Claim, *, page_size: int = 1000) -> int:
        """Copy every booked registration number onto its invoice, in the same transaction that moves the
        ledger rows to ``written_back``. Returns how many invoices got their number.

        Works in pages of plain statements (one executemany UPDATE of the invoices and one UPDATE of the
        ledger per page) rather than through ORM objects: with a large backlog, ORM rows in the session
        made every flush scan all of them, and the write-back grew with the square of the invoices.
        """
        invoices, ledger = cast(Table, InvoiceRow.__table__), cast(Table, LedgerRow.__table__)
        set_number = (
            update(invoices)
            .where(invoices.c.id == bindparam("b_invoice"), invoices.c.registration_number.is_(None))
            .values(registration_number=bindparam("b_number"), synced_at=bindparam("b_now"))
        )
        written, after = 0, 0
        with self.fenced(claim) as session:
            now = utcnow()
            while True:
                page = session.execute(
                    select(ledger.c.id, ledger.c.invoice_id, ledger.c.registration_number)
                    .where(
                        ledger.c.integration_id == claim.integration_id,
                        ledger.c.state == LedgerState.BOOKED,
                        ledger.c.id > after,
                    )
                    .order_by(ledger.c.id)
                    .limit(page_size)
                ).all()
                if not page:
                    return written
                numbers = [
                    {"b_invoice": row.invoice_id, "b_number": row.registration_number, "b_now": now}
                    for row in page
                ]
                session.execute(set_number, numbers)
                session.execute(
                    update(ledger)
                    .where(ledger.c.id.in_([row.id for row in page]))
                    .values(state=LedgerState.WRITTEN_BACK, updated_at=now)
                )
                written += len(page)
                after = page[-1].id

    # -- reporting ----------------------------------------------------------------------------

    def skip_counts(self, integration_id: int) -> dict[str, int]:
        """Invoices that are not offered to the tool, by reason (drafts, already synced, edited since)."""
        edited = and_(
            InvoiceRow.registration_number.is_not(None),
            InvoiceRow.synced_at.is_not(None),
            InvoiceRow.updated_at > InvoiceRow.synced_at,
        )
        reason = case(
            (InvoiceRow.status == DRAFT, "draft"),
            (edited, "changed_after_sync"),
            (InvoiceRow.registration_number.is_not(None), "already_synced"),
            else_="candidate",
        )
        query = (
            select(reason.label("reason"), func.count())
            .where(InvoiceRow.integration_id == integration_id)
            .group_by("reason")
        )
        with Session(self.engine) as session:
            counts = {name: count for name, count in session.execute(query) if name != "candidate"}
        integration = self.integration(integration_id)
        if integration.sync_from is not None:
            with Session(self.engine) as session:
                before = session.scalar(
                    select(func.count()).where(
                        InvoiceRow.integration_id == integration_id,
                        InvoiceRow.registration_number.is_(None),
                        InvoiceRow.status.in_(SYNCABLE),
                        InvoiceRow.invoice_date < integration.sync_from,
                    )
                )
            if before:
                counts["before_cutover"] = before
        return counts

    def changed_after_sync(
        self, integration_id: int, *, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Synced invoices edited in the app since, by id (``limit`` and ``offset``: one page of them; how
        many in all: :meth:`state_counts`)."""
        query = (
            select(InvoiceRow.id, InvoiceRow.number, InvoiceRow.registration_number)
            .where(InvoiceRow.integration_id == integration_id, CHANGED_SINCE_SYNC)
            .order_by(InvoiceRow.id)
            .offset(offset)
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [
                {"invoice_id": i, "number": n, "registration_number": r} for i, n, r in session.execute(query)
            ]

    def ledger_frame(self, run_id: str, integration_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Ledger rows touched by ``run_id``, with the invoice number, as a DataFrame for summaries."""
        import pandas as pd  # summaries only; keeps DAG parsing free of pandas

        query = (
            select(
                LedgerRow.integration_id,
                LedgerRow.invoice_id,
                InvoiceRow.number,
                LedgerRow.state,
                LedgerRow.error_class,
                LedgerRow.error_message,
                LedgerRow.registration_number,
            )
            .join(InvoiceRow, InvoiceRow.id == LedgerRow.invoice_id)
            .where(LedgerRow.run_id == run_id)
        )
        if integration_ids is not None:
            query = query.where(LedgerRow.integration_id.in_(list(integration_ids)))
        with Session(self.engine) as session:
            rows = session.execute(query).all()
        columns = [
            "integration_id",
            "invoice_id",
            "number",
            "state",
            "error_class",
            "error_message",
            "registration_number",
        ]
        return pd.DataFrame(rows, columns=columns)

    def customers_created(self, run_id: str) -> dict[int, int]:
        query = (
            select(CustomerLinkRow.integration_id, func.count())
            .where(CustomerLinkRow.run_id == run_id)
            .group_by(CustomerLinkRow.integration_id)
        )
        with Session(self.engine) as session:
            return dict(session.execute(query).all())

    def save_run(
        self,
        dag_id: str,
        run_id: str,
        run_type: str,
        triggered_by: str | None,
        counts: dict[str, Any],
        started_at: datetime,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(RunRow, (dag_id, run_id))
            if row is None:
                row = RunRow(dag_id=dag_id, run_id=run_id, started_at=started_at)
                session.add(row)
            row.run_type = run_type
            row.triggered_by = triggered_by
            notice = (row.counts or {}).get(NOTICE_KEY)  # a summary run again keeps the run's notification
            row.counts = {**counts, NOTICE_KEY: notice} if notice else counts
            row.finished_at = utcnow()

    def notify_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        run_type: str,
        started_at: datetime,
        recipient: str | None,
        title: str,
        body: dict[str, Any],
        integration_id: int | None,
    ) -> RunNotice:
        """The bell notification of one sync run, written at most once per run.

        A retried notify task gets the first try's notification back instead of writing a second one, and
        learns whether that try's webhook post went out (:meth:`webhook_posted` records it). The key is the
        run's row in ``sync_runs`` (primary key: one per run), which records the notification under
        ``counts["notification"]``, so no column is added. A no-op UPDATE locks that row first (PostgreSQL:
        the row; SQLite: the database), so two tries of one run cannot both write. When the summary task
        wrote no row (it failed), the row is created here, finished now.
        """
        now = utcnow()
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(RunRow, (dag_id, run_id)) is None:
                    session.add(
                        RunRow(
                            dag_id=dag_id,
                            run_id=run_id,
                            run_type=run_type,
                            triggered_by=recipient,
                            counts={},
                            started_at=started_at,
                            finished_at=now,
                        )
                    )
        except IntegrityError:  # another try of this run created it meanwhile
            pass
        with Session(self.engine) as session, session.begin():
            key = and_(RunRow.dag_id == dag_id, RunRow.run_id == run_id)
            session.execute(update(RunRow).where(key).values(run_id=RunRow.run_id))
            run = session.scalars(select(RunRow).where(key).execution_options(populate_existing=True)).one()
            notice = (run.counts or {}).get(NOTICE_KEY)
            if notice:
                return RunNotice(int(notice["id"]), created=False, posted=bool(notice.get("posted")))
            row = NotificationRow(
                integration_id=integration_id, recipient=recipient, created_at=now, title=title, body=body
            )
            session.add(row)
            session.flush()
            run.counts = {**(run.counts or {}), NOTICE_KEY: {"id": row.id, "posted": False}}
            return RunNotice(row.id, created=True, posted=False)

    def webhook_posted(self, dag_id: str, run_id: str) -> None:
        """Record that the run's notification reached the webhook, so a retried notify task does not post
        it again."""
        with Session(self.engine) as session, session.begin():
            run = session.get(RunRow, (dag_id, run_id), with_for_update=True)
            if run is None or not (run.counts or {}).get(NOTICE_KEY):
                return
            run.counts = {**run.counts, NOTICE_KEY: {**run.counts[NOTICE_KEY], "posted": True}}

    def notify(
        self, *, recipient: str | None, title: str, body: dict[str, Any], integration_id: int | None
    ) -> int:
        with Session(self.engine) as session, session.begin():
            row = NotificationRow(
                integration_id=integration_id,
                recipient=recipient,
                created_at=utcnow(),
                title=title,
                body=body,
            )
            session.add(row)
            session.flush()
            return row.id

    # -- the Invoice sync page (read-only) -----------------------------------------------------

    def unsynced_invoices(
        self,
        integration_id: int,
        *,
        state: str | None = None,
        other_than: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[UnsyncedInvoice]:
        """Registered invoices of one integration without a registration number, by id, each with its last
        ledger outcome, for people to see why they are not synced yet.

        ``state`` keeps one ledger state (``"new"``: never attempted), ``other_than`` leaves one out (the
        never-attempted stay). Served by the partial index over unsynced rows, like :meth:`candidates`;
        ``limit`` and ``offset`` give the page one page of a backlog of any size. How many there are in
        all: :meth:`state_counts`.
        """
        query = (
            select(InvoiceRow, LedgerRow)
            .outerjoin(
                LedgerRow,
                and_(LedgerRow.invoice_id == InvoiceRow.id, LedgerRow.integration_id == integration_id),
            )
            .where(
                InvoiceRow.integration_id == integration_id,
                InvoiceRow.registration_number.is_(None),
                OFFERED,
            )
            .order_by(InvoiceRow.id)
            .offset(offset)
            .limit(limit)
        )
        if state == NEW:
            query = query.where(LedgerRow.id.is_(None))
        elif state:
            query = query.where(LedgerRow.state == state)
        if other_than:
            query = query.where(or_(LedgerRow.id.is_(None), LedgerRow.state != other_than))
        with Session(self.engine) as session:
            return [_unsynced(invoice, ledger) for invoice, ledger in session.execute(query)]

    def integration_tools(self) -> set[str]:
        """The tools that have integrations (the page's tool filter offers only these)."""
        query = select(IntegrationRow.tool).where(IntegrationRow.tool.is_not(None)).distinct()
        with Session(self.engine) as session:
            return set(session.scalars(query))

    def state_counts(self, integration_ids: Sequence[int] | None = None) -> dict[int, dict[str, int]]:
        """Per integration (of ``integration_ids``): registered invoices synced and unsynced, drafts,
        invoices changed after sync, and the unsynced ones by ledger state (``"new"``: never attempted).

        GROUP BYs instead of loading rows, so the counts stay cheap on a large history. The states are
        counted over the very rows :meth:`unsynced_invoices` lists (not drafts, no registration number,
        joined to their ledger row the same way), so the totals of the page's lists and its counts at a
        glance are the same numbers.
        """
        synced = InvoiceRow.registration_number.is_not(None)
        # Grouped by the expression itself: a label named like a column (invoices.kind) would be read as
        # that column by SQLite and PostgreSQL alike.
        bucket = case(
            (InvoiceRow.status == DRAFT, "drafts"),
            (synced, "synced"),
            else_="unsynced",
        )
        invoices = select(InvoiceRow.integration_id, bucket, func.count()).group_by(
            InvoiceRow.integration_id, bucket
        )
        state = func.coalesce(LedgerRow.state, NEW)
        unsynced = (
            select(InvoiceRow.integration_id, state, func.count())
            .outerjoin(
                LedgerRow,
                and_(
                    LedgerRow.invoice_id == InvoiceRow.id,
                    LedgerRow.integration_id == InvoiceRow.integration_id,
                ),
            )
            .where(InvoiceRow.registration_number.is_(None), OFFERED)
            .group_by(InvoiceRow.integration_id, state)
        )
        changed = (
            select(InvoiceRow.integration_id, literal(CHANGED_AFTER_SYNC), func.count())
            .where(CHANGED_SINCE_SYNC)
            .group_by(InvoiceRow.integration_id)
        )
        if integration_ids is not None:
            ids = list(integration_ids)
            invoices = invoices.where(InvoiceRow.integration_id.in_(ids))
            unsynced = unsynced.where(InvoiceRow.integration_id.in_(ids))
            changed = changed.where(InvoiceRow.integration_id.in_(ids))
        counts: dict[int, dict[str, int]] = {}
        with Session(self.engine) as session:
            for query in (invoices, unsynced, changed):
                for integration_id, name, count in session.execute(query):
                    counts.setdefault(integration_id, {})[name] = count
        return counts

    def latest_notification(self, integration_id: int | None = None) -> Notification | None:
        """The newest bell notification, of one integration when ``integration_id`` is given."""
        query = select(NotificationRow).order_by(NotificationRow.created_at.desc(), NotificationRow.id.desc())
        if integration_id is not None:
            query = query.where(NotificationRow.integration_id == integration_id)
        with Session(self.engine) as session:
            row = session.scalars(query.limit(1)).first()
            if row is None:
                return None
            return Notification(
                id=row.id,
                integration_id=row.integration_id,
                recipient=row.recipient,
                created_at=row.created_at,
                title=row.title,
                body=dict(row.body or {}),
            )


def _integrations_where(query: Any, ids: Sequence[int] | None, tool: str | None) -> Any:
    if ids is not None:
        query = query.where(IntegrationRow.id.in_(list(ids)))
    if tool:
        query = query.where(IntegrationRow.tool == tool)
    return query


_LEDGER_VALUES = ("state", "registration_number", "external_id", "error_class", "error_message")
"""The ledger columns an outcome or a mark sets (see :func:`_outcome_values`)."""
_LEDGER = cast(Table, LedgerRow.__table__)
_EXISTING_LEDGER = select(_LEDGER.c.invoice_id).where(
    _LEDGER.c.integration_id == bindparam("b_integration"),
    _LEDGER.c.invoice_id.in_(bindparam("b_ids", expanding=True)),
)


@cache
def _ledger_update(columns: tuple[str, ...], count_attempt: bool) -> Update:
    """The UPDATE of ``columns`` of one ledger row (executed for many), built once per shape: building
    statements anew was a tenth of the time a one-invoice call's record took."""
    statement = (
        update(_LEDGER)
        .where(
            _LEDGER.c.integration_id == bindparam("b_integration"),
            _LEDGER.c.invoice_id == bindparam("b_invoice"),
        )
        .values(
            {
                **{column: bindparam(f"b_{column}") for column in columns},
                "run_id": bindparam("b_run"),
                "updated_at": bindparam("b_now"),
            }
        )
    )
    if count_attempt:
        statement = statement.values(attempts=func.coalesce(_LEDGER.c.attempts, 0) + 1)
    return statement


def _outcome_values(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Booked):
        return {
            "state": LedgerState.BOOKED,
            "registration_number": outcome.registration_number,
            "external_id": outcome.external_id,
            "error_class": None,
            "error_message": None,
        }
    if isinstance(outcome, Rejected):
        return {
            "state": LedgerState.REJECTED,
            "error_class": str(outcome.error_class),
            "error_message": outcome.message,
        }
    if isinstance(outcome, Unknown):
        return {"state": LedgerState.UNKNOWN, "error_class": "transient", "error_message": outcome.message}
    raise TypeError(f"not an outcome: {outcome!r}")


def _related(row: InvoiceRow, ledger_state: str | None, ledger_error: str | None) -> RelatedInvoice:
    where = _invoice_label(row)
    return RelatedInvoice(
        id=row.id,
        integration_id=row.integration_id,
        kind=_member(InvoiceKind, row.kind, "invoices.kind", where),
        number=row.number,
        status=_member(InvoiceStatus, row.status, "invoices.status", where),
        invoice_date=_required(row.invoice_date, "invoices.invoice_date", where),
        total_incl_vat=_required(row.total_incl_vat, "invoices.total_incl_vat", where),
        currency=row.currency or "",
        registration_number=row.registration_number,
        ledger_state=ledger_state,
        ledger_error=ledger_error,
    )


def _readable_related(
    row: InvoiceRow, ledger_state: str | None, ledger_error: str | None
) -> RelatedInvoice | None:
    """A related invoice, or None when it cannot be read: it is refused on its own turn, naming why."""
    try:
        return _related(row, ledger_state, ledger_error)
    except UnreadableRowError as exc:
        log.warning("%s", exc)
        return None


def _ledger_entry(row: LedgerRow | None) -> LedgerEntry | None:
    if row is None:
        return None
    return LedgerEntry(row.invoice_id, row.state, row.attempts, row.error_class, row.updated_at)


# -- rows of the app, read into the domain ---------------------------------------------------------------
# The app owns these tables and their values: one row with a kind, a status or a NULL the domain does not
# know must be refused on its own (naming table, column and value), never stop the others.


class UnreadableRowError(ValueError):
    """A row of the app holds a value the domain cannot read; the message names table, column and value."""


@dataclass(frozen=True, slots=True)
class UnreadableInvoice:
    """An invoice the store could not read into the domain; the engine refuses it as a data error."""

    id: int
    number: str | None
    message: str


def _required(value: T | None, column: str, where: str) -> T:
    if value is None:
        raise UnreadableRowError(f"{column} of {where} is empty (NULL); fill it in in the app")
    return value


def _member(kind: type[E], value: str | None, column: str, where: str) -> E:
    try:
        return kind(_required(value, column, where))
    except ValueError as exc:
        if isinstance(exc, UnreadableRowError):
            raise
        known = ", ".join(member.value for member in kind)
        raise UnreadableRowError(
            f"{column} of {where} is {value!r}, which the sync does not know (it knows {known}); "
            "correct it in the app"
        ) from None


def _invoice_label(row: InvoiceRow) -> str:
    return f"invoice #{row.id}" + (f" ({row.number})" if row.number else "")


def _integration(row: Any) -> Integration:
    """The integration (a row of the integrations' columns, the settings as ``settings_text``), or one
    carrying ``unreadable`` (and default settings) when its row cannot be read: listing integrations must
    not fail for all because one was mistyped."""
    where = f"integration #{row.id}"
    problem = None
    settings = IntegrationSettings()
    try:
        _required(row.tool, "integrations.tool", where)
        _required(row.conn_id, "integrations.conn_id", where)
        settings = IntegrationSettings.from_json(_json(row.settings_text))
    except UnreadableRowError as exc:
        problem = str(exc)
    except SettingsError as exc:
        problem = unreadable_settings(row.id, exc)
    return Integration(
        id=row.id,
        name=row.name or where,
        tool=row.tool or "",
        conn_id=row.conn_id or "",
        auto_sync=bool(row.auto_sync),
        sync_from=row.sync_from,
        settings=settings,
        updated_at=row.updated_at,
        unreadable=problem,
    )


def _json(text: str | None) -> Any:
    """A JSON column's text, parsed; :class:`SettingsError` when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise SettingsError(f"the settings are {shown(text)}, which is not JSON") from None


def _readable_invoice(row: InvoiceRow, customer: CustomerRow | None) -> Invoice | UnreadableInvoice:
    try:
        return _invoice(row, customer)
    except UnreadableRowError as exc:
        return UnreadableInvoice(row.id, row.number, str(exc))


def _invoice(row: InvoiceRow, customer: CustomerRow | None) -> Invoice:
    where = _invoice_label(row)

    def required(value: T | None, column: str) -> T:
        return _required(value, f"invoices.{column}", where)

    return Invoice(
        id=row.id,
        integration_id=row.integration_id,
        kind=_member(InvoiceKind, row.kind, "invoices.kind", where),
        number=row.number,
        status=_member(InvoiceStatus, row.status, "invoices.status", where),
        customer=_customer(customer) if customer is not None else None,
        invoice_date=required(row.invoice_date, "invoice_date"),
        due_date=row.due_date,
        currency=row.currency,  # type: ignore[arg-type]  # a missing currency is a rule's clear refusal
        total_excl_vat=required(row.total_excl_vat, "total_excl_vat"),
        total_vat=required(row.total_vat, "total_vat"),
        total_incl_vat=required(row.total_incl_vat, "total_incl_vat"),
        lines=tuple(_line(line, where) for line in row.lines),
        updated_at=required(row.updated_at, "updated_at"),
        registration_number=row.registration_number,
        synced_at=row.synced_at,
        credited_invoice_id=row.credited_invoice_id,
        discount_percentage=row.discount_percentage,
    )


def _line(row: InvoiceLineRow, invoice: str) -> InvoiceLine:
    where = f"line {row.position if row.position is not None else f'id {row.id}'} of {invoice}"

    def required(value: T | None, column: str) -> T:
        return _required(value, f"invoice_lines.{column}", where)

    return InvoiceLine(
        position=required(row.position, "position"),
        description=row.description or "",  # an empty description is a rule's clear refusal
        quantity=required(row.quantity, "quantity"),
        unit_price=required(row.unit_price, "unit_price"),
        vat_rate=required(row.vat_rate, "vat_rate"),
        amount=required(row.amount, "amount"),
        gl_account=row.gl_account,
        tax_rate=row.tax_rate,
    )


def _customer(row: CustomerRow) -> Customer:
    return Customer(
        id=row.id,
        kind=_member(CustomerKind, row.kind, "customers.kind", f"customer #{row.id}"),
        name=row.name or "",  # an empty name is a rule's clear refusal
        vat_number=row.vat_number,
        email=row.email,
        address_line1=row.address_line1,
        postcode=row.postcode,
        city=row.city,
        country_code=row.country_code,
    )


@dataclass(frozen=True, slots=True)
class UnsyncedInvoice:
    """A registered invoice without a registration number, with its last ledger outcome (if any)."""

    integration_id: int
    invoice_id: int
    number: str | None
    kind: str | None
    invoice_date: date | None
    currency: str | None
    total_incl_vat: Decimal | None
    state: str | None
    """The ledger state; None when no run has tried it yet."""
    attempts: int
    error_class: str | None
    error_message: str | None
    last_attempt_at: datetime | None


NOTICE_KEY = "notification"
"""Where a run's row in ``sync_runs`` records its bell notification: ``{"id": ..., "posted": bool}``."""


@dataclass(frozen=True, slots=True)
class RunNotice:
    """A run's bell notification as :meth:`SyncStore.notify_run` found or wrote it."""

    id: int
    created: bool
    """Written by this call (False: an earlier try of the run wrote it)."""
    posted: bool
    """Its webhook post is recorded as sent."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One bell notification as a manual run wrote it (``body``: counts and errors as JSON)."""

    id: int
    integration_id: int | None
    recipient: str | None
    created_at: datetime
    title: str
    body: dict[str, Any]


def _unsynced(invoice: InvoiceRow, ledger: LedgerRow | None) -> UnsyncedInvoice:
    return UnsyncedInvoice(
        integration_id=invoice.integration_id,
        invoice_id=invoice.id,
        number=invoice.number,
        kind=invoice.kind,
        invoice_date=invoice.invoice_date,
        currency=invoice.currency,
        total_incl_vat=invoice.total_incl_vat,
        state=ledger.state if ledger is not None else None,
        attempts=ledger.attempts if ledger is not None else 0,
        error_class=ledger.error_class if ledger is not None else None,
        error_message=ledger.error_message if ledger is not None else None,
        last_attempt_at=ledger.updated_at if ledger is not None else None,
    )
