"""The default Twinfield sandbox configuration: one app client, its organisation and the offices in it.

The demo seeder, the connector tests and ``make run`` rely on these exact values (client id, office
codes, the sales daybook, the debtors control account, revenue accounts, VAT codes, the customer code
format and the first transaction number), so they are constants here rather than random data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

CLIENT_ID = "twinfield-sandbox-client"
CLIENT_SECRET = "twinfield-sandbox-secret"
BOOTSTRAP_REFRESH_TOKEN = "twinfield-sandbox-refresh-token"
"""The refresh token of the demo user's consent for :data:`ORGANISATION` (reusable, as Twinfield's are)."""

ORGANISATION = "DEMO-ORG"
OFFICE = "NLA001"
"""The demo office (administration) in the Netherlands."""
SECOND_OFFICE = "NLA002"
"""A second office of the same organisation: its own customers and its own transaction numbers."""
FOREIGN_ORGANISATION = "OTHER-ORG"
FOREIGN_OFFICE = "XYZ001"
"""An office of another organisation: the demo consent gives no access to it."""

DAYBOOK = "VRK"
"""The sales transaction type (daybook) of every demo office."""
MEMORIAL_DAYBOOK = "MEMO"
"""A general-journal transaction type: exists, but is no sales daybook."""
DEBTORS_ACCOUNT = "1300"
"""The debtors control account (balance sheet, level 1): ``dim1`` of a sales transaction's total line."""
DISCOUNT_ACCOUNT = "8090"
"""A revenue account for commercial discounts (an integration's ``discount_gl_account``)."""
GL_ACCOUNTS = ("8000", "8010", "8020", DISCOUNT_ACCOUNT)
"""Revenue accounts (profit and loss, level 1)."""
VAT_CODES = {
    "VH": Decimal("21"), "VL": Decimal("9"), "VN": Decimal("0"),
    "VEU": Decimal("0"), "VEX": Decimal("0"), "VVL": Decimal("0"),
}  # fmt: skip
"""The active sales VAT codes and their rates in percent. Four share 0 % and land in different boxes of the
VAT return: ``VN`` (exempt / nil rate), ``VEU`` (intra-community supply), ``VEX`` (export outside the EU)
and ``VVL`` (reverse charge, "verlegd"). The codes are the demo office's own: each Twinfield office defines
its VAT codes, so an integration maps the app's tax rates to them."""
ZERO_RATE_VAT_CODES = {"exempt": "VN", "intra_community": "VEU", "export": "VEX", "reverse_charge": "VVL"}
"""The app's 0 % tax-rate codes and the demo office's VAT code for each (an integration's ``tax_rates``)."""
INACTIVE_VAT_CODE = "VX"
"""A VAT code that exists but is not active: a transaction using it is refused."""
VAT_ACCOUNT = "1520"
"""Where the VAT of every sales VAT code is booked (the ``dim1`` Twinfield gives ``vat`` lines)."""
CUSTOMER_CODE_FORMAT = r"1[0-9]{3,5}"
"""The office's format for debtor (DEB) codes: 1000 to 199999."""
FIRST_TRANSACTION_NUMBER = 202600001
"""The first number each daybook of each office hands out; then last + 1."""


@dataclass(frozen=True, slots=True)
class VatCodeFixture:
    code: str
    rate: Decimal
    """In percent (21 for 21 %)."""
    active: bool = True
    account: str = VAT_ACCOUNT


@dataclass(frozen=True, slots=True)
class OfficeFixture:
    code: str
    name: str
    organisation: str
    country: str = "NL"
    currency: str = "EUR"
    daybooks: Mapping[str, str] = field(default_factory=dict)
    """Transaction type code -> kind (``sales`` or ``general``)."""
    balance_accounts: tuple[str, ...] = (DEBTORS_ACCOUNT, VAT_ACCOUNT)
    profit_and_loss_accounts: tuple[str, ...] = GL_ACCOUNTS
    vat_codes: tuple[VatCodeFixture, ...] = ()
    customer_code_format: str = CUSTOMER_CODE_FORMAT
    debtors_account: str = DEBTORS_ACCOUNT
    first_transaction_number: int = FIRST_TRANSACTION_NUMBER

    def vat_code(self, code: str) -> VatCodeFixture | None:
        return next((v for v in self.vat_codes if v.code == code), None)

    @property
    def gl_accounts(self) -> tuple[str, ...]:
        """Every level-1 dimension of the office."""
        return self.balance_accounts + self.profit_and_loss_accounts


@dataclass(frozen=True, slots=True)
class AppClientFixture:
    """An app registered with Twinfield and the refresh token of one user's consent for one organisation."""

    client_id: str
    client_secret: str
    bootstrap_refresh_token: str
    organisation: str


@dataclass(frozen=True, slots=True)
class TwinfieldFixtures:
    clients: tuple[AppClientFixture, ...]
    offices: Mapping[str, OfficeFixture]

    def client(self, client_id: str) -> AppClientFixture | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def offices_of(self, organisation: str) -> list[OfficeFixture]:
        return [office for office in self.offices.values() if office.organisation == organisation]


_VAT_CODES = (
    *(VatCodeFixture(code, rate) for code, rate in VAT_CODES.items()),
    VatCodeFixture(INACTIVE_VAT_CODE, Decimal("21"), active=False),
)
_DAYBOOKS = {DAYBOOK: "sales", MEMORIAL_DAYBOOK: "general"}


def default_fixtures() -> TwinfieldFixtures:
    """The demo configuration every fresh (or reset) Twinfield sandbox starts from."""
    offices = (
        OfficeFixture(OFFICE, "Demo Nederland BV", ORGANISATION, daybooks=_DAYBOOKS, vat_codes=_VAT_CODES),
        OfficeFixture(
            SECOND_OFFICE, "Demo Holding BV", ORGANISATION, daybooks=_DAYBOOKS, vat_codes=_VAT_CODES
        ),
        OfficeFixture(
            FOREIGN_OFFICE, "Other Company BV", FOREIGN_ORGANISATION, daybooks=_DAYBOOKS, vat_codes=_VAT_CODES
        ),
    )
    bench_offices = tuple(
        OfficeFixture(
            code, f"Bench tenant {code}", BENCH_ORGANISATION, daybooks=_DAYBOOKS, vat_codes=_VAT_CODES
        )
        for code in BENCH_OFFICES
    )
    client = AppClientFixture(CLIENT_ID, CLIENT_SECRET, BOOTSTRAP_REFRESH_TOKEN, ORGANISATION)
    bench = AppClientFixture(BENCH_CLIENT_ID, BENCH_CLIENT_SECRET, BENCH_REFRESH_TOKEN, BENCH_ORGANISATION)
    return TwinfieldFixtures(
        clients=(client, bench),
        offices={office.code: office for office in (*offices, *bench_offices)},
    )


BENCH_CLIENT_ID = "twinfield-bench-client"
BENCH_CLIENT_SECRET = "twinfield-bench-secret"
BENCH_REFRESH_TOKEN = "twinfield-bench-refresh-token"
BENCH_ORGANISATION = "BENCH-ORG"
BENCH_OFFICES = tuple(f"BNC{index:03d}" for index in range(1, 25))
"""An app client of its own with an organisation of many offices, for ``invoice-sync-dev bench``: Twinfield
counts credits per client id, so the benchmark's credits never mix with the demo client's; every office is
a copy of the demo office (same daybook, accounts and VAT codes)."""
