"""The default Xero sandbox configuration: one app client, two organisations, their charts and tax rates.

Connector tests, the SDK contract tests and ``make run`` rely on these exact values (tenant ids, account
codes, tax types), so they are constants here rather than random data. Ids are ``uuid5`` of a fixed
namespace, which keeps them stable across restarts and machines.

Both organisations are connected to the default client's bootstrap refresh token, so one token reaches
both: tests prove that the ``xero-tenant-id`` header, not the token, decides whose books a call touches.
A token issued through consent for one organisation only gets a 403 on the other.

Tax types follow Xero's naming for a European organisation (Xero names its own codes; ``OUTPUT`` is the
standard rate on sales). Rates are percentages, as Xero's ``EffectiveRate`` reports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

SANDBOX_NAMESPACE = uuid.UUID("0b6d1f1e-5c3a-4e6f-8d2b-9a7c4e1f3d20")

CLIENT_ID = "xero-sandbox-client"
CLIENT_SECRET = "xero-sandbox-secret"
BOOTSTRAP_REFRESH_TOKEN = "xero-sandbox-refresh-token"
APP_NAME = "invoice-sync-dev sandbox app"
"""What Xero answers as ``ProviderName``: the name of the app that made the call."""

SCOPES = ("offline_access", "accounting.transactions", "accounting.contacts", "accounting.settings")


def fixture_guid(*parts: str) -> str:
    """The deterministic GUID of a fixture object (tenant, account, connection)."""
    return str(uuid.uuid5(SANDBOX_NAMESPACE, "/".join(parts)))


DEMO_TENANT_ID = fixture_guid("tenant", "demo")
DEMO_TENANT_NAME = "Demo Xero Ltd"
SECOND_TENANT_ID = fixture_guid("tenant", "second")
SECOND_TENANT_NAME = "Second Xero BV"
TENANT_IDS = (DEMO_TENANT_ID, SECOND_TENANT_ID)

# Account codes of both charts.
SALES_ACCOUNT = "200"
OTHER_REVENUE_ACCOUNT = "260"
ARCHIVED_REVENUE_ACCOUNT = "210"
EXPENSE_ACCOUNT = "400"
DISCOUNT_ACCOUNT = "270"
"""Revenue account for commercial discounts given (an integration's ``discount_gl_account``)."""

# Tax types of both organisations.
TAX_STANDARD = "OUTPUT"  # 21 %
TAX_REDUCED = "OUTPUT2"  # 9 %
TAX_ZERO = "ZERORATEDOUTPUT"  # 0 %
TAX_NONE = "NONE"  # 0 %, what NoTax lines carry
TAX_DELETED = "OUTPUT3"  # 6 %, deleted: refused on new documents
TAX_PURCHASES = "INPUT"  # 21 %, purchases only: refused on sales documents
TAX_EXEMPT = "EXEMPTOUTPUT"  # 0 %, exempt supplies
TAX_EC_ZERO = "ECZROUTPUT"  # 0 %, intra-community supply of goods
# Both are values of Xero's TaxType enum (Xero-OpenAPI xero_accounting.yaml): 0 % like ZERORATEDOUTPUT, but
# reported apart, which is why two 0 % lines of different regimes must keep their own tax types.
TAX_TYPES_BY_TAX_RATE: dict[str, str] = {
    "exempt": TAX_EXEMPT,
    "intra_community": TAX_EC_ZERO,
    "export": TAX_ZERO,
}
"""App tax-rate code -> tax type for the 0 % regimes (an integration's ``tax_rates``)."""


@dataclass(frozen=True, slots=True)
class AccountFixture:
    code: str
    name: str
    type: str  # Xero's AccountType: REVENUE, EXPENSE, ...
    account_class: str  # REVENUE, EXPENSE, ASSET, LIABILITY, EQUITY
    tax_type: str  # default tax type of lines on this account
    status: str = "ACTIVE"  # ACTIVE or ARCHIVED


@dataclass(frozen=True, slots=True)
class TaxRateFixture:
    tax_type: str
    name: str
    rate: Decimal  # percent
    status: str = "ACTIVE"  # ACTIVE, DELETED or ARCHIVED
    applies_to_revenue: bool = True
    report_tax_type: str = "OUTPUT"


@dataclass(frozen=True, slots=True)
class TenantFixture:
    tenant_id: str
    name: str
    base_currency: str
    accounts: tuple[AccountFixture, ...]
    tax_rates: tuple[TaxRateFixture, ...]
    currencies: tuple[str, ...] = ()
    """Currencies besides the base currency the organisation is subscribed to."""
    invoice_prefix: str = "INV-"
    credit_note_prefix: str = "CN-"

    def account(self, code: str) -> AccountFixture | None:
        return next((a for a in self.accounts if a.code == code), None)

    def tax_rate(self, tax_type: str) -> TaxRateFixture | None:
        return next((t for t in self.tax_rates if t.tax_type == tax_type), None)

    def account_id(self, code: str) -> str:
        return fixture_guid(self.tenant_id, "account", code)


@dataclass(frozen=True, slots=True)
class AppClientFixture:
    client_id: str
    client_secret: str
    bootstrap_refresh_token: str
    tenants: tuple[str, ...]
    app_name: str = APP_NAME


@dataclass(frozen=True, slots=True)
class XeroFixtures:
    clients: tuple[AppClientFixture, ...]
    tenants: Mapping[str, TenantFixture] = field(default_factory=dict)

    def client(self, client_id: str) -> AppClientFixture | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


CHART_OF_ACCOUNTS = (
    AccountFixture(SALES_ACCOUNT, "Sales", "REVENUE", "REVENUE", TAX_STANDARD),
    AccountFixture(OTHER_REVENUE_ACCOUNT, "Other Revenue", "REVENUE", "REVENUE", TAX_STANDARD),
    AccountFixture(
        ARCHIVED_REVENUE_ACCOUNT, "Consulting (old)", "REVENUE", "REVENUE", TAX_STANDARD, "ARCHIVED"
    ),
    AccountFixture(EXPENSE_ACCOUNT, "Advertising", "EXPENSE", "EXPENSE", TAX_PURCHASES),
    AccountFixture(DISCOUNT_ACCOUNT, "Discounts given", "REVENUE", "REVENUE", TAX_STANDARD),
)
TAX_RATES = (
    TaxRateFixture(TAX_STANDARD, "VAT 21% on Income", Decimal("21")),
    TaxRateFixture(TAX_REDUCED, "VAT 9% on Income", Decimal("9")),
    TaxRateFixture(TAX_ZERO, "Zero Rated Income", Decimal("0")),
    TaxRateFixture(TAX_NONE, "No VAT", Decimal("0"), report_tax_type="NONE"),
    TaxRateFixture(TAX_DELETED, "VAT 6% on Income (old)", Decimal("6"), status="DELETED"),
    TaxRateFixture(TAX_PURCHASES, "VAT 21% on Expenses", Decimal("21"), applies_to_revenue=False,
                   report_tax_type="INPUT"),
    TaxRateFixture(TAX_EXEMPT, "Exempt Income", Decimal("0"), report_tax_type="EXEMPTOUTPUT"),
    TaxRateFixture(TAX_EC_ZERO, "Zero Rated EC Goods Income", Decimal("0"), report_tax_type="ECOUTPUT"),
)  # fmt: skip

_DEMO = TenantFixture(DEMO_TENANT_ID, DEMO_TENANT_NAME, "EUR", CHART_OF_ACCOUNTS, TAX_RATES)
_SECOND = TenantFixture(
    SECOND_TENANT_ID, SECOND_TENANT_NAME, "EUR", CHART_OF_ACCOUNTS, TAX_RATES, currencies=("USD", "GBP")
)


def default_fixtures() -> XeroFixtures:
    """The demo configuration every fresh (or reset) Xero sandbox starts from."""
    client = AppClientFixture(CLIENT_ID, CLIENT_SECRET, BOOTSTRAP_REFRESH_TOKEN, TENANT_IDS)
    return XeroFixtures(clients=(client,), tenants={DEMO_TENANT_ID: _DEMO, SECOND_TENANT_ID: _SECOND})
