"""Shared test doubles and builders for the connector tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    Integration,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
)
from invoice_sync.domain.ports import TokenSet


class InMemoryTokenVault:
    """A ``TokenVault`` with a real lock, like the store's row lock, plus counters to assert on."""

    def __init__(self, tokens: dict[str, TokenSet] | None = None) -> None:
        self.tokens: dict[str, TokenSet] = dict(tokens or {})
        self.lock = threading.Lock()
        self.saved = 0

    def load(self, conn_id: str) -> TokenSet | None:
        with self.lock:
            return self.tokens.get(conn_id)

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet:
        with self.lock:
            current = self.tokens.get(conn_id)
            new = refresher(current)
            if new is not current:
                self.tokens[conn_id] = new
                self.saved += 1
            return new


@pytest.fixture
def vault() -> InMemoryTokenVault:
    return InMemoryTokenVault()


CENT = Decimal("0.01")


def make_line(
    amount: str,
    vat_rate: str = "21",
    *,
    position: int = 1,
    gl_account: str | None = "7000",
    description: str = "Consultancy",
    quantity: str = "1",
) -> InvoiceLine:
    return InvoiceLine(
        position=position,
        description=description,
        quantity=Decimal(quantity),
        unit_price=Decimal(amount) / Decimal(quantity),
        vat_rate=Decimal(vat_rate),
        amount=Decimal(amount),
        gl_account=gl_account,
    )


def make_invoice(
    lines: list[InvoiceLine] | None = None,
    *,
    invoice_id: int = 1,
    number: str | None = "2026/0042",
    kind: InvoiceKind = InvoiceKind.INVOICE,
    customer: Customer | None = None,
    total_vat: str | None = None,
    invoice_date: date = date(2026, 3, 2),
    discount: str | None = None,
) -> Invoice:
    """An invoice whose totals follow from its lines unless ``total_vat`` says otherwise.

    :param discount: an invoice-level discount in percent; the totals are then the app's: each VAT rate's
        lines less that rate's share of the discount (rounded half up to the cent), VAT on what is left.
    """
    lines = lines if lines is not None else [make_line("250.00")]
    by_rate: dict[Decimal, Decimal] = {}
    for line in lines:
        by_rate[line.vat_rate] = by_rate.get(line.vat_rate, Decimal("0")) + line.amount
    if discount:
        cut = Decimal(discount) / 100
        by_rate = {rate: base - (base * cut).quantize(CENT, ROUND_HALF_UP) for rate, base in by_rate.items()}
    excl = sum(by_rate.values(), Decimal("0"))
    vat = (
        Decimal(total_vat)
        if total_vat is not None
        else sum((base * rate / 100 for rate, base in by_rate.items()), Decimal("0")).quantize(CENT)
    )
    return Invoice(
        id=invoice_id,
        integration_id=1,
        kind=kind,
        number=number,
        status=InvoiceStatus.REGISTERED,
        customer=customer or make_customer(),
        invoice_date=invoice_date,
        due_date=None,
        currency="EUR",
        total_excl_vat=excl,
        total_vat=vat,
        total_incl_vat=excl + vat,
        lines=tuple(lines),
        updated_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        discount_percentage=Decimal(discount) if discount else None,
    )


def make_customer(customer_id: int = 1042, name: str = "Atelier Verhoeven BV", **fields: Any) -> Customer:
    defaults: dict[str, Any] = {
        "kind": CustomerKind.COMPANY,
        "vat_number": "BE0123456749",
        "email": "boekhouding@verhoeven.example",
        "address_line1": "Kortrijksesteenweg 12",
        "postcode": "9000",
        "city": "Gent",
        "country_code": "be",
    }
    return Customer(id=customer_id, name=name, **{**defaults, **fields})


def make_settings(**overrides: Any) -> IntegrationSettings:
    """Settings of the sandbox's Belgian division; GL GUIDs are placeholders unless overridden."""
    data: dict[str, Any] = {
        "journal": "70",
        "credit_note_journal": "71",
        "vat_codes": {"0": "0", "6": "1", "12": "3", "21": "4"},
        "gl_accounts": {"7000": "gl-7000-guid", "7010": "gl-7010-guid"},
        "default_gl_account": None,
        "payment_condition": "30",
        "division": 123456,
        "demo": True,  # they book into the sandbox
    }
    data.update(overrides)
    return IntegrationSettings.from_json(data)


def make_integration(settings: IntegrationSettings | None = None, conn_id: str = "exact_test") -> Integration:
    return Integration(
        id=1,
        name="Atelier Demo (Exact BE)",
        tool="exact_online",
        conn_id=conn_id,
        auto_sync=True,
        sync_from=None,
        settings=settings or make_settings(),
    )


@pytest.fixture
def builders() -> Any:
    """The builders above, for test modules (the tests directory is not a package)."""

    class Builders:
        line = staticmethod(make_line)
        invoice = staticmethod(make_invoice)
        customer = staticmethod(make_customer)
        settings = staticmethod(make_settings)
        integration = staticmethod(make_integration)
        vault = InMemoryTokenVault

    return Builders
