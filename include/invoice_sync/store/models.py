"""Table definitions.

``AppBase`` holds the invoicing app's tables: the app owns them; we read them and write back exactly two
columns (``invoices.registration_number`` and ``invoices.synced_at``). They are created here only for the
embedded demo and the tests. Their columns are nullable wherever the app's schema does not promise a
value: the sync does not trust what it does not own, and refuses an unreadable row on its own
(:mod:`invoice_sync.store.repository`) instead of failing the run.

``SyncBase`` holds the tables this project owns; Alembic migrates them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

MONEY = Numeric(14, 2)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AppBase(DeclarativeBase):
    pass


class SyncBase(DeclarativeBase):
    pass


class CustomerRow(AppBase):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(255))
    vat_number: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(255))
    address_line1: Mapped[str | None] = mapped_column(String(255))
    postcode: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(128))
    country_code: Mapped[str | None] = mapped_column(String(2))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IntegrationRow(AppBase):
    __tablename__ = "integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    tool: Mapped[str | None] = mapped_column(String(32))
    conn_id: Mapped[str | None] = mapped_column(String(250))
    auto_sync: Mapped[bool | None] = mapped_column(Boolean, default=True)
    sync_from: Mapped[date | None] = mapped_column(Date)
    settings: Mapped[Any] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class InvoiceRow(AppBase):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"))
    kind: Mapped[str | None] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    invoice_date: Mapped[date | None] = mapped_column(Date)
    due_date: Mapped[date | None] = mapped_column(Date)
    currency: Mapped[str | None] = mapped_column(String(3))
    total_excl_vat: Mapped[Decimal | None] = mapped_column(MONEY)
    total_vat: Mapped[Decimal | None] = mapped_column(MONEY)
    total_incl_vat: Mapped[Decimal | None] = mapped_column(MONEY)
    discount_percentage: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    """A discount over the whole invoice, in percent; the totals are after it (Teamleader's ``discounts``)."""
    credited_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    registered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    registration_number: Mapped[str | None] = mapped_column(String(64))
    synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    lines: Mapped[list[InvoiceLineRow]] = relationship(
        order_by="InvoiceLineRow.position", lazy="raise", viewonly=True
    )

    __table_args__ = (
        # "Which invoices of this integration still need a registration number?" must cost in
        # proportion to the answer, not to the history: a partial index over the unsynced rows only.
        Index(
            "ix_invoices_unsynced",
            "integration_id",
            "id",
            postgresql_where=text("registration_number IS NULL"),
            sqlite_where=text("registration_number IS NULL"),
        ),
        Index("ix_invoices_integration_updated", "integration_id", "updated_at"),
        Index("ix_invoices_integration_number", "integration_id", "number"),
    )


class InvoiceLineRow(AppBase):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    unit_price: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    vat_rate: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    amount: Mapped[Decimal | None] = mapped_column(MONEY)
    gl_account: Mapped[str | None] = mapped_column(String(32))
    tax_rate: Mapped[str | None] = mapped_column(String(64))
    """The app's tax rate (code or id) the line was invoiced with; NULL where the app has percentages only."""


class NotificationRow(AppBase):
    """The app's bell. ``body`` is JSON: counts and errors, so the app can render it in any language."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int | None] = mapped_column(ForeignKey("integrations.id"))
    recipient: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class LedgerState:
    """States of a ledger row; see DESIGN section 3."""

    CLAIMED = "claimed"  # about to be (or being) sent; outcome not yet known
    BOOKED = "booked"  # the tool booked it; registration number known, not yet written back
    WRITTEN_BACK = "written_back"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # sent, but no answer: resolve by lookup before any new attempt
    DEFERRED = "deferred"  # the tool's daily budget ran out; next run

    NEEDS_LOOKUP = (CLAIMED, UNKNOWN)


class LedgerRow(SyncBase):
    __tablename__ = "sync_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(Integer)
    invoice_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(250))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    external_id: Mapped[str | None] = mapped_column(String(64))
    registration_number: Mapped[str | None] = mapped_column(String(64))
    error_class: Mapped[str | None] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        UniqueConstraint("integration_id", "invoice_id", name="uq_sync_ledger_invoice"),
        Index("ix_sync_ledger_state", "integration_id", "state"),
        Index("ix_sync_ledger_run", "run_id"),
    )


class CustomerLinkRow(SyncBase):
    __tablename__ = "sync_customer_links"

    integration_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(250))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RunRow(SyncBase):
    __tablename__ = "sync_runs"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_type: Mapped[str] = mapped_column(String(32))
    triggered_by: Mapped[str | None] = mapped_column(String(255))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class TokenRow(SyncBase):
    """Current OAuth tokens per Airflow connection. Refresh tokens rotate, so this row is the only copy."""

    __tablename__ = "sync_tokens"

    conn_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    lock_version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ClaimRow(SyncBase):
    """Who works on an integration now. A lease with a fencing token that every write re-checks."""

    __tablename__ = "sync_claims"

    integration_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(500))
    fencing_token: Mapped[int] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RateWindowRow(SyncBase):
    """A vendor rate window several processes spend together (see :mod:`invoice_sync.store.budgets`).

    ``start`` is the epoch second the current (or the latest reserved, possibly future) window opens,
    NULL for a window never claimed; ``used`` the units reserved in it.
    """

    __tablename__ = "sync_rate_windows"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    start: Mapped[float | None] = mapped_column(Double)
    used: Mapped[int] = mapped_column(Integer)
