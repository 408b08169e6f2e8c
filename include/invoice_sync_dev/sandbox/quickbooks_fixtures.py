"""The default QuickBooks Online sandbox configuration: one app client and two companies (realms).

Connector tests, the SDK contract tests and ``make run`` rely on these exact values (realm ids, item ids,
tax code ids and rates, the closing date), so they are constants rather than random data. Both companies
are non-US: QuickBooks then demands a ``TaxCodeRef`` on every sales line and ``GlobalTaxCalculation`` on
every transaction, which is what a European connector must get right.

A refresh token in QuickBooks belongs to one company (the user connects the app to one realm at a time),
so the client has one bootstrap refresh token per realm. An access token of one realm is refused in the
other, which is how tests prove realm isolation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

CLIENT_ID = "sandbox-qbo-client"
CLIENT_SECRET = "sandbox-qbo-secret"
BOOTSTRAP_REFRESH_TOKEN = "sandbox-qbo-refresh-token"
"""Refresh token of :data:`REALM_DEMO` (the connector's first token; it rotates on first use)."""
OTHER_REFRESH_TOKEN = "sandbox-qbo-refresh-token-other"
"""Refresh token of :data:`REALM_OTHER`."""

REALM_DEMO = "9341452710923456"
REALM_OTHER = "9341452710987654"
REALMS = (REALM_DEMO, REALM_OTHER)
DEMO_COMPANY_NAME = "Demo QuickBooks BV"
OTHER_COMPANY_NAME = "Second Realm Ltd"
HOME_CURRENCY = "EUR"

ITEM_SERVICES = "1"
ITEM_HOURS = "2"
ITEM_INACTIVE = "3"
ITEM_DISCOUNT = "4"
"""A service item on the discount (contra-revenue) account: what an integration's ``discount_gl_account``
names for QuickBooks."""

TAX_CODE_21 = "5"
TAX_CODE_9 = "6"
TAX_CODE_0 = "7"
TAX_CODE_INACTIVE = "8"
TAX_CODE_0_EU = "9"
"""0 %, intra-community supply: a 0 % code of its own, because it lands in another box of the VAT return
than an exempt or domestic 0 % supply."""
TAX_CODE_0_EXPORT = "10"
"""0 %, export outside the EU."""
TAX_CODES_BY_RATE: dict[str, str] = {"21": TAX_CODE_21, "9": TAX_CODE_9, "0": TAX_CODE_0}
"""Rate in percent (text, as the connector's rate keys) -> active tax code id, same in both realms."""
TAX_CODES_BY_TAX_RATE: dict[str, str] = {
    "exempt": TAX_CODE_0,
    "intra_community": TAX_CODE_0_EU,
    "export": TAX_CODE_0_EXPORT,
}
"""App tax-rate code -> tax code id for the 0 % regimes (an integration's ``tax_rates``)."""

CLOSING_DATE = date(2025, 12, 31)
"""Books of the demo company are closed through this date: a TxnDate on or before it is refused (6210)."""
OTHER_CLOSING_DATE = date(2024, 12, 31)

FIRST_NAME_ID = 58
"""Ids of new customers start here (QuickBooks numbers names and transactions in separate sequences)."""
FIRST_TXN_ID = 145
"""Ids of new invoices and credit memos start here; both share the transaction sequence."""
FIRST_DOC_NUMBER = 1001
"""Automatic DocNumber when a create carries none (per entity: invoices and credit memos each)."""


@dataclass(frozen=True, slots=True)
class AccountFixture:
    id: str
    name: str
    account_type: str = "Income"
    account_sub_type: str = "SalesOfProductIncome"


@dataclass(frozen=True, slots=True)
class ItemFixture:
    id: str
    name: str
    item_type: str  # Service | NonInventory
    income_account: str  # AccountFixture.id
    active: bool = True


@dataclass(frozen=True, slots=True)
class TaxCodeFixture:
    id: str
    name: str
    rate_percent: Decimal
    tax_rate_id: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class RealmFixture:
    realm_id: str
    company_name: str
    country: str
    home_currency: str
    closing_date: date | None
    accounts: tuple[AccountFixture, ...]
    items: tuple[ItemFixture, ...]
    tax_codes: tuple[TaxCodeFixture, ...]
    currencies: frozenset[str] = frozenset()
    """Currencies a transaction may carry besides the home currency (multicurrency; none by default)."""
    payment_days: int = 30
    """Due date when a transaction carries none: TxnDate + these days (the company's default terms)."""

    def item(self, item_id: str) -> ItemFixture | None:
        return next((i for i in self.items if i.id == item_id), None)

    def tax_code(self, code_id: str) -> TaxCodeFixture | None:
        return next((t for t in self.tax_codes if t.id == code_id), None)

    def account(self, account_id: str) -> AccountFixture | None:
        return next((a for a in self.accounts if a.id == account_id), None)


@dataclass(frozen=True, slots=True)
class AppClientFixture:
    client_id: str
    client_secret: str
    bootstrap_refresh_tokens: Mapping[str, str]
    """Refresh token -> realm id it was granted for."""

    @property
    def realms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.bootstrap_refresh_tokens.values()))


@dataclass(frozen=True, slots=True)
class QuickBooksFixtures:
    clients: tuple[AppClientFixture, ...]
    realms: Mapping[str, RealmFixture] = field(default_factory=dict)

    def client(self, client_id: str) -> AppClientFixture | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


_ACCOUNTS = (
    AccountFixture("1", "Services"),
    AccountFixture("79", "Sales of Product Income"),
    AccountFixture("80", "Old Sales"),
    AccountFixture("81", "Discounts given", account_sub_type="DiscountsRefundsGiven"),
)
_ITEMS = (
    ItemFixture(ITEM_SERVICES, "Services", "Service", "1"),
    ItemFixture(ITEM_HOURS, "Hours", "Service", "79"),
    ItemFixture(ITEM_INACTIVE, "Old service", "Service", "80", active=False),
    ItemFixture(ITEM_DISCOUNT, "Discount", "Service", "81"),
)
_TAX_CODES = (
    TaxCodeFixture(TAX_CODE_21, "21% BTW", Decimal("21"), "9"),
    TaxCodeFixture(TAX_CODE_9, "9% BTW", Decimal("9"), "10"),
    TaxCodeFixture(TAX_CODE_0, "0% BTW", Decimal("0"), "11"),
    TaxCodeFixture(TAX_CODE_INACTIVE, "19% BTW (old)", Decimal("19"), "12", active=False),
    TaxCodeFixture(TAX_CODE_0_EU, "0% ICP (EU)", Decimal("0"), "13"),
    TaxCodeFixture(TAX_CODE_0_EXPORT, "0% Export", Decimal("0"), "14"),
)

_DEMO = RealmFixture(
    realm_id=REALM_DEMO,
    company_name=DEMO_COMPANY_NAME,
    country="NL",
    home_currency=HOME_CURRENCY,
    closing_date=CLOSING_DATE,
    accounts=_ACCOUNTS,
    items=_ITEMS,
    tax_codes=_TAX_CODES,
)
_OTHER = RealmFixture(
    realm_id=REALM_OTHER,
    company_name=OTHER_COMPANY_NAME,
    country="BE",
    home_currency=HOME_CURRENCY,
    closing_date=OTHER_CLOSING_DATE,
    accounts=_ACCOUNTS,
    items=_ITEMS,
    tax_codes=_TAX_CODES,
)


BENCH_REALMS = 24
"""Companies for ``make bench``: QuickBooks counts its windows per company (500 requests a minute, 10 a
second, 40 batch calls a minute), and in production a company is one tenant's. Bench tenants that all
booked into the demo company would share windows no production tenant shares, so each bench slot is a
company of its own (a copy of the demo company, its own consent)."""


def bench_realm_id(index: int) -> str:
    """The realm id of benchmark company ``index`` (1-based)."""
    return f"93414527{index:08d}"


def bench_refresh_token(index: int) -> str:
    """The bootstrap refresh token of benchmark company ``index`` (1-based)."""
    return f"sandbox-qbo-refresh-token-bench-{index:02d}"


def _bench_realms() -> dict[str, RealmFixture]:
    return {
        bench_realm_id(index): replace(
            _DEMO, realm_id=bench_realm_id(index), company_name=f"Bench QuickBooks {index:02d} BV"
        )
        for index in range(1, BENCH_REALMS + 1)
    }


def default_fixtures() -> QuickBooksFixtures:
    """The demo configuration every fresh (or reset) QuickBooks sandbox starts from."""
    client = AppClientFixture(
        CLIENT_ID,
        CLIENT_SECRET,
        {
            BOOTSTRAP_REFRESH_TOKEN: REALM_DEMO,
            OTHER_REFRESH_TOKEN: REALM_OTHER,
            **{bench_refresh_token(index): bench_realm_id(index) for index in range(1, BENCH_REALMS + 1)},
        },
    )
    return QuickBooksFixtures(
        clients=(client,), realms={REALM_DEMO: _DEMO, REALM_OTHER: _OTHER, **_bench_realms()}
    )
