"""The default Yuki sandbox configuration: one domain, two administrations and two access keys.

The demo seeder, the connector tests and ``make run`` rely on these values (access keys, GUIDs, tax codes,
GL account codes), so they are constants rather than random data. GUIDs are ``uuid5`` of a fixed
namespace, stable across restarts and machines.

Yuki pairs a ``VATPercentage`` with a numeric ``VATType`` to find a tax code; the code table itself is
unconfirmed (reference section 3), so the demo administration knows the pairs in :data:`TAX_CODES`: type 2
for the ordinary Belgian sales rates and one type per 0 % regime (:data:`VAT_TYPES_BY_REGIME`), and
deliberately not ("12", "9"), the kind of
mismatch that gives "No tax code for VATPercentage 12 & VATType 9".
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

SANDBOX_NAMESPACE = uuid.UUID("0b4f2a52-6f0e-4d1c-9a55-3c7e21d9e8a4")


def fixture_guid(*parts: str) -> str:
    """The deterministic GUID of a fixture object (domain, administration)."""
    return str(uuid.uuid5(SANDBOX_NAMESPACE, "/".join(parts)))


ACCESS_KEY = "yuki-demo-access-key-5c1e9a7b"
"""Web-service access key of the demo domain with the Sales, Accounting and Contact rights."""
LIMITED_ACCESS_KEY = "yuki-demo-limited-key-2d8f4e61"
"""A key of the same domain whose rights lack Sales (Accounting and Contact only)."""

DOMAIN_ID = fixture_guid("domain", "demo")
ADMINISTRATION_ID = fixture_guid("administration", "demo-be")
ADMINISTRATION_NAME = "Demo Yuki BV"
SECOND_ADMINISTRATION_ID = fixture_guid("administration", "demo-nl")
SECOND_ADMINISTRATION_NAME = "Demo Yuki Nederland BV"
"""An administration on the Minimal bundle without the Sales web-service feature: sales calls fail."""
THIRD_ADMINISTRATION_ID = fixture_guid("administration", "demo-nl-sales")
THIRD_ADMINISTRATION_NAME = "Demo Yuki Handel Nederland BV"
"""A Dutch administration with the Sales web service (21 % and 9 %, the 0 % regimes, GL 8000/8010)."""

VAT_TYPES_BY_REGIME: dict[str, str] = {
    "exempt": "5",
    "intra_community": "3",
    "export": "4",
    "reverse_charge": "6",
}
"""The sandbox administrations' VAT type for each 0 % regime (the demo maps the app's 0 % tax rates through
it). Yuki pairs ``VATPercentage`` 0 with a different ``VATType`` per regime, so each lands in its own box
of the VAT return; the numbers themselves are unconfirmed (Yuki's table is per administration, under
Settings > VAT rates, as bvolders/yuki-cli says)."""
TAX_CODES: frozenset[tuple[str, str]] = frozenset(
    {("21", "2"), ("12", "2"), ("6", "2"), *(("0", vat_type) for vat_type in VAT_TYPES_BY_REGIME.values())}
)
"""Valid (VATPercentage, VATType) pairs of the demo administration, as Yuki receives them."""
GL_ACCOUNTS = ("7000", "7010", "7020")
"""GLAccountCodes of the demo administration's revenue accounts."""
DEFAULT_GL_ACCOUNT = "7000"
"""Where a product line without ``GLAccountCode`` is booked (unconfirmed: Yuki's product default)."""
DAILY_LIMIT = 1000
"""Web-service calls per domain and day without an extra feature (reference section 7)."""

SALES = "Sales"
ACCOUNTING = "Accounting"
ACCOUNTING_INFO = "AccountingInfo"
CONTACT = "Contact"
SERVICES = (SALES, ACCOUNTING, ACCOUNTING_INFO, CONTACT)


@dataclass(frozen=True, slots=True)
class AdministrationFixture:
    id: str
    name: str
    country: str
    vat_number: str
    domain_id: str
    tax_codes: frozenset[tuple[str, str]]
    gl_accounts: tuple[str, ...]
    default_gl_account: str
    sales_bundle: bool = True
    """Whether the administration may use the Sales web service (invoicing bundle Small or higher)."""
    active: bool = True


@dataclass(frozen=True, slots=True)
class AccessKeyFixture:
    key: str
    domain_id: str
    services: frozenset[str]
    administrations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class YukiFixtures:
    keys: tuple[AccessKeyFixture, ...]
    administrations: Mapping[str, AdministrationFixture] = field(default_factory=dict)

    def key(self, access_key: str) -> AccessKeyFixture | None:
        return next((k for k in self.keys if k.key == access_key), None)


_DEMO_BE = AdministrationFixture(
    id=ADMINISTRATION_ID,
    name=ADMINISTRATION_NAME,
    country="BE",
    vat_number="BE0999000196",
    domain_id=DOMAIN_ID,
    tax_codes=TAX_CODES,
    gl_accounts=GL_ACCOUNTS,
    default_gl_account=DEFAULT_GL_ACCOUNT,
)
_DEMO_NL = AdministrationFixture(
    id=SECOND_ADMINISTRATION_ID,
    name=SECOND_ADMINISTRATION_NAME,
    country="NL",
    vat_number="NL999000019B01",
    domain_id=DOMAIN_ID,
    tax_codes=frozenset({("21", "2"), ("9", "2"), ("0", "5")}),
    gl_accounts=("8000", "8010"),
    default_gl_account="8000",
    sales_bundle=False,
)
_DEMO_NL_SALES = AdministrationFixture(
    id=THIRD_ADMINISTRATION_ID,
    name=THIRD_ADMINISTRATION_NAME,
    country="NL",
    vat_number="NL999000032B01",
    domain_id=DOMAIN_ID,
    tax_codes=frozenset(
        {("21", "2"), ("9", "2"), *(("0", vat_type) for vat_type in VAT_TYPES_BY_REGIME.values())}
    ),
    gl_accounts=("8000", "8010"),
    default_gl_account="8000",
)


BENCH_TENANTS = 24
"""Domains for ``make bench``: Yuki's daily quota is per domain and shared by all its integrations,
so each benchmark tenant gets a domain of its own, with one access key and one administration (a copy of
the Belgian demo administration)."""


def bench_access_key(index: int) -> str:
    """The access key of benchmark domain ``index`` (1-based)."""
    return f"yuki-bench-access-key-{index:02d}"


def bench_administration_id(index: int) -> str:
    """The administration GUID of benchmark domain ``index`` (1-based)."""
    return fixture_guid("administration", f"bench-{index:02d}")


def _bench_domains() -> tuple[tuple[AccessKeyFixture, ...], dict[str, AdministrationFixture]]:
    keys: list[AccessKeyFixture] = []
    administrations: dict[str, AdministrationFixture] = {}
    for index in range(1, BENCH_TENANTS + 1):
        domain_id = fixture_guid("domain", f"bench-{index:02d}")
        administration = replace(
            _DEMO_BE,
            id=bench_administration_id(index),
            name=f"Bench Yuki {index:02d} BV",
            domain_id=domain_id,
        )
        administrations[administration.id] = administration
        services = frozenset({SALES, ACCOUNTING, CONTACT})
        keys.append(AccessKeyFixture(bench_access_key(index), domain_id, services, (administration.id,)))
    return tuple(keys), administrations


def default_fixtures() -> YukiFixtures:
    """The demo configuration every fresh (or reset) Yuki sandbox starts from."""
    administrations = (_DEMO_BE.id, _DEMO_NL.id, _DEMO_NL_SALES.id)
    bench_keys, bench_administrations = _bench_domains()
    return YukiFixtures(
        keys=(
            AccessKeyFixture(ACCESS_KEY, DOMAIN_ID, frozenset({SALES, ACCOUNTING, CONTACT}), administrations),
            AccessKeyFixture(
                LIMITED_ACCESS_KEY, DOMAIN_ID, frozenset({ACCOUNTING, CONTACT}), administrations
            ),
            *bench_keys,
        ),
        administrations={
            _DEMO_BE.id: _DEMO_BE,
            _DEMO_NL.id: _DEMO_NL,
            _DEMO_NL_SALES.id: _DEMO_NL_SALES,
            **bench_administrations,
        },
    )
