"""Pure mapping between the invoicing app's value objects and QuickBooks Online's JSON entities (no I/O).

Kept apart from the client so the rules that decide what QuickBooks books are tested without a network,
and so :func:`validate` can refuse an invoice before it is sent. Decisions:

- **Our number is ``DocNumber``** (invoices and credit memos each have their own number space in
  QuickBooks). QuickBooks refuses a ``DocNumber`` it already holds (6140) and finds it again by query, so
  it is both the registration number written back and the key of every lookup. It may hold at most
  :data:`DOC_NUMBER_MAX` characters; a longer number is refused here, never cut (a cut number would not
  be found again).
- **Items stand for revenue accounts.** A QuickBooks sales line has no account of its own: it names an
  item (``SalesItemLineDetail.ItemRef``) and QuickBooks books it on that item's income account. So for
  QuickBooks the integration's ``gl_accounts`` values and ``default_gl_account`` are **Item ids**: the
  accountant creates (or picks) one service item per revenue account and maps the app's GL account to it.
  ``vat_codes`` values are QuickBooks ``TaxCode`` ids.
- **Amounts to the cent.** Lines go tax-exclusive (``GlobalTaxCalculation: TaxExcluded``) and
  ``TxnTaxDetail.TotalTax`` carries the app's VAT total, which QuickBooks books as given instead of
  computing its own per line; so ``TotalAmt`` equals the app's total including VAT, whatever rounding the
  app used. A line goes with its own quantity and unit price when their product is exactly its amount,
  else as quantity 1 at the line amount (QuickBooks checks ``Amount = Qty x UnitPrice``). Amounts are
  built from ``Decimal`` via two-decimal strings (:func:`money`), never by float arithmetic.
- **Credit notes are ``CreditMemo`` entities** with the same lines; both the app and QuickBooks keep
  their amounts positive.
- **Customers are matched by ``DisplayName``**, which QuickBooks keeps unique across customers, vendors
  and employees: :func:`display_name` is ``"<name> (<our customer id>)"``, so two customers with one name
  never collide, a vendor called like a customer does not block it, and the customer created by an earlier,
  interrupted run is found again. The name is shortened (the id never) to fit :data:`DISPLAY_NAME_MAX`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from invoice_sync.connectors.amounts import (
    CENT,
    description_problems,
    document_label,
    gl_account_for,
    money,
    unmapped_problems,
    vat_code_for,
    vat_rounding_problem,
)
from invoice_sync.domain.models import (
    Customer,
    CustomerKind,
    ErrorClass,
    IntegrationSettings,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    Problem,
)

INVOICE = "Invoice"
CREDIT_MEMO = "CreditMemo"
CUSTOMER = "Customer"

DOC_NUMBER_MAX = 21
"""QuickBooks refuses a longer ``DocNumber`` (2050, string too long)."""
DISPLAY_NAME_MAX = 500
"""Longest ``DisplayName`` QuickBooks accepts (Intuit's field definition)."""
DESCRIPTION_MAX = 4000
"""Longest line ``Description`` QuickBooks accepts."""
CUSTOMER_FIELD_MAX = {
    "CompanyName": 100,
    "PrimaryEmailAddr": 100,
    "BillAddr.Line1": 500,
    "BillAddr.City": 255,
    "BillAddr.PostalCode": 30,
}
"""Longest customer fields we send (Intuit's field definitions); :func:`customer_problems` reports more."""
_FIELD_NAMES = {
    "CompanyName": "name",
    "PrimaryEmailAddr": "e-mail address",
    "BillAddr.Line1": "address",
    "BillAddr.City": "city",
    "BillAddr.PostalCode": "postcode",
}
NUMBERS_PER_QUERY = 100
"""Numbers or names in one ``in (...)`` clause; the query text travels in a body, so only the answer's
size limits it (:data:`MAX_RESULTS` rows hold ten records per number)."""
MAX_RESULTS = 1000
"""QuickBooks' largest page of query results."""
DEFAULT_HOME_CURRENCY = "EUR"


# -- settings -------------------------------------------------------------------------------------------


def realm_of(settings: IntegrationSettings) -> str | None:
    """The company (``realmId``) the integration books into, from ``settings.extra["realm_id"]``."""
    value = settings.extra.get("realm_id")
    text = str(value).strip() if value is not None else ""
    return text or None


def currencies_of(settings: IntegrationSettings) -> list[str]:
    """Currencies the company takes: its home currency (``extra.home_currency``, default EUR), plus
    ``extra.currencies`` when multicurrency is switched on in QuickBooks."""
    home = str(settings.extra.get("home_currency") or DEFAULT_HOME_CURRENCY).upper()
    others = settings.extra.get("currencies") or []
    return list(dict.fromkeys([home, *(str(code).upper() for code in others)]))


# -- queries --------------------------------------------------------------------------------------------


def quoted(value: str) -> str:
    """A string literal of QuickBooks' query language: a quote (and the backslash that escapes it) inside
    is escaped with a backslash, as Intuit's query language and python-quickbooks write it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def any_of_query(entity: str, field: str, values: Sequence[str]) -> str:
    """``select * from <entity> where <field> in (...)``, one page of up to :data:`MAX_RESULTS` rows."""
    listed = ", ".join(quoted(value) for value in values)
    return f"select * from {entity} where {field} in ({listed}) maxresults {MAX_RESULTS}"


def chunks(values: Iterable[str], size: int = NUMBERS_PER_QUERY) -> list[list[str]]:
    """``values`` without repeats, in runs of at most ``size``."""
    unique = list(dict.fromkeys(values))
    return [unique[start : start + size] for start in range(0, len(unique), size)]


# -- customers ------------------------------------------------------------------------------------------


def display_name(customer: Customer) -> str:
    """``"<name> (<customer id>)"``, the name shortened (and its spaces tidied) to fit QuickBooks."""
    suffix = f" ({customer.id})"
    name = " ".join(customer.name.split())
    return name[: DISPLAY_NAME_MAX - len(suffix)].rstrip() + suffix


def same_name(left: str, right: str) -> bool:
    """QuickBooks compares names without regard to case."""
    return left.casefold() == right.casefold()


def customer_payload(customer: Customer) -> dict[str, Any]:
    """The ``Customer`` entity for one of our customers; empty fields are left out."""
    payload: dict[str, Any] = {"DisplayName": display_name(customer)}
    name = " ".join(customer.name.split())
    if customer.kind is CustomerKind.COMPANY:
        payload["CompanyName"] = name[: CUSTOMER_FIELD_MAX["CompanyName"]]
    if customer.email:
        payload["PrimaryEmailAddr"] = {"Address": customer.email.strip()}
    if customer.vat_number:
        payload["PrimaryTaxIdentifier"] = customer.vat_number.strip()
    address = {
        "Line1": customer.address_line1,
        "City": customer.city,
        "PostalCode": customer.postcode,
        "Country": (customer.country_code or "").upper(),
    }
    address = {key: value.strip() for key, value in address.items() if value and value.strip()}
    if address:
        payload["BillAddr"] = address
    return payload


def customer_problems(customer: Customer) -> list[str]:
    """Fields of ``customer`` longer than QuickBooks accepts (see :data:`CUSTOMER_FIELD_MAX`)."""
    values = {
        "PrimaryEmailAddr": customer.email,
        "BillAddr.Line1": customer.address_line1,
        "BillAddr.City": customer.city,
        "BillAddr.PostalCode": customer.postcode,
    }
    found = []
    for field, value in values.items():
        limit = CUSTOMER_FIELD_MAX[field]
        if value and len(value.strip()) > limit:
            found.append(
                f"the {_FIELD_NAMES[field]} of customer {customer.name[:60]} (#{customer.id}) is longer "
                f"than the {limit} characters QuickBooks accepts (it has {len(value.strip())}); "
                "shorten it in the app"
            )
    return found


# -- invoices -------------------------------------------------------------------------------------------


def entity_of(invoice: Invoice) -> str:
    """``Invoice`` or ``CreditMemo``: QuickBooks' entity for the invoice's kind."""
    return CREDIT_MEMO if invoice.kind is InvoiceKind.CREDIT_NOTE else INVOICE


def quantity_and_price(line: InvoiceLine) -> tuple[Decimal, Decimal]:
    """``(Qty, UnitPrice)``: the line's own when their product is exactly its amount, else ``(1, amount)``."""
    if line.quantity > 0 and line.quantity * line.unit_price == line.amount:
        return line.quantity, line.unit_price
    return Decimal(1), line.amount


def decimal_number(value: Decimal) -> float:
    """A JSON number for a quantity or price: exact, as its shortest decimal text reads back the same."""
    return float(format(value.normalize(), "f"))


def amount(value: Decimal) -> float:
    """A JSON number for money: the two-decimal string of :func:`money`, which a float reproduces exactly
    when serialised (Python writes the shortest text that reads back as the same float)."""
    return float(money(value))


def transaction_payload(invoice: Invoice, settings: IntegrationSettings, customer_ref: str) -> dict[str, Any]:
    """The ``Invoice`` or ``CreditMemo`` entity that books ``invoice`` for customer ``customer_ref``.

    Call :func:`validate` first; this raises ``ValueError`` for what validation reports.
    """
    problems = validate(invoice, settings)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    lines = []
    for line in invoice.lines:
        quantity, price = quantity_and_price(line)
        detail = {
            "ItemRef": {"value": gl_account_for(line, settings)},
            "Qty": decimal_number(quantity),
            "UnitPrice": decimal_number(price),
            "TaxCodeRef": {"value": vat_code_for(line, settings)},
        }
        entry: dict[str, Any] = {
            "LineNum": len(lines) + 1,
            "Amount": amount(line.amount),
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": detail,
        }
        if line.description:
            entry["Description"] = line.description
        lines.append(entry)
    payload: dict[str, Any] = {
        "DocNumber": invoice.number,
        "TxnDate": invoice.invoice_date.isoformat(),
        "CustomerRef": {"value": customer_ref},
        "CurrencyRef": {"value": invoice.currency.upper()},
        "GlobalTaxCalculation": "TaxExcluded",
        "Line": lines,
        "TxnTaxDetail": {"TotalTax": amount(invoice.total_vat)},
        "PrivateNote": f"{document_label(invoice)}, synced by invoice-sync",
    }
    if invoice.due_date is not None and invoice.kind is InvoiceKind.INVOICE:
        payload["DueDate"] = invoice.due_date.isoformat()
    return payload


def validate(invoice: Invoice, settings: IntegrationSettings) -> list[Problem]:
    """Everything QuickBooks would refuse that we can see without asking it.

    Config problems name the setting to change; data problems name the invoice and what to change in the
    app. A missing number or customer, no lines and totals the lines do not produce are refused for every
    tool by :mod:`invoice_sync.domain.rules`; here only what is particular to QuickBooks.
    """
    realm = realm_of(settings)
    where = f"QuickBooks company {realm or '(not set)'}"
    problems: list[Problem] = []

    def config(message: str) -> None:
        problems.append(Problem(ErrorClass.CONFIG, message))

    def data(message: str) -> None:
        problems.append(Problem(ErrorClass.DATA, message))

    if realm is None:
        config("No QuickBooks company is set for this integration (setting extra.realm_id)")
    problems += unmapped_problems(
        invoice,
        settings,
        vat_code="a QuickBooks tax code",
        gl_account="a QuickBooks item (its income account books the line)",
        where=where,
    )
    name = document_label(invoice)
    currency = (invoice.currency or "").upper()
    accepted = currencies_of(settings)
    if currency and currency not in accepted:
        config(
            f"{name} is in {currency}, but {where} takes {', '.join(accepted)} only; switch on multicurrency "
            "in QuickBooks and add the currency to the integration's setting extra.currencies"
        )
    if invoice.number and len(invoice.number) > DOC_NUMBER_MAX:
        data(
            f"{name}: the number is longer than the {DOC_NUMBER_MAX} characters of QuickBooks' DocNumber "
            f"(it has {len(invoice.number)})"
        )
    if invoice.customer is not None:
        for message in customer_problems(invoice.customer):
            data(f"{name}: {message}")
    problems += description_problems(invoice, limit=DESCRIPTION_MAX, tool="QuickBooks")
    for line in invoice.lines:
        if line.amount != line.amount.quantize(CENT):
            data(f"{name}: line {line.position} has an amount with more than two decimals ({line.amount})")
    if (rounding := vat_rounding_problem(invoice)) is not None:
        data(rounding)
    return problems
