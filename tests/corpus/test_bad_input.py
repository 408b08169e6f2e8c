"""A corpus of broken invoices and customers, run through the real engine against the simulators.

Every kind of bad input is one row of ``CASES``: what is broken, and the error class and message
fragment the ledger must show. All of them, with valid invoices among them, go through ONE sync run
(one run id over four integrations, as one DAG run does), so the test also proves that no broken
invoice crashes the run or blocks another, that nothing is half-written, and that what can be checked
locally never costs a failing call (Exact blocks an app after 10 failing calls an hour per endpoint).

SQLite runs the whole corpus; PostgreSQL a representative subset (``pg=True``), which covers every
path that reads other invoices or writes customer links.

The corpus was written against Exact Online; the cases that do not depend on Exact (``GENERIC``: our own
checks of invoices, customers and credit notes, and the valid ones) run against Yuki and Twinfield too,
next to cases only that tool can refuse, in one batch with the valid invoices.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import connector_for
from invoice_sync.engine.sync import IntegrationSync, SyncOptions
from invoice_sync.store.models import (
    CustomerLinkRow,
    CustomerRow,
    IntegrationRow,
    InvoiceLineRow,
    InvoiceRow,
    LedgerRow,
    NotificationRow,
)
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault
from invoice_sync_dev.sandbox import exact_fixtures as fx
from invoice_sync_dev.sandbox import quickbooks_fixtures, twinfield_fixtures, xero_fixtures, yuki_fixtures
from invoice_sync_dev.sandbox.demo import INTEGRATIONS as DEMO_INTEGRATIONS
from invoice_sync_dev.sandbox.demo import be_vat_number
from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection
from invoice_sync_dev.sandbox.tools import sandbox_of

NOW = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
CENT = Decimal("0.01")
GL = fx.GL_ACCOUNTS_123456
RUN_ID = "corpus-run"
TOKEN_KEY = Fernet.generate_key().decode()
"""The corpus fills a database of its own, not the demo's: its tokens are stored under a key, as anywhere
but in the demo (the operator's task reads it from Airflow's AIRFLOW__CORE__FERNET_KEY)."""

# -- integrations: one for most kinds; three whose settings are the broken part -------------------------

MAIN, NO_JOURNAL, GENERAL_JOURNAL, BAD_PAYMENT = 1, 2, 3, 4


def regimes(by_regime: dict[str, str]) -> dict[str, str]:
    """The corpus's two 0 % tax rates (intra-community supply, export) -> a tool's VAT codes for them."""
    return {"BE-0-IC": by_regime["intra_community"], "BE-0-EXPORT": by_regime["export"]}


_BASE = {
    "division": fx.DIVISION_BE,
    "journal": "70",
    "credit_note_journal": "71",
    # 12 % goes to a blocked code, 6 % to a purchase code; 9 % is not mapped at all
    "vat_codes": {"21": "4", "12": "5", "6": "9", "0": "0"},
    "tax_rates": {"BE-21": "4", "BE-0-IC": "IC", "BE-0-EXPORT": "EX"},
    "gl_accounts": {code: GL[code] for code in ("7000", "7010", "7020")},  # 7020 is blocked in Exact
    "payment_condition": "30",
}
INTEGRATIONS = {
    MAIN: ("Corpus BV", _BASE),
    NO_JOURNAL: ("Corpus without journal", {**_BASE, "journal": None, "credit_note_journal": None}),
    GENERAL_JOURNAL: ("Corpus general journal", {**_BASE, "journal": "90", "credit_note_journal": None}),
    BAD_PAYMENT: ("Corpus payment term", {**_BASE, "payment_condition": "99"}),
}
BATCH_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    # (tool, settings of the one corpus integration) per batching tool; its connection is the tool's demo
    # one. 12 % maps to a VAT
    # type Yuki has no tax code for; 6 % to a Twinfield VAT code that is not active, 7020 to a GL
    # dimension the office does not have; 6 % to a tax type Xero has deleted, 7020 to an archived Xero
    # account; 7020 to an item QuickBooks does not have.
    (
        "yuki",
        {
            "administration_id": yuki_fixtures.ADMINISTRATION_ID,
            "vat_codes": {"21": "2", "12": "9", "6": "2", "0": "5"},
            "tax_rates": {"BE-21": "2", **regimes(yuki_fixtures.VAT_TYPES_BY_REGIME)},
            "gl_accounts": {"7000": "7000", "7010": "7010", "7020": "7020"},
        },
    ),
    (
        "twinfield",
        {
            "office": twinfield_fixtures.OFFICE,
            "journal": twinfield_fixtures.DAYBOOK,
            "debtors_account": twinfield_fixtures.DEBTORS_ACCOUNT,
            "vat_codes": {"21": "VH", "12": "VL", "6": twinfield_fixtures.INACTIVE_VAT_CODE, "0": "VN"},
            "tax_rates": {"BE-21": "VH", **regimes(twinfield_fixtures.ZERO_RATE_VAT_CODES)},
            "gl_accounts": {"7000": "8000", "7010": "8010", "7020": "8999"},
        },
    ),
    (
        "xero",
        {
            "tenant_id": xero_fixtures.DEMO_TENANT_ID,
            "vat_codes": {
                "21": xero_fixtures.TAX_STANDARD,
                "12": xero_fixtures.TAX_REDUCED,
                "6": xero_fixtures.TAX_DELETED,
                "0": xero_fixtures.TAX_ZERO,
            },
            "tax_rates": {
                "BE-21": xero_fixtures.TAX_STANDARD,
                **regimes(xero_fixtures.TAX_TYPES_BY_TAX_RATE),
            },
            "gl_accounts": {"7000": "200", "7010": "260", "7020": "210"},
        },
    ),
    (
        "quickbooks",
        {
            "realm_id": quickbooks_fixtures.REALM_DEMO,
            "vat_codes": {
                "21": quickbooks_fixtures.TAX_CODE_21,
                "12": quickbooks_fixtures.TAX_CODE_9,
                "6": quickbooks_fixtures.TAX_CODE_9,
                "0": quickbooks_fixtures.TAX_CODE_0,
            },
            "tax_rates": {
                "BE-21": quickbooks_fixtures.TAX_CODE_21,
                **regimes(quickbooks_fixtures.TAX_CODES_BY_TAX_RATE),
            },
            "gl_accounts": {"7000": "1", "7010": "2", "7020": "999"},
        },
    ),
)

# -- customers ----------------------------------------------------------------------------------------

METACHARACTERS = "Smith & <Sons> \"Ltd\" 'O''Neill' \\ {json}: [x] 😀"
HELD_VAT = be_vat_number(4_777_001)
CUSTOMERS: dict[int, dict[str, Any]] = {
    1: {"name": "Atelier Verhoeven BV", "vat_number": be_vat_number(4_100_001)},
    2: {"name": "Sofie Maes", "kind": "contact", "vat_number": None},  # a person: no VAT number is fine
    3: {"name": METACHARACTERS, "vat_number": None, "city": 'Gent <&> "Oost"'},
    4: {"name": "Checksum BV", "vat_number": "BE0123456748"},  # last digit wrong (…749 is valid)
    5: {"name": "Short VAT BV", "vat_number": "BE12345"},
    6: {"name": "Nowhere Ltd", "country_code": "XX"},
    7: {"name": "Bad Mail BV", "email": "boekhouding@@example"},
    8: {"name": "   "},
    9: {"name": "Bell\x07 BV"},
    10: {"name": "Vennootschap met een naam die veel langer is dan vijftig tekens NV"},
    11: {"name": "Refused Customer NV"},  # the simulator refuses it: Invalid: Customer (Type)
    12: {"name": "Keyed In Twice BV", "vat_number": HELD_VAT},  # Exact has it under code 9999
    13: {"name": "Null\x00 Byte BV"},  # PostgreSQL text cannot even store U+0000
}


@dataclass
class Case:
    kind: str
    """What is broken, as the issue note says it."""
    expect: tuple[str, str] | str
    """(error class, message fragment) of the ledger row, or "booked" / "skipped"."""
    number: str | None = "auto"
    integration: int = MAIN
    customer: int | None = 1
    invoice_date: date = date(2026, 3, 2)
    lines: list[tuple[str, ...]] = field(
        default_factory=lambda: [("Consultancy", "2", "95.00", "21", "7010")]
    )
    """(description, quantity, unit price, VAT rate, GL account[, the app's tax rate]); the amount is
    quantity × price."""
    invoice: dict[str, Any] = field(default_factory=dict)
    """Column overrides of the invoice row; ``credits`` names the kind of the credited case."""
    line_amounts: list[str] | None = None
    line_values: dict[str, Any] = field(default_factory=dict)
    """Column overrides of every line row (a NULL the app should not have stored, say)."""
    pg: bool = False


CASES = [
    # -- valid ones, between the broken ones --------------------------------------------------------
    Case("a regular invoice", "booked", pg=True),
    Case("a contact without VAT number, 0 %", "booked", customer=2,
         lines=[("Workshop", "1", "250.00", "0", "7000")]),
    Case("XML/JSON metacharacters and emoji in names round-trip", "booked", customer=3, pg=True,
         lines=[(f"Design {METACHARACTERS}", "1", "100.00", "21", "7000")]),
    Case("a credit note of an invoice booked earlier in the same run", "booked", pg=True,
         invoice={"kind": "credit_note", "credits": "a regular invoice"}),
    Case("a credit note that credits no particular invoice (a rebate)", "booked",
         invoice={"kind": "credit_note"}),
    Case("a credit note of an invoice synced long ago", "booked",
         invoice={"kind": "credit_note", "credits": "an invoice synced long ago"}),
    Case("an invoice synced long ago", "skipped",
         invoice={"registration_number": "26700000", "synced_at": NOW}),
    Case("dated before the cut-over date", "skipped", invoice_date=date(2025, 12, 15)),
    # -- invoice ---------------------------------------------------------------------------------------
    Case("registered without a number", ("data", "has no invoice number"), number=None),
    Case("customer missing", ("data", "has no customer; link a customer in the app"), customer=None,
         pg=True),
    Case("no lines", ("data", "has no lines"), lines=[]),
    Case("lines do not add up to the total", ("data", "the lines add up to 190.00 EUR but the total "
         "excluding VAT is 200.00"), invoice={"total_excl_vat": Decimal("200.00")}, pg=True),
    Case("totals inconsistent", ("data", "plus VAT 39.90 is not the total 230.00"),
         invoice={"total_incl_vat": Decimal("230.00")}),
    Case("negative amounts on an invoice", ("data", "has a negative total; an invoice that gives money "
         "back must be a credit note in the app"),
         lines=[("Consultancy", "2", "95.00", "21", "7010"), ("Discount", "1", "-200.00", "21", "7010")]),
    Case("only zero amounts", ("data", "amounts to 0.00 EUR: there is nothing to book"),
         lines=[("Free sample", "3", "0.00", "21", "7000")]),
    # -- what ordinary invoices carry: discounts and tax rates ---------------------------------------------
    Case("a discount line on an invoice", "booked", pg=True,
         lines=[("Consultancy", "2", "95.00", "21", "7010"),
                ("Loyalty discount", "1", "-20.00", "21", "7010")]),
    Case("an invoice-level discount of 10 %", "booked", pg=True,
         lines=[("Consultancy", "2", "95.00", "21", "7010"), ("Materials", "3", "33.33", "21", "7000")],
         invoice={"discount_percentage": Decimal("10"), "total_excl_vat": Decimal("260.99"),
                  "total_vat": Decimal("54.81"), "total_incl_vat": Decimal("315.80")}),
    Case("a discount of more than 100 %", ("data", "has a discount of 120%, which is not a percentage below "
         "100"), invoice={"discount_percentage": Decimal("120")}),
    Case("two 0 % lines of different tax rates", "booked", pg=True,
         lines=[("Machine, to Germany", "1", "400.00", "0", "7000", "BE-0-IC"),
                ("Machine, to Canada", "1", "300.00", "0", "7000", "BE-0-EXPORT"),
                ("Consultancy", "1", "100.00", "21", "7010", "BE-21")]),
    Case("a tax rate without a mapping", ("config", "Tax rate 'BE-0-COCONTRACTOR' (0%) is not mapped"),
         lines=[("Renovation works", "1", "500.00", "0", "7000", "BE-0-COCONTRACTOR")]),
    Case("quantity × price is not the line amount", ("data", "line 1 has amount 150.00, but quantity 2 "
         "× unit price 95 is 190.00"), line_amounts=["150.00"]),
    Case("a VAT rate no country charges", ("data", "line 1 has VAT rate 150%, which no country charges"),
         lines=[("Consultancy", "1", "10.00", "150", "7010")]),
    Case("total VAT inconsistent with the lines", ("data", "its VAT total 25.00 does not match its "
         "lines' VAT 39.90"), invoice={"total_vat": Decimal("25.00"), "total_incl_vat": Decimal("215.00")}),
    Case("due date before the invoice date", ("data", "the due date 2026-02-01 is before the invoice date "
         "2026-03-02"), invoice={"due_date": date(2026, 2, 1)}),
    Case("a currency code that does not exist", ("data", "currency 'ZZZ' is not an ISO 4217 currency code"),
         invoice={"currency": "ZZZ"}),
    Case("a currency the journal refuses", ("config", "Niet toegestaan: Wisselkoers"),
         invoice={"currency": "USD"}, pg=True),
    Case("a control character in a line description", ("data", "the description of line 1 contains a "
         "control character (U+001B at position 6)"), lines=[("Audit\x1b[0m", "1", "10.00", "21", "7010")]),
    Case("a whitespace-only line description", ("data", "line 1 has no description"),
         lines=[("  \t ", "1", "10.00", "21", "7010")]),
    Case("an invoice number with spaces around it", ("data", "starts or ends with spaces"),
         number="2026/0777 "),
    Case("an invoice number longer than Exact's YourRef", ("data", "is longer than 30 characters "
         "(Exact's YourRef)"), number="2026/" + "0" * 30),
    Case("a line description longer than Exact accepts", ("data", "the description of line 1 is longer "
         "than the 60 characters Exact accepts (it has 70)"), lines=[("x" * 70, "1", "10.00", "21", "7010")]),
    Case("a duplicate invoice number (first)", ("data", "has the same number as another invoice of this "
         "integration (#{other}"), number="2026/0500", pg=True),
    Case("a duplicate invoice number (second)", ("data", "has the same number as another invoice of this "
         "integration (#{other}"), number="2026/0500", invoice_date=date(2026, 3, 9), pg=True),
    # -- customer --------------------------------------------------------------------------------------
    Case("VAT number fails its check digits", ("data", "the VAT number BE0123456748 of customer Checksum "
         "BV (#4) is not a valid BE VAT number: it has wrong check digits"), customer=4, pg=True),
    Case("VAT number of the wrong length", ("data", "is not a valid BE VAT number: it has the wrong number "
         "of characters"), customer=5),
    Case("unknown country code", ("data", "has country code 'XX', which is not an ISO 3166 country code"),
         customer=6),
    Case("invalid e-mail address", ("data", "Customer Bad Mail BV (#7) has an invalid e-mail address "
         "'boekhouding@@example'"), customer=7, pg=True),
    Case("an empty customer name", ("data", "customer #8 has no name"), customer=8),
    Case("a control character in the customer's name", ("data", "the name of customer Bell\\x07 BV (#9) "
         "contains a control character (U+0007 at position 5)"), customer=9, pg=True),
    Case("a NUL character in the customer's name", ("data", "contains a control character (U+0000 at "
         "position 5)"), customer=13),
    Case("a customer name longer than Exact accepts", ("data", "is longer than the 50 characters Exact "
         "accepts for an account (it has 66)"), customer=10),
    Case("a customer Exact refuses", ("data", "Invalid: Customer (Type)"), customer=11, pg=True),
    Case("a customer Exact already has under another code", ("data", "Exact already has account 9999 "
         "(Keyed In By Hand BV) with VAT number " + HELD_VAT), customer=12, pg=True),
    # -- what only Exact knows ----------------------------------------------------------------------------
    Case("a date in a period Exact has closed", ("data", "Periode is afgesloten: 2026-01"),
         invoice_date=date(2026, 1, 20), pg=True),
    Case("a date in a year without financial year", ("data", "Unknown: Financial year (Period-date table)"),
         invoice_date=date(2028, 3, 1)),
    Case("a G/L account blocked in Exact", ("config", "Blocked: Ledger account"),
         lines=[("Old stock", "3", "40.00", "21", "7020")]),
    Case("a VAT code blocked in Exact", ("config", "Not allowed: VAT code"),
         lines=[("Books", "1", "100.00", "12", "7000")]),
    Case("a purchase VAT code mapped for sales", ("config", "Not allowed: VAT code"),
         lines=[("Food", "1", "100.00", "6", "7000")]),
    # -- credit notes of invoices that are not booked ----------------------------------------------------
    Case("a credit note of an invoice Exact refuses in the same run", ("data", "credits invoice "
         "{credited}, which was refused (Exact Online division 123456: Periode is afgesloten: 2026-01)"),
         invoice={"kind": "credit_note", "credits": "a date in a period Exact has closed"}, pg=True),
    Case("a credit note of an invoice refused before any call", ("data", "credits invoice {credited}, "
         "which was refused"),
         invoice={"kind": "credit_note", "credits": "lines do not add up to the total"}),
    Case("a credit note of a draft", ("data", "credits invoice #{credited_id}, which is still a draft"),
         invoice={"kind": "credit_note", "credits": "a draft"}),
    Case("a draft", "skipped", number=None, invoice={"status": "draft"}),
    Case("a credit note of another integration's invoice", ("data", "which belongs to another "
         "integration"), invoice={"kind": "credit_note", "credits": "no journal set"}),
    Case("a credit note of an invoice not booked yet (registered after it)", ("data",
         "credits invoice {credited}, which is not booked in the accounting tool yet"),
         invoice={"kind": "credit_note", "credits": "an invoice registered after its credit note"}),
    Case("an invoice registered after its credit note", "booked", invoice_date=date(2026, 4, 1)),
    # -- configuration -----------------------------------------------------------------------------------
    Case("a VAT rate without a mapping", ("config", "VAT rate 9% is not mapped to an Exact VAT code for "
         "Exact division 123456"), lines=[("Import", "1", "300.00", "9", "7000")], pg=True),
    Case("an unmapped G/L account and no default", ("config", "GL account 4999 is not mapped to an Exact "
         "G/L account for Exact division 123456, and no default is set"),
         lines=[("Misc", "1", "10.00", "21", "4999")]),
    Case("no journal set", ("config", "No sales journal is set for Exact division 123456"),
         integration=NO_JOURNAL),
    Case("a journal that is not a sales journal", ("config", "Invalid: Journal (type)"),
         integration=GENERAL_JOURNAL),
    Case("a payment condition Exact does not know", ("config", "Invalid reference: Payment condition"),
         integration=BAD_PAYMENT),
]  # fmt: skip
BY_KIND = {case.kind: case for case in CASES}
assert len(BY_KIND) == len(CASES), "kinds are unique"
REJECTED = [case for case in CASES if isinstance(case.expect, tuple)]
TOOL_REFUSES = {  # kinds only Exact can find: each costs exactly one failing call, nothing else does
    "salesentry/SalesEntries": [
        "a currency the journal refuses", "a date in a period Exact has closed",
        "a date in a year without financial year", "a G/L account blocked in Exact",
        "a VAT code blocked in Exact", "a purchase VAT code mapped for sales",
        "a journal that is not a sales journal", "a payment condition Exact does not know",
    ],
    "crm/Accounts": ["a customer Exact refuses"],
}  # fmt: skip


GENERIC = [
    "a regular invoice", "a contact without VAT number, 0 %",
    "XML/JSON metacharacters and emoji in names round-trip",
    "a credit note of an invoice booked earlier in the same run",
    "a credit note that credits no particular invoice (a rebate)",
    "a credit note of an invoice synced long ago", "an invoice synced long ago",
    "registered without a number", "customer missing", "no lines", "lines do not add up to the total",
    "totals inconsistent", "negative amounts on an invoice", "only zero amounts",
    "a discount line on an invoice", "an invoice-level discount of 10 %", "a discount of more than 100 %",
    "two 0 % lines of different tax rates", "a tax rate without a mapping",
    "quantity × price is not the line amount", "a VAT rate no country charges",
    "total VAT inconsistent with the lines", "due date before the invoice date",
    "a currency code that does not exist", "a control character in a line description",
    "a whitespace-only line description", "an invoice number with spaces around it",
    "a duplicate invoice number (first)", "a duplicate invoice number (second)",
    "VAT number fails its check digits", "VAT number of the wrong length", "unknown country code",
    "invalid e-mail address", "an empty customer name", "a control character in the customer's name",
    "a NUL character in the customer's name", "a credit note of an invoice refused before any call",
    "a credit note of a draft", "a draft",
    "a credit note of an invoice not booked yet (registered after it)",
    "an invoice registered after its credit note",
]  # fmt: skip
"""Kinds whose outcome does not depend on the tool (our checks run before any call)."""
QUICKBOOKS_CLOSED_UNTIL = date(2026, 2, 27)
"""The corpus's QuickBooks company has closed its books up to here (after the integration's cut-over)."""
TOOL_CASES: dict[str, list[Case]] = dict(
    [
    ("yuki", [
        Case("a VAT type Yuki has no tax code for",
             ("config", "No tax code for VATPercentage 12 & VATType 9"),
             lines=[("Books", "1", "100.00", "12", "7000")]),
    ]),
    ("twinfield", [
        Case("a VAT code that is not active in Twinfield", ("config", "btw-code(VX)"),
             lines=[("Food", "1", "100.00", "6", "7000")]),
        Case("a GL account Twinfield does not have", ("config", "Dimension 8999"),
             lines=[("Old stock", "3", "40.00", "21", "7020")]),
    ]),
    ("xero", [
        Case("a tax type Xero has deleted", ("config", f"The TaxType code {xero_fixtures.TAX_DELETED}"),
             lines=[("Food", "1", "100.00", "6", "7000")]),
        Case("an account Xero has archived", ("config", "Account code '210' has been archived"),
             lines=[("Old stock", "3", "40.00", "21", "7020")]),
    ]),
    ("quickbooks", [
        Case("an item QuickBooks does not have", ("config", "Item element id 999 not found"),
             lines=[("Old stock", "3", "40.00", "21", "7020")]),
        Case("a date in a period QuickBooks has closed", ("config", "Account Period Closed"),
             invoice_date=QUICKBOOKS_CLOSED_UNTIL),
    ]),
    ]
)  # fmt: skip
"""Per batching tool: what only that tool can refuse; each costs one refused invoice in a batch, no more."""


def test_the_corpus_is_large_enough():
    assert len(REJECTED) >= 30
    assert sum(1 for c in REJECTED if c.pg) >= 10


class Corpus:
    """Writes the cases into the invoicing tables and remembers which invoice is which."""

    def __init__(
        self,
        store: SyncStore,
        cases: list[Case],
        *,
        tool: str = "exact_online",
        conn_id: str = "exact_demo",
        integrations: dict[int, tuple[str, dict[str, Any]]] = INTEGRATIONS,
    ) -> None:
        self.store = store
        self.cases = cases
        self.tool = tool
        self.conn_id = conn_id
        self.integrations = integrations
        self.ids: dict[str, int] = {}
        self.numbers: dict[str, str | None] = {}

    def seed(self) -> None:
        rows: dict[type, list[dict[str, Any]]] = {IntegrationRow: [], CustomerRow: [], InvoiceRow: []}
        rows[InvoiceLineRow] = []
        for integration_id, (name, settings) in self.integrations.items():
            if isinstance(settings, dict):  # the readable ones book into the sandbox: demo integrations
                settings = {"demo": True, **settings}
            rows[IntegrationRow].append(
                {"id": integration_id, "name": name, "tool": self.tool, "conn_id": self.conn_id,
                 "auto_sync": True, "sync_from": date(2026, 1, 1), "settings": settings, "updated_at": NOW}
            )  # fmt: skip
        postgres = self.store.engine.dialect.name == "postgresql"
        for customer_id, values in CUSTOMERS.items():
            if postgres and "\x00" in values["name"]:
                continue
            rows[CustomerRow].append(
                {"id": customer_id, "kind": "company", "vat_number": None, "email": None,
                 "address_line1": "Markt 1", "postcode": "9000", "city": "Gent", "country_code": "BE",
                 "updated_at": NOW} | values
            )  # fmt: skip
        for invoice_id, case in enumerate(self.cases, start=1):
            self.ids[case.kind] = invoice_id
        for invoice_id, case in enumerate(self.cases, start=1):
            rows[InvoiceRow].append(self._invoice(invoice_id, case))
            rows[InvoiceLineRow] += self._lines(invoice_id, case)
        credits = {row["id"]: row.pop("credited_invoice_id") for row in rows[InvoiceRow]}
        with Session(self.store.engine) as session, session.begin():
            for model in (IntegrationRow, CustomerRow, InvoiceRow, InvoiceLineRow):
                if rows[model]:
                    session.execute(insert(model), rows[model])
            for invoice_id, credited in credits.items():  # after all rows: some credit later ids
                if credited:
                    session.execute(
                        update(InvoiceRow)
                        .where(InvoiceRow.id == invoice_id)
                        .values(credited_invoice_id=credited)
                    )

    def _invoice(self, invoice_id: int, case: Case) -> dict[str, Any]:
        amounts = self._amounts(case)
        excl = sum(amounts, Decimal("0"))
        vat = sum(
            ((amount * Decimal(line[3]) / 100).quantize(CENT, ROUND_HALF_UP)
             for amount, line in zip(amounts, case.lines, strict=True)),
            Decimal("0"),
        )  # fmt: skip
        number = f"2026/{invoice_id:04d}" if case.number == "auto" else case.number
        self.numbers[case.kind] = number
        overrides = dict(case.invoice)
        credits = overrides.pop("credits", None)
        row = {
            "id": invoice_id, "integration_id": case.integration, "kind": "invoice", "number": number,
            "status": "registered", "customer_id": case.customer, "invoice_date": case.invoice_date,
            "due_date": None, "currency": "EUR", "total_excl_vat": excl, "total_vat": vat,
            "total_incl_vat": excl + vat, "credited_invoice_id": self.ids[credits] if credits else None,
            "registered_at": NOW, "updated_at": NOW, "registration_number": None, "synced_at": None,
        }  # fmt: skip
        row |= overrides
        if "total_excl_vat" in overrides and "total_incl_vat" not in overrides:
            row["total_incl_vat"] = row["total_excl_vat"] + row["total_vat"]
        if self.store.engine.dialect.name == "postgresql" and row["customer_id"] == 13:
            row["customer_id"] = None
        return row

    @staticmethod
    def _amounts(case: Case) -> list[Decimal]:
        if case.line_amounts is not None:
            return [Decimal(amount) for amount in case.line_amounts]
        return [(Decimal(q) * Decimal(p)).quantize(CENT, ROUND_HALF_UP) for _, q, p, *_ in case.lines]

    def _lines(self, invoice_id: int, case: Case) -> list[dict[str, Any]]:
        return [
            {"invoice_id": invoice_id, "position": position, "description": description,
             "quantity": Decimal(quantity), "unit_price": Decimal(price), "vat_rate": Decimal(rate),
             "amount": amount, "gl_account": gl, "tax_rate": tax_rate[0] if tax_rate else None}
            | case.line_values
            for position, ((description, quantity, price, rate, gl, *tax_rate), amount) in enumerate(
                zip(case.lines, self._amounts(case), strict=True), start=1
            )
        ]  # fmt: skip

    def fragment(self, case: Case) -> str:
        _, fragment = case.expect  # type: ignore[misc]  # refused cases expect a pair
        credited = case.invoice.get("credits")
        other = next(
            (c for c in self.cases if c is not case and c.number == case.number and c.number != "auto"), None
        )
        return fragment.format(
            credited=self.numbers.get(credited) if credited else None,
            credited_id=self.ids.get(credited) if credited else None,
            other=self.ids[other.kind] if other else None,
        )


def run_corpus(store: SyncStore, sandbox: Any, monkeypatch: pytest.MonkeyPatch, cases: list[Case]) -> Any:
    corpus = Corpus(store, cases)
    corpus.seed()
    connection = exact_online_connection(sandbox.url)
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(connection))
    # A relation keyed in by hand in Exact, with the VAT number of our customer 12, under code 9999.
    division = sandbox.exact.fixtures.divisions[fx.DIVISION_BE]
    sandbox.exact.create_account(
        division, {"Code": "9999".rjust(18), "Name": "Keyed In By Hand BV", "Status": "C",
                   "VATNumber": HELD_VAT}
    )  # fmt: skip
    reports = {}
    for integration_id in INTEGRATIONS:
        integration = store.integration(integration_id)
        sync = IntegrationSync(
            store,
            connector_for(integration, SqlTokenVault(store.engine, keys=(TOKEN_KEY,))),
            integration,
            run_id=RUN_ID,
            holder=f"{RUN_ID}/{integration_id}",
            options=SyncOptions(batch_size=200),
        )
        reports[integration_id] = sync.run()  # must not raise, whatever the corpus holds
    return corpus, reports


@pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_every_kind_of_bad_input_is_refused_clearly_and_nothing_else_suffers(
    store: SyncStore, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres = store.engine.dialect.name == "postgresql"
    cases = [case for case in CASES if case.pg] if postgres else CASES
    corpus, reports = run_corpus(store, sandbox, monkeypatch, cases)
    with Session(store.engine) as session:
        ledger = {row.invoice_id: row for row in session.scalars(select(LedgerRow))}
        links = {row.customer_id for row in session.scalars(select(CustomerLinkRow))}
        invoices = {row.id: row for row in session.scalars(select(InvoiceRow))}
    entries = Counter(entry["YourRef"] for entry in sandbox.exact.entries(fx.DIVISION_BE))

    for case in cases:
        invoice_id = corpus.ids[case.kind]
        row = ledger.get(invoice_id)
        number = corpus.numbers[case.kind]
        assert invoices[invoice_id].registration_number in (None, "26700000"), case.kind  # never written
        if case.expect == "booked":
            assert row is not None and row.state == "booked", (case.kind, row and row.error_message)
            assert row.attempts == 1 and entries[number] == 1, case.kind
        elif case.expect == "skipped":
            assert row is None, case.kind
            assert number is None or entries[number] == 0, case.kind
        else:
            error_class, _ = case.expect
            assert row is not None, case.kind
            assert (row.state, row.error_class) == ("rejected", error_class), (case.kind, row.error_message)
            assert corpus.fragment(case) in row.error_message, (case.kind, row.error_message)
            if number:
                assert entries[number] == 0, case.kind
            if error_class == "data" and not row.error_message.startswith(("Exact Online", "Customer")):
                assert (number or f"#{invoice_id}") in row.error_message, case.kind
    assert set(entries) <= {corpus.numbers[c.kind] for c in cases if c.expect == "booked"}

    # No customer link for a refused customer; every booked invoice's customer has one.
    assert not links & set(range(4, 14))  # customers 4 to 13 are refused, by us or by Exact
    assert {c.customer for c in cases if c.expect == "booked"} <= links

    # The metacharacters reached Exact intact, in the account and in the line.
    if "XML/JSON metacharacters and emoji in names round-trip" in corpus.ids:
        (account,) = [a for a in sandbox.exact.accounts(fx.DIVISION_BE) if a["Code"].strip() == "3"]
        assert account["Name"] == METACHARACTERS and account["City"] == 'Gent <&> "Oost"'
        number = corpus.numbers["XML/JSON metacharacters and emoji in names round-trip"]
        (entry,) = [e for e in sandbox.exact.entries(fx.DIVISION_BE) if e["YourRef"] == number]
        assert entry["SalesEntryLines"][0]["Description"] == f"Design {METACHARACTERS}"

    # Only what Exact alone can know cost a failing call: one each, and the error budget held.
    stats = sandbox.exact.stats_snapshot()
    for endpoint in ("salesentry/SalesEntries", "crm/Accounts"):
        calls = stats["calls"].get(f"POST /api/v1/{{division}}/{endpoint}", {})
        failing = sum(n for status, n in calls.items() if not status.startswith("2"))
        assert failing == sum(1 for kind in TOOL_REFUSES[endpoint] if kind in corpus.ids), endpoint
    for route, calls in stats["calls"].items():
        if route.startswith("GET"):
            assert set(calls) == {"200"}, route
    assert stats["error_budget_blocked"] == 0 and stats["rate_limited"] == 0

    booked = sum(r.booked for r in reports.values())
    assert booked == sum(1 for c in cases if c.expect == "booked")
    assert sum(sum(r.rejected.values()) for r in reports.values()) == sum(1 for c in cases if c in REJECTED)
    assert reports[MAIN].skipped["before_cutover"] == int("dated before the cut-over date" in corpus.ids)


@pytest.mark.parametrize(("tool", "settings"), BATCH_SETTINGS, ids=[tool for tool, _ in BATCH_SETTINGS])
def test_batching_tools_refuse_the_same_bad_input_and_book_the_rest_of_the_batch(
    store: SyncStore, sandbox: Any, monkeypatch: pytest.MonkeyPatch, tool: str, settings: dict[str, Any]
) -> None:
    """The tool-independent corpus and what only the tool refuses, in one run with one batch: every case
    ends as it does for Exact, the valid invoices of the batch are booked once, the names with XML
    metacharacters and an emoji arrive intact, and only the tool's own refusals reached the tool."""
    conn_id = next(i.conn_id for i in DEMO_INTEGRATIONS if i.tool == tool)  # the tool's demo connection
    postgres = store.engine.dialect.name == "postgresql"
    cases = [BY_KIND[kind] for kind in GENERIC if BY_KIND[kind].pg or not postgres] + TOOL_CASES[tool]
    corpus = Corpus(store, cases, tool=tool, conn_id=conn_id, integrations={MAIN: ("Corpus BV", settings)})
    corpus.seed()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(sandbox_of(tool).connection(sandbox.url))
    )
    if tool == "quickbooks":
        sandbox.simulator(tool).configure(closing_date=QUICKBOOKS_CLOSED_UNTIL.isoformat())
    integration = store.integration(MAIN)
    report = IntegrationSync(
        store,
        connector_for(integration, SqlTokenVault(store.engine, keys=(TOKEN_KEY,))),
        integration,
        run_id=RUN_ID,
        holder=f"{RUN_ID}/{tool}",
        options=SyncOptions(batch_size=200),
    ).run()
    simulator = sandbox.simulator(tool)
    with Session(store.engine) as session:
        ledger = {row.invoice_id: row for row in session.scalars(select(LedgerRow))}
    booked = Counter(str(item["reference"]) for item in simulator.booked())
    sent = simulator.create_posts()

    for case in cases:
        invoice_id, number = corpus.ids[case.kind], corpus.numbers[case.kind]
        row = ledger.get(invoice_id)
        if case.expect == "booked":
            assert row is not None and row.state == "booked", (case.kind, row and row.error_message)
            assert booked[number] == 1 and sent[number] == 1, case.kind
        elif case.expect == "skipped":
            assert row is None and (number is None or sent.get(number, 0) == 0), case.kind
        else:
            error_class, _ = case.expect
            assert row is not None, case.kind
            assert (row.state, row.error_class) == ("rejected", error_class), (case.kind, row.error_message)
            assert corpus.fragment(case) in row.error_message, (case.kind, row.error_message)
            assert number is None or booked[number] == 0, case.kind
            # what we can check ourselves never reaches the tool; the tool's own refusals once each
            expected_sends = 1 if case in TOOL_CASES[tool] else 0
            assert number is None or sent.get(number, 0) == expected_sends, case.kind
    assert report.booked == sum(1 for c in cases if c.expect == "booked")

    metachar = corpus.numbers["XML/JSON metacharacters and emoji in names round-trip"]
    (item,) = [i for i in simulator.booked() if i["reference"] == metachar]
    # QuickBooks' DisplayName carries our customer id after the name, to be unique: "<name> (3)"
    assert item["customer_name"] in (METACHARACTERS, f"{METACHARACTERS} (3)")
    descriptions = {value for line in item["lines"] for value in line.values() if isinstance(value, str)}
    assert f"Design {METACHARACTERS}" in descriptions, item["lines"]
    assert item["customer_name"] in {c["name"] for c in simulator.customers()}


# -- rows the domain cannot read -----------------------------------------------------------------------
# The app owns its tables: a kind or status the domain does not know, a NULL where it needs a value, or
# settings it cannot read must be refused on their own, naming table, column and value, while the rest of
# the integration and every other integration still sync in the same run.

SOUND, TYPO = 9, 10
"""A second, sound integration in the same run: it must not notice the others' broken rows; and one whose
tool is misspelt in the app (no connector task ever sees it; the notification names it)."""
UNREADABLE_SETTINGS = {  # integration id -> (name, settings as the app stored them, expected fragment)
    5: ("Corpus settings as a list", ["vat_codes", "journal"], "integrations.settings of integration #5 "
        "cannot be read: the settings are ['vat_codes', 'journal'], not a JSON object"),
    6: ("Corpus VAT map as a list", {**_BASE, "vat_codes": ["21", "6"]}, "integrations.settings of "
        "integration #6 cannot be read: vat_codes is ['21', '6']; it must map the app's codes"),
    7: ("Corpus VAT map keyed by name", {**_BASE, "vat_codes": {"standard": "4"}}, "vat_codes has the key "
        "'standard', which is not a VAT percentage"),
    8: ("Corpus division in words", {**_BASE, "division": "twelve"}, "division is 'twelve'; it must be "
        "the division number"),
}  # fmt: skip
NOT_JSON = 11
"""Settings that are not JSON at all: SQLite keeps a JSON column as text the app may fill with anything
(PostgreSQL refuses such a value), and listing the integrations must still list the others."""
NOT_JSON_FRAGMENT = (
    f"integrations.settings of integration #{NOT_JSON} cannot be read: the settings are 'division: 123456', "
    "which is not JSON"
)
UNREADABLE_CASES = [
    Case("a valid invoice among unreadable ones", "booked", pg=True),
    Case("an invoice kind the sync does not know", ("data", "invoices.kind of invoice #{id} ({number}) is "
         "'creditnote', which the sync does not know (it knows invoice, credit_note)"),
         invoice={"kind": "creditnote"}, pg=True),
    Case("an invoice status the sync does not know", ("data", "invoices.status of invoice #{id} ({number}) "
         "is 'cancelled', which the sync does not know (it knows draft, registered, paid)"),
         invoice={"status": "cancelled"}, pg=True),
    Case("no invoice status", ("data", "invoices.status of invoice #{id} ({number}) is empty (NULL)"),
         invoice={"status": None}),
    Case("no invoice kind", ("data", "invoices.kind of invoice #{id} ({number}) is empty (NULL)"),
         invoice={"kind": None}),
    Case("no invoice date", ("data", "invoices.invoice_date of invoice #{id} ({number}) is empty (NULL)"),
         invoice={"invoice_date": None}, pg=True),
    Case("no VAT total", ("data", "invoices.total_vat of invoice #{id} ({number}) is empty (NULL)"),
         invoice={"total_vat": None}),
    Case("no total excluding VAT", ("data", "invoices.total_excl_vat of invoice #{id} ({number}) is empty"),
         invoice={"total_excl_vat": None, "total_incl_vat": Decimal("229.90")}),
    Case("no last-change time", ("data", "invoices.updated_at of invoice #{id} ({number}) is empty (NULL)"),
         invoice={"updated_at": None}),
    Case("a line without amount", ("data", "invoice_lines.amount of line 1 of invoice #{id} ({number}) is "
         "empty (NULL)"), line_values={"amount": None}, pg=True),
    Case("a line without VAT rate", ("data", "invoice_lines.vat_rate of line 1 of invoice #{id} ({number}) "
         "is empty (NULL)"), line_values={"vat_rate": None}),
    Case("a line without quantity", ("data", "invoice_lines.quantity of line 1 of invoice #{id} ({number}) "
         "is empty (NULL)"), line_values={"quantity": None}),
    Case("a customer kind the sync does not know", ("data", "customers.kind of customer #14 is 'person', "
         "which the sync does not know (it knows company, contact)"), customer=14, pg=True),
    *[
        Case(f"unreadable settings: {name}", ("config", fragment), integration=integration_id, pg=True)
        for integration_id, (name, _, fragment) in UNREADABLE_SETTINGS.items()
    ],
    Case("unreadable settings: not JSON", ("config", NOT_JSON_FRAGMENT), integration=NOT_JSON),
    Case("an invoice of a sound integration, in the same run", "booked", integration=SOUND, pg=True),
]  # fmt: skip


@pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_rows_the_domain_cannot_read_are_refused_alone_naming_table_column_and_value(
    store: SyncStore, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the connector operator, as a DAG run calls it: each unreadable row is refused with a message
    naming table, column and value; the valid invoices of that integration and of a sound one are booked;
    the run summary, the bell notification and the Invoice sync page show every refusal."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from invoice_sync.airflow import tasks
    from invoice_sync.airflow.operators import SyncIntegrationsOperator
    from invoice_sync.airflow.ui.page import STATE_LABELS, Filters, build_page
    from invoice_sync.airflow.ui.template import page_template

    postgres = store.engine.dialect.name == "postgresql"
    cases = [case for case in UNREADABLE_CASES if case.pg or not postgres]
    integrations = {
        MAIN: INTEGRATIONS[MAIN],
        SOUND: ("Corpus sound BV", _BASE),
        **{key: (name, settings) for key, (name, settings, _) in UNREADABLE_SETTINGS.items()},
    }
    if not postgres:
        integrations[NOT_JSON] = ("Corpus settings not JSON", _BASE)
    with Session(store.engine) as session, session.begin():  # before the invoices that refer to it
        session.execute(
            insert(CustomerRow),
            [{"id": 14, "kind": "person", "name": "Person Kind BV", "country_code": "BE", "updated_at": NOW}],
        )
    corpus = Corpus(store, cases, integrations=integrations | {TYPO: ("Corpus tool typo", _BASE)})
    corpus.seed()
    with Session(store.engine) as session, session.begin():
        session.execute(update(IntegrationRow).where(IntegrationRow.id == TYPO).values(tool="exact"))
        if not postgres:  # as the app could write it; through the JSON type it would be a JSON string
            session.execute(
                text("UPDATE integrations SET settings = 'division: 123456' WHERE id = :id"), {"id": NOT_JSON}
            )
    monkeypatch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(exact_online_connection(sandbox.url)))
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", TOKEN_KEY)
    context = {
        "dag_run": SimpleNamespace(dag_id="invoice_sync_manual", run_id="manual__unreadable"),
        "ti": SimpleNamespace(task_id="sync_exact_online", map_index=0, try_number=1),
    }
    extracted = tasks.extract_registered_invoices(auto_sync_only=True)
    assert tasks.filter_syncable(extracted)["exact_online"] == [[i] for i in sorted(integrations)]
    operator = SyncIntegrationsOperator(
        task_id="sync_exact_online", tool="exact_online", integration_ids=sorted(integrations)
    )
    with pytest.raises(AirflowFailException, match="integrations.settings of integration #5"):
        operator.execute(context)  # fails (without retry) for the unreadable settings, after all others

    with Session(store.engine) as session:
        ledger = {row.invoice_id: row for row in session.scalars(select(LedgerRow))}
    entries = Counter(entry["YourRef"] for entry in sandbox.exact.entries(fx.DIVISION_BE))
    messages = {}
    for case in cases:
        invoice_id, number = corpus.ids[case.kind], corpus.numbers[case.kind]
        row = ledger.get(invoice_id)
        assert row is not None, case.kind
        if case.expect == "booked":
            assert row.state == "booked" and entries[number] == 1, (case.kind, row.error_message)
            continue
        error_class, fragment = case.expect
        fragment = fragment.format(id=invoice_id, number=number)
        assert (row.state, row.error_class) == ("rejected", error_class), (case.kind, row.error_message)
        assert fragment in row.error_message, (case.kind, row.error_message)
        assert entries[number] == 0, case.kind
        messages[number] = row.error_message

    tasks.notify(extracted, context, dry_run=False, webhook_conn_id="no_webhook_here")
    with Session(store.engine) as session:
        note = session.scalars(select(NotificationRow)).one()
    assert f"{len(messages)} errors" in note.title and "2 invoices" in note.title
    assert "1 integration without a connector" in note.title
    noted = {error["invoice"]: error["text"] for error in note.body["errors"]}
    assert set(noted) == set(messages) | {None}
    assert all(messages[number] in noted[number] for number in messages)
    assert noted[None].startswith(
        f"integrations.tool of integration #{TYPO} is 'exact', which this installation"
    )

    page = build_page(store, Filters())
    shown = {
        row.invoice.number: row.invoice.error_message
        for view in page.integrations.rows
        for row in (view.not_synced.rows if view.not_synced else [])
    }
    assert all(shown.get(number) == message for number, message in messages.items())
    html = page_template.render(page=page, user="ops", states=STATE_LABELS, default_filters=Filters())
    unreadable = [*UNREADABLE_SETTINGS, *([] if postgres else [NOT_JSON])]
    for integration_id in unreadable:  # each integration says why, above its invoices
        assert f"Cannot be synced: integrations.settings of integration #{integration_id}" in html
