"""A faithful simulator of the QuickBooks Online Accounting API v3 (customers, invoices, credit memos).

Reference: ``shared/reference/quickbooks.md``. What a connector (and python-quickbooks, which the contract
tests drive unmodified) depends on is reproduced:

- OAuth 2.0 as Intuit runs it: ``POST /oauth2/v1/tokens/bearer`` with HTTP Basic client credentials,
  one-hour access tokens, refresh tokens bound to one company that rotate (see
  :meth:`QuickBooksSandbox.token`),
  the OpenID discovery document intuitlib's ``AuthClient`` reads its endpoints from, and Intuit's 401
  ``AUTHENTICATION`` fault (code 3200); a token of another company gets the 403 fault (code 3100);
- the company (``realmId``) in every path, the ``minorversion`` parameter (absent = 75, lower = a fault),
  ``{"Invoice": {...}, "time": ...}`` wrappers, ``Id``/``SyncToken``/``MetaData`` and updates that demand
  the current ``SyncToken`` (5010);
- ``Fault`` bodies with Intuit's codes and texts: 6140 duplicate DocNumber, 6240 duplicate DisplayName,
  2500 invalid reference, 2020 required parameter, 2050 string too long, 6210 closed period, 610 not found,
  6000 business validation, 4000/4001 query errors (see :mod:`.qbo_query`);
- ``requestid``: a repeated id (per company) replays the first answer without processing again;
- the batch endpoint (at most 30 items, each answered with its entity, its ``Fault`` or its query result);
- the limits per company: 500 requests a minute, 10 a second, 10 in flight and 40 batch requests a
  minute, each answered with HTTP 429 and the throttle fault (code 3001) and no rate-limit headers.

Choices where Intuit publishes nothing (unconfirmed, kept deliberately strict or simple):

- a ``minorversion`` below 75 is refused with HTTP 400, code 500 "Unsupported Operation" (Intuit now
  answers such calls as 75 instead; the contract wants the sandbox to catch a client that still sends
  one; the ``reject_old_minorversion`` switch turns that off);
- the rate windows slide (the last second / minute); a batch counts once in the request windows and once
  in the batch window; refused (429) requests do not count;
- ``requestid`` answers are remembered for one sandbox day (:data:`REQUEST_ID_MEMORY`) and across
  restarts; any processed answer (booked or refused) is replayed, never one refused before processing
  (401, 403, 429, minorversion);
- a refresh token stays usable until its successor is used, and a repeated refresh with it hands out the
  same successor again (an answer lost on the way is recoverable); once the successor is used, the old
  token is refused with ``{"error": "invalid_grant"}``;
- with ``GlobalTaxCalculation=TaxInclusive`` a line's ``Amount`` includes tax; ``NotApplicable`` books
  no tax; a transaction without ``DocNumber`` gets the next free number from 1001 (Intuit says it stays
  empty while custom transaction numbers are on);
- ``custom_txn_numbers`` (``Preferences.SalesFormsPrefs.CustomTxnNumbers``, on by default) can be switched
  off: QuickBooks then numbers a transaction sent without ``DocNumber`` by incrementing the last number,
  and stores a ``DocNumber`` sent anyway as it is, even when it is taken (Intuit API reference, Invoice
  ``DocNumber``; python-quickbooks issue #141 and quickbooks-ruby's ``AutoDocNumber`` rely on QuickBooks
  numbering a document sent without one);
- negative sales lines are booked like any other (a discount, a returned item); only a transaction whose
  total is negative is refused, with a 6000 business validation fault whose detail is ours (Intuit's
  exact text for it is unconfirmed);
- :meth:`QuickBooksSandbox.booked` signs totals from the debtor's side (a credit memo negative), like the
  Yuki and Twinfield simulators, while the API shows the credit memo's amounts positive as QuickBooks does.

:class:`QuickBooksSandbox` keeps the state behind one re-entrant lock; :func:`create_app` exposes it over
HTTP with the common control API under ``/_sandbox`` (plus ``bookings``, ``customers`` and ``consent``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from invoice_sync.connectors.quickbooks import DESCRIPTOR
from invoice_sync_dev.sandbox import qbo_query, quickbooks_fixtures
from invoice_sync_dev.sandbox.faults import CannedResponse, Scope, partial_json_batch, route_path
from invoice_sync_dev.sandbox.quickbooks_fixtures import (
    FIRST_DOC_NUMBER,
    FIRST_NAME_ID,
    FIRST_TXN_ID,
    QuickBooksFixtures,
    RealmFixture,
    default_fixtures,
)
from invoice_sync_dev.sandbox.simulator import (
    OAuthError,
    Simulator,
    SimulatorConfig,
    add_books_routes,
    add_consent_route,
    create_simulator_app,
    json_ready,
)
from invoice_sync_dev.sandbox.tools import (
    BenchKnobs,
    BenchLimits,
    BenchSlot,
    Booking,
    ChaosTargets,
    LimitRun,
    OpenedWindows,
    Refusal,
    SandboxTool,
    Target,
    WindowsFromBudget,
    with_extra,
)

MOUNT = "/quickbooks"
"""Where the sandbox server serves this simulator (see :data:`SANDBOX`)."""

ACCESS_TOKEN_LIFETIME_S = 3600
REFRESH_TOKEN_LIFETIME_S = 8_726_400
DEFAULT_MINOR_VERSION = 75
MAX_BATCH_ITEMS = 30
REQUEST_ID_MEMORY = timedelta(days=1)
API_PREFIX = "/v3/company/{realm_id}"

DOC_NUMBER_MAX = 21
FIELD_LIMITS = {"DisplayName": 500, "CompanyName": 100, "GivenName": 100, "FamilyName": 100,
                "PrivateNote": 4000, "Notes": 2000}  # fmt: skip
"""Lengths QuickBooks documents for the fields we send; longer is refused with 2050."""
TAX_CALCULATIONS = ("TaxExcluded", "TaxInclusive", "NotApplicable")
THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"
THROTTLE_DETAIL = "The request limit was reached.  Try again later"
_CENT = Decimal("0.01")
_READ_ONLY = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse", "TotalAmt", "Balance",
                        "HomeTotalAmt", "HomeBalance", "FullyQualifiedName", "RemainingCredit"})  # fmt: skip

try:
    _INTUIT_ZONE: Any = ZoneInfo("America/Los_Angeles")  # Intuit stamps answers in Pacific time
except ZoneInfoNotFoundError:  # pragma: no cover - a system without time zone data
    _INTUIT_ZONE = UTC


@dataclass(frozen=True, slots=True)
class _Kind:
    """One writable entity: its name in bodies and paths, and what kind of booking it is."""

    name: str  # "Invoice"
    path: str  # "invoice"
    booking: str | None  # "invoice" | "credit_note" | None for customers
    txn_type: str = ""


INVOICE = _Kind("Invoice", "invoice", "invoice", "Invoice")
CREDIT_MEMO = _Kind("CreditMemo", "creditmemo", "credit_note", "CreditMemo")
CUSTOMER = _Kind("Customer", "customer", None)
WRITABLE = {k.path: k for k in (INVOICE, CREDIT_MEMO, CUSTOMER)}
WRITABLE_BY_NAME = {k.name: k for k in (INVOICE, CREDIT_MEMO, CUSTOMER)}
READABLE = ("customer", "invoice", "creditmemo", "item", "taxcode", "taxrate", "account")

QUERYABLE: dict[str, tuple[str, ...]] = {
    "Customer": ("Id", "DisplayName", "CompanyName", "GivenName", "FamilyName", "Active",
                 "PrimaryTaxIdentifier", "Balance", "SyncToken"),
    "Invoice": ("Id", "DocNumber", "TxnDate", "DueDate", "CustomerRef", "TotalAmt", "Balance", "SyncToken"),
    "CreditMemo": ("Id", "DocNumber", "TxnDate", "CustomerRef", "TotalAmt", "SyncToken"),
    "Item": ("Id", "Name", "Active", "Type", "Sku"),
    "TaxCode": ("Id", "Name", "Active", "Taxable"),
    "TaxRate": ("Id", "Name", "Active", "RateValue"),
    "Account": ("Id", "Name", "Active", "AccountType", "AccountSubType"),
    "CompanyInfo": ("Id", "CompanyName"),
}  # fmt: skip
_ACTIVE_BY_DEFAULT = frozenset({"Customer", "Item", "TaxCode", "TaxRate", "Account"})


class QuickBooksFault(Exception):
    """A failing call as Intuit answers it: HTTP status and one ``Fault.Error`` entry."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: str = "",
        *,
        element: str = "",
        fault_type: str = "ValidationFault",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.fault_type = fault_type
        self.headers = dict(headers or {})

    def fault(self) -> dict[str, Any]:
        error = {"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element}
        return {"Error": [error], "type": self.fault_type}


def intuit_time(moment: datetime) -> str:
    """An instant as Intuit writes it: Pacific local time with milliseconds and offset."""
    local = moment.astimezone(_INTUIT_ZONE)
    return local.isoformat(timespec="milliseconds")


# ------------------------------------------------------------------ the faults of the contract


def required(name: str) -> QuickBooksFault:
    return QuickBooksFault(
        400, "2020", "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request", element=name,
    )  # fmt: skip


def invalid_reference(kind: str, value: Any) -> QuickBooksFault:
    return QuickBooksFault(
        400, "2500", "Invalid Reference Id", f"Invalid Reference Id : {kind} element id {value} not found",
    )  # fmt: skip


def inactive_reference(kind: str, value: Any) -> QuickBooksFault:
    return QuickBooksFault(
        400, "6000", "A business validation error has occurred while processing your request",
        f"Business Validation Error: Something you're trying to use has been made inactive. Check the "
        f"fields with accounts, customers, items, vendors or employees. ({kind} {value})",
    )  # fmt: skip


def business_error(detail: str) -> QuickBooksFault:
    return QuickBooksFault(
        400, "6000", "A business validation error has occurred while processing your request",
        f"Business Validation Error: {detail}",
    )  # fmt: skip


def too_long(name: str, limit: int, value: str) -> QuickBooksFault:
    return QuickBooksFault(
        400, "2050", "String length is either shorter or longer than supported by specification",
        f"String length specified does not match the supported length. Min:0 Max:{limit} "
        f"supplied:{len(value)}", element=name,
    )  # fmt: skip


def invalid_enumeration(name: str, value: Any) -> QuickBooksFault:
    return QuickBooksFault(400, "2170", "Invalid Enumeration", f"Invalid Enumeration : {value}", element=name)


def invalid_value(name: str, value: Any) -> QuickBooksFault:
    """A value of the wrong form (a date, an amount); QuickBooks' exact code is unconfirmed."""
    return QuickBooksFault(
        400, "2010", "Request has invalid or unsupported property", f"Property Name:{name} specified "
        f"is unsupported or invalid (value: {value})", element=name,
    )  # fmt: skip


def not_found(entity: str, object_id: Any) -> QuickBooksFault:
    return QuickBooksFault(
        400, "610", "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with "
        f"accounts, customers, items, vendors or employees. ({entity} {object_id})",
    )  # fmt: skip


def unsupported(detail: str, status: int = 400) -> QuickBooksFault:
    return QuickBooksFault(status, "500", "Unsupported Operation", detail)


def throttled() -> QuickBooksFault:
    return QuickBooksFault(429, "3001", THROTTLE_MESSAGE, THROTTLE_DETAIL, fault_type="SERVICE")


def authentication_failed(detail: str) -> QuickBooksFault:
    return QuickBooksFault(
        401, "3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401", detail,
        fault_type="AUTHENTICATION",
        headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
    )  # fmt: skip


def authorization_failed(realm_id: str) -> QuickBooksFault:
    return QuickBooksFault(
        403, "3100", "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        f"The token does not grant access to company {realm_id}", fault_type="AUTHORIZATION",
    )  # fmt: skip


# ------------------------------------------------------------------ values


def _money(value: Any, name: str) -> Decimal:
    """A JSON number (parsed as Decimal) or numeric text (python-quickbooks with ``use_decimal``)."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list) or value == "":
        raise invalid_value(name, value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise invalid_value(name, value) from exc
    if not amount.is_finite():
        raise invalid_value(name, value)
    return amount


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _date(value: Any, name: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise invalid_value(name, value) from exc


def _ref(value: Any) -> str:
    """The ``value`` of a reference (``{"value": "58", "name": ...}``); empty when absent."""
    if isinstance(value, Mapping):
        value = value.get("value")
    return "" if value is None else str(value).strip()


def _present(payload: Mapping[str, Any], name: str) -> bool:
    value = payload.get(name)
    return value is not None and value != "" and value != [] and value != {}


def _tidy(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a client sent, without empty defaults (python-quickbooks sends ``""`` for unset fields)."""
    return {k: v for k, v in payload.items() if _present(payload, k) and k not in _READ_ONLY}


def to_wire(value: Any) -> Any:
    """JSON form of a stored entity: amounts as JSON numbers."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent  # a str only for NaN and infinities, which never reach here
        whole = value == value.to_integral_value() and isinstance(exponent, int) and exponent >= 0
        return int(value) if whole else float(value)
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


# ------------------------------------------------------------------ state


@dataclass(slots=True)
class QuickBooksConfig(SimulatorConfig):
    """The switches tests flip through ``POST /_sandbox/config``; defaults are Intuit's published values."""

    minute_limit: int = 500
    second_limit: int = 10
    concurrent_limit: int = 10
    batch_minute_limit: int = 40
    limits_enabled: bool = True
    reject_old_minorversion: bool = True
    processing_delay_s: float = 0.0
    """Extra time every API call spends in flight (tests of the concurrency limit)."""
    closing_date: str = ""
    """An ISO date that replaces every company's closing date; "" keeps the fixtures', "none" opens all."""
    custom_txn_numbers: bool = True
    """The companies' ``Preferences.SalesFormsPrefs.CustomTxnNumbers``. Off, QuickBooks numbers a new
    invoice or credit memo itself by incrementing the last number, and stores a ``DocNumber`` sent anyway
    as given, even when it is taken (no 6140): see :meth:`QuickBooksSandbox._write_transaction`."""


@dataclass(slots=True)
class _RefreshToken:
    client_id: str
    realm_id: str
    chain_id: str
    issued_at: datetime
    successor: str | None = None
    predecessor: str | None = None
    dead: bool = False


@dataclass(slots=True)
class _AccessToken:
    client_id: str
    realm_id: str
    chain_id: str
    expires_at: datetime


@dataclass(slots=True)
class _Books:
    """The persistent state: what a restart with a state file must keep."""

    customers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    transactions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Realm -> Id -> ``{"entity": "Invoice"|"CreditMemo", "seq": n, "body": {...}}``."""
    next_ids: dict[str, dict[str, int]] = field(default_factory=dict)
    sequence: int = 0
    request_ids: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Realm -> requestid -> ``{"at": datetime, "status": int, "body": {...}}``."""
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)


@dataclass(slots=True)
class Caller:
    """An admitted API call: whose token, which company, and the windows it holds a place in."""

    client_id: str
    realm: RealmFixture
    in_flight_key: str


class QuickBooksSandbox(Simulator[QuickBooksFixtures, QuickBooksConfig]):
    """The simulated QuickBooks Online: an app client, companies, their books, tokens and limits."""

    config_class = QuickBooksConfig

    # ----------------------------------------------------------------- state

    def _fault_describe(self) -> Callable[[Scope, bytes], str]:
        """Fault rules match ``/batch#create`` or ``/batch#query``: bookings and lookups share a path."""
        return describe_request

    def _fault_partial(self) -> Callable[[bytes], bytes | None]:
        """A batch call carries up to 30 items: the first part of them is committed."""
        return partial_json_batch("BatchItemRequest")

    def _default_fixtures(self) -> QuickBooksFixtures:
        return default_fixtures()

    def _fresh_books(self) -> _Books:
        books = _Books()
        issued = datetime.now(UTC)
        for client in self.fixtures.clients:
            for token, realm_id in client.bootstrap_refresh_tokens.items():
                books.refresh_tokens[token] = _RefreshToken(
                    client.client_id, realm_id, uuid.uuid4().hex, issued
                )
        for realm_id in self.fixtures.realms:
            books.customers[realm_id] = {}
            books.transactions[realm_id] = {}
            books.request_ids[realm_id] = {}
            books.next_ids[realm_id] = {
                "name": FIRST_NAME_ID,
                "txn": FIRST_TXN_ID,
                INVOICE.name: FIRST_DOC_NUMBER,
                CREDIT_MEMO.name: FIRST_DOC_NUMBER,
            }
        return books

    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        if not saved:
            self._books = self._fresh_books()
            return
        self._books = _Books(
            customers=copy.deepcopy(saved["customers"]),
            transactions=copy.deepcopy(saved["transactions"]),
            next_ids=copy.deepcopy(saved["next_ids"]),
            sequence=int(saved["sequence"]),
            request_ids=copy.deepcopy(saved["request_ids"]),
            refresh_tokens={k: _RefreshToken(**v) for k, v in saved["refresh_tokens"].items()},
            access_tokens={k: _AccessToken(**v) for k, v in saved["access_tokens"].items()},
        )

    def _persistable(self) -> dict[str, Any]:
        """Books, request ids and tokens (``asdict`` copies them)."""
        return asdict(self._books)

    def _reset_counters(self) -> None:
        self._second_windows: dict[tuple[str, str], deque[datetime]] = {}
        self._minute_windows: dict[str, deque[datetime]] = {}
        self._batch_windows: dict[tuple[str, str], deque[datetime]] = {}
        self._in_flight: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._rate_limited = 0
        self._token_refreshes = 0
        self._replays = 0
        self._create_posts: Counter[str] = Counter()

    def _now(self) -> datetime:
        return self.clock.now()

    # ------------------------------------------------------------------ auth

    def token(self, authorization: str | None, form: Mapping[str, str]) -> dict[str, Any]:
        """``POST /oauth2/v1/tokens/bearer``: a refresh token for a fresh access token and its successor.

        The refresh token rotates: the answer carries a new one; the old one keeps working (and hands out
        the same successor again) until the successor itself is used, then it is ``invalid_grant``.
        """
        with self.lock:
            client_id, secret = _basic_credentials(authorization, form)
            client = self.fixtures.client(client_id)
            if client is None or secret != client.client_secret:
                raise OAuthError(401, "invalid_client")
            if form.get("grant_type") != "refresh_token":
                raise OAuthError(400, "unsupported_grant_type")
            token = form.get("refresh_token", "")
            record = self._books.refresh_tokens.get(token)
            now = self._now()
            if (
                record is None
                or record.client_id != client.client_id
                or record.dead
                or now - record.issued_at > timedelta(seconds=REFRESH_TOKEN_LIFETIME_S)
            ):
                raise OAuthError(400, "invalid_grant")
            if record.predecessor is not None:  # the successor is in use: its predecessor dies
                previous = self._books.refresh_tokens.get(record.predecessor)
                if previous is not None:
                    previous.dead = True
            if record.successor is None:
                record.successor = secrets.token_urlsafe(32)
                self._books.refresh_tokens[record.successor] = _RefreshToken(
                    record.client_id, record.realm_id, record.chain_id, now, predecessor=token
                )
            access = secrets.token_urlsafe(48)
            expires = now + timedelta(seconds=ACCESS_TOKEN_LIFETIME_S)
            self._books.access_tokens[access] = _AccessToken(
                record.client_id, record.realm_id, record.chain_id, expires
            )
            self._token_refreshes += 1
            self._prune(now)
            self._changed()
            return {
                "access_token": access,
                "refresh_token": record.successor,
                "expires_in": self._real_seconds(ACCESS_TOKEN_LIFETIME_S),
                "x_refresh_token_expires_in": self._real_seconds(REFRESH_TOKEN_LIFETIME_S),
                "token_type": "bearer",
            }

    def _real_seconds(self, sandbox_seconds: int) -> int:
        """A lifetime as the client must count it: real seconds, so a client needs no time scale."""
        return max(1, round(self.clock.sandbox_seconds_to_real(sandbox_seconds)))

    def _prune(self, now: datetime) -> None:
        """Forget long-expired access tokens and old request ids, so long runs do not grow the state."""
        horizon = now - timedelta(days=1)
        for token in [t for t, a in self._books.access_tokens.items() if a.expires_at < horizon]:
            del self._books.access_tokens[token]
        for answers in self._books.request_ids.values():
            for request_id in [r for r, a in answers.items() if now - a["at"] > REQUEST_ID_MEMORY]:
                del answers[request_id]

    def revoke(self, authorization: str | None, token: str) -> None:
        """``POST /oauth2/v1/tokens/revoke``: the token's whole chain (refresh and access tokens) ends."""
        with self.lock:
            client_id, secret = _basic_credentials(authorization, {})
            client = self.fixtures.client(client_id)
            if client is None or secret != client.client_secret:
                raise OAuthError(401, "invalid_client")
            record = self._books.refresh_tokens.get(token) or self._books.access_tokens.get(token)
            if record is None:
                raise OAuthError(400, "invalid_request")
            for refresh in self._books.refresh_tokens.values():
                if refresh.chain_id == record.chain_id:
                    refresh.dead = True
            for access in [t for t, a in self._books.access_tokens.items() if a.chain_id == record.chain_id]:
                del self._books.access_tokens[access]
            self._changed()

    def consent(self, client_id: str, realm_id: Any = None) -> dict[str, str]:
        """A user connects the app to a company (again): a fresh refresh token for that realm."""
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None:
                raise ValueError(f"unknown client_id {client_id!r}")
            realm = str(realm_id) if realm_id is not None else client.realms[0]
            if realm not in self.fixtures.realms:
                raise ValueError(f"unknown realm {realm!r}")
            token = secrets.token_urlsafe(32)
            self._books.refresh_tokens[token] = _RefreshToken(client_id, realm, uuid.uuid4().hex, self._now())
            self._changed()
            return {"refresh_token": token}

    def expire_tokens(self) -> int:
        """Every access token expires now; returns how many were live."""
        with self.lock:
            now = self._now()
            live = [a for a in self._books.access_tokens.values() if a.expires_at > now]
            for access in live:
                access.expires_at = now
            self._changed()
            return len(live)

    def _authenticate(self, authorization: str | None) -> _AccessToken:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        access = self._books.access_tokens.get(token) if scheme.lower() == "bearer" else None
        if access is None:
            raise authentication_failed("Token invalid")
        if access.expires_at <= self._now():
            raise authentication_failed(f"Token expired: {token[:12]}...")
        return access

    # ------------------------------------------------------------------ limits

    def admit(
        self, authorization: str | None, realm_id: str, operation: str, *, batch: bool = False
    ) -> Caller:
        """Authenticate a company call, then take its place in the rate windows and the in-flight count.

        The caller must :meth:`release` the returned :class:`Caller` when the call ends.
        """
        with self.lock:
            access = self._authenticate(authorization)
            realm = self.fixtures.realms.get(realm_id)
            if realm is None or access.realm_id != realm_id:
                raise authorization_failed(realm_id)
            if self.config.limits_enabled:
                self._check_limits(access.client_id, realm_id, batch)
            self._in_flight[realm_id] += 1
            self._calls[operation] += 1
            return Caller(access.client_id, realm, realm_id)

    def _check_limits(self, client_id: str, realm_id: str, batch: bool) -> None:
        now = self._now()
        windows: list[tuple[deque[datetime], int, timedelta]] = [
            (self._second_windows.setdefault((client_id, realm_id), deque()), self.config.second_limit,
             timedelta(seconds=1)),
            (self._minute_windows.setdefault(realm_id, deque()), self.config.minute_limit,
             timedelta(minutes=1)),
        ]  # fmt: skip
        if batch:
            batch_window = self._batch_windows.setdefault((client_id, realm_id), deque())
            windows.append((batch_window, self.config.batch_minute_limit, timedelta(minutes=1)))
        for window, _, span in windows:
            while window and now - window[0] >= span:
                window.popleft()
        full = any(len(window) >= limit for window, limit, _ in windows)
        if full or self._in_flight[realm_id] >= self.config.concurrent_limit:
            self._rate_limited += 1
            raise throttled()
        for window, _, _ in windows:
            window.append(now)

    def release(self, caller: Caller) -> None:
        with self.lock:
            self._in_flight[caller.in_flight_key] -= 1

    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        """An injected error as Intuit sends it: a SystemFault for 5xx, else a validation fault."""
        if status == 401:
            fault = authentication_failed(message)
        elif status == 429:
            fault = throttled()
        elif status >= 500:
            fault = QuickBooksFault(
                status, "10000", "An application error has occurred while processing your request", message,
                fault_type="SystemFault",
            )  # fmt: skip
        else:
            fault = business_error(message)
            fault.status = status
        return CannedResponse(
            status, json.dumps(self._fault_body(fault)).encode(), tuple(fault.headers.items())
        )

    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """An injected 429: Intuit's throttle fault (no rate-limit headers, like the real one)."""
        with self.lock:
            self._rate_limited += 1
        return CannedResponse(429, json.dumps(self._fault_body(throttled())).encode())

    def _fault_body(self, fault: QuickBooksFault) -> dict[str, Any]:
        return {"Fault": fault.fault(), "time": intuit_time(self._now())}

    # ------------------------------------------------------------------ requestid

    def replayed(self, realm_id: str, request_id: str) -> tuple[int, dict[str, Any]] | None:
        """The first answer to ``request_id`` in this company, if it is still remembered."""
        with self.lock:
            answer = self._books.request_ids.get(realm_id, {}).get(request_id)
            if answer is None or self._now() - answer["at"] > REQUEST_ID_MEMORY:
                return None
            self._replays += 1
            return answer["status"], copy.deepcopy(answer["body"])

    def remember(self, realm_id: str, request_id: str, status: int, body: dict[str, Any]) -> None:
        with self.lock:
            answers = self._books.request_ids.setdefault(realm_id, {})
            answers[request_id] = {"at": self._now(), "status": status, "body": copy.deepcopy(body)}
            self._changed()

    # ------------------------------------------------------------------ writes

    def write(self, caller: Caller, kind: _Kind, payload: Any) -> dict[str, Any]:
        """``POST /{entity}``: create, or update when the body carries an ``Id``; returns the wire entity."""
        with self.lock:
            if not isinstance(payload, dict):
                raise invalid_value(kind.name, "(not an object)")
            if kind.booking is not None and not _present(payload, "Id"):
                self._create_posts[str(payload.get("DocNumber") or "")] += 1
            if kind is CUSTOMER:
                entity = self._write_customer(caller.realm, payload)
            else:
                entity = self._write_transaction(caller.realm, kind, payload)
            self._changed()
            wire: dict[str, Any] = to_wire(entity)
            return wire

    def _existing(
        self, realm: RealmFixture, kind: _Kind, payload: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """For an update, the stored entity after the SyncToken check; None for a create."""
        if not _present(payload, "Id"):
            return None
        object_id = str(payload["Id"])
        if kind is CUSTOMER:
            current = self._books.customers[realm.realm_id].get(object_id)
        else:
            record = self._books.transactions[realm.realm_id].get(object_id)
            current = record["body"] if record and record["entity"] == kind.name else None
        if current is None:
            raise not_found(kind.name, object_id)
        if str(payload.get("SyncToken", "")) != current["SyncToken"]:
            raise QuickBooksFault(
                400, "5010", "Stale Object Error",
                "Stale Object Error : You and sandbox user were working on this at the same time. sandbox "
                "user finished before you did, so your work was not saved. "
                f"(SyncToken {current['SyncToken']})",
            )  # fmt: skip
        return current

    def _stamp(
        self, entity: dict[str, Any], current: Mapping[str, Any] | None, new_id: str
    ) -> dict[str, Any]:
        now = intuit_time(self._now())
        created = current["MetaData"]["CreateTime"] if current else now
        sync = str(int(current["SyncToken"]) + 1) if current else "0"
        meta = {"CreateTime": created, "LastUpdatedTime": now}
        object_id = current["Id"] if current else new_id
        return {
            "Id": object_id,
            "SyncToken": sync,
            "domain": "QBO",
            "sparse": False,
            "MetaData": meta,
        } | entity

    def _next_id(self, realm_id: str, sequence: str) -> str:
        ids = self._books.next_ids[realm_id]
        ids[sequence] += 1
        return str(ids[sequence] - 1)

    # ------------------------------------------------------------------ customers

    def _write_customer(self, realm: RealmFixture, payload: Mapping[str, Any]) -> dict[str, Any]:
        current = self._existing(realm, CUSTOMER, payload)
        merged = (dict(current) | dict(payload)) if current and payload.get("sparse") else dict(payload)
        fields = _tidy(merged)
        name = str(fields.get("DisplayName") or "").strip()
        if not name:
            name = " ".join(str(fields.get(n, "")).strip() for n in ("GivenName", "FamilyName")).strip()
            name = name or str(fields.get("CompanyName") or "").strip()
        if not name:
            raise required("DisplayName")
        fields["DisplayName"] = name
        for key, limit in FIELD_LIMITS.items():
            if isinstance(fields.get(key), str) and len(fields[key]) > limit:
                raise too_long(key, limit, fields[key])
        customers = self._books.customers[realm.realm_id]
        holder = next(
            (c for c in customers.values() if c["DisplayName"].casefold() == name.casefold()
             and (current is None or c["Id"] != current["Id"])), None,
        )  # fmt: skip
        if holder is not None:
            raise QuickBooksFault(
                400, "6240", "Duplicate Name Exists Error",
                "The name supplied already exists. : Another customer, vendor or employee is already using "
                f"this name. Please use a different name. Id={holder['Id']}",
            )  # fmt: skip
        currency = _ref(fields.get("CurrencyRef")) or realm.home_currency
        self._check_currency(realm, currency)
        fields |= {
            "FullyQualifiedName": name,
            "Active": fields.get("Active", True) is not False,
            "CurrencyRef": {"value": currency},
            "Balance": current["Balance"] if current else Decimal("0"),
        }
        customer = self._stamp(fields, current, "" if current else self._next_id(realm.realm_id, "name"))
        customers[customer["Id"]] = customer
        return customer

    @staticmethod
    def _check_currency(realm: RealmFixture, currency: str) -> None:
        if currency != realm.home_currency and currency not in realm.currencies:
            raise business_error(
                f"Currency {currency} is not enabled for this company; its home currency is "
                f"{realm.home_currency} and multicurrency is off."
            )

    # ------------------------------------------------------------------ invoices and credit memos

    def _closing_date(self, realm: RealmFixture) -> date | None:
        setting = self.config.closing_date
        if setting == "":
            return realm.closing_date
        return None if setting.lower() == "none" else date.fromisoformat(setting)

    def _write_transaction(
        self, realm: RealmFixture, kind: _Kind, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate in a fixed order (nothing is stored on a failure), compute tax and totals, store."""
        current = self._existing(realm, kind, payload)
        merged = (dict(current) | dict(payload)) if current and payload.get("sparse") else dict(payload)
        fields = _tidy(merged)
        doc_number = str(fields.get("DocNumber") or "").strip()
        if len(doc_number) > DOC_NUMBER_MAX:
            raise too_long("DocNumber", DOC_NUMBER_MAX, doc_number)
        for key in ("PrivateNote",):
            if isinstance(fields.get(key), str) and len(fields[key]) > FIELD_LIMITS[key]:
                raise too_long(key, FIELD_LIMITS[key], fields[key])
        customer = self._transaction_customer(realm, fields)
        calculation = str(fields.get("GlobalTaxCalculation") or "TaxExcluded")
        if calculation not in TAX_CALCULATIONS:
            raise invalid_enumeration("GlobalTaxCalculation", calculation)
        txn_date = _date(fields["TxnDate"], "TxnDate") if _present(fields, "TxnDate") else self._now().date()
        closing = self._closing_date(realm)
        if closing is not None and txn_date <= closing:
            raise QuickBooksFault(
                400, "6210", "Account Period Closed, Cannot Update Through Services API",
                f"The account period has closed and the books are locked through {closing.isoformat()}: "
                f"TxnDate {txn_date.isoformat()} cannot be booked.",
            )  # fmt: skip
        due = _date(fields["DueDate"], "DueDate") if _present(fields, "DueDate") else None
        currency = _ref(fields.get("CurrencyRef")) or realm.home_currency
        self._check_currency(realm, currency)
        lines, net, tax_by_rate = self._lines(realm, fields.get("Line"), calculation)
        total_tax = sum(tax_by_rate.values(), Decimal("0"))
        override = (
            fields.get("TxnTaxDetail", {}).get("TotalTax")
            if isinstance(fields.get("TxnTaxDetail"), dict)
            else None
        )
        if override is not None and override != "" and calculation != "NotApplicable":
            given = _money(override, "TxnTaxDetail.TotalTax")
            if tax_by_rate and given != total_tax:  # the difference lands on the largest tax line
                largest = max(tax_by_rate, key=lambda key: tax_by_rate[key])
                tax_by_rate[largest] += given - total_tax
            total_tax = given
        total = net + total_tax
        if total < 0:
            raise business_error(f"The {kind.name} total can't be negative ({total}).")
        transactions = self._books.transactions[realm.realm_id]
        custom_numbers = self.config.custom_txn_numbers
        if doc_number:
            number = doc_number
        elif custom_numbers:
            number = self._next_doc_number(realm.realm_id, kind)
        else:
            number = self._incremented_doc_number(realm.realm_id, kind)
        holder = next(
            (r["body"] for r in transactions.values() if r["entity"] == kind.name
             and r["body"]["DocNumber"] == number and (current is None or r["body"]["Id"] != current["Id"])),
            None,
        )  # fmt: skip
        if holder is not None and custom_numbers:
            raise QuickBooksFault(
                400, "6140", "Duplicate Document Number Error",
                "Duplicate Document Number Error : You must specify a different number. This number has "
                f"already been used. DocNumber={number} is assigned to TxnType={kind.txn_type} with "
                f"TxnId={holder['Id']}",
            )  # fmt: skip
        tax_lines = [
            {"Amount": amount, "DetailType": "TaxLineDetail",
             "TaxLineDetail": {"TaxRateRef": {"value": code.tax_rate_id}, "PercentBased": True,
                               "TaxPercent": code.rate_percent, "NetAmountTaxable": base}}
            for (code_id, base), amount in ((k, v) for k, v in tax_by_rate.items())
            if (code := realm.tax_code(code_id)) is not None
        ]  # fmt: skip
        subtotal = {"Amount": net, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}
        fields |= {
            "DocNumber": number,
            "TxnDate": txn_date.isoformat(),
            "CurrencyRef": {"value": currency},
            "ExchangeRate": Decimal("1"),
            "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
            "GlobalTaxCalculation": calculation,
            "Line": [*lines, subtotal],
            "TxnTaxDetail": {"TotalTax": total_tax, "TaxLine": tax_lines},
            "TotalAmt": total,
            "HomeTotalAmt": total,
        }
        if kind is INVOICE:
            fields["DueDate"] = (due or txn_date + timedelta(days=realm.payment_days)).isoformat()
            fields["Balance"] = total
        else:
            fields["RemainingCredit"] = total
            if due is not None:
                fields["DueDate"] = due.isoformat()
        new_id = "" if current else self._next_id(realm.realm_id, "txn")
        body = self._stamp(fields, current, new_id)
        if current is None:
            self._books.sequence += 1
            transactions[body["Id"]] = {"entity": kind.name, "seq": self._books.sequence, "body": body}
        else:
            transactions[body["Id"]]["body"] = body
        return body

    def _transaction_customer(self, realm: RealmFixture, fields: Mapping[str, Any]) -> dict[str, Any]:
        customer_id = _ref(fields.get("CustomerRef"))
        if not customer_id:
            raise required("CustomerRef")
        customer = self._books.customers[realm.realm_id].get(customer_id)
        if customer is None:
            raise invalid_reference("Names", customer_id)
        if not customer["Active"]:
            raise inactive_reference("Customer", customer_id)
        return customer

    def _next_doc_number(self, realm_id: str, kind: _Kind) -> str:
        used = {
            r["body"]["DocNumber"]
            for r in self._books.transactions[realm_id].values()
            if r["entity"] == kind.name
        }
        while True:
            candidate = self._next_id(realm_id, kind.name)
            if candidate not in used:
                return candidate

    def _incremented_doc_number(self, realm_id: str, kind: _Kind) -> str:
        """The number QuickBooks gives a transaction with custom transaction numbers off: the last one's,
        its trailing digits incremented by 1 (prefix and width kept: ``2026-0042`` -> ``2026-0043``).

        Intuit API reference, Invoice ``DocNumber`` ("system generated by incrementing the last number by
        1"); the Intuit community article 1145900 shows the sequence following the last number entered
        (``I-1001`` -> ``I-1002``). A last number without digits, or none yet, falls back to the
        company's sequence from :data:`FIRST_DOC_NUMBER`. So a number an app sent before can be handed
        out again, as in QuickBooks.
        """
        records = [r for r in self._books.transactions[realm_id].values() if r["entity"] == kind.name]
        last = str(max(records, key=lambda r: r["seq"])["body"]["DocNumber"]) if records else ""
        digits = re.search(r"\d+$", last)
        if digits is None:
            return self._next_doc_number(realm_id, kind)
        width = len(digits.group())
        return last[: digits.start()] + str(int(digits.group()) + 1).zfill(width)

    def _lines(
        self, realm: RealmFixture, lines: Any, calculation: str
    ) -> tuple[list[dict[str, Any]], Decimal, dict[tuple[str, Decimal], Decimal]]:
        """Sales lines with their net amounts, the net total, and tax per (tax code, taxable base).

        Tax is computed per line from the tax code's rate and rounded half up (``TaxInclusive``: the line
        amount includes it); lines of other detail types (a subtotal the client echoes) are dropped.
        """
        sales = [
            line for line in (lines if isinstance(lines, list) else [])
            if isinstance(line, dict) and line.get("DetailType") != "SubTotalLineDetail"
        ]  # fmt: skip
        if not sales:
            raise required("Line")
        booked: list[dict[str, Any]] = []
        net_total = Decimal("0")
        tax_by_code: dict[str, tuple[Decimal, Decimal]] = {}
        for number, line in enumerate(sales, start=1):
            detail_type = line.get("DetailType")
            if detail_type == "DescriptionOnly":
                booked.append(_tidy(line) | {"Id": str(number), "LineNum": number})
                continue
            if detail_type != "SalesItemLineDetail":
                raise invalid_enumeration("Line.DetailType", detail_type)
            detail = line.get("SalesItemLineDetail")
            if not isinstance(detail, dict):
                raise required("Line.SalesItemLineDetail")
            if not _present(line, "Amount"):
                raise required("Line.Amount")
            amount = _money(line["Amount"], "Line.Amount")
            item = self._line_item(realm, detail)
            code_id = _ref(detail.get("TaxCodeRef"))
            rate = Decimal("0")
            if calculation != "NotApplicable":
                if not code_id:
                    raise business_error("Make sure all your transactions have a VAT rate before you save.")
                code = realm.tax_code(code_id)
                if code is None:
                    raise invalid_reference("TaxCode", code_id)
                if not code.active:
                    raise inactive_reference("TaxCode", code_id)
                rate = code.rate_percent / 100
            if calculation == "TaxInclusive":
                tax = _cents(amount * rate / (1 + rate))
                net = amount - tax
            else:
                tax = _cents(amount * rate)
                net = amount
            net_total += net
            if calculation != "NotApplicable":
                base, sum_tax = tax_by_code.get(code_id, (Decimal("0"), Decimal("0")))
                tax_by_code[code_id] = (base + net, sum_tax + tax)
            stored_detail = _tidy(detail) | {"ItemRef": {"value": item.id, "name": item.name}}
            if code_id:
                stored_detail["TaxCodeRef"] = {"value": code_id}
            for key in ("Qty", "UnitPrice"):
                if _present(detail, key) and detail[key] != 0:
                    stored_detail[key] = _money(detail[key], f"Line.SalesItemLineDetail.{key}")
                else:
                    stored_detail.pop(key, None)
            stored_detail.pop("TaxInclusiveAmt", None)
            if calculation == "TaxInclusive":
                stored_detail["TaxInclusiveAmt"] = amount
            booked.append(
                _tidy(line) | {"Id": str(number), "LineNum": number, "Amount": net,
                               "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": stored_detail}
            )  # fmt: skip
        by_rate = {(code, base): tax for code, (base, tax) in tax_by_code.items()}
        return booked, net_total, by_rate

    @staticmethod
    def _line_item(realm: RealmFixture, detail: Mapping[str, Any]) -> Any:
        item_id = _ref(detail.get("ItemRef"))
        if not item_id:
            raise required("Line.SalesItemLineDetail.ItemRef")
        item = realm.item(item_id)
        if item is None:
            raise invalid_reference("Item", item_id)
        if not item.active:
            raise inactive_reference("Item", item_id)
        return item

    # ------------------------------------------------------------------ reads

    def read(self, caller: Caller, entity_path: str, object_id: str) -> dict[str, Any]:
        """``GET /{entity}/{id}``: ``{"Invoice": {...}}``; an unknown id is fault 610."""
        with self.lock:
            name, rows = self._rows_by_path(caller.realm, entity_path)
            row = next((r for r in rows if r["Id"] == object_id), None)
            if row is None:
                raise not_found(name, object_id)
            return {name: to_wire(row)}

    def _rows_by_path(self, realm: RealmFixture, entity_path: str) -> tuple[str, list[dict[str, Any]]]:
        name = _entity_name(entity_path)
        return name, self._rows(realm, name)

    def _rows(self, realm: RealmFixture, entity: str) -> list[dict[str, Any]]:
        """Every row of one entity in Id order, as stored (transactions: their wire body)."""
        if entity == "Customer":
            rows = list(self._books.customers[realm.realm_id].values())
        elif entity in (INVOICE.name, CREDIT_MEMO.name):
            records = self._books.transactions[realm.realm_id].values()
            rows = [r["body"] for r in records if r["entity"] == entity]
        else:
            rows = _reference_rows(realm, entity)
        return sorted(rows, key=lambda r: int(r["Id"]) if str(r["Id"]).isdigit() else 0)

    def query(self, caller: Caller, text: str) -> dict[str, Any]:
        """``query``: ``{"QueryResponse": {...}}`` (see :mod:`.qbo_query`); bad queries: 4000/4001."""
        with self.lock:
            try:
                query = qbo_query.parse(text)
                result = qbo_query.execute(
                    query, QUERYABLE, lambda entity: self._rows(caller.realm, entity),
                    active_by_default=_ACTIVE_BY_DEFAULT,
                )  # fmt: skip
            except qbo_query.QueryError as exc:
                raise QuickBooksFault(400, exc.code, exc.message, exc.detail) from exc
            if query.count:
                return {"QueryResponse": {"totalCount": result.total}}
            if not result.rows:
                return {"QueryResponse": {}}
            return {
                "QueryResponse": {
                    result.entity: to_wire(result.rows),
                    "startPosition": query.start_position,
                    "maxResults": len(result.rows),
                }
            }

    def company_info(self, caller: Caller, realm_id: str) -> dict[str, Any]:
        if realm_id != caller.realm.realm_id:
            raise not_found("CompanyInfo", realm_id)
        return {"CompanyInfo": _company_info(caller.realm)}

    def preferences(self, caller: Caller) -> dict[str, Any]:
        realm = caller.realm
        return {
            "Preferences": {
                "Id": "1", "SyncToken": "0", "domain": "QBO",
                "CurrencyPrefs": {"HomeCurrency": {"value": realm.home_currency},
                                  "MultiCurrencyEnabled": bool(realm.currencies)},
                "TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": True},
                "SalesFormsPrefs": {"CustomTxnNumbers": self.config.custom_txn_numbers},
                "AccountingInfoPrefs": {"BookCloseDate": (c := self._closing_date(realm)) and c.isoformat()},
            }
        }  # fmt: skip

    # ------------------------------------------------------------------ batch

    def batch(self, caller: Caller, payload: Any) -> dict[str, Any]:
        """``POST /batch``: every item answered in order with its entity, its Fault or its query result."""
        items = payload.get("BatchItemRequest") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise required("BatchItemRequest")
        if len(items) > MAX_BATCH_ITEMS:
            raise QuickBooksFault(
                400, "1040", "Batch size exceeded",
                f"A batch request can carry at most {MAX_BATCH_ITEMS} BatchItemRequest items; this one "
                f"carries {len(items)}.",
            )  # fmt: skip
        answers = []
        for item in items:
            answers.append({"bId": str(item.get("bId", "")) if isinstance(item, dict) else ""}
                           | self._batch_item(caller, item))  # fmt: skip
        return {"BatchItemResponse": answers}

    def _batch_item(self, caller: Caller, item: Any) -> dict[str, Any]:
        try:
            if not isinstance(item, dict) or not _present(item, "bId"):
                raise required("bId")
            if _present(item, "Query"):
                return self.query(caller, str(item["Query"]))
            entity = next((k for k in WRITABLE_BY_NAME if k in item), None)
            if entity is None:
                raise unsupported("A batch item must carry Customer, Invoice, CreditMemo or Query.")
            operation = str(item.get("operation") or "create")
            if operation not in ("create", "update"):
                raise unsupported(f"Operation {operation} is not supported for {entity} in this sandbox.")
            body = item[entity]
            if operation == "create" and isinstance(body, dict):
                body = {k: v for k, v in body.items() if k != "Id"}
            return {entity: self.write(caller, WRITABLE_BY_NAME[entity], body)}
        except QuickBooksFault as fault:
            return {"Fault": fault.fault()}

    # ------------------------------------------------------------------ what tests inspect

    def booked(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every invoice and credit memo, in booking order, with the common simulator keys.

        ``total_*`` are signed from the debtor's side (a credit memo negative, as the Yuki and Twinfield
        simulators report them); ``total_amt`` is QuickBooks' own (positive) ``TotalAmt``.
        """
        with self.lock:
            records = [
                (realm_id, record)
                for realm_id, section in self._books.transactions.items()
                if tenant is None or realm_id == tenant
                for record in section.values()
            ]
            records.sort(key=lambda pair: pair[1]["seq"])
            return [_booking(realm_id, record) for realm_id, record in records]

    def create_posts(self) -> dict[str, int]:
        """How often an invoice or credit memo with each DocNumber was processed by a create (booked or
        refused); ``requestid`` replays and requests refused before processing (auth, limits, injected
        faults) are not counted."""
        with self.lock:
            return dict(self._create_posts)

    def customers(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every customer: ``id``, ``name`` (DisplayName), ``company_name``, ``email``, ``vat_number``,
        ``address``, ``active``, ``tenant``."""
        with self.lock:
            return [
                {"id": c["Id"], "code": c["Id"], "name": c["DisplayName"],
                 "company_name": c.get("CompanyName"), "email": _ref_address(c.get("PrimaryEmailAddr")),
                 "vat_number": c.get("PrimaryTaxIdentifier"),
                 "address": copy.deepcopy(c.get("BillAddr")), "active": c["Active"], "tenant": realm_id}
                for realm_id, section in self._books.customers.items()
                if tenant is None or realm_id == tenant
                for c in section.values()
            ]  # fmt: skip

    def stats_snapshot(self) -> dict[str, Any]:
        """Calls per operation, 429s, token refreshes, requestid replays, faults hit, HTTP statistics.

        ``calls`` counts the company calls admitted past authentication and the limits, by operation:
        ``create Invoice``, ``update Customer``, ``read Item``, ``query``, ``batch``, ... (a batch is one
        call; its items show in :meth:`create_posts`).
        """
        with self.lock:
            return {
                "calls": dict(self._calls),
                "total": sum(self._calls.values()),
                "token_refreshes": self._token_refreshes,
                "rate_limited": self._rate_limited,
                "replays": self._replays,
                "faults": self.faults.hits(),
                "http": self.stats.snapshot(),
            }


def _entity_name(path: str) -> str:
    """``Invoice`` for the path segment ``invoice``."""
    return next(n for n in QUERYABLE if n.lower() == path)


def _ref_address(value: Any) -> str | None:
    return value.get("Address") if isinstance(value, Mapping) else None


def _booking(realm_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    body = record["body"]
    credit = record["entity"] == CREDIT_MEMO.name
    sign = Decimal("-1") if credit else Decimal("1")
    tax = body["TxnTaxDetail"]["TotalTax"]
    total = body["TotalAmt"]
    sales = [line for line in body["Line"] if line.get("DetailType") == "SalesItemLineDetail"]
    return {
        "reference": body["DocNumber"],
        "registration_number": body["DocNumber"],
        "external_id": body["Id"],
        "kind": "credit_note" if credit else "invoice",
        "entity": record["entity"],
        "customer_code": body["CustomerRef"]["value"],
        "customer_name": body["CustomerRef"].get("name"),
        "total_excl_vat": sign * (total - tax),
        "total_vat": sign * tax,
        "total_incl_vat": sign * total,
        "total_amt": total,
        "currency": body["CurrencyRef"]["value"],
        "tenant": realm_id,
        "txn_date": body["TxnDate"],
        "due_date": body.get("DueDate"),
        "sync_token": body["SyncToken"],
        "lines": [
            {"amount": line["Amount"], "description": line.get("Description"),
             "item": line["SalesItemLineDetail"]["ItemRef"]["value"],
             "tax_code": line["SalesItemLineDetail"].get("TaxCodeRef", {}).get("value")}
            for line in sales
        ],
    }  # fmt: skip


def _reference_rows(realm: RealmFixture, entity: str) -> list[dict[str, Any]]:
    """The fixture lists (items, tax codes, tax rates, accounts, company) as QuickBooks shows them."""
    meta = {"SyncToken": "0", "domain": "QBO", "sparse": False,
            "MetaData": {"CreateTime": "2024-01-02T01:00:00.000-08:00",
                         "LastUpdatedTime": "2024-01-02T01:00:00.000-08:00"}}  # fmt: skip
    if entity == "Item":
        return [
            meta | {"Id": i.id, "Name": i.name, "FullyQualifiedName": i.name, "Active": i.active,
                    "Type": i.item_type, "Taxable": True,
                    "IncomeAccountRef": {"value": i.income_account,
                                         "name": (a.name if (a := realm.account(i.income_account)) else "")}}
            for i in realm.items
        ]  # fmt: skip
    if entity == "TaxCode":
        return [
            meta | {"Id": t.id, "Name": t.name, "Description": t.name, "Active": t.active, "Taxable": True,
                    "TaxGroup": False,
                    "SalesTaxRateList": {"TaxRateDetail": [
                        {"TaxRateRef": {"value": t.tax_rate_id, "name": f"{t.rate_percent}%"},
                         "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}]},
                    "PurchaseTaxRateList": {"TaxRateDetail": []}}
            for t in realm.tax_codes
        ]  # fmt: skip
    if entity == "TaxRate":
        return [
            meta | {"Id": t.tax_rate_id, "Name": f"{t.rate_percent}%", "RateValue": t.rate_percent,
                    "Active": t.active, "SpecialTaxType": "NONE", "DisplayType": "ReadOnly"}
            for t in realm.tax_codes
        ]  # fmt: skip
    if entity == "Account":
        return [
            meta | {"Id": a.id, "Name": a.name, "FullyQualifiedName": a.name, "Active": True,
                    "AccountType": a.account_type, "AccountSubType": a.account_sub_type,
                    "Classification": "Revenue", "CurrencyRef": {"value": realm.home_currency}}
            for a in realm.accounts
        ]  # fmt: skip
    if entity == "CompanyInfo":
        return [_company_info(realm)]
    raise KeyError(entity)


def _company_info(realm: RealmFixture) -> dict[str, Any]:
    return {
        "Id": "1", "SyncToken": "0", "domain": "QBO", "sparse": False,
        "CompanyName": realm.company_name, "LegalName": realm.company_name, "Country": realm.country,
        "CompanyAddr": {"Country": realm.country}, "SupportedLanguages": "en",
        "NameValue": [{"Name": "HomeCurrency", "Value": realm.home_currency}],
    }  # fmt: skip


def _basic_credentials(authorization: str | None, form: Mapping[str, str]) -> tuple[str, str]:
    """Client id and secret from HTTP Basic (Intuit's way), else from the form."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(encoded.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


# ------------------------------------------------------------------ HTTP


def _answer(
    sandbox: QuickBooksSandbox, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(json_ready(dict(body)), status_code=status, headers=dict(headers or {}))


def _fault_response(sandbox: QuickBooksSandbox, fault: QuickBooksFault) -> JSONResponse:
    return _answer(sandbox, fault.status, sandbox._fault_body(fault), fault.headers)


def _minor_version(sandbox: QuickBooksSandbox, request: Request) -> None:
    raw = request.query_params.get("minorversion")
    if raw is None or raw == "":
        return
    version = int(raw) if raw.isdigit() else None
    if version is None or (version < DEFAULT_MINOR_VERSION and sandbox.config.reject_old_minorversion):
        raise unsupported(
            f"Minor version {raw} is not supported. Minimum supported minor version is "
            f"{DEFAULT_MINOR_VERSION}."
        )


async def _json_body(request: Request) -> Any:
    """The body as JSON with exact decimals (amounts must survive to the cent)."""
    raw = await request.body()
    try:
        return json.loads(raw or b"null", parse_float=Decimal)
    except ValueError as exc:
        raise QuickBooksFault(
            400, "2010", "Request has invalid or unsupported property", "The request body is not valid JSON."
        ) from exc


def batch_kind(payload: Any) -> str:
    """``#create/<entities>`` for a batch that creates (``#create/CreditMemo+Invoice``), else ``#query``.

    One path serves bookings, customer creates and lookups; fault rules and call statistics tell them
    apart by this suffix.
    """
    items = payload.get("BatchItemRequest") if isinstance(payload, Mapping) else None
    if not isinstance(items, list):
        return "#?"
    created = sorted(
        {
            key
            for item in items
            if isinstance(item, Mapping) and item.get("operation") == "create"
            for key in item
            if key[:1].isupper()
        }
    )
    return "#create/" + "+".join(created) if created else "#query"


def describe_request(scope: Scope, body: bytes) -> str:
    """What fault rules match after a batch call's path (see :func:`batch_kind`); "" for other calls."""
    if not route_path(scope).endswith("/batch"):
        return ""
    try:
        return batch_kind(json.loads(body or b"null"))
    except ValueError:
        return "#?"


def _add_api_routes(app: FastAPI, sandbox: QuickBooksSandbox) -> None:
    async def company_call(
        request: Request,
        realm_id: str,
        operation: str,
        work: Callable[[Caller], dict[str, Any]],
        *,
        batch: bool = False,
        replayable: bool = False,
    ) -> Response:
        """One company call: authentication, realm, limits and in-flight place; then minorversion, the
        requestid replay and the work itself."""
        try:
            caller = sandbox.admit(request.headers.get("authorization"), realm_id, operation, batch=batch)
        except QuickBooksFault as fault:
            return _fault_response(sandbox, fault)
        try:
            if sandbox.config.processing_delay_s > 0:
                await asyncio.sleep(sandbox.config.processing_delay_s)
            _minor_version(sandbox, request)
            request_id = request.query_params.get("requestid") if replayable else None
            if request_id:
                replay = sandbox.replayed(realm_id, request_id)
                if replay is not None:
                    return _answer(sandbox, *replay)
            try:
                status, body = 200, work(caller) | {"time": intuit_time(sandbox.clock.now())}
            except QuickBooksFault as fault:
                status, body = fault.status, sandbox._fault_body(fault)
            if request_id:
                sandbox.remember(realm_id, request_id, status, json_ready(body))
            return _answer(sandbox, status, body)
        except QuickBooksFault as fault:
            return _fault_response(sandbox, fault)
        finally:
            sandbox.release(caller)

    def writer(kind: _Kind) -> Callable[[Request, str], Awaitable[Response]]:
        """The ``POST /{entity}`` route of one writable entity (create, or update when the body has an Id)."""

        async def write(request: Request, realm_id: str) -> Response:
            operation = request.query_params.get("operation")
            if operation not in (None, "", "create", "update"):
                fault = unsupported(
                    f"Operation {operation} is not supported for {kind.name} in this sandbox."
                )
                return _fault_response(sandbox, fault)
            try:
                payload = await _json_body(request)
            except QuickBooksFault as fault:
                payload = fault  # answered after authentication and limits, like Intuit
            updating = isinstance(payload, dict) and _present(payload, "Id")

            def work(caller: Caller) -> dict[str, Any]:
                if isinstance(payload, QuickBooksFault):
                    raise payload
                return {kind.name: sandbox.write(caller, kind, payload)}

            verb = "update" if updating else "create"
            return await company_call(request, realm_id, f"{verb} {kind.name}", work, replayable=True)

        return write

    for kind in WRITABLE.values():
        app.add_api_route(f"{API_PREFIX}/{kind.path}", writer(kind), methods=["POST"])

    @app.get(API_PREFIX + "/companyinfo/{info_id}")
    async def company_info(request: Request, realm_id: str, info_id: str) -> Response:
        return await company_call(
            request, realm_id, "read CompanyInfo", lambda caller: sandbox.company_info(caller, info_id)
        )

    @app.get(API_PREFIX + "/preferences")
    async def preferences(request: Request, realm_id: str) -> Response:
        return await company_call(request, realm_id, "read Preferences", sandbox.preferences)

    @app.get(API_PREFIX + "/{entity}/{object_id}")
    async def read(request: Request, realm_id: str, entity: str, object_id: str) -> Response:
        if entity not in READABLE:
            return _fault_response(sandbox, unsupported(f"Entity {entity} is not supported.", 404))
        return await company_call(
            request,
            realm_id,
            f"read {_entity_name(entity)}",
            lambda caller: sandbox.read(caller, entity, object_id),
        )

    @app.get(API_PREFIX + "/query")
    async def query_get(request: Request, realm_id: str) -> Response:
        text = request.query_params.get("query", "")
        return await company_call(request, realm_id, "query", lambda caller: sandbox.query(caller, text))

    @app.post(API_PREFIX + "/query")
    async def query_post(request: Request, realm_id: str) -> Response:
        text = (await request.body()).decode("utf-8", "replace") or request.query_params.get("query", "")
        return await company_call(request, realm_id, "query", lambda caller: sandbox.query(caller, text))

    @app.post(API_PREFIX + "/batch")
    async def batch(request: Request, realm_id: str) -> Response:
        try:
            payload = await _json_body(request)
        except QuickBooksFault as fault:
            payload = fault

        def work(caller: Caller) -> dict[str, Any]:
            if isinstance(payload, QuickBooksFault):
                raise payload
            return sandbox.batch(caller, payload)

        operation = "batch" + batch_kind(payload)
        return await company_call(request, realm_id, operation, work, batch=True, replayable=True)


def _add_oauth_routes(app: FastAPI, sandbox: QuickBooksSandbox) -> None:
    @app.post("/oauth2/v1/tokens/bearer")
    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            return JSONResponse(sandbox.token(request.headers.get("authorization"), form))
        except OAuthError as exc:
            return JSONResponse(exc.body, exc.status)

    @app.post("/oauth2/v1/tokens/revoke")
    async def revoke(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            sandbox.revoke(request.headers.get("authorization"), str(body.get("token", "")))
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, 400)
        except OAuthError as exc:
            return JSONResponse(exc.body, exc.status)
        return Response(status_code=200)

    def discovery(request: Request) -> dict[str, Any]:
        """Intuit's OpenID discovery document, pointing at this mount (intuitlib's ``AuthClient`` reads its
        token endpoint from here when given this URL as its ``environment``)."""
        base = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
        return {
            "issuer": "https://oauth.platform.intuit.com/op/v1",
            "authorization_endpoint": f"{base}/connect/oauth2",
            "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
            "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
            "revocation_endpoint": f"{base}/oauth2/v1/tokens/revoke",
            "jwks_uri": f"{base}/op/v1/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        }

    app.add_api_route("/.well-known/openid_configuration", discovery, methods=["GET"])
    app.add_api_route("/.well-known/openid_configuration/", discovery, methods=["GET"])


def _add_control_routes(app: FastAPI, sandbox: QuickBooksSandbox) -> None:
    """QuickBooks' own control routes, next to the common ones of :func:`~.simulator.add_control_routes`."""
    add_books_routes(app, sandbox)
    add_consent_route(app, sandbox.consent, "realm_id")


def create_app(sandbox: QuickBooksSandbox) -> FastAPI:
    """The QuickBooks Online API of ``sandbox`` as an ASGI app (mounted at ``/quickbooks`` by the server)."""
    app = create_simulator_app(
        "QuickBooks Online sandbox", sandbox, _add_oauth_routes, _add_api_routes, _add_control_routes
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        fault = unsupported(f"{request.method} {route_path(request.scope)}: {exc.detail}", exc.status_code)
        return _fault_response(sandbox, fault)

    return app


def demo_connection(sandbox_url: str) -> dict[str, Any]:
    """The demo connection: ``host`` is the API's base URL (the mount), login/password the app's client
    id and secret; the token endpoint is on another host at Intuit, so the sandbox's is named."""
    base = sandbox_url.rstrip("/") + MOUNT
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": base,
        "login": quickbooks_fixtures.CLIENT_ID,
        "password": quickbooks_fixtures.CLIENT_SECRET,
        "extra": {
            "refresh_token": quickbooks_fixtures.BOOTSTRAP_REFRESH_TOKEN,
            "token_url": base + "/oauth2/v1/tokens/bearer",
            "timeout": 30,
        },
    }


def bookings(sandbox: QuickBooksSandbox) -> list[Booking]:
    """The booked documents of every tenant, in the common terms."""
    return [
        Booking(
            DESCRIPTOR.name,
            str(item["reference"]),
            str(item["registration_number"]),
            str(item["external_id"]),
            Decimal(str(item["total_incl_vat"])),
            Decimal(str(item["total_vat"])),
            item,
        )
        for item in sandbox.booked()
    ]


def bench_slot(slot: int) -> BenchSlot:
    """Bench tenant ``slot``: a company of its own, since QuickBooks counts its windows per company."""
    return BenchSlot({"realm_id": quickbooks_fixtures.bench_realm_id(slot)}, f"bench_quickbooks_{slot:02d}")


def bench_connection(sandbox_url: str, slot: int, limits: BenchLimits) -> dict[str, Any]:
    """The connection of bench company ``slot`` (its consent's refresh token), told the sandbox minute's
    length and a lowered batch limit (QuickBooks sends no rate headers); without one the connector keeps
    Intuit's 40 batch calls a minute."""
    batches = {} if limits.limit is None else {"batches_per_minute": limits.limit}
    refresh_token = quickbooks_fixtures.bench_refresh_token(slot)
    return with_extra(
        demo_connection(sandbox_url), refresh_token=refresh_token, minute_s=limits.minute_s, **batches
    )


def bench_windows(hook: Any, minute_s: float) -> WindowsFromBudget:
    """QuickBooks announces nothing and its minute slides: count the batch calls our budget hands out in
    minutes that open with a call (a sliding limit holds for each of them)."""
    minutes = OpenedWindows(minute_s)
    return WindowsFromBudget(hook.batch_budget, lambda: minutes.end_at(time.time()))


def bench_figures(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The batch calls beside a ``limit_quickbooks`` line's calls (the limit the scenario saturates)."""
    # Operations are named "batch#create/Invoice", "batch#query", ...: every one a batch call.
    calls: Mapping[str, int] = stats.get("calls", {})
    return {"batch_calls": sum(count for operation, count in calls.items() if operation.startswith("batch"))}


SANDBOX = SandboxTool(
    descriptor=DESCRIPTOR,
    mount=MOUNT,
    simulator=QuickBooksSandbox,
    create_app=create_app,
    connection=demo_connection,
    bookings=bookings,
    chaos=ChaosTargets(
        book=Target("POST", r"^/v3/company/[^/]+/batch#create/\S*(Invoice|CreditMemo)"),
        lookup=Target("POST", r"^/v3/company/[^/]+/batch#query$"),
        reads=(Target("GET", r"^/v3/company/"), Target("POST", r"^/v3/company/[^/]+/(query|batch#query)$")),
        api=Target("*", r"^/v3/company/"),
        customers=Target("POST", r"^/v3/company/[^/]+/batch#create/Customer$"),
        batch=True,
    ),
    bench=BenchKnobs(
        limit_switch="batch_minute_limit",
        # 30 invoices a batch call: at 40 batch calls a minute ten minutes would need 12,000 invoices, so the
        # simulator and the connection allow 5. The engine's pages hold whole calls (30 invoices): 1,500
        # invoices and the customers' batch are 51 batch calls, 11 minutes. The request limits (500 a
        # minute, 10 a second) stay real; a run of batch calls never nears them.
        limit_run=LimitRun(invoices=1500, time_scale=30, limit=5, real_limit=40),
        quick_limit_run=LimitRun(invoices=150, time_scale=60, limit=2, real_limit=40),
        connection=bench_connection,
        windows=bench_windows,
        limit_figures=bench_figures,
        template_integration=7,
        # Pages of 30, one batch each, plus a customer query and a customer batch (a tiny quick backlog).
        max_calls_per_invoice=0.06,
        slots=quickbooks_fixtures.BENCH_REALMS,
        slot=bench_slot,
        accepted=(("21", "9", "0"), ("8000", "8010")),
        limits_off={"limits_enabled": False},
        # No rate headers: the connector counts its minute, second and batch windows itself.
        unpaced={
            "requests_per_minute": 1_000_000,
            "requests_per_second": 1_000_000,
            "batches_per_minute": 1_000_000,
        },
    ),
    refusals=(
        Refusal("21", "8020", "config", "Invalid Reference Id"),
        # Dated inside the company's closed books.
        Refusal(
            "21",
            "8000",
            "config",
            "Account Period Closed",
            quickbooks_fixtures.CLOSING_DATE - timedelta(days=3),
        ),
    ),
)
"""This simulator as the sandbox server, the demo and the harnesses find it (by the tool's name)."""
