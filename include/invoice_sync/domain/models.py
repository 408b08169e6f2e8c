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
    """Line amount excluding VAT, as the app computed it. Negative on a discount line."""
    gl_account: str | None = None
    tax_rate: str | None = None
    """The app's tax rate the line was invoiced with (its code or id: "exempt", "intra_community", ...).

    Several rates share a percentage (exempt, intra-community supply, export and reverse charge are all
    0 %) but land in different boxes of the VAT return, so the tool needs a VAT code per rate, not per
    percentage. ``None`` for an app that only knows percentages: then ``vat_rate`` picks the VAT code."""
    discount: bool = False
    """A line the sync derived from the invoice's own discount (see ``domain.discounts``), not one of the
    app's lines: it may be booked on the integration's discount account."""


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
    discount_percentage: Decimal | None = None
    """A discount over the whole invoice, in percent of its lines; the totals are after it."""


class SettingsError(ValueError):
    """Integration settings that cannot be read: the message names the key and the value found."""


@dataclass(frozen=True, slots=True)
class IntegrationSettings:
    """What the accountant mapped: where invoices go and which codes the tool uses.

    ``vat_codes`` is keyed by the app's VAT percentage as a plain string (``"21"``, ``"6"``, ``"0"``),
    ``tax_rates`` by the app's tax-rate code (a line that carries one is mapped through ``tax_rates``
    only, so an exempt and an intra-community 0 % line can book on different VAT codes), ``gl_accounts``
    by the app's GL account code. ``discount_gl_account`` is the tool's account for commercial discounts:
    when set, the app's negative lines and the lines derived from an invoice-level discount are booked
    there instead of lowering each revenue account.
    """

    journal: str | None = None
    credit_note_journal: str | None = None
    vat_codes: dict[str, str] = field(default_factory=dict)
    tax_rates: dict[str, str] = field(default_factory=dict)
    gl_accounts: dict[str, str] = field(default_factory=dict)
    default_gl_account: str | None = None
    discount_gl_account: str | None = None
    payment_condition: str | None = None
    demo: bool = False
    """A demo integration books into invoice-sync's sandbox and only there; any other books only into the
    real tool (the hooks check every answer's origin)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other key of the settings, unread here: each tool's typed settings read their own fields from
    it (``invoice_sync.connectors.<tool>.settings``), so a tool's field is checked by the tool that knows
    what it must be."""

    @classmethod
    def from_json(cls, data: Any) -> IntegrationSettings:
        """Read the app's settings JSON; :class:`SettingsError` names the first key that cannot be read.

        Settings are typed by hand in the app by people mapping codes, so a wrong shape (a list where a
        map belongs, a VAT percentage that is not a number) must be named precisely, not crash the run.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SettingsError(f"the settings are {shown(data)}, not a JSON object")
        data = dict(data)
        kwargs: dict[str, Any] = {}
        codes = (
            "journal",
            "credit_note_journal",
            "default_gl_account",
            "discount_gl_account",
            "payment_condition",
        )
        for key in codes:
            if key in data:
                kwargs[key] = _code(key, data.pop(key))
        for key in ("vat_codes", "tax_rates", "gl_accounts"):
            if key in data:
                kwargs[key] = _code_map(key, data.pop(key))
        if "demo" in data:
            demo = data.pop("demo")
            if not isinstance(demo, bool):
                raise SettingsError(f"demo is {shown(demo)}; it must be true or false")
            kwargs["demo"] = demo
        if "vat_codes" in kwargs:
            kwargs["vat_codes"] = {_rate_key_of(k): v for k, v in kwargs["vat_codes"].items()}
        return cls(**kwargs, extra=data)


def shown(value: Any) -> str:
    """A settings value as a message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _code(key: str, value: Any) -> str | None:
    """A code the tool knows (journal, account): a string or a whole number, as people type them."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SettingsError(f"{key} is {shown(value)}; it must be a code (text)")


def _code_map(key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"{key} is {shown(value)}; it must map the app's codes to the tool's codes")
    mapped: dict[str, str] = {}
    for app_code, tool_code in value.items():
        code = _code(f"{key}[{app_code!r}]", tool_code)
        if code is None or not code.strip():
            raise SettingsError(
                f"{key}[{app_code!r}] is {shown(tool_code)}; map it to one of the tool's codes"
            )
        mapped[str(app_code)] = code
    return mapped


def _rate_key_of(key: str) -> str:
    try:
        return rate_key(key)
    except (ArithmeticError, ValueError):
        raise SettingsError(
            f"vat_codes has the key {key!r}, which is not a VAT percentage; "
            "map tax-rate codes under tax_rates"
        ) from None


def unreadable_settings(integration_id: int, problem: SettingsError) -> str:
    """What the sync says of an integration whose settings it cannot read: the same words whether the
    settings as a whole (the store) or one tool's field (the tool's typed settings) cannot be read."""
    return (
        f"integrations.settings of integration #{integration_id} cannot be read: {problem}; "
        "correct the integration's settings"
    )


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
    unreadable: str | None = None
    """Why the app's row of this integration cannot be read (naming column and value), or None. Such an
    integration keeps default settings and is never pushed for: its invoices are refused with this."""


def rate_key(rate: Decimal | str | int | float) -> str:
    """Normalise a VAT rate to the key used in mappings: ``Decimal('21.00')`` -> ``"21"``."""
    value = Decimal(str(rate))
    if not value.is_finite():
        raise ValueError(f"{rate!r} is not a VAT rate")
    return format(value.normalize(), "f")


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
