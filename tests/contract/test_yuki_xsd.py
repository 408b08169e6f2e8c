"""Contract test: every ``SalesInvoices`` document the Yuki connector can build is valid against the XSD.

The XSD (``invoice_sync_dev/sandbox/yuki_sales_invoices.xsd``) is written from public evidence, not from the
connector (its sources are in the file); the sandbox refuses any document it rejects, as Yuki refuses a
document that fails ``SalesInvoices.xsd``. Here the connector's mapping is driven through every optional
element it may send (present and absent): full and minimal customers, company and person, due date or
none, invoice and credit note, discount lines, several VAT rates and 0 % regimes, prices that go as
quantity x price and those that go as one unit of the line amount. The last tests show the schema refuses
the element order of the connector before the 2026-12-04 correction, so a regression cannot pass.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import product
from typing import Any

import pytest
from lxml import etree

from invoice_sync.connectors.yuki import mapping
from invoice_sync.connectors.yuki.settings import YukiSettings
from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
)
from invoice_sync_dev.sandbox.yuki import sales_invoices_schema

SETTINGS = YukiSettings.parse(
    IntegrationSettings.from_json(
        {
            "vat_codes": {"21": "2", "12": "2", "6": "2", "0": "5"},
            "tax_rates": {"exempt": "5", "intra_community": "3", "standard": "2"},
            "gl_accounts": {"7000": "7000", "7010": "7010"},
            "default_gl_account": "7000",
            "administration": "Demo Yuki BV",
        }
    )
)

FULL_CUSTOMER = Customer(
    id=1042,
    kind=CustomerKind.COMPANY,
    name='Smith & <Sons> "Ltd" 🧾',
    vat_number="BE0123456749",
    email="boekhouding@verhoeven.example",
    address_line1="Kortrijksesteenweg 12",
    postcode="9000",
    city="Gent",
    country_code="be",
)
MINIMAL_CUSTOMER = Customer(id=7, kind=CustomerKind.CONTACT, name="Jan Peeters")


def line(
    amount: str, rate: str = "21", *, quantity: str = "1", position: int = 1, **fields: Any
) -> InvoiceLine:
    return InvoiceLine(
        position=position,
        description=fields.pop("description", "Consultancy"),
        quantity=Decimal(quantity),
        unit_price=Decimal(amount) / Decimal(quantity),
        vat_rate=Decimal(rate),
        amount=Decimal(amount),
        gl_account=fields.pop("gl_account", "7000"),
        **fields,
    )


def invoice(
    lines: list[InvoiceLine],
    *,
    customer: Customer,
    kind: InvoiceKind = InvoiceKind.INVOICE,
    due_date: date | None = None,
    discount: str | None = None,
) -> Invoice:
    """An invoice whose totals follow from its lines, after an invoice-level ``discount`` percentage."""
    base = Invoice(
        id=1,
        integration_id=1,
        kind=kind,
        number="2026/0042",
        status=InvoiceStatus.REGISTERED,
        customer=customer,
        invoice_date=date(2026, 3, 2),
        due_date=due_date,
        currency="EUR",
        total_excl_vat=Decimal("0"),
        total_vat=Decimal("0"),
        total_incl_vat=Decimal("0"),
        lines=tuple(lines),
        discount_percentage=Decimal(discount) if discount else None,
        updated_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )
    factor = 1 - (base.discount_percentage or Decimal(0)) / 100
    excl = (sum((ln.amount for ln in lines), Decimal("0")) * factor).quantize(Decimal("0.01"))
    vat = (sum((ln.amount * ln.vat_rate / 100 for ln in lines), Decimal("0")) * factor).quantize(
        Decimal("0.01")
    )
    return replace(base, total_excl_vat=excl, total_vat=vat, total_incl_vat=excl + vat)


LINE_SETS = {
    "one line": [line("250.00")],
    "several rates, accounts and a price as quantity x price": [
        line("250.00", quantity="2"),
        line("10.00", "6", position=2, gl_account="7010"),
        line("36.00", "12", position=3, quantity="2.5"),
        line("99.99", "0", position=4, gl_account=None),
    ],
    "a price of more than two decimals goes as one unit": [line("100.00", quantity="3")],
    "a quantity of more than four decimals goes as one unit": [line("10.00", quantity="0.333333")],
    "a negative line": [line("100.00"), line("-20.00", position=2, description="Korting")],
    "two 0 % regimes": [
        line("100.00", "0", tax_rate="exempt"),
        line("300.00", "0", position=2, tax_rate="intra_community"),
        line("50.00", "21", position=3, tax_rate="standard"),
    ],
    "a line without an amount beside one with": [line("100.00"), line("0.00", position=2, quantity="2")],
    "a line without a description": [line("40.00", description="")],
}


def validate(document: etree._Element) -> None:
    schema = sales_invoices_schema()
    # Validated as sent: serialized and parsed again, so namespaces are what reaches Yuki.
    parsed = etree.fromstring(etree.tostring(document))
    assert schema.validate(parsed), "\n".join(str(error) for error in schema.error_log)


@pytest.mark.parametrize(
    ("lines", "customer", "kind", "due_date", "discount", "discount_account"),
    [
        pytest.param(
            lines,
            customer,
            kind,
            due,
            discount,
            account,
            id=f"{name}-{cust}-{kind}-{due}-{discount}-{account}",
        )
        for (name, lines), (cust, customer), kind, due, (discount, account) in product(
            LINE_SETS.items(),
            [("full customer", FULL_CUSTOMER), ("minimal customer", MINIMAL_CUSTOMER)],
            [InvoiceKind.INVOICE, InvoiceKind.CREDIT_NOTE],
            [date(2026, 4, 1), None],
            [(None, None), ("10", None), ("10", "7020"), ("12.5", None)],
        )
    ],
)
def test_every_document_the_connector_builds_is_valid(
    lines, customer, kind, due_date, discount, discount_account
):
    settings = replace(SETTINGS, discount_gl_account=discount_account)
    document = invoice(lines, customer=customer, kind=kind, due_date=due_date, discount=discount)
    assert mapping.validate(document, settings) == []
    validate(mapping.sales_invoices([mapping.sales_invoice(document, settings)]))


def test_the_optional_elements_are_really_present_and_absent():
    """The parametrization above covers what it claims: each optional element appears in one document and
    is missing from another."""
    full = mapping.sales_invoice(
        invoice(LINE_SETS["one line"], customer=FULL_CUSTOMER, due_date=date(2026, 4, 1)), SETTINGS
    )
    minimal = mapping.sales_invoice(invoice(LINE_SETS["one line"], customer=MINIMAL_CUSTOMER), SETTINGS)
    names = {"DueDate", "EmailAddress", "VATNumber", "AddressLine_1", "Zipcode", "City", "CountryCode"}
    present = {etree.QName(node).localname for node in full.iter()}
    absent = {etree.QName(node).localname for node in minimal.iter()}
    assert names <= present and not names & absent
    no_description = mapping.sales_invoice(
        invoice(LINE_SETS["a line without a description"], customer=MINIMAL_CUSTOMER), SETTINGS
    )
    assert no_description.findtext("{*}InvoiceLines/{*}InvoiceLine/{*}Description") == "Sales 7000 21% type 2"


def test_a_batch_of_several_invoices_is_one_valid_document():
    documents = [
        mapping.sales_invoice(
            replace(invoice(lines, customer=FULL_CUSTOMER), id=n, number=f"2026/{n:04d}"), SETTINGS
        )
        for n, lines in enumerate(LINE_SETS.values(), start=1)
    ]
    validate(mapping.sales_invoices(documents))


def _move(parent: etree._Element, name: str, to_end: bool) -> None:
    node = parent.find(f"{{*}}{name}")
    assert node is not None
    parent.remove(node)
    parent.append(node) if to_end else parent.insert(0, node)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("Contact", "EmailAddress"),
        ("InvoiceLines/InvoiceLine", "LineAmount"),
        ("InvoiceLines/InvoiceLine", "LineVATAmount"),
    ],
)
def test_the_order_before_the_correction_is_refused(path, name):
    """E-mail last in ``Contact`` and the line amounts after ``Product``: what the connector sent before."""
    document = mapping.sales_invoice(invoice(LINE_SETS["one line"], customer=FULL_CUSTOMER), SETTINGS)
    parent = document.find("/".join(f"{{*}}{part}" for part in path.split("/")))
    assert parent is not None
    _move(parent, name, to_end=True)
    with pytest.raises(AssertionError, match=f"Element '{{[^}}]+}}{name}': This element is not expected"):
        validate(mapping.sales_invoices([document]))
