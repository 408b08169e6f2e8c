"""The QuickBooks simulator driven by Intuit's own client libraries: python-quickbooks and intuitlib.

If the SDKs, unmodified, can authenticate, create, read, query, page, batch and receive validation errors
as their own exception types against the sandbox, the simulator speaks the wire format a real client
expects, not one our connector merely agrees with.

How the SDKs are pointed at the sandbox, without touching their source:

- intuitlib's ``AuthClient`` takes its ``environment`` either as ``"sandbox"``/``"production"`` or as the URL
  of an OpenID discovery document, and reads its token endpoint from that document. The simulator serves
  one at ``/quickbooks/.well-known/openid_configuration/``, so the token refresh goes to the sandbox.
- python-quickbooks has no constructor argument for the API base: ``QuickBooks.api_url`` returns the class
  attribute ``api_url_v3`` (or ``sandbox_api_url_v3`` for Intuit's sandbox). The tests set ``api_url_v3`` on
  the client *instance* (:func:`sdk_client`); that is the one attribute set by hand, because it is the only
  place the SDK keeps the host, and an instance attribute leaves the class (and every other client) alone.
- python-quickbooks sends through requests-oauthlib, which refuses plain ``http://`` unless oauthlib's
  documented switch for local testing, the environment variable ``OAUTHLIB_INSECURE_TRANSPORT``, is set;
  the sandbox listens on loopback without TLS, so every test sets it (:func:`plain_http_on_loopback`).
"""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from intuitlib.client import AuthClient
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.exceptions import (
    AuthorizationException,
    ObjectNotFoundException,
    QuickbooksException,
    UnsupportedException,
    ValidationException,
)
from quickbooks.objects.base import Ref
from quickbooks.objects.creditmemo import CreditMemo
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.preferences import Preferences
from quickbooks.objects.tax import TxnTaxDetail

from invoice_sync_dev.sandbox.quickbooks import QuickBooksSandbox
from invoice_sync_dev.sandbox.quickbooks_fixtures import (
    BOOTSTRAP_REFRESH_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    ITEM_DISCOUNT,
    ITEM_HOURS,
    ITEM_SERVICES,
    REALM_DEMO,
    TAX_CODE_0,
    TAX_CODE_0_EU,
    TAX_CODE_9,
    TAX_CODE_21,
)
from invoice_sync_dev.sandbox.server import SandboxHandle

REDIRECT_URI = "https://invoice-sync.example/callback"


@pytest.fixture(autouse=True)
def plain_http_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
def sandbox(server: SandboxHandle) -> QuickBooksSandbox:
    simulator: QuickBooksSandbox = server.simulator("quickbooks")
    simulator.reset()
    return simulator


def auth_client(server: SandboxHandle, refresh_token: str | None = None) -> AuthClient:
    """intuitlib's client, reading its endpoints from the sandbox's discovery document."""
    discovery = f"{server.url_of('quickbooks')}/.well-known/openid_configuration/"
    return AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, discovery, refresh_token=refresh_token)


def sdk_client(server: SandboxHandle, refresh_token: str = BOOTSTRAP_REFRESH_TOKEN) -> QuickBooks:
    """A python-quickbooks client on the sandbox: it refreshes through ``AuthClient`` when created."""
    client = QuickBooks(
        auth_client=auth_client(server),
        refresh_token=refresh_token,
        company_id=REALM_DEMO,
        minorversion=75,
    )
    client.api_url_v3 = f"{server.url_of('quickbooks')}/v3"  # the SDK's only host setting; see the docstring
    return client


@pytest.fixture
def qb(server: SandboxHandle, sandbox: QuickBooksSandbox) -> QuickBooks:
    """The SDK client. python-quickbooks does not pace its calls and these tests make more than 10 a
    second, so the per-second limit is raised here and tested on its own (see the throttling test)."""
    sandbox.configure(second_limit=1000)
    return sdk_client(server)


def ref(value: str) -> Ref:
    reference = Ref()
    reference.value = value
    return reference


def sales_line(amount: str, item: str = ITEM_SERVICES, tax_code: str = TAX_CODE_21) -> SalesItemLine:
    line = SalesItemLine()
    line.Amount = Decimal(amount)
    line.Description = "Consultancy"
    detail = SalesItemLineDetail()
    detail.ItemRef = ref(item)
    detail.TaxCodeRef = ref(tax_code)
    line.SalesItemLineDetail = detail
    return line


def new_customer(name: str) -> Customer:
    customer = Customer()
    customer.DisplayName = name
    customer.CompanyName = name
    return customer


def new_invoice(
    customer_id: str, number: str, *lines: SalesItemLine, total_tax: str | None = None
) -> Invoice:
    invoice = Invoice()
    invoice.CustomerRef = ref(customer_id)
    invoice.DocNumber = number
    invoice.TxnDate = "2026-03-02"
    invoice.GlobalTaxCalculation = "TaxExcluded"
    invoice.Line = list(lines) or [sales_line("250.00")]
    if total_tax is not None:
        invoice.TxnTaxDetail = TxnTaxDetail()
        invoice.TxnTaxDetail.TotalTax = Decimal(total_tax)
    return invoice


def money(value: object) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


# ---------------------------------------------------------------------------- auth


def test_auth_client_refreshes_through_the_discovery_document(
    server: SandboxHandle, sandbox: QuickBooksSandbox
) -> None:
    client = auth_client(server)
    assert client.token_endpoint == f"{server.url_of('quickbooks')}/oauth2/v1/tokens/bearer"
    client.refresh(refresh_token=BOOTSTRAP_REFRESH_TOKEN)
    first = client.refresh_token
    assert client.access_token and first != BOOTSTRAP_REFRESH_TOKEN
    assert (client.expires_in, client.x_refresh_token_expires_in) == (3600, 8726400)

    client.refresh()  # with the successor: the bootstrap token is dead from now on
    assert client.refresh_token != first
    with pytest.raises(AuthClientError) as refused:
        auth_client(server).refresh(refresh_token=BOOTSTRAP_REFRESH_TOKEN)
    assert refused.value.status_code == 400 and b"invalid_grant" in refused.value.content
    assert sandbox.stats_snapshot()["token_refreshes"] == 2


def test_expired_access_token_is_the_sdks_authorization_exception(
    qb: QuickBooks, sandbox: QuickBooksSandbox
) -> None:
    assert Item.get(ITEM_SERVICES, qb=qb).Name == "Services"
    sandbox.expire_tokens()
    with pytest.raises(AuthorizationException) as refused:
        Item.get(ITEM_SERVICES, qb=qb)
    assert refused.value.error_code == 401 and '"code":"3200"' in refused.value.detail.replace(" ", "")


# ------------------------------------------------------------------- create and read


def test_customer_and_invoice_are_created_and_read_back(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Atelier Verhoeven BV (TL-1042)").save(qb=qb)
    assert customer.Id and customer.SyncToken == "0" and customer.MetaData["CreateTime"]

    lines = (sales_line("250.00"), sales_line("99.99", ITEM_HOURS, TAX_CODE_9))
    created = new_invoice(customer.Id, "2026-0042", *lines).save(qb=qb, request_id="inv-2026-0042")
    assert created.DocNumber == "2026-0042" and created.CustomerRef.value == customer.Id
    assert money(created.TotalAmt) == Decimal("411.49")  # 349.99 + 52.50 + 9.00 (9 % of 99.99 rounds up)
    assert money(created.TxnTaxDetail.TotalTax) == Decimal("61.50")

    fetched = Invoice.get(created.Id, qb=qb)
    assert (fetched.Id, fetched.DocNumber, fetched.SyncToken) == (created.Id, "2026-0042", "0")
    sales = [line for line in fetched.Line if line.DetailType == "SalesItemLineDetail"]
    assert [money(line.Amount) for line in sales] == [Decimal("250.00"), Decimal("99.99")]
    assert sales[1].SalesItemLineDetail.TaxCodeRef.value == TAX_CODE_9

    (by_number,) = Invoice.filter(DocNumber="2026-0042", qb=qb)
    assert by_number.Id == created.Id
    (by_name,) = Customer.filter(DisplayName="Atelier Verhoeven BV (TL-1042)", qb=qb)
    assert by_name.Id == customer.Id
    queried = Invoice.query("SELECT * FROM Invoice WHERE DocNumber IN ('2026-0042', 'nope')", qb=qb)
    assert [i.Id for i in queried] == [created.Id]
    assert Invoice.choose(["2026-0042"], field="DocNumber", qb=qb)[0].Id == created.Id

    (booking,) = sandbox.booked()
    assert (booking["reference"], booking["external_id"], booking["total_incl_vat"]) == (
        "2026-0042",
        created.Id,
        Decimal("411.49"),
    )


def test_preferences_say_whether_custom_transaction_numbers_are_on(
    qb: QuickBooks, sandbox: QuickBooksSandbox
) -> None:
    """The SDK's own ``Preferences.get`` (``GET /company/{realm}/preferences``) reads what the connector
    checks; off, the company numbers an invoice sent without ``DocNumber`` itself."""
    preferences = Preferences.get(qb=qb)
    assert preferences.Id == "1" and preferences.SalesFormsPrefs.CustomTxnNumbers is True
    assert preferences.CurrencyPrefs.HomeCurrency.value == "EUR"

    sandbox.configure(custom_txn_numbers=False)
    assert Preferences.get(qb=qb).SalesFormsPrefs.CustomTxnNumbers is False
    customer = new_customer("Numbered Elsewhere BV").save(qb=qb)
    new_invoice(customer.Id, "2026-0042").save(qb=qb)
    unnumbered = new_invoice(customer.Id, "")
    unnumbered.DocNumber = None  # python-quickbooks then leaves the field out (its issue #141)
    assert unnumbered.save(qb=qb).DocNumber == "2026-0043"


def test_negative_lines_and_zero_rate_tax_codes_reach_the_books(
    qb: QuickBooks, sandbox: QuickBooksSandbox
) -> None:
    customer = new_customer("Korting & Co").save(qb=qb)
    lines = (
        sales_line("200.00"),
        sales_line("-20.00", ITEM_DISCOUNT),
        sales_line("100.00", tax_code=TAX_CODE_0),
        sales_line("50.00", tax_code=TAX_CODE_0_EU),
    )
    created = new_invoice(customer.Id, "K-1", *lines).save(qb=qb)
    assert money(created.TotalAmt) == Decimal("367.80")  # 330.00 + 21 % of 180.00
    (booking,) = sandbox.booked()
    assert [line["tax_code"] for line in booking["lines"]] == [
        TAX_CODE_21,
        TAX_CODE_21,
        TAX_CODE_0,
        TAX_CODE_0_EU,
    ]
    with pytest.raises(QuickbooksException) as refused:  # a negative total: a credit memo's business
        new_invoice(customer.Id, "K-2", sales_line("10.00"), sales_line("-20.00")).save(qb=qb)
    assert refused.value.error_code == 6000


def test_a_given_total_tax_is_booked_to_the_cent(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Rounding BV").save(qb=qb)
    lines = (sales_line("0.05"), sales_line("0.05"), sales_line("0.05"))  # 3 x 0.0105 -> 0.03 per line
    created = new_invoice(customer.Id, "2026-0100", *lines, total_tax="0.03").save(qb=qb)
    assert money(created.TxnTaxDetail.TotalTax) == Decimal("0.03")
    assert money(created.TotalAmt) == Decimal("0.18")
    (booking,) = sandbox.booked()
    assert (booking["total_excl_vat"], booking["total_vat"]) == (Decimal("0.15"), Decimal("0.03"))


def test_credit_memo_has_its_own_number_space_and_positive_amounts(
    qb: QuickBooks, sandbox: QuickBooksSandbox
) -> None:
    customer = new_customer("Credit BV").save(qb=qb)
    new_invoice(customer.Id, "2026-0042").save(qb=qb)
    memo = CreditMemo()
    memo.CustomerRef = ref(customer.Id)
    memo.DocNumber = "2026-0042"  # the same number as the invoice: another entity, no clash
    memo.TxnDate = "2026-03-05"
    memo.Line = [sales_line("100.00")]
    saved = memo.save(qb=qb)
    assert money(saved.TotalAmt) == Decimal("121.00") and saved.DocNumber == "2026-0042"
    assert [b["kind"] for b in sandbox.booked()] == ["invoice", "credit_note"]
    assert sandbox.booked()[1]["total_incl_vat"] == Decimal("-121.00")  # signed from the debtor's side


def test_requestid_replays_the_first_answer(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Replay BV").save(qb=qb)
    first = new_invoice(customer.Id, "2026-0200").save(qb=qb, request_id="same-request")
    again = new_invoice(customer.Id, "2026-0200").save(qb=qb, request_id="same-request")
    assert (again.Id, again.MetaData.CreateTime) == (first.Id, first.MetaData.CreateTime)
    assert sandbox.create_posts() == {"2026-0200": 1} and len(sandbox.booked()) == 1


# -------------------------------------------------------------------------- lists


def test_paging_through_customers_with_the_sdk(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    created = [new_customer(f"Paging {n:02d}").save(qb=qb).Id for n in range(7)]
    assert Customer.count(qb=qb) == 7
    seen: list[str] = []
    position = 1
    while page := Customer.all(order_by="Id", start_position=position, max_results=3, qb=qb):
        seen += [c.Id for c in page]
        position += len(page)
    assert seen == created and position == 8
    where = Customer.where("DisplayName LIKE 'Paging 0%'", order_by="DisplayName DESC", max_results=2, qb=qb)
    assert [c.DisplayName for c in where] == ["Paging 06", "Paging 05"]


def test_quotes_in_names_survive_the_sdks_escaping(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Bistro 't Hoekje").save(qb=qb)
    (found,) = Customer.filter(DisplayName="Bistro 't Hoekje", qb=qb)
    assert found.Id == customer.Id


# -------------------------------------------------------------------------- batch


def test_batch_create_answers_each_item(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Batch BV").save(qb=qb)
    new_invoice(customer.Id, "2026-0301").save(qb=qb)
    invoices = [new_invoice(customer.Id, f"2026-030{n}") for n in (2, 1, 3)]  # 2026-0301 is taken
    result = batch_create(invoices, qb=qb)
    assert sorted(i.DocNumber for i in result.successes) == ["2026-0302", "2026-0303"]
    (fault,) = result.faults
    (error,) = fault.Error
    assert error.code == "6140" and "DocNumber=2026-0301" in error.Detail
    assert fault.original_object.DocNumber == "2026-0301"
    assert sandbox.create_posts() == {"2026-0301": 2, "2026-0302": 1, "2026-0303": 1}


# -------------------------------------------------------------------------- errors


def test_validation_faults_are_the_sdks_validation_exception(
    qb: QuickBooks, sandbox: QuickBooksSandbox
) -> None:
    """Codes 2000-4999 reach python-quickbooks' callers as ``ValidationException`` with Intuit's words."""
    customer = new_customer("Validation BV").save(qb=qb)
    with pytest.raises(ValidationException) as bad_item:
        new_invoice(customer.Id, "2026-0043", sales_line("10.00", item="999")).save(qb=qb)
    assert (bad_item.value.error_code, bad_item.value.message) == (2500, "Invalid Reference Id")
    assert bad_item.value.detail == "Invalid Reference Id : Item element id 999 not found"
    with pytest.raises(ValidationException) as too_long:
        new_invoice(customer.Id, "2026-" + "9" * 17).save(qb=qb)
    assert too_long.value.error_code == 2050 and "Max:21 supplied:22" in too_long.value.detail
    with pytest.raises(ValidationException) as no_lines:
        invoice = new_invoice(customer.Id, "2026-0044")
        invoice.Line = []
        invoice.save(qb=qb)
    assert no_lines.value.error_code == 2020
    with pytest.raises(ObjectNotFoundException) as missing:
        Invoice.get("99999", qb=qb)
    assert missing.value.error_code == 610
    assert sandbox.booked() == []


def test_duplicates_carry_intuits_6xxx_codes(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    """python-quickbooks maps codes 5000-9999 to its base ``QuickbooksException``, not to
    ``ValidationException``: a client built on it must read ``error_code`` for 6140 and 6240."""
    customer = new_customer("Duplicate BV").save(qb=qb)
    first = new_invoice(customer.Id, "2026-0042").save(qb=qb)
    with pytest.raises(QuickbooksException) as refused:
        new_invoice(customer.Id, "2026-0042").save(qb=qb)
    assert refused.value.error_code == 6140
    assert refused.value.message == "Duplicate Document Number Error"
    assert f"DocNumber=2026-0042 is assigned to TxnType=Invoice with TxnId={first.Id}" in refused.value.detail
    with pytest.raises(QuickbooksException) as duplicate_name:
        new_customer("duplicate bv").save(qb=qb)  # names clash regardless of case
    assert (duplicate_name.value.error_code, duplicate_name.value.message) == (
        6240,
        "Duplicate Name Exists Error",
    )
    assert duplicate_name.value.detail.endswith(f"Id={customer.Id}")


def test_stale_sync_token_and_closed_period(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    customer = new_customer("Update BV").save(qb=qb)
    customer.Notes = "first edit"
    updated = customer.save(qb=qb)
    assert updated.SyncToken == "1"
    customer.Notes = "edit with the old SyncToken"
    with pytest.raises(QuickbooksException) as stale:
        customer.save(qb=qb)
    assert stale.value.error_code == 5010

    closed = new_invoice(customer.Id, "2025-0999")
    closed.TxnDate = "2025-12-31"
    with pytest.raises(QuickbooksException) as refused:  # 6xxx lies outside the SDK's named ranges
        closed.save(qb=qb)
    assert refused.value.error_code == 6210 and "Account Period Closed" in refused.value.message


def test_throttling_reaches_the_sdk_as_fault_3001(qb: QuickBooks, sandbox: QuickBooksSandbox) -> None:
    sandbox.configure(second_limit=2)
    with pytest.raises(ValidationException) as throttled:
        for _ in range(5):
            Item.get(ITEM_SERVICES, qb=qb)
    assert throttled.value.error_code == 3001 and "ThrottleExceeded" in throttled.value.message


def test_an_old_minor_version_is_refused(server: SandboxHandle, sandbox: QuickBooksSandbox) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = QuickBooks(
            auth_client=auth_client(server),
            refresh_token=BOOTSTRAP_REFRESH_TOKEN,
            company_id=REALM_DEMO,
            minorversion=65,
        )
    old.api_url_v3 = f"{server.url_of('quickbooks')}/v3"
    with pytest.raises(UnsupportedException) as refused:
        Item.get(ITEM_SERVICES, qb=old)
    assert refused.value.error_code == 500 and "Minimum supported minor version is 75" in refused.value.detail
