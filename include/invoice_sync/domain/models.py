"""Plain value objects shared by the store, the engine and the connectors.

Money is always :class:`~decimal.Decimal`; a float anywhere near an amount is a bug.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


class InvoiceKind(enum.StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class InvoiceStatus(enum.StrEnum):
    """Status in the invoicing app. Only ``registered`` and ``paid`` invoices are booked there."""

    DRAFT = "draft"
    REGISTERED = "registered"
    PAID = "paid"


class CustomerKind(enum.StrEnum):
    COMPANY = "company"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    kind: CustomerKind
    name: str
    vat_number: str | None = None
    email: str | None = None
    address_line1: str | None = None
    postcode: str | None = None
    city: str | None = None
    country_code: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    position: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    vat_rate: Decimal
    amount: Decimal
    """Line amount excluding VAT, as the app computed it."""
    gl_account: str | None = None


@dataclass(frozen=True, slots=True)
class Invoice:
    id: int
    integration_id: int
    kind: InvoiceKind
    number: str | None
    status: InvoiceStatus
    customer: Customer | None
    invoice_date: date
    due_date: date | None
    currency: str
    total_excl_vat: Decimal
    total_vat: Decimal
    total_incl_vat: Decimal
    lines: tuple[InvoiceLine, ...]
    updated_at: datetime
    registration_number: str | None = None
    synced_at: datetime | None = None
    credited_invoice_id: int | None = None


@dataclass(frozen=True, slots=True)
class IntegrationSettings:
    """What the accountant mapped: where invoices go and which codes the tool uses.

    ``vat_codes`` and ``gl_accounts`` are keyed by the app's VAT rate as a plain string
    (``"21"``, ``"6"``, ``"0"``) and by the app's GL account code respectively.
    """

    journal: str | None = None
    credit_note_journal: str | None = None
    vat_codes: dict[str, str] = field(default_factory=dict)
    gl_accounts: dict[str, str] = field(default_factory=dict)
    default_gl_account: str | None = None
    payment_condition: str | None = None
    division: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> IntegrationSettings:
        data = dict(data or {})
        known = {
            "journal",
            "credit_note_journal",
            "vat_codes",
            "gl_accounts",
            "default_gl_account",
            "payment_condition",
            "division",
        }
        kwargs = {key: data.pop(key) for key in list(data) if key in known}
        if "vat_codes" in kwargs:
            kwargs["vat_codes"] = {rate_key(k): str(v) for k, v in (kwargs["vat_codes"] or {}).items()}
        if kwargs.get("division") is not None:
            kwargs["division"] = int(kwargs["division"])
        return cls(**kwargs, extra=data)


@dataclass(frozen=True, slots=True)
class Integration:
    id: int
    name: str
    tool: str
    conn_id: str
    auto_sync: bool
    sync_from: date | None
    settings: IntegrationSettings
    updated_at: datetime | None = None


def rate_key(rate: Decimal | str | int | float) -> str:
    """Normalise a VAT rate to the key used in mappings: ``Decimal('21.00')`` -> ``"21"``."""
    value = Decimal(str(rate)).normalize()
    text = format(value, "f")
    return text


class ErrorClass(enum.StrEnum):
    """Why something failed, which decides what happens next.

    transient: retry with back-off.  data: the invoice or customer must be fixed; never resend unchanged.
    config: the integration's mapping or settings must be fixed.  auth: reconnect the integration.
    quota: the tool's budget is spent; the rest waits for the next run.
    """

    TRANSIENT = "transient"
    DATA = "data"
    CONFIG = "config"
    AUTH = "auth"
    QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an invoice cannot be pushed, found before any call to the tool."""

    error_class: ErrorClass
    message: str


@dataclass(frozen=True, slots=True)
class RelatedInvoice:
    """Another invoice that decides whether one can be pushed: the one a credit note credits, or one
    with the same number. Read from the store; ``ledger_state`` is that invoice's sync state (or None)."""

    id: int
    integration_id: int
    kind: InvoiceKind
    number: str | None
    status: InvoiceStatus
    invoice_date: date
    total_incl_vat: Decimal
    currency: str
    registration_number: str | None = None
    ledger_state: str | None = None
    ledger_error: str | None = None


@dataclass(frozen=True, slots=True)
class Booking:
    """An entry that exists in the accounting tool for one of our invoices."""

    reference: str
    registration_number: str
    external_id: str


@dataclass(frozen=True, slots=True)
class Booked:
    invoice_id: int
    registration_number: str
    external_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    invoice_id: int
    error_class: ErrorClass
    message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """The request was sent but we never saw the answer: the tool may or may not have booked it."""

    invoice_id: int
    message: str


Outcome = Booked | Rejected | Unknown
