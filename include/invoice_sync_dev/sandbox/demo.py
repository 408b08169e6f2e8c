"""Realistic demo data for the invoicing app, matching the sandbox's accounting administrations.

Several integrations: three on Exact Online (auto sync on and off, all on one OAuth connection the way
several administrations behind one consent are), and a Belgian and a Dutch one on each of Yuki, Twinfield,
Xero and QuickBooks Online. Companies and contacts with valid VAT numbers (two with names that test XML
escaping and Unicode), drafts, registered, paid and already-synced invoices, credit notes, multi-line
invoices at 21/12/6/0 % (BE) and 21/9/0 % (NL), and a fixed set of invoices the sync must refuse or the
tool must reject, each for a different reason.

Lines carry the app's tax rate (:data:`APP_TAX_RATES`: several at 0 %, for exempt supplies,
intra-community supplies, exports and co-contractor / reverse charge), which every integration but one maps
to its tool's VAT codes (``tax_rates``); *Demo Nederland Projecten* keeps a percentage-only mapping, as an
app without tax rates has. Every integration also gets an invoice with a discount line, one with an
invoice-level discount and one with two 0 % lines of different tax rates.
``--invoices N`` scales the regular invoices; the broken ones are always there.

A database the seeder fills is marked as a demo database (a row in ``invoice_sync_dev_demo``, a table no
migration creates, defined in :mod:`invoice_sync.store.demo_mark`: the runtime reads the mark too, to allow
tokens in clear only there). Every wipe of the development tools (``demo seed --reset``, chaos, the bench)
erases only a marked or empty database, unless the command names that very
database (``--i-mean-this-database``): a stray ``INVOICE_SYNC_DB_URL`` must never cost a company its invoices.

Each tool's invoices come from a random stream of their own (seeded by the tool's position in the
registry, where a new tool goes last), so adding a tool never changes the data of the others (tests that
seed only ``tools=("exact_online",)`` see exactly the Exact books they always saw).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import TOOLS
from invoice_sync.store.demo_mark import DEMO_MARK, is_marked
from invoice_sync.store.demo_mark import is_demo_database as is_demo_database  # the dev tools' name for it
from invoice_sync.store.models import (
    AppBase,
    CustomerRow,
    IntegrationRow,
    InvoiceLineRow,
    InvoiceRow,
    NotificationRow,
    SyncBase,
)
from invoice_sync_dev.sandbox import exact_fixtures as exact
from invoice_sync_dev.sandbox import quickbooks_fixtures as quickbooks
from invoice_sync_dev.sandbox import twinfield_fixtures as twinfield
from invoice_sync_dev.sandbox import xero_fixtures as xero
from invoice_sync_dev.sandbox import yuki_fixtures as yuki

CENT = Decimal("0.01")
DEMO_CONN_ID = "exact_demo"
YUKI_CONN_ID = "yuki_demo"
TWINFIELD_CONN_ID = "twinfield_demo"
XERO_CONN_ID = "xero_demo"
QUICKBOOKS_CONN_ID = "quickbooks_demo"
SEEDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


APP_TAX_RATES: dict[str, str] = {
    "BE-21": "21",
    "BE-12": "12",
    "BE-6": "6",
    "BE-0-EXEMPT": "0",
    "BE-0-IC": "0",
    "BE-0-EXPORT": "0",
    "BE-0-COCONTRACTOR": "0",
    "NL-21": "21",
    "NL-9": "9",
    "NL-6": "6",
    "NL-0-EXEMPT": "0",
    "NL-0-IC": "0",
    "NL-0-EXPORT": "0",
    "NL-0-REVERSE": "0",
}
"""The app's tax rates (Teamleader's ``taxRates``: a department's rates, several at 0 %) -> percentage.
``NL-6`` is the Dutch low rate before 2019, still on old price lists. The 0 % ones are exempt supplies,
intra-community supplies, exports outside the EU and Belgian co-contractor / Dutch reverse-charge sales:
each lands in its own box of the VAT return."""
ZERO_RATE_REGIMES = ("EXEMPT", "IC", "EXPORT", "COCONTRACTOR", "REVERSE")
"""The last part of the 0 % tax-rate codes, in the order the demo uses them."""


def tax_rates(country: str, by_percentage: dict[str, str], by_regime: dict[str, str]) -> dict[str, str]:
    """An integration's ``tax_rates``: the country's app tax rates -> the tool's VAT codes, the standard
    ones by their percentage and the 0 % ones by regime (``exempt``, ``intra_community``, ``export``,
    ``reverse_charge``, the keys the simulators' fixtures use)."""
    regimes = {
        "EXEMPT": "exempt",
        "IC": "intra_community",
        "EXPORT": "export",
        "COCONTRACTOR": "reverse_charge",
        "REVERSE": "reverse_charge",
    }
    mapped = {}
    for code, percentage in APP_TAX_RATES.items():
        if not code.startswith(f"{country}-"):
            continue
        if percentage != "0" and percentage in by_percentage:
            mapped[code] = by_percentage[percentage]
        elif percentage == "0" and regimes[code.rsplit("-", 1)[1]] in by_regime:
            mapped[code] = by_regime[regimes[code.rsplit("-", 1)[1]]]
    return mapped


@dataclass(frozen=True)
class DemoIntegration:
    id: int
    name: str
    tool: str
    conn_id: str
    auto_sync: bool
    sync_from: date | None
    settings: dict[str, Any]
    number_format: str
    vat_rates: tuple[str, ...]
    gl_accounts: tuple[str, ...]
    country: str = "NL"
    first_of_tool: bool = True
    """The tool's first demo integration: it also gets the invoices the tool must refuse and those for the
    customers with unusual names (a second one shares its tenant's customers, which must stay apart)."""

    def zero_rate_regimes(self) -> list[str]:
        """The 0 % tax rates this integration maps, each to its own VAT code."""
        return [code for code in self.settings.get("tax_rates", {}) if code.startswith(f"{self.country}-0-")]


def _nl_settings(*, default_gl: str, payment_condition: str) -> dict[str, Any]:
    return {
        "division": exact.DIVISION_NL,
        "journal": "70",
        "credit_note_journal": "71",
        "vat_codes": {"21": "2", "9": "1", "0": "0"},
        "gl_accounts": dict(exact.GL_ACCOUNTS_234567),
        "default_gl_account": exact.GL_ACCOUNTS_234567[default_gl],
        "payment_condition": payment_condition,
    }


_EXACT_REGIMES = {"exempt": "0", "intra_community": "IC", "export": "EX"}
"""Exact's 0 % VAT codes per regime in both demo divisions (``MC``, co-contractor, exists in BE only)."""


INTEGRATIONS = (
    DemoIntegration(
        id=1,
        name="Atelier Demo BV",
        tool="exact_online",
        conn_id=DEMO_CONN_ID,
        auto_sync=True,
        sync_from=date(2026, 1, 1),
        settings={
            "division": exact.DIVISION_BE,
            "journal": "70",
            "credit_note_journal": "71",
            "vat_codes": {"21": "4", "12": "3", "6": "1", "0": "0"},
            "tax_rates": tax_rates(
                "BE", {"21": "4", "12": "3", "6": "1"}, {**_EXACT_REGIMES, "reverse_charge": "MC"}
            ),
            "gl_accounts": {code: exact.GL_ACCOUNTS_123456[code] for code in ("7000", "7010", "7020")},
            "default_gl_account": exact.GL_ACCOUNTS_123456["7000"],
            "payment_condition": "30",
        },
        number_format="2026/{:04d}",
        vat_rates=("21", "12", "6", "0"),
        gl_accounts=("7000", "7010"),
        country="BE",
    ),
    DemoIntegration(
        id=2,
        name="Demo Nederland BV",
        tool="exact_online",
        conn_id=DEMO_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            **_nl_settings(default_gl="8000", payment_condition="30"),
            "tax_rates": tax_rates("NL", {"21": "2", "9": "1"}, _EXACT_REGIMES),
            "discount_gl_account": exact.GL_ACCOUNTS_234567["8090"],
        },
        number_format="NL2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8000", "8010"),
    ),
    # A second company entity booked in the same Exact division, the way Teamleader links entities with
    # the same VAT number to one administration; it syncs only when someone asks.
    DemoIntegration(
        id=3,
        name="Demo Nederland Projecten",
        tool="exact_online",
        conn_id=DEMO_CONN_ID,
        auto_sync=False,
        sync_from=None,
        settings=_nl_settings(default_gl="8010", payment_condition="15"),
        number_format="P2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8010",),
    ),
    # Yuki: the VAT type a rate maps to must be one of the administration's tax codes. 12 % is mapped to a
    # type Yuki does not have, so Yuki itself refuses those invoices while the rest of the document books.
    DemoIntegration(
        id=4,
        name="Demo Yuki BV",
        tool="yuki",
        conn_id=YUKI_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "administration_id": yuki.ADMINISTRATION_ID,
            "vat_codes": {"21": "2", "6": "2", "0": "5", "12": "9"},
            "tax_rates": tax_rates("BE", {"21": "2", "6": "2", "12": "9"}, yuki.VAT_TYPES_BY_REGIME),
            "gl_accounts": {"7000": "7000", "7010": "7010"},
            "default_gl_account": "7000",
        },
        number_format="Y2026-{:04d}",
        vat_rates=("21", "6", "0"),
        gl_accounts=("7000", "7010"),
        country="BE",
    ),
    # Twinfield: 6 % is mapped to a VAT code that exists but is not active, and GL 8020 to a dimension the
    # office does not have, so Twinfield refuses those transactions and books the others of the call.
    DemoIntegration(
        id=5,
        name="Demo Twinfield BV",
        tool="twinfield",
        conn_id=TWINFIELD_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "office": twinfield.OFFICE,
            "journal": twinfield.DAYBOOK,
            "debtors_account": twinfield.DEBTORS_ACCOUNT,
            "vat_codes": {"21": "VH", "9": "VL", "0": "VN", "6": twinfield.INACTIVE_VAT_CODE},
            "tax_rates": tax_rates(
                "NL",
                {"21": "VH", "9": "VL", "6": twinfield.INACTIVE_VAT_CODE},
                twinfield.ZERO_RATE_VAT_CODES,
            ),
            "gl_accounts": {"8000": "8000", "8010": "8010", "8020": "8999"},
            "default_gl_account": "8000",
            "discount_gl_account": twinfield.DISCOUNT_ACCOUNT,
        },
        number_format="T2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8000", "8010"),
    ),
    # Xero: 6 % is mapped to a tax type the organisation has deleted, and GL 8020 to an archived account,
    # so Xero refuses those invoices (per element) and books the others of the same request.
    DemoIntegration(
        id=6,
        name="Demo Xero Ltd",
        tool="xero",
        conn_id=XERO_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "tenant_id": xero.DEMO_TENANT_ID,
            "vat_codes": {
                "21": xero.TAX_STANDARD,
                "9": xero.TAX_REDUCED,
                "0": xero.TAX_ZERO,
                "6": xero.TAX_DELETED,
            },
            "tax_rates": tax_rates(
                "NL",
                {"21": xero.TAX_STANDARD, "9": xero.TAX_REDUCED, "6": xero.TAX_DELETED},
                xero.TAX_TYPES_BY_TAX_RATE,
            ),
            "gl_accounts": {"8000": "200", "8010": "260", "8020": "210"},
            "default_gl_account": "200",
            "discount_gl_account": xero.DISCOUNT_ACCOUNT,
        },
        number_format="X2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8000", "8010"),
    ),
    # QuickBooks Online: GL accounts map to items (QuickBooks books a line on its item's income account),
    # 8020 to an item id the company does not have; and the company's books are closed up to its closing
    # date, so an invoice dated before it is refused. Both inside a batch whose other invoices book.
    DemoIntegration(
        id=7,
        name="Demo QuickBooks BV",
        tool="quickbooks",
        conn_id=QUICKBOOKS_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "realm_id": quickbooks.REALM_DEMO,
            "vat_codes": dict(quickbooks.TAX_CODES_BY_RATE),
            "tax_rates": tax_rates("NL", quickbooks.TAX_CODES_BY_RATE, quickbooks.TAX_CODES_BY_TAX_RATE),
            "gl_accounts": {"8000": quickbooks.ITEM_SERVICES, "8010": quickbooks.ITEM_HOURS, "8020": "999"},
            "default_gl_account": quickbooks.ITEM_SERVICES,
            "discount_gl_account": quickbooks.ITEM_DISCOUNT,
        },
        number_format="Q2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8000", "8010"),
    ),
    # The second country on each tool that has one integration above: a Dutch Yuki administration and
    # Belgian companies on Twinfield (the organisation's second office), Xero (a second organisation) and
    # QuickBooks (the demo company: its Dutch integration's customers and these are apart). They book at
    # 21 % and on the 0 % regimes, with discounts lowering revenue (no discount account mapped).
    DemoIntegration(
        id=8,
        name="Demo Yuki Handel Nederland BV",
        tool="yuki",
        conn_id=YUKI_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "administration_id": yuki.THIRD_ADMINISTRATION_ID,
            "vat_codes": {"21": "2", "9": "2", "0": "5"},
            "tax_rates": tax_rates("NL", {"21": "2", "9": "2"}, yuki.VAT_TYPES_BY_REGIME),
            "gl_accounts": {"8000": "8000", "8010": "8010"},
            "default_gl_account": "8000",
        },
        number_format="YN2026-{:04d}",
        vat_rates=("21", "9", "0"),
        gl_accounts=("8000", "8010"),
        first_of_tool=False,
    ),
    DemoIntegration(
        id=9,
        name="Demo Twinfield België BV",
        tool="twinfield",
        conn_id=TWINFIELD_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "office": twinfield.SECOND_OFFICE,
            "journal": twinfield.DAYBOOK,
            "debtors_account": twinfield.DEBTORS_ACCOUNT,
            "vat_codes": {"21": "VH", "0": "VN"},
            "tax_rates": tax_rates("BE", {"21": "VH"}, twinfield.ZERO_RATE_VAT_CODES),
            "gl_accounts": {"8000": "8000", "8010": "8010"},
            "default_gl_account": "8000",
        },
        number_format="TB2026-{:04d}",
        vat_rates=("21", "0"),
        gl_accounts=("8000", "8010"),
        country="BE",
        first_of_tool=False,
    ),
    DemoIntegration(
        id=10,
        name="Demo Xero België BV",
        tool="xero",
        conn_id=XERO_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "tenant_id": xero.SECOND_TENANT_ID,
            "vat_codes": {"21": xero.TAX_STANDARD, "0": xero.TAX_ZERO},
            "tax_rates": tax_rates("BE", {"21": xero.TAX_STANDARD}, xero.TAX_TYPES_BY_TAX_RATE),
            "gl_accounts": {"8000": "200", "8010": "260"},
            "default_gl_account": "200",
        },
        number_format="XB2026-{:04d}",
        vat_rates=("21", "0"),
        gl_accounts=("8000", "8010"),
        country="BE",
        first_of_tool=False,
    ),
    DemoIntegration(
        id=11,
        name="Demo QuickBooks België BV",
        tool="quickbooks",
        conn_id=QUICKBOOKS_CONN_ID,
        auto_sync=True,
        sync_from=None,
        settings={
            "realm_id": quickbooks.REALM_DEMO,
            "vat_codes": {"21": quickbooks.TAX_CODE_21, "0": quickbooks.TAX_CODE_0},
            "tax_rates": tax_rates("BE", {"21": quickbooks.TAX_CODE_21}, quickbooks.TAX_CODES_BY_TAX_RATE),
            "gl_accounts": {"8000": quickbooks.ITEM_SERVICES, "8010": quickbooks.ITEM_HOURS},
            "default_gl_account": quickbooks.ITEM_SERVICES,
        },
        number_format="QB2026-{:04d}",
        vat_rates=("21", "0"),
        gl_accounts=("8000", "8010"),
        country="BE",
        first_of_tool=False,
    ),
)

COMPANIES = (
    ("Atelier Verhoeven BV", "BE", "Kortrijksesteenweg 12", "9000", "Gent"),
    ("Bakkerij De Smet", "BE", "Markt 3", "8000", "Brugge"),
    ("Brouwerij Het Anker NV", "BE", "Guido Gezellelaan 49", "2800", "Mechelen"),
    ("Studio Lambrecht", "BE", "Meir 101", "2000", "Antwerpen"),
    ("Garage Peeters & Zonen", "BE", "Steenweg 7", "3000", "Leuven"),
    ("Houthandel Janssens", "BE", "Industrieweg 22", "3500", "Hasselt"),
    ("Van Dijk Installaties BV", "NL", "Stationsplein 4", "3511 ED", "Utrecht"),
    ("Bloemkwekerij Bakker", "NL", "Dorpsstraat 18", "2161 AB", "Lisse"),
    ("De Vries Logistiek BV", "NL", "Havenweg 9", "3089 JH", "Rotterdam"),
    ("Jansen Architecten", "NL", "Herengracht 210", "1016 BS", "Amsterdam"),
)
CONTACTS = (
    ("Sofie Maes", "BE", "Kerkstraat 5", "9300", "Aalst"),
    ("Lars de Boer", "NL", "Lindelaan 2", "9712 AA", "Groningen"),
)
UNUSUAL_NAMES = (
    # Names that break XML built by string concatenation, and one outside the Basic Multilingual Plane.
    ('Smith & <Sons> "Ltd"', "BE", "Rue d'Arlon 80", "1040", "Etterbeek"),
    ("Bloemenhuis \U0001f337 Lisse", "NL", "Heereweg 160", "2161 BR", "Lisse"),
)


def be_vat_number(serial: int) -> str:
    """A Belgian enterprise number with a valid mod-97 check: 0 + 7 digits + 2 check digits."""
    base = int(f"0{serial:07d}"[:8])
    return f"BE{base:08d}{97 - base % 97:02d}"


def nl_vat_number(serial: int) -> str:
    """A Dutch VAT number whose 9 digits pass the eleven test, suffixed B01."""
    for candidate in range(serial, serial + 100):
        digits = f"{candidate:08d}"[-8:]
        total = sum(int(d) * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11
        if total < 10:
            return f"NL{digits}{total}B01"
    raise ValueError("no valid number near serial")


@dataclass(frozen=True)
class SeedResult:
    """What was seeded, and what a correct sync must make of the deliberately broken invoices."""

    counts: dict[str, int]
    expected_rejections: dict[str, tuple[str, str]]
    """invoice number -> (error class, a fragment of the message a bookkeeper must see)"""
    before_cutover: tuple[str, ...]


CONFIRM_FLAG = "--i-mean-this-database"


class NotADemoDatabase(RuntimeError):
    """A wipe was asked of a database the demo did not make, which holds data, without naming it."""


def mark_as_demo(conn: Connection, by: str) -> None:
    """Mark the database as the demo's, so a later wipe needs no name."""
    DEMO_MARK.create(conn, checkfirst=True)
    if not is_marked(conn):
        conn.execute(insert(DEMO_MARK).values(marked_at=datetime.now(UTC), marked_by=by))


def _holdings(conn: Connection) -> dict[str, int]:
    """Rows per app or sync table that has any: what a wipe would erase."""
    present = set(inspect(conn).get_table_names())
    counts = {}
    for table in [*AppBase.metadata.sorted_tables, *SyncBase.metadata.sorted_tables]:
        if table.name in present and (n := conn.scalar(select(func.count()).select_from(table))):
            counts[table.name] = int(n)
    return counts


def names_database(url: URL, given: str) -> bool:
    """Whether ``given`` (a URL, a database name, or an SQLite file's path) is ``url``'s database."""
    database = url.database or ""
    if "://" in given:
        other = make_url(given)
        return (other.get_backend_name(), other.host, other.port) == (
            url.get_backend_name(),
            url.host,
            url.port,
        ) and names_database(url, other.database or "")
    if url.get_backend_name() == "sqlite":
        return bool(database) and Path(given).resolve() == Path(database).resolve()
    return given == database


def wipe(engine: Engine, *, confirm: str | None = None, by: str) -> None:
    """Erase the app's and the sync's rows, then mark the database as the demo's.

    :param confirm: the database's name (or URL) when it is not a demo database; without it such a
        database is refused (:class:`NotADemoDatabase`) unless it holds nothing.
    :param by: what wipes it, for the mark (``demo seed``, ``bench``).
    """
    with Session(engine) as session, session.begin():
        _guarded_wipe(session, engine.url, confirm, by)


def _guarded_wipe(session: Session, url: URL, confirm: str | None, by: str) -> None:
    conn = session.connection()
    _refuse_unless_demo(conn, url, confirm)
    _wipe(session)
    mark_as_demo(conn, by)


def _refuse_unless_demo(conn: Connection, url: URL, confirm: str | None) -> None:
    if is_marked(conn) or (confirm is not None and names_database(url, confirm)):
        return
    holdings = _holdings(conn)
    if not holdings:
        return
    held = ", ".join(f"{table} ({n} rows)" for table, n in holdings.items())
    wrong = f" ({confirm!r} does not name it)" if confirm is not None else ""
    raise NotADemoDatabase(
        f"refusing to wipe {url.render_as_string(hide_password=True)}: it is not a demo database (the demo "
        f"seeding marks the databases it fills; this one has {held}){wrong}. If it really is to be "
        f"erased, name it: {CONFIRM_FLAG} {url.database}"
    )


def seed(
    engine: Engine,
    *,
    invoices: int = 60,
    seed_value: int = 2026,
    reset: bool = False,
    tools: tuple[str, ...] | None = None,
    confirm: str | None = None,
) -> SeedResult:
    """Fill the invoicing tables with demo data and mark the database as the demo's; refuses to touch a
    database that already has data unless ``reset``, and to reset one the demo did not make unless
    ``confirm`` names it (:func:`wipe`).

    :param invoices: regular invoices per three integrations (each integration gets about a third).
    :param tools: the accounting tools whose integrations (and invoices) to create; default: every tool
        with demo integrations.
    """
    known = [tool for tool in TOOLS if any(i.tool == tool for i in INTEGRATIONS)]
    tools = tuple(known) if tools is None else tools
    unknown = set(tools) - set(known)
    if unknown:
        raise ValueError(f"no demo data for tool(s) {sorted(unknown)}; known: {', '.join(known)}")
    with Session(engine) as session, session.begin():
        if _holdings(session.connection()):
            if not reset:
                raise RuntimeError("the invoicing database already has data; use --reset to start over")
            _guarded_wipe(session, engine.url, confirm, "demo seed")
        mark_as_demo(session.connection(), "demo seed")
        builder = _Builder(random.Random(seed_value))
        builder.integrations(tools)
        builder.customers()
        for offset, tool in enumerate(TOOLS):
            if tool not in tools:
                continue
            builder.rng = random.Random(seed_value + offset)
            if tool == "exact_online":  # the first tool of the demo: the regular and the broken invoices
                builder.regular_invoices(invoices)
                builder.broken_invoices()
                builder.exact_discounts_and_regimes()
            else:
                builder.other_tool_invoices(tool, invoices)
        counts = builder.flush(session)
    return SeedResult(counts, builder.expected_rejections, tuple(builder.before_cutover))


def _wipe(session: Session) -> None:
    for table in reversed(SyncBase.metadata.sorted_tables):
        session.execute(delete(table))
    for model in (NotificationRow, InvoiceLineRow, InvoiceRow, CustomerRow, IntegrationRow):
        if model is InvoiceRow:
            session.execute(update(InvoiceRow).values(credited_invoice_id=None))
        session.execute(delete(model))


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: dict[type, list[dict[str, Any]]] = defaultdict(list)
        self.next_invoice_id = 1
        self.next_number: dict[int, int] = defaultdict(lambda: 1)
        self.customers_by_country: dict[str, list[int]] = defaultdict(list)
        self.registered: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.expected_rejections: dict[str, tuple[str, str]] = {}
        self.before_cutover: list[str] = []
        self.unusual_customer_ids: dict[str, int] = {}

    def integrations(self, tools: tuple[str, ...]) -> None:
        for integration in INTEGRATIONS:
            if integration.tool not in tools:
                continue
            self.rows[IntegrationRow].append(
                {
                    "id": integration.id,
                    "name": integration.name,
                    "tool": integration.tool,
                    "conn_id": integration.conn_id,
                    "auto_sync": integration.auto_sync,
                    "sync_from": integration.sync_from,
                    # Marked as a demo: its connector then takes the sandbox's answers, and only those.
                    "settings": {**integration.settings, "demo": True},
                    "updated_at": SEEDED_AT,
                }
            )

    def customers(self) -> None:
        people = [(name, "company", *rest) for name, *rest in COMPANIES]
        people += [(name, "contact", *rest) for name, *rest in CONTACTS]
        people += [
            ("Refused Customer NV", "company", "BE", "Rue Haute 1", "1000", "Brussel"),
            ("Bad Mail Comm.V", "company", "BE", "Nieuwstraat 8", "1000", "Brussel"),
        ]
        people += [(name, "company", *rest) for name, *rest in UNUSUAL_NAMES]
        for customer_id, (name, kind, country, street, postcode, city) in enumerate(people, start=1):
            vat = None
            if kind == "company":
                vat = (
                    be_vat_number(4_000_000 + customer_id * 7919)
                    if country == "BE"
                    else nl_vat_number(10_000_000 + customer_id * 7919)
                )
            slug = "".join(ch for ch in name.lower() if ch.isalnum())[:20]
            email = "boekhouding@@badmail" if name.startswith("Bad Mail") else f"boekhouding@{slug}.example"
            self.rows[CustomerRow].append(
                {
                    "id": customer_id,
                    "kind": kind,
                    "name": name,
                    "vat_number": vat,
                    "email": email,
                    "address_line1": street,
                    "postcode": postcode,
                    "city": city,
                    "country_code": country,
                    "updated_at": SEEDED_AT,
                }
            )
            if name.startswith("Refused"):
                self.refused_customer_id = customer_id
            elif name.startswith("Bad Mail"):
                self.bad_mail_customer_id = customer_id
            elif (name, country, street, postcode, city) in UNUSUAL_NAMES:
                self.unusual_customer_ids[country] = customer_id
            else:
                self.customers_by_country[country].append(customer_id)

    def regular_invoices(self, count: int) -> None:
        regular = [i for i in INTEGRATIONS if i.tool == "exact_online"]
        for n in range(count):
            integration = regular[n % len(regular)]
            roll = self.rng.random()
            status = "draft" if roll < 0.1 else "paid" if roll < 0.3 else "registered"
            synced = status != "draft" and 0.3 <= roll < 0.45
            credit = status != "draft" and not synced and roll > 0.92 and self.registered[integration.id]
            self._invoice(
                integration,
                status=status,
                invoice_date=date(2026, self.rng.randint(2, 11), self.rng.randint(1, 28)),
                lines=self._lines(integration),
                already_synced=synced,
                credit_of=self.rng.choice(self.registered[integration.id]) if credit else None,
            )

    def exact_discounts_and_regimes(self) -> None:
        for integration in INTEGRATIONS:
            if integration.tool == "exact_online":
                self.discounts_and_regimes(integration)

    def broken_invoices(self) -> None:
        """One invoice per reason the sync or the tool must refuse; each has a different cause."""
        be, nl = INTEGRATIONS[0], INTEGRATIONS[1]
        ok = [("Consultancy", Decimal("2"), Decimal("95.00"), "21", "7010")]
        cases: list[tuple[DemoIntegration, date, list[Any], dict[str, Any], tuple[str, str] | None]] = [
            (
                be,
                date(2026, 3, 4),
                [("Import goods", Decimal("1"), Decimal("300"), "9", "7000")],
                {},
                ("config", "Tax rate 'BE-9' (9%) is not mapped"),
            ),
            (be, date(2026, 1, 20), ok, {}, ("data", "Periode is afgesloten: 2026-01")),
            (
                be,
                date(2026, 4, 2),
                [("Old stock", Decimal("3"), Decimal("40"), "21", "7020")],
                {},
                ("config", "Blocked: Ledger account"),
            ),
            (
                be,
                date(2026, 5, 6),
                ok,
                {"customer_id": self.refused_customer_id},
                ("data", "Invalid: Customer (Type)"),
            ),
            (
                be,
                date(2026, 5, 7),
                ok,
                {"customer_id": self.bad_mail_customer_id},
                ("data", "Customer Bad Mail Comm.V (#14) has an invalid e-mail address"),
            ),
            (be, date(2025, 12, 15), ok, {}, None),  # before the integration's cut-over date: skipped
            (
                nl,
                date(2026, 6, 1),
                [("Advies", Decimal("1"), Decimal("500"), "21", "8000")],
                {"total_excl_override": Decimal("550.00")},
                ("data", "the lines add up to 500.00"),
            ),
            (
                nl,
                date(2026, 6, 2),
                [("Onderhoud", Decimal("1"), Decimal("120"), "6", "8010")],
                {},
                ("config", "Tax rate 'NL-6' (6%) is not mapped"),
            ),
        ]
        for integration, invoice_date, lines, extra, expected in cases:
            number = self._invoice(integration, invoice_date=invoice_date, lines=lines, **extra)
            if expected is None:
                self.before_cutover.append(number)
            else:
                self.expected_rejections[number] = expected

    def other_tool_invoices(self, tool: str, count: int) -> None:
        """The invoices of a non-Exact tool's integration: regular ones (as many as one Exact integration
        gets), two for the customers with unusual names, and the ones the tool must refuse
        (its simulator module's ``SANDBOX.refusals``)."""
        for integration in (i for i in INTEGRATIONS if i.tool == tool):
            self._tool_integration_invoices(integration, count)

    def _tool_integration_invoices(self, integration: DemoIntegration, count: int) -> None:
        for _ in range(max(count // 3, 1)):
            roll = self.rng.random()
            status = "draft" if roll < 0.1 else "paid" if roll < 0.3 else "registered"
            synced = status != "draft" and 0.3 <= roll < 0.45
            credit = status != "draft" and not synced and roll > 0.92 and self.registered[integration.id]
            self._invoice(
                integration,
                status=status,
                invoice_date=date(2026, self.rng.randint(2, 11), self.rng.randint(1, 28)),
                lines=self._lines(integration),
                already_synced=synced,
                credit_of=self.rng.choice(self.registered[integration.id]) if credit else None,
            )
        if integration.first_of_tool:
            self._unusual_names_and_refusals(integration)
        self.discounts_and_regimes(integration)

    def _unusual_names_and_refusals(self, integration: DemoIntegration) -> None:
        for customer_id in self.unusual_customer_ids.values():
            self._invoice(
                integration,
                invoice_date=date(2026, 7, 1),
                lines=self._lines(integration),
                customer_id=customer_id,
            )
        from invoice_sync_dev.sandbox.tools import sandbox_of  # the simulators load only when seeding

        for refusal in sandbox_of(integration.tool).refusals:
            lines = [("Consultancy", Decimal("2"), Decimal("95.00"), refusal.vat_rate, refusal.gl_account)]
            number = self._invoice(integration, invoice_date=refusal.invoice_date, lines=lines)
            self.expected_rejections[number] = (refusal.error_class, refusal.message)

    def discounts_and_regimes(self, integration: DemoIntegration) -> None:
        """What ordinary invoices of real companies carry: a discount line (a negative line on a positive
        invoice), a discount over the whole invoice (7.5 %, so its cents need rounding per VAT rate), and
        two or more 0 % lines of different tax rates that must book on different VAT codes."""
        standard, gl = integration.vat_rates[0], integration.gl_accounts[0]
        self._invoice(
            integration,
            invoice_date=date(2026, 8, 3),
            lines=[
                ("Consultancy", Decimal("6"), Decimal("95.00"), standard, gl),
                ("Loyalty discount", Decimal("1"), Decimal("-57.00"), standard, gl),
            ],
        )
        self._invoice(
            integration,
            invoice_date=date(2026, 8, 4),
            lines=[
                ("Design work", Decimal("3"), Decimal("133.33"), standard, gl),
                ("Materials", Decimal("7.25"), Decimal("18.45"), integration.vat_rates[1], gl),
                ("Installation", Decimal("1"), Decimal("249.99"), standard, integration.gl_accounts[-1]),
            ],
            discount_percentage=Decimal("7.5"),
        )
        regimes = integration.zero_rate_regimes()
        if len(regimes) >= 2:
            self._invoice(
                integration,
                invoice_date=date(2026, 8, 5),
                lines=[
                    (
                        f"Delivery ({code.rsplit('-', 1)[1].lower()})",
                        Decimal("1"),
                        Decimal(f"{n}00.00"),
                        "0",
                        gl,
                        code,
                    )
                    for n, code in enumerate(regimes, start=1)
                ]
                + [("Consultancy", Decimal("1"), Decimal("80.00"), standard, gl)],
            )

    def _lines(self, integration: DemoIntegration) -> list[tuple[str, Decimal, Decimal, str, str]]:
        descriptions = (
            "Consultancy",
            "Design work",
            "Installation",
            "Maintenance",
            "Materials",
            "Travel costs",
        )
        lines = []
        for _ in range(self.rng.randint(1, 4)):
            quantity = Decimal(self.rng.choice(("1", "2", "3", "0.5", "7.25", "12")))
            price = (Decimal(self.rng.randint(500, 250_000)) / 100).quantize(CENT)
            lines.append(
                (
                    self.rng.choice(descriptions),
                    quantity,
                    price,
                    self.rng.choice(integration.vat_rates),
                    self.rng.choice(integration.gl_accounts),
                )
            )
        return lines

    def _invoice(
        self,
        integration: DemoIntegration,
        *,
        invoice_date: date,
        lines: list[tuple[Any, ...]],
        status: str = "registered",
        already_synced: bool = False,
        credit_of: dict[str, Any] | None = None,
        customer_id: int | None = None,
        total_excl_override: Decimal | None = None,
        discount_percentage: Decimal | None = None,
    ) -> str:
        """``lines``: (description, quantity, unit price, VAT rate, GL account[, tax rate]); a line without
        a tax rate gets its country's (a 0 % line one of the regimes the integration maps), unless the
        integration maps percentages only. The totals are the app's: per tax rate, less the invoice's
        discount rounded per tax rate, then VAT per rate on what is left."""
        invoice_id = self.next_invoice_id
        self.next_invoice_id += 1
        country = integration.country
        if credit_of is not None:
            customer_id = credit_of["customer_id"]
            invoice_date = max(invoice_date, credit_of["invoice_date"])
        customer_id = customer_id or self.rng.choice(self.customers_by_country[country])
        lines = [
            (*line[:5], line[5] if len(line) > 5 else self._tax_rate(integration, line[3], invoice_id + n))
            for n, line in enumerate(lines)
        ]
        amounts = [(line[1] * line[2]).quantize(CENT, ROUND_HALF_UP) for line in lines]
        by_tax_rate: dict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
        for amount, line in zip(amounts, lines, strict=True):
            by_tax_rate[line[3], line[5]] += amount
        if discount_percentage:
            by_tax_rate = {
                key: base - (base * discount_percentage / 100).quantize(CENT, ROUND_HALF_UP)
                for key, base in by_tax_rate.items()
            }
        by_rate: dict[str, Decimal] = defaultdict(Decimal)
        for (rate, _), base in by_tax_rate.items():
            by_rate[rate] += base
        total_vat = sum(
            ((base * Decimal(rate) / 100).quantize(CENT, ROUND_HALF_UP) for rate, base in by_rate.items()),
            Decimal("0"),
        )
        total_excl = total_excl_override or sum(by_tax_rate.values(), Decimal("0"))
        number = None
        if status != "draft":
            number = integration.number_format.format(self.next_number[integration.id])
            self.next_number[integration.id] += 1
        registered_at = datetime.combine(invoice_date, datetime.min.time(), UTC) + timedelta(hours=9)
        row = {
            "id": invoice_id,
            "integration_id": integration.id,
            "kind": "credit_note" if credit_of is not None else "invoice",
            "number": number,
            "status": status,
            "customer_id": customer_id,
            "invoice_date": invoice_date,
            "due_date": invoice_date + timedelta(days=30),
            "currency": "EUR",
            "total_excl_vat": total_excl,
            "total_vat": total_vat,
            "total_incl_vat": total_excl + total_vat,
            "credited_invoice_id": credit_of["id"] if credit_of is not None else None,
            "registered_at": registered_at if status != "draft" else None,
            "updated_at": registered_at,
            "registration_number": f"{25700000 + invoice_id}" if already_synced else None,
            "synced_at": registered_at + timedelta(days=1) if already_synced else None,
            "discount_percentage": discount_percentage,
        }
        self.rows[InvoiceRow].append(row)
        for position, ((description, quantity, price, rate, gl, tax_rate), amount) in enumerate(
            zip(lines, amounts, strict=True), start=1
        ):
            self.rows[InvoiceLineRow].append(
                {
                    "invoice_id": invoice_id,
                    "position": position,
                    "description": description,
                    "quantity": quantity,
                    "unit_price": price,
                    "vat_rate": Decimal(rate),
                    "amount": amount,
                    "gl_account": gl,
                    "tax_rate": tax_rate,
                }
            )
        if status != "draft" and credit_of is None:
            self.registered[integration.id].append(row)
        return number or ""

    @staticmethod
    def _tax_rate(integration: DemoIntegration, rate: str, turn: int) -> str | None:
        """The app tax rate of a line at ``rate`` % (see :meth:`_invoice`); 0 % lines take the regimes in
        turn, not from the random stream, so the rest of the data stays what it was before tax rates."""
        if "tax_rates" not in integration.settings:
            return None
        if rate != "0":
            return f"{integration.country}-{rate}"
        regimes = integration.zero_rate_regimes()
        return regimes[turn % len(regimes)]

    def flush(self, session: Session) -> dict[str, int]:
        counts = {}
        for model in (IntegrationRow, CustomerRow, InvoiceRow, InvoiceLineRow):
            rows = self.rows[model]
            for start in range(0, len(rows), 5000):
                session.execute(insert(model), rows[start : start + 5000])
            counts[model.__tablename__] = len(rows)
        return counts
