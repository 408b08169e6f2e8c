"""Contract tests: Xero's own Python SDK (``xero_python``, unmodified) drives the Xero simulator.

If the SDK can create, read, page and fail against the sandbox exactly as it does against Xero, the wire
format (paths, headers, array envelopes, ``/Date(ms)/`` dates, error bodies, token answers) is right, not
just consistent with our own connector's idea of it.

How the SDK is pointed at the sandbox, with configuration only:

- ``AccountingApi(api_client, base_url=...)`` and ``IdentityApi(api_client, base_url=...)``: the base URL
  is a documented constructor argument.
- ``Configuration(oauth2_token=OAuth2Token(client_id=..., client_secret=...))`` and the
  ``oauth2_token_getter`` / ``oauth2_token_saver`` callbacks of ``ApiClient``, as the SDK's README shows.
- The refresh token URL is the one thing without a constructor argument: ``OAuth2Token`` builds its
  ``TokenApi`` internally and that reads the class attribute ``TokenApi.refresh_token_url``. The
  ``token_url`` fixture sets that class attribute to the sandbox's token endpoint with pytest's
  ``monkeypatch``, which restores Xero's URL after each test. No SDK code is replaced.
"""

from __future__ import annotations

import time
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from xero_python.accounting import (
    AccountingApi,
    Contact,
    Contacts,
    CreditNote,
    CreditNotes,
    Invoice,
    Invoices,
    LineAmountTypes,
    LineItem,
)
from xero_python.api_client import ApiClient, Configuration
from xero_python.api_client.oauth2 import OAuth2Token, TokenApi
from xero_python.exceptions import AccountingBadRequestException, ApiException, RateLimitException
from xero_python.identity import IdentityApi

from invoice_sync_dev.sandbox import xero_fixtures as fx
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread
from invoice_sync_dev.sandbox.xero import (
    API_PREFIX,
    CONTACT_NAME_NOT_UNIQUE,
    IDEMPOTENCY_MISMATCH,
    INVOICE_NUMBER_NOT_UNIQUE,
    TAX_TYPE_INVALID,
    TOKEN_PATH,
    XeroSandbox,
)

TENANT = fx.DEMO_TENANT_ID


@pytest.fixture
def xero(server: SandboxHandle) -> XeroSandbox:
    simulator: XeroSandbox = server.simulator("xero")
    simulator.reset()
    return simulator


@pytest.fixture
def token_url(server: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the SDK's token refresh at the sandbox (a class attribute; see the module docstring)."""
    url = server.url_of("xero") + TOKEN_PATH
    monkeypatch.setattr(TokenApi, "refresh_token_url", url)
    return url


class Sdk:
    """The SDK wired as its README shows: one ApiClient whose token lives in ``self.token``."""

    def __init__(self, base: str) -> None:
        self.token: dict[str, Any] = {
            "access_token": "",
            "refresh_token": fx.BOOTSTRAP_REFRESH_TOKEN,
            "scope": list(fx.SCOPES),
            "expires_in": 0,
            "expires_at": 0.0,  # expired: the first call refreshes
            "token_type": "Bearer",
        }
        oauth2 = OAuth2Token(client_id=fx.CLIENT_ID, client_secret=fx.CLIENT_SECRET)
        self.client = ApiClient(
            Configuration(oauth2_token=oauth2),
            oauth2_token_getter=lambda: self.token,
            oauth2_token_saver=self._save,
        )
        self.accounting = AccountingApi(self.client, base_url=base + API_PREFIX)
        self.identity = IdentityApi(self.client, base_url=base)

    def _save(self, token: dict[str, Any]) -> None:
        self.token = token

    def contact(self, name: str = "Atelier Verhoeven BV", number: str = "TL-1042") -> Contact:
        created = self.accounting.create_contacts(
            TENANT, Contacts(contacts=[Contact(name=name, contact_number=number)])
        )
        return created.contacts[0]


@pytest.fixture
def sdk(server: SandboxHandle, xero: XeroSandbox, token_url: str) -> Sdk:
    return Sdk(server.url_of("xero"))


def invoice(contact_id: str, number: str | None, **overrides: Any) -> Invoice:
    line = LineItem(
        description="Consultancy March", quantity=Decimal("2"), unit_amount=Decimal("125.00"),
        account_code=fx.SALES_ACCOUNT, tax_type=fx.TAX_STANDARD,
    )  # fmt: skip
    fields: dict[str, Any] = {
        "type": "ACCREC",
        "contact": Contact(contact_id=contact_id),
        "invoice_number": number,
        "reference": "TL 2026 / 42",
        "date": date(2026, 3, 2),
        "due_date": date(2026, 4, 1),
        "line_amount_types": LineAmountTypes.EXCLUSIVE,
        "status": "AUTHORISED",
        "line_items": [line],
    }
    return Invoice(**(fields | overrides))


# ------------------------------------------------------------------------------------------- tokens


def test_the_sdk_refreshes_against_the_sandbox_and_the_old_refresh_token_dies(
    sdk: Sdk, xero: XeroSandbox
) -> None:
    new = sdk.client.refresh_oauth2_token()
    assert new["refresh_token"] != fx.BOOTSTRAP_REFRESH_TOKEN and new["access_token"]
    assert new["scope"] == list(fx.SCOPES) and new["expires_in"] == 1800
    assert abs(new["expires_at"] - (time.time() + 1800)) < 60
    assert sdk.token is new  # the SDK handed the rotated token to our saver

    old = TokenApi(sdk.client, fx.CLIENT_ID, fx.CLIENT_SECRET)
    with pytest.raises(ApiException) as refused:
        old.refresh_token(fx.BOOTSTRAP_REFRESH_TOKEN, list(fx.SCOPES))
    assert (refused.value.status, refused.value.body) == (400, b'{"error":"invalid_grant"}')

    connections = sdk.identity.get_connections()
    assert {(c.tenant_id, c.tenant_name, c.tenant_type) for c in connections} == {
        (fx.DEMO_TENANT_ID, fx.DEMO_TENANT_NAME, "ORGANISATION"),
        (fx.SECOND_TENANT_ID, fx.SECOND_TENANT_NAME, "ORGANISATION"),
    }
    assert xero.stats_snapshot()["token_refreshes"] == 1


def test_an_expired_access_token_is_refreshed_by_the_sdk_itself(sdk: Sdk, xero: XeroSandbox) -> None:
    sdk.accounting.get_accounts(TENANT)  # the token in hand was expired: the SDK refreshed first
    first = dict(sdk.token)
    xero.expire_tokens()  # the SDK cannot know: the sandbox answers 401
    with pytest.raises(ApiException) as refused:
        sdk.accounting.get_accounts(TENANT)
    assert refused.value.status == 401 and b"TokenExpired" in refused.value.body
    sdk.token["expires_at"] = 0.0  # what a client does on a 401: treat its token as expired
    accounts = sdk.accounting.get_accounts(TENANT).accounts
    assert sdk.token["refresh_token"] != first["refresh_token"]
    assert {a.code for a in accounts} >= {
        fx.SALES_ACCOUNT,
        fx.OTHER_REVENUE_ACCOUNT,
        fx.ARCHIVED_REVENUE_ACCOUNT,
    }
    assert xero.stats_snapshot()["token_refreshes"] == 2


# --------------------------------------------------------------------------- contacts and invoices


def test_create_and_read_back_a_contact_and_an_invoice(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    assert uuid.UUID(contact.contact_id) and contact.status_attribute_string == "OK"
    by_id = sdk.accounting.get_contact(TENANT, contact.contact_id).contacts[0]
    by_number = sdk.accounting.get_contact_by_contact_number(TENANT, "TL-1042").contacts[0]
    assert by_id.name == by_number.name == "Atelier Verhoeven BV"
    assert by_number.contact_id == contact.contact_id and by_id.updated_date_utc is not None

    created = sdk.accounting.create_invoices(
        TENANT, Invoices(invoices=[invoice(contact.contact_id, "2026/0042")]), idempotency_key="inv-2026-0042"
    ).invoices[0]
    assert created.invoice_number == "2026/0042" and created.status == "AUTHORISED"
    assert (created.sub_total, created.total_tax, created.total) == (
        Decimal("250"),
        Decimal("52.5"),
        Decimal("302.5"),
    )

    read = sdk.accounting.get_invoice(TENANT, created.invoice_id).invoices[0]
    assert read.invoice_id == created.invoice_id and read.contact.contact_id == contact.contact_id
    assert (read.date, read.due_date) == (date(2026, 3, 2), date(2026, 4, 1))
    assert read.line_amount_types == LineAmountTypes.EXCLUSIVE and read.currency_code.value == "EUR"
    line = read.line_items[0]
    assert (line.account_code, line.tax_type, line.line_amount, line.tax_amount) == (
        fx.SALES_ACCOUNT, fx.TAX_STANDARD, Decimal("250"), Decimal("52.5"),
    )  # fmt: skip
    found = sdk.accounting.get_invoices(TENANT, invoice_numbers=["2026/0042", "2026/9999"]).invoices
    assert [i.invoice_id for i in found] == [created.invoice_id]
    where = sdk.accounting.get_invoices(TENANT, where='InvoiceNumber=="nope" OR InvoiceNumber=="2026/0042"')
    assert [i.invoice_number for i in where.invoices] == ["2026/0042"]

    [booked] = xero.booked(TENANT)
    assert (booked["reference"], booked["external_id"], booked["customer_code"]) == (
        "2026/0042", created.invoice_id, "TL-1042",
    )  # fmt: skip
    assert (booked["total_excl_vat"], booked["total_vat"], booked["total_incl_vat"]) == (
        Decimal("250.00"), Decimal("52.50"), Decimal("302.50"),
    )  # fmt: skip


def test_an_idempotency_key_replays_and_refuses_a_different_request(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    payload = Invoices(invoices=[invoice(contact.contact_id, "2026/0043")])
    first = sdk.accounting.create_invoices(TENANT, payload, idempotency_key="k-43").invoices[0]
    again = sdk.accounting.create_invoices(TENANT, payload, idempotency_key="k-43").invoices[0]
    assert again.invoice_id == first.invoice_id
    assert xero.create_posts() == {"2026/0043": 1} and len(xero.booked()) == 1

    other = Invoices(invoices=[invoice(contact.contact_id, "2026/0044")])
    with pytest.raises(AccountingBadRequestException) as refused:
        sdk.accounting.create_invoices(TENANT, other, idempotency_key="k-43")
    assert refused.value.reason == IDEMPOTENCY_MISMATCH.format("k-43")


def test_paging_through_more_than_100_invoices(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    batch = [invoice(contact.contact_id, f"P-{n:03d}") for n in range(1, 106)]
    sdk.accounting.create_invoices(TENANT, Invoices(invoices=batch))
    first = sdk.accounting.get_invoices(TENANT, page=1)
    second = sdk.accounting.get_invoices(TENANT, page=2)
    assert [len(first.invoices), len(second.invoices)] == [100, 5]
    assert [i.invoice_number for i in second.invoices] == [f"P-{n:03d}" for n in range(101, 106)]
    assert (second.pagination.page, second.pagination.page_count, second.pagination.item_count) == (2, 2, 105)
    assert sdk.accounting.get_invoices(TENANT, page=3).invoices == []


def test_credit_notes_carry_positive_amounts(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    line = LineItem(description="Refund", quantity=Decimal("1"), unit_amount=Decimal("100"),
                    account_code=fx.SALES_ACCOUNT, tax_type=fx.TAX_REDUCED)  # fmt: skip
    note = CreditNote(type="ACCRECCREDIT", contact=Contact(contact_id=contact.contact_id),
                      credit_note_number="CN-2026-1", date=date(2026, 3, 5), status="AUTHORISED",
                      line_amount_types=LineAmountTypes.EXCLUSIVE, line_items=[line])  # fmt: skip
    created = sdk.accounting.create_credit_notes(TENANT, CreditNotes(credit_notes=[note])).credit_notes[0]
    assert (created.total, created.remaining_credit) == (Decimal("109"), Decimal("109"))
    found = sdk.accounting.get_credit_notes(TENANT, where='CreditNoteNumber=="CN-2026-1"').credit_notes
    assert [c.credit_note_id for c in found] == [created.credit_note_id]
    # positive in Xero; the simulator's books report it from the debtor's side, as every simulator does
    assert [(b["kind"], b["total_incl_vat"]) for b in xero.booked()] == [("credit_note", Decimal("-109.00"))]


# ---------------------------------------------------------------------------------------- errors


def test_a_validation_error_is_the_sdks_accounting_bad_request(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    sdk.accounting.create_invoices(TENANT, Invoices(invoices=[invoice(contact.contact_id, "2026/0050")]))
    with pytest.raises(AccountingBadRequestException) as refused:
        sdk.accounting.create_invoices(TENANT, Invoices(invoices=[invoice(contact.contact_id, "2026/0050")]))
    assert refused.value.reason == INVOICE_NUMBER_NOT_UNIQUE
    data = refused.value.error_data
    assert (data["ErrorNumber"], data["Type"], data["Message"]) == (
        10, "ValidationException", "A validation exception occurred",
    )  # fmt: skip
    assert data["Elements"][0]["InvoiceNumber"] == "2026/0050"
    with pytest.raises(AccountingBadRequestException) as clash:
        sdk.contact(number="other")
    assert clash.value.reason == CONTACT_NAME_NOT_UNIQUE.format("Atelier Verhoeven BV")
    assert len(xero.booked()) == 1 and len(xero.customers()) == 1


def test_summarize_errors_false_answers_every_element(sdk: Sdk, xero: XeroSandbox) -> None:
    contact = sdk.contact()
    bad_line = LineItem(description="x", quantity=Decimal("1"), unit_amount=Decimal("10"),
                        account_code=fx.SALES_ACCOUNT, tax_type=fx.TAX_DELETED)  # fmt: skip
    batch = [invoice(contact.contact_id, "S-1"), invoice(contact.contact_id, "S-2", line_items=[bad_line])]
    answer = sdk.accounting.create_invoices(TENANT, Invoices(invoices=batch), summarize_errors=False)
    good, bad = answer.invoices
    assert (good.has_errors, good.status_attribute_string, good.invoice_number) == (False, "OK", "S-1")
    assert (bad.has_errors, bad.status_attribute_string, bad.invoice_number) == (True, "ERROR", "S-2")
    assert [e.message for e in bad.validation_errors] == [TAX_TYPE_INVALID.format(fx.TAX_DELETED)]
    assert [b["reference"] for b in xero.booked()] == ["S-1"]
    assert xero.create_posts() == {"S-1": 1, "S-2": 1}


def test_a_minute_limit_is_the_sdks_rate_limit_exception(sdk: Sdk, xero: XeroSandbox) -> None:
    """A POST is not retried by urllib3, so the 429 reaches the caller as the SDK's exception."""
    xero.configure(minute_limit=2)
    sdk.accounting.get_tax_rates(TENANT)
    sdk.accounting.get_tax_rates(TENANT)
    contacts = Contacts(contacts=[Contact(name="Late BV")])
    with pytest.raises(RateLimitException) as limited:
        sdk.accounting.update_or_create_contacts(TENANT, contacts)
    assert limited.value.rate_limit == "minute"
    assert 1 <= int(limited.value.headers["Retry-After"]) <= 60
    assert xero.customers() == [] and xero.stats_snapshot()["rate_limited_by"] == {"minute": 1}


def test_the_sdk_waits_out_retry_after_on_a_get(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3 (under the SDK) sleeps ``Retry-After`` and retries a GET: the header must be real seconds."""
    handle = start_in_thread(time_scale=60)  # a sandbox minute lasts one real second
    try:
        monkeypatch.setattr(TokenApi, "refresh_token_url", handle.url_of("xero") + TOKEN_PATH)
        simulator: XeroSandbox = handle.simulator("xero")
        simulator.configure(minute_limit=1)
        sdk = Sdk(handle.url_of("xero"))
        sdk.accounting.get_tax_rates(TENANT)
        started = time.monotonic()
        assert sdk.accounting.get_tax_rates(TENANT).tax_rates  # refused, waited out, retried
        assert time.monotonic() - started < 10
        assert simulator.stats_snapshot()["rate_limited_by"].get("minute", 0) >= 1
    finally:
        handle.stop()
