"""The default Exact Online sandbox configuration: one app client and two demo divisions.

The demo seeder, the connector tests and ``make run`` rely on these exact values (ids, journal codes,
first booking numbers, VAT codes, GL account GUIDs), so they are constants here rather than random data.
GUIDs are ``uuid5`` of a fixed namespace, which keeps them stable across restarts and machines.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

SANDBOX_NAMESPACE = uuid.UUID("5f0c6f0e-3b8a-4f43-9f57-6a1e2c9d7b10")

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
BOOTSTRAP_REFRESH_TOKEN = "sandbox-refresh-token"

DIVISION_BE = 123456
DIVISION_NL = 234567
DIVISIONS = (DIVISION_BE, DIVISION_NL)


def fixture_guid(division: int, kind: str, code: str) -> str:
    """The deterministic GUID of a fixture object (GL account, journal, VAT code) of one division."""
    return str(uuid.uuid5(SANDBOX_NAMESPACE, f"{division}/{kind}/{code}"))


@dataclass(frozen=True, slots=True)
class JournalFixture:
    code: str
    description: str
    type: int  # 20 Sales, 21 Return invoice, 90 General
    first_entry_number: int = 1
    allow_foreign_currency: bool = False


@dataclass(frozen=True, slots=True)
class VATCodeFixture:
    code: str
    description: str
    percentage: Decimal  # a fraction, as Exact reports it (0.21 for 21 %)
    transaction_type: str  # S sales, P purchases, B both
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class GLAccountFixture:
    code: str
    description: str
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class DivisionFixture:
    division: int
    name: str
    country: str
    currency: str
    default_payment_condition: str | None
    journals: tuple[JournalFixture, ...]
    vat_codes: tuple[VATCodeFixture, ...]
    gl_accounts: tuple[GLAccountFixture, ...]
    financial_years: tuple[int, ...]
    payment_conditions: Mapping[str, int]  # code -> days until due
    closed_periods: frozenset[tuple[int, int]] = frozenset()
    refused_customer_names: frozenset[str] = frozenset()
    periods_per_year: int = 12

    def gl_account_id(self, code: str) -> str:
        return fixture_guid(self.division, "gl", code)


@dataclass(frozen=True, slots=True)
class AppClientFixture:
    client_id: str
    client_secret: str
    bootstrap_refresh_token: str
    divisions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExactFixtures:
    clients: tuple[AppClientFixture, ...]
    divisions: Mapping[int, DivisionFixture] = field(default_factory=dict)

    def client(self, client_id: str) -> AppClientFixture | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


_PAYMENT_CONDITIONS = {"00": 0, "15": 15, "30": 30}
_ZERO_RATED_REGIMES = (
    VATCodeFixture("IC", "Intra-community supply 0%", Decimal("0"), "S"),
    VATCodeFixture("EX", "Export outside the EU 0%", Decimal("0"), "S"),
)
"""0 % VAT codes of a regime, beside the plain 0 % code "0": an integration maps the app's tax-rate codes
(exempt, intra-community, export, ...) to them, so two 0 % lines land on different VAT codes."""
_FINANCIAL_YEARS = (2025, 2026, 2027)

_DIVISION_BE = DivisionFixture(
    division=DIVISION_BE,
    name="Atelier Demo BV",
    country="BE",
    currency="EUR",
    default_payment_condition="30",
    journals=(
        JournalFixture("70", "Sales", 20, first_entry_number=26700001),
        JournalFixture("71", "Sales credit notes", 20, first_entry_number=26710001),
        JournalFixture("90", "General", 90),
    ),
    vat_codes=(
        VATCodeFixture("0", "0% sales", Decimal("0"), "S"),
        VATCodeFixture("1", "6% sales", Decimal("0.06"), "S"),
        VATCodeFixture("3", "12% sales", Decimal("0.12"), "S"),
        VATCodeFixture("4", "21% sales", Decimal("0.21"), "S"),
        VATCodeFixture("5", "21% sales old", Decimal("0.21"), "S", blocked=True),
        VATCodeFixture("9", "21% purchases", Decimal("0.21"), "P"),
        *_ZERO_RATED_REGIMES,
        VATCodeFixture("MC", "Co-contractor, reverse charge 0%", Decimal("0"), "S"),
    ),
    gl_accounts=(
        GLAccountFixture("7000", "Sales of goods"),
        GLAccountFixture("7010", "Sales of services"),
        GLAccountFixture("7020", "Sales old", blocked=True),
        GLAccountFixture("4000", "Purchases"),
    ),
    financial_years=_FINANCIAL_YEARS,
    payment_conditions=_PAYMENT_CONDITIONS,
    closed_periods=frozenset({(2025, p) for p in range(1, 13)} | {(2026, 1)}),
    refused_customer_names=frozenset({"Refused Customer NV"}),
)

_DIVISION_NL = DivisionFixture(
    division=DIVISION_NL,
    name="Demo Nederland BV",
    country="NL",
    currency="EUR",
    default_payment_condition="30",
    journals=(
        JournalFixture("70", "Sales", 20, first_entry_number=26700001),
        JournalFixture("71", "Sales credit notes", 20, first_entry_number=26710001),
    ),
    vat_codes=(
        VATCodeFixture("0", "0%", Decimal("0"), "S"),
        VATCodeFixture("1", "9% sales", Decimal("0.09"), "S"),
        VATCodeFixture("2", "21% sales", Decimal("0.21"), "S"),
        *_ZERO_RATED_REGIMES,
    ),
    gl_accounts=(
        GLAccountFixture("8000", "Omzet"),
        GLAccountFixture("8010", "Omzet diensten"),
        GLAccountFixture("8090", "Verleende kortingen"),  # commercial discounts (discount_gl_account)
    ),
    financial_years=_FINANCIAL_YEARS,
    payment_conditions=_PAYMENT_CONDITIONS,
)

GL_ACCOUNTS_123456: dict[str, str] = {
    g.code: _DIVISION_BE.gl_account_id(g.code) for g in _DIVISION_BE.gl_accounts
}
GL_ACCOUNTS_234567: dict[str, str] = {
    g.code: _DIVISION_NL.gl_account_id(g.code) for g in _DIVISION_NL.gl_accounts
}
GL_ACCOUNTS: dict[int, dict[str, str]] = {DIVISION_BE: GL_ACCOUNTS_123456, DIVISION_NL: GL_ACCOUNTS_234567}


BENCH_CLIENT_ID = "sandbox-bench-client"
BENCH_CLIENT_SECRET = "sandbox-bench-secret"
BENCH_REFRESH_TOKEN = "sandbox-bench-refresh-token"
BENCH_DIVISIONS = tuple(range(300001, 300001 + 24))
"""Divisions of a separate app client for ``make bench``: each benchmark tenant needs a rate window
of its own (Exact counts per app and division), and the demo client's divisions must stay as they are.
Each is a copy of the Dutch demo division under its own number (its GL account GUIDs differ)."""

_BENCH_DIVISIONS = {
    number: replace(_DIVISION_NL, division=number, name=f"Bench tenant {index:02d} BV")
    for index, number in enumerate(BENCH_DIVISIONS, start=1)
}


def bench_gl_accounts(division: int) -> dict[str, str]:
    """GL account code -> GUID of a benchmark division (the codes of the Dutch demo division)."""
    return {g.code: _BENCH_DIVISIONS[division].gl_account_id(g.code) for g in _DIVISION_NL.gl_accounts}


def default_fixtures() -> ExactFixtures:
    """The demo configuration every fresh (or reset) Exact sandbox starts from."""
    client = AppClientFixture(CLIENT_ID, CLIENT_SECRET, BOOTSTRAP_REFRESH_TOKEN, DIVISIONS)
    bench = AppClientFixture(BENCH_CLIENT_ID, BENCH_CLIENT_SECRET, BENCH_REFRESH_TOKEN, BENCH_DIVISIONS)
    return ExactFixtures(
        clients=(client, bench),
        divisions={DIVISION_BE: _DIVISION_BE, DIVISION_NL: _DIVISION_NL, **_BENCH_DIVISIONS},
    )
