"""A faithful simulator of Xero's Accounting API for sales invoices, credit notes and contacts.

Reference: ``shared/reference/xero.md``; wire contract: the issue-6 contract. What a connector (or Xero's
own Python SDK, which the contract tests drive unmodified) depends on is reproduced:

- OAuth 2.0 at ``/identity/connect/token``: 30-minute access tokens, refresh tokens that rotate (a used
  one is refused with 400 ``{"error": "invalid_grant"}``) and live 60 days unused; ``/connections`` lists
  the organisations the token may reach. Client credentials come as HTTP Basic or as form fields.
- The Accounting API under ``/api.xro/2.0``: the ``xero-tenant-id`` header on every call, array bodies
  and answers (``{"Invoices": [...]}``) in Xero's envelope (``Id``, ``Status``, ``ProviderName``,
  ``DateTimeUTC``), ``/Date(ms+0000)/`` dates with a ``DateString`` sibling, amounts as JSON numbers.
- Validation as Xero reports it: with ``summarizeErrors`` absent or true, any invalid element fails the
  whole call with 400 ``ValidationException`` and ``Elements`` (nothing is created); with
  ``summarizeErrors=false`` every element is answered in request order with ``HasErrors``,
  ``StatusAttributeString`` and ``ValidationErrors``, and the valid ones are created.
- ``Idempotency-Key`` on PUT/POST: same key, route and body within the window replays the first answer
  without processing it again; the same key with another request is refused.
- Limits per organisation (60/minute, 5,000/day, 5 in flight) and per app (10,000/minute), with
  ``X-MinLimit-Remaining``, ``X-DayLimit-Remaining`` and ``X-AppMinLimit-Remaining`` on every API answer
  and 429 + ``Retry-After`` + ``X-Rate-Limit-Problem`` over a limit.

Choices where Xero publishes nothing (each is what connectors are tested against):

- Rate windows: a minute window opens with the first counted call and lasts 60 sandbox seconds (Xero's
  window is rolling; for a client that paces itself the two agree, and ``Retry-After`` is exact). The
  day is the sandbox's UTC calendar day. ``Retry-After`` is whole real seconds (the time scale applied),
  at least 1; a ``concurrent`` refusal says 1. Refused calls (401, 403, 429) are not counted; the token
  and ``/connections`` calls never are. ``processing_delay_s`` makes each API call hold its slot that
  long, so tests can provoke the concurrency limit.
- 401 bodies are ``{"type", "title": "Unauthorized", "status": 401, "detail", "instance"}`` with detail
  ``TokenExpired: token expired at <UTC time>`` for an expired token and ``AuthenticationUnsuccessful``
  for a missing or unknown one; a missing, unknown or not-connected ``xero-tenant-id`` is a 403 with
  detail ``AuthorizationUnsuccessful``.
- Refresh-token grace (``refresh_grace_s``, off by default): within it a just-used refresh token may be
  redeemed again (the answer to the first redemption may have been lost), issuing a new pair.
- Idempotency: keys are per app and organisation; answers with status below 500 are cached for
  ``idempotency_window_s`` (6 minutes); the body, method, path and query string must match.
  A replay is not counted in :meth:`XeroSandbox.create_posts`, but it is an API call for the limits.
- PUT and POST both create. A POSTed contact with an existing ``ContactID`` is updated; an invoice or
  credit note naming an existing id is refused (updates of documents are not simulated).
- An invoice's contact is named by ``Contact.ContactID`` only (Xero can also create one by name; not
  simulated). Lines need ``AccountCode`` of an active revenue account; ``TaxType`` defaults to the
  account's; ``NoTax`` lines carry ``NONE``. ``LineAmount`` when given wins over quantity x unit amount.
  Tax per line: ``TaxAmount`` as given, else rounded half up to the cent. Negative lines (a discount, a
  returned item) are booked like any other (Xero-OpenAPI issue #429 posts a negative ``UnitAmount``); a
  document whose total is negative is kept as a draft but refused as ``SUBMITTED`` or ``AUTHORISED``
  (Kindo's "Xero Rapid Integration: how to process a negative invoice": Xero creates the draft and will
  not approve it; credit notes carry positive amounts). The refusal's text is ours: Xero's is unconfirmed.
- Missing numbers are assigned from the organisation's sequence (``INV-0001``, ``CN-0001``) skipping
  numbers in use; refused elements consume none. Number uniqueness is exact text; contact-name
  uniqueness and ``where`` text comparisons ignore case.
- Lists: without ``page`` everything matching is answered; with ``page`` 100 per page (``pageSize`` up
  to 1,000) plus a ``pagination`` block. ``where`` supports ``Field=="text"``, ``Field==true``,
  ``Field==Guid("...")`` (also ``!=``) joined by ``AND``/``OR`` (AND binds tighter), nested fields with
  dots (``Contact.ContactID``). Anything else is a 400 ``QueryParseException``. Unknown ids are a 404.

:class:`XeroSandbox` holds the state behind one re-entrant lock; :func:`create_app` exposes it over HTTP,
with the common control API under ``/_sandbox`` plus ``bookings``, ``customers`` and ``consent``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import math
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import requests
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from invoice_sync.connectors.xero import DESCRIPTOR
from invoice_sync_dev.sandbox import xero_fixtures as fx
from invoice_sync_dev.sandbox.faults import CannedResponse, Scope, partial_json_batch
from invoice_sync_dev.sandbox.simulator import (
    OAuthError,
    Simulator,
    SimulatorConfig,
    add_books_routes,
    add_consent_route,
    create_simulator_app,
)
from invoice_sync_dev.sandbox.tools import (
    BenchKnobs,
    BenchLimits,
    Booking,
    ChaosTargets,
    DemoSlot,
    LimitRun,
    OpenedWindows,
    Refusal,
    SandboxTool,
    Target,
    WindowsFromAnswers,
    with_extra,
)
from invoice_sync_dev.sandbox.xero_fixtures import TenantFixture, XeroFixtures

MOUNT = "/xero"
"""Where the sandbox server serves this simulator (see :data:`SANDBOX`)."""

API_PREFIX = "/api.xro/2.0"
TOKEN_PATH = "/identity/connect/token"
CONNECTIONS_PATH = "/connections"
ACCESS_TOKEN_LIFETIME_S = 1800
REFRESH_TOKEN_LIFETIME = timedelta(days=60)
AUTH_CODE_LIFETIME = timedelta(minutes=5)
IDEMPOTENCY_KEY_MAX_LENGTH = 128
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
RATE_WINDOW = timedelta(minutes=1)
ZERO_GUID = "00000000-0000-0000-0000-000000000000"

# Error texts (Xero's where known, else chosen; see the module docstring).
VALIDATION_MESSAGE = "A validation exception occurred"
INVOICE_NUMBER_NOT_UNIQUE = "Invoice # must be unique."
CREDIT_NOTE_NUMBER_NOT_UNIQUE = "Credit Note # must be unique."
CONTACT_REQUIRED = "A Contact must be specified for this type of transaction"
CONTACT_NOT_FOUND = "The contact with ContactID '{}' could not be found."
CONTACT_NAME_REQUIRED = "The contact name must be specified."
CONTACT_NAME_NOT_UNIQUE = (
    "The contact name {} is already assigned to another contact. "
    "The contact name must be unique across all active contacts."
)
CONTACT_NUMBER_TOO_LONG = "The Contact Number must not exceed 50 characters."
CONTACT_NAME_TOO_LONG = "The contact name must not exceed 255 characters."
EMAIL_INVALID = "Email address must be valid."
LINE_ITEMS_REQUIRED = "At least one line item must be specified."
ACCOUNT_CODE_REQUIRED = "Account code must be specified"
ACCOUNT_CODE_INVALID = "Account code '{}' is not a valid code for this document."
ACCOUNT_CODE_ARCHIVED = (
    "Account code '{}' has been archived, or has been deleted. Each line item must reference a valid account."
)
TAX_TYPE_INVALID = "The TaxType code {} does not exist or cannot be used for this type of transaction."
INVALID_STATUS = "{} not of valid status for creation"
INVALID_TYPE = "{} Type must be {}."
INVALID_LINE_AMOUNT_TYPES = "LineAmountTypes must be Exclusive, Inclusive or NoTax."
CURRENCY_NOT_SUBSCRIBED = "Organisation is not subscribed to currency {}"
NEGATIVE_TOTAL = "The document total must not be negative."
NUMBER_TOO_LONG = "{} must be 255 characters or less."
INVALID_DATE = "{} '{}' is not a valid date."
INVALID_NUMBER = "{} '{}' is not a valid number."
DOCUMENT_UPDATE_UNSUPPORTED = "{} '{}' already exists: updating documents is not supported by this sandbox."
IDEMPOTENCY_MISMATCH = "Idempotency Key: {} is used with a different request."
IDEMPOTENCY_KEY_TOO_LONG = "Idempotency Key must be 128 characters or less."
NOT_FOUND_TEXT = "The resource you're looking for cannot be found"

_CENT = Decimal("0.01")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_CLAUSE = re.compile(
    r"^\s*(?P<field>[A-Za-z][A-Za-z0-9.]*)\s*(?P<op>==|!=)\s*"
    r'(?P<value>"(?:[^"\\]|\\.)*"|Guid\("[^"]*"\)|true|false|-?\d+(?:\.\d+)?)\s*$'
)
_STATUSES = ("DRAFT", "SUBMITTED", "AUTHORISED")
_LINE_AMOUNT_TYPES = ("Exclusive", "Inclusive", "NoTax")
CONTACT_WRITABLE = (
    "Name", "ContactNumber", "AccountNumber", "FirstName", "LastName", "EmailAddress", "TaxNumber",
    "CompanyNumber", "Addresses", "Phones", "DefaultCurrency", "ContactStatus",
)  # fmt: skip


class XeroApiError(Exception):
    """A failing API call: HTTP status, JSON body (or text) and extra headers."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def problem_body(status: int, title: str, detail: str) -> dict[str, Any]:
    """The identity layer's problem body (401, 403, 429, injected errors)."""
    return {
        "type": None,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
        "extensions": {},
    }


def validation_body(elements: list[dict[str, Any]], message: str = VALIDATION_MESSAGE) -> dict[str, Any]:
    """Xero's 400 ``ValidationException``; the SDK reads ``Elements[0].ValidationErrors[0].Message``."""
    return {"ErrorNumber": 10, "Type": "ValidationException", "Message": message, "Elements": elements}


def _query_error(message: str) -> XeroApiError:
    return XeroApiError(400, {"ErrorNumber": 16, "Type": "QueryParseException", "Message": message})


def _post_data_error(message: str) -> XeroApiError:
    return XeroApiError(400, {"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": message})


def _unauthorized(detail: str) -> XeroApiError:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return XeroApiError(401, problem_body(401, "Unauthorized", detail), headers)


def _forbidden() -> XeroApiError:
    return XeroApiError(403, problem_body(403, "Forbidden", "AuthorizationUnsuccessful"))


@dataclass(slots=True)
class XeroConfig(SimulatorConfig):
    """The switches tests flip through ``POST /_sandbox/config``; defaults are Xero's real values."""

    minute_limit: int = 60
    day_limit: int = 5000
    concurrent_limit: int = 5
    app_minute_limit: int = 10_000
    limits_enabled: bool = True
    processing_delay_s: float = 0.0
    """Real seconds each admitted API call holds its concurrency slot before it is processed."""
    refresh_grace_s: int = 0
    """Sandbox seconds a used refresh token may still be redeemed (0: strictly single use)."""
    idempotency_window_s: int = 360


@dataclass(frozen=True, slots=True)
class ApiCall:
    """An admitted API call: which app, which organisation, and the limit headers to answer with."""

    client_id: str
    tenant: TenantFixture
    operation: str
    headers: dict[str, str]


@dataclass(slots=True)
class _Window:
    opened_at: datetime
    count: int = 0


@dataclass(frozen=True, slots=True)
class _DocumentKind:
    """What differs between invoices and credit notes."""

    name: str  # "invoice" | "credit_note"
    label: str  # how Xero names it in messages
    collection: str  # body and answer key
    type: str  # the only Type accepted
    id_field: str
    number_field: str
    not_unique: str

    def prefix(self, tenant: TenantFixture) -> str:
        return tenant.invoice_prefix if self.name == "invoice" else tenant.credit_note_prefix


INVOICE = _DocumentKind(
    "invoice", "Invoice", "Invoices", "ACCREC", "InvoiceID", "InvoiceNumber", INVOICE_NUMBER_NOT_UNIQUE
)
CREDIT_NOTE = _DocumentKind(
    "credit_note", "Credit Note", "CreditNotes", "ACCRECCREDIT", "CreditNoteID", "CreditNoteNumber",
    CREDIT_NOTE_NUMBER_NOT_UNIQUE,
)  # fmt: skip
_KINDS = {"Invoices": INVOICE, "CreditNotes": CREDIT_NOTE}


# ------------------------------------------------------------------------------------ wire helpers


def ms_date(moment: datetime) -> str:
    """Xero's JSON date: ``/Date(1551916800000+0000)/``."""
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def to_wire(value: Any) -> Any:
    """JSON form of a stored document: ``/Date(ms+0000)/`` instants, numbers for Decimals; ``Date`` and
    ``DueDate`` get a ``DateString`` sibling, as Xero sends them. Empty fields are left out, as Xero does
    (the SDK would read a ``null`` text field as the text ``"None"``)."""
    if isinstance(value, datetime):
        return ms_date(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        wire = {k: to_wire(v) for k, v in value.items() if v is not None and not k.startswith("_")}
        for key in ("Date", "DueDate"):
            if isinstance(value.get(key), datetime):
                wire[f"{key}String"] = value[key].replace(tzinfo=None).isoformat(timespec="seconds")
        return wire
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def parse_date(value: Any) -> datetime | None:
    """A date as Xero accepts it (``2026-03-02``, ``2026-03-02T00:00:00``, ``/Date(ms[+0000])/``), at
    midnight UTC; None when it is none of those."""
    if not isinstance(value, str):
        return None
    match = _MS_DATE.match(value.strip())
    try:
        if match:
            moment = datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
        else:
            moment = datetime.fromisoformat(value.strip())
    except (ValueError, OverflowError):
        return None
    return datetime.combine(moment.date(), datetime.min.time(), tzinfo=UTC)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _guid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _truthy(value: str | None) -> bool | None:
    """A boolean query parameter (the SDK sends ``False``, browsers ``false``); None when absent."""
    return None if value is None else value.strip().lower() not in ("false", "0", "no")


# ------------------------------------------------------------------------------------ where filters

Predicate = Callable[[Mapping[str, Any]], bool]


def _field(row: Mapping[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _clause(text: str) -> Predicate:
    match = _CLAUSE.match(text)
    if match is None:
        raise _query_error(f"The where clause could not be parsed: {text.strip()}")
    path, negate, raw = match.group("field"), match.group("op") == "!=", match.group("value")
    if raw.startswith("Guid("):
        expected: Any = (_guid(raw[6:-2]) or raw[6:-2]).lower()
    elif raw.startswith('"'):
        expected = json.loads(raw).casefold()
    elif raw in ("true", "false"):
        expected = raw == "true"
    else:
        expected = Decimal(raw)

    def matches(row: Mapping[str, Any]) -> bool:
        actual = _field(row, path)
        if isinstance(expected, str):
            equal = actual is not None and str(actual).casefold() == expected
        elif isinstance(expected, bool):
            equal = actual is expected
        else:
            equal = _decimal(actual) == expected
        return equal != negate

    return matches


def parse_where(text: str) -> Predicate:
    """``A=="x" OR B=="y" AND C==true`` as a predicate on stored rows (AND binds tighter than OR)."""
    alternatives = [[_clause(part) for part in _split_outside_quotes(branch, "AND")]
                    for branch in _split_outside_quotes(text.strip(), "OR")]  # fmt: skip
    return lambda row: any(all(c(row) for c in branch) for branch in alternatives)


def _split_outside_quotes(text: str, keyword: str) -> list[str]:
    """``text`` split at ``keyword`` where it stands between clauses, not inside a quoted value
    (a contact named "Peeters AND Co" is one value)."""
    parts: list[str] = []
    start = 0
    for match in re.finditer(rf'"(?:[^"\\]|\\.)*"|\s+{keyword}\s+', text):
        if not match.group().startswith('"'):
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return parts


# ------------------------------------------------------------------------------------ the simulator


class XeroSandbox(Simulator[XeroFixtures, XeroConfig]):
    """The simulated Xero: app clients, tokens, organisations with contacts, invoices and credit notes."""

    config_class = XeroConfig

    # ---------------------------------------------------------------------------------------- state

    def _default_fixtures(self) -> XeroFixtures:
        return fx.default_fixtures()

    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        if saved:
            self._books: dict[str, Any] = copy.deepcopy({k: v for k, v in saved.items() if k != "saved_at"})
            return
        self._books = {
            "tenants": {
                tenant_id: {"contacts": {}, "invoices": {}, "credit_notes": {}, "next_number": {}}
                for tenant_id in self.fixtures.tenants
            },
            "sequence": 0,
            "refresh_tokens": {
                client.bootstrap_refresh_token: self._refresh_record(client.client_id, list(client.tenants))
                for client in self.fixtures.clients
            },
            "access_tokens": {},
            "auth_codes": {},
            "idempotency": {},
            "day_counts": {},
        }

    def _persistable(self) -> dict[str, Any]:
        """Books, tokens, idempotency answers and daily call counters (copied)."""
        return copy.deepcopy(self._books)

    def _reset_counters(self) -> None:
        self._minute_windows: dict[str, _Window] = {}
        self._app_windows: dict[str, _Window] = {}
        self._in_flight: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()
        self._token_refreshes = 0
        self._replays = 0
        self._create_posts: Counter[str] = Counter()

    def _tenant_books(self, tenant_id: str) -> dict[str, Any]:
        return self._books["tenants"][tenant_id]  # type: ignore[no-any-return]  # the books are untyped JSON

    # ---------------------------------------------------------------------------------------- OAuth

    def _refresh_record(
        self, client_id: str, tenants: list[str], chain_id: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now() if hasattr(self, "clock") else datetime.now(UTC)
        return {
            "client_id": client_id,
            "chain_id": chain_id or uuid.uuid4().hex,
            "tenants": tenants,
            "issued_at": now,
            "used_at": None,
        }

    def token(self, form: Mapping[str, str], authorization: str | None = None) -> dict[str, Any]:
        """``POST /identity/connect/token``: redeem a refresh token or an authorization code."""
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(400, "invalid_client") from None
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None or client.client_secret != client_secret:
                raise OAuthError(400, "invalid_client")
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                chain_id, tenants = self._redeem_refresh_token(client_id, form.get("refresh_token", ""))
            elif grant_type == "authorization_code":
                chain_id, tenants = self._redeem_code(client_id, form.get("code", ""))
            else:
                raise OAuthError(400, "unsupported_grant_type")
            return self._issue(client_id, chain_id, tenants)

    def _redeem_refresh_token(self, client_id: str, token: str) -> tuple[str, list[str]]:
        record = self._books["refresh_tokens"].get(token)
        now = self.clock.now()
        if record is None or record["client_id"] != client_id:
            raise OAuthError(400, "invalid_grant")
        if record["issued_at"] + REFRESH_TOKEN_LIFETIME <= now:
            raise OAuthError(400, "invalid_grant")
        used_at = record["used_at"]
        if used_at is not None and (now - used_at).total_seconds() >= self.config.refresh_grace_s:
            raise OAuthError(400, "invalid_grant")
        record["used_at"] = used_at or now
        return record["chain_id"], list(record["tenants"])

    def _redeem_code(self, client_id: str, code: str) -> tuple[str, list[str]]:
        record = self._books["auth_codes"].pop(code, None)
        if record is None or record["client_id"] != client_id or record["expires_at"] <= self.clock.now():
            raise OAuthError(400, "invalid_grant")
        return uuid.uuid4().hex, list(record["tenants"])

    def _issue(self, client_id: str, chain_id: str, tenants: list[str]) -> dict[str, Any]:
        now = self.clock.now()
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._books["access_tokens"][access] = {
            "client_id": client_id,
            "chain_id": chain_id,
            "tenants": tenants,
            "issued_at": now,
            "expires_at": now + timedelta(seconds=ACCESS_TOKEN_LIFETIME_S),
        }
        self._books["refresh_tokens"][refresh] = self._refresh_record(client_id, tenants, chain_id)
        self._token_refreshes += 1
        self._prune_tokens(now)
        self._changed()
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": max(1, round(self.clock.sandbox_seconds_to_real(ACCESS_TOKEN_LIFETIME_S))),
            "token_type": "Bearer",
            "scope": " ".join(fx.SCOPES),
        }

    def _prune_tokens(self, now: datetime) -> None:
        """Forget long-dead tokens so a long benchmark does not grow the state file."""
        access = self._books["access_tokens"]
        for token in [t for t, a in access.items() if a["expires_at"] < now - timedelta(days=1)]:
            del access[token]
        refresh = self._books["refresh_tokens"]
        horizon = now - REFRESH_TOKEN_LIFETIME
        for token in [t for t, r in refresh.items() if r["issued_at"] < horizon]:
            del refresh[token]

    def consent(self, client_id: str, tenants: Sequence[str] | None = None) -> dict[str, str]:
        """A user (re)connects the app: a fresh refresh token and a single-use authorization code."""
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None:
                raise ValueError(f"unknown client_id {client_id!r}")
            allowed = list(tenants) if tenants is not None else list(client.tenants)
            unknown = [t for t in allowed if t not in self.fixtures.tenants]
            if unknown:
                raise ValueError(f"unknown tenant(s) {unknown}")
            refresh = secrets.token_urlsafe(32)
            self._books["refresh_tokens"][refresh] = self._refresh_record(client_id, allowed)
            code = secrets.token_urlsafe(24)
            expires = self.clock.now() + AUTH_CODE_LIFETIME
            self._books["auth_codes"][code] = {
                "client_id": client_id,
                "tenants": allowed,
                "expires_at": expires,
            }
            self._changed()
            return {"refresh_token": refresh, "code": code}

    def expire_tokens(self) -> int:
        """Every access token expires now; returns how many were live."""
        with self.lock:
            now = self.clock.now()
            live = [a for a in self._books["access_tokens"].values() if a["expires_at"] > now]
            for access in live:
                access["expires_at"] = now
            self._changed()
            return len(live)

    def _authenticate(self, authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        access = self._books["access_tokens"].get(token.strip()) if scheme.lower() == "bearer" else None
        if access is None:
            raise _unauthorized("AuthenticationUnsuccessful")
        if access["expires_at"] <= self.clock.now():
            expired = access["expires_at"].strftime("%m/%d/%Y %H:%M:%S")
            raise _unauthorized(f"TokenExpired: token expired at {expired}")
        return access  # type: ignore[no-any-return]  # the books are untyped JSON

    def connections(self, authorization: str | None) -> list[dict[str, Any]]:
        """``GET /connections``: the organisations the token may reach (not counted toward limits)."""
        with self.lock:
            access = self._authenticate(authorization)
            created = access["issued_at"].replace(tzinfo=None).isoformat(timespec="seconds")
            return [
                {
                    "id": fx.fixture_guid("connection", access["client_id"], tenant_id),
                    "authEventId": fx.fixture_guid("auth-event", access["chain_id"]),
                    "tenantId": tenant_id,
                    "tenantType": "ORGANISATION",
                    "tenantName": self.fixtures.tenants[tenant_id].name,
                    "createdDateUtc": created,
                    "updatedDateUtc": created,
                }
                for tenant_id in access["tenants"]
            ]

    # ----------------------------------------------------------------------------------------- limits

    def admit(self, authorization: str | None, tenant_id: str | None, operation: str) -> ApiCall:
        """Authenticate an API call, check its organisation and take a slot of every limit."""
        with self.lock:
            access = self._authenticate(authorization)
            tenant_id = (tenant_id or "").strip().lower()
            if tenant_id not in access["tenants"] or tenant_id not in self.fixtures.tenants:
                raise _forbidden()
            client_id = access["client_id"]
            now = self.clock.now()
            minute = self._window(self._minute_windows, tenant_id, now)
            app_minute = self._window(self._app_windows, client_id, now)
            day = self._day_count(tenant_id, now)
            if self.config.limits_enabled:
                problem = self._problem(minute, app_minute, day["count"], tenant_id)
                if problem is not None:
                    self._rate_limited[problem] += 1
                    headers = self._limit_headers(minute, app_minute, day["count"])
                    headers |= {"Retry-After": str(self._retry_after(problem, minute, app_minute, now)),
                                "X-Rate-Limit-Problem": problem}  # fmt: skip
                    detail = f"Rate limit exceeded: {problem}"
                    raise XeroApiError(429, problem_body(429, "Too Many Requests", detail), headers)
            minute.count += 1
            app_minute.count += 1
            day["count"] += 1
            self._in_flight[tenant_id] += 1
            self._calls[operation] += 1
            headers = self._limit_headers(minute, app_minute, day["count"])
            return ApiCall(client_id, self.fixtures.tenants[tenant_id], operation, headers)

    def release(self, call: ApiCall) -> None:
        """The call is answered: its concurrency slot is free again."""
        with self.lock:
            self._in_flight[call.tenant.tenant_id] -= 1

    def _problem(self, minute: _Window, app_minute: _Window, day_count: int, tenant_id: str) -> str | None:
        if day_count >= self.config.day_limit:
            return "day"
        if minute.count >= self.config.minute_limit:
            return "minute"
        if app_minute.count >= self.config.app_minute_limit:
            return "appminute"
        if self._in_flight[tenant_id] >= self.config.concurrent_limit:
            return "concurrent"
        return None

    @staticmethod
    def _window(windows: dict[str, _Window], key: str, now: datetime) -> _Window:
        window = windows.get(key)
        if window is None or now >= window.opened_at + RATE_WINDOW:
            window = windows[key] = _Window(now)
        return window

    def _day_count(self, tenant_id: str, now: datetime) -> dict[str, Any]:
        today = now.date().isoformat()
        counter: dict[str, Any] = self._books["day_counts"].setdefault(tenant_id, {"day": today, "count": 0})
        if counter["day"] != today:
            counter["day"], counter["count"] = today, 0
        return counter

    def _limit_headers(
        self, minute: _Window | None, app_minute: _Window | None, day_count: int
    ) -> dict[str, str]:
        return {
            "X-MinLimit-Remaining": str(max(0, self.config.minute_limit - (minute.count if minute else 0))),
            "X-DayLimit-Remaining": str(max(0, self.config.day_limit - day_count)),
            "X-AppMinLimit-Remaining": str(
                max(0, self.config.app_minute_limit - (app_minute.count if app_minute else 0))
            ),
        }

    def _retry_after(self, problem: str, minute: _Window, app_minute: _Window, now: datetime) -> int:
        """Whole real seconds until the refused limit has room again (at least 1)."""
        if problem == "concurrent":
            return 1
        if problem == "day":
            left = (_midnight(now) + timedelta(days=1) - now).total_seconds()
        else:
            window = minute if problem == "minute" else app_minute
            left = (window.opened_at + RATE_WINDOW - now).total_seconds()
        return max(1, math.ceil(self.clock.sandbox_seconds_to_real(max(left, 0.0))))

    def _fault_partial(self) -> Callable[[bytes], bytes | None]:
        """A PUT or POST carries an array of invoices, credit notes or contacts: part of it is committed."""
        return partial_json_batch("Invoices", "CreditNotes", "Contacts")

    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        """An injected error in the problem shape Xero's gateway answers with."""
        titles = {
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        body = problem_body(status, titles.get(status, "Error"), message)
        return CannedResponse(status, json.dumps(body).encode())

    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """An injected minute-limit 429 with the caller's own counters, like a real one."""
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        with self.lock:
            tenant_id = headers.get("xero-tenant-id", "").strip().lower()
            now = self.clock.now()
            minute = self._minute_windows.get(tenant_id)
            day = self._books["day_counts"].get(tenant_id, {}).get("count", 0)
            limits = self._limit_headers(minute, None, day) | {"X-MinLimit-Remaining": "0"}
            retry = max(1, math.ceil(self.clock.sandbox_seconds_to_real(60)))
            if minute is not None and now < minute.opened_at + RATE_WINDOW:
                retry = self._retry_after("minute", minute, minute, now)
            self._rate_limited["minute"] += 1
        limits |= {"Retry-After": str(retry), "X-Rate-Limit-Problem": "minute"}
        body = problem_body(429, "Too Many Requests", "Rate limit exceeded: minute")
        return CannedResponse(429, json.dumps(body).encode(), tuple(limits.items()))

    # ------------------------------------------------------------------------------------ idempotency

    def write(
        self,
        call: ApiCall,
        collection: str,
        method: str,
        query: Mapping[str, str],
        body: bytes,
        key: str | None,
    ) -> tuple[int, Any]:
        """A PUT or POST: replayed from the idempotency cache, refused as a key mismatch, or processed."""
        with self.lock:
            if key is None:
                return self._process_write(call, collection, method, query, body)
            if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
                return 400, validation_body([{"ValidationErrors": [{"Message": IDEMPOTENCY_KEY_TOO_LONG}]}])
            now = self.clock.now()
            cache = self._books["idempotency"]
            for stale in [k for k, e in cache.items() if e["expires_at"] <= now]:
                del cache[stale]
            slot = f"{call.client_id}|{call.tenant.tenant_id}|{key}"
            canonical = json.dumps(sorted(query.items()))
            fingerprint = hashlib.sha256(f"{method} {collection} {canonical}\n".encode() + body).hexdigest()
            cached = cache.get(slot)
            if cached is not None:
                if cached["fingerprint"] != fingerprint:
                    message = IDEMPOTENCY_MISMATCH.format(key)
                    return 400, validation_body([{"ValidationErrors": [{"Message": message}]}], message)
                self._replays += 1
                return cached["status"], copy.deepcopy(cached["body"])
            status, answer = self._process_write(call, collection, method, query, body)
            if status < 500:
                expires = now + timedelta(seconds=self.config.idempotency_window_s)
                cache[slot] = {
                    "fingerprint": fingerprint,
                    "status": status,
                    "body": answer,
                    "expires_at": expires,
                }
                self._changed()
            return status, answer

    def _process_write(
        self, call: ApiCall, collection: str, method: str, query: Mapping[str, str], body: bytes
    ) -> tuple[int, Any]:
        summarize = _truthy(query.get("summarizeErrors")) is not False
        try:
            elements = _elements(body, collection)
        except XeroApiError as exc:
            return exc.status, exc.body
        if collection == "Contacts":
            status, items = self._write_contacts(call.tenant, elements, summarize)
        else:
            status, items = self._write_documents(call.tenant, _KINDS[collection], elements, summarize)
        if status != 200:
            return status, items
        return 200, self._envelope(call, collection, items)

    def _envelope(self, call: ApiCall, collection: str, items: Any) -> dict[str, Any]:
        client = self.fixtures.client(call.client_id)
        return {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": client.app_name if client else fx.APP_NAME,
            "DateTimeUTC": ms_date(self.clock.now()),
            collection: items,
        }

    # --------------------------------------------------------------------------------------- contacts

    def _write_contacts(self, tenant: TenantFixture, elements: list[Any], summarize: bool) -> tuple[int, Any]:
        contacts: dict[str, dict[str, Any]] = self._tenant_books(tenant.tenant_id)["contacts"]
        checked: list[tuple[Any, list[str], dict[str, Any] | None]] = []
        claimed: dict[str, str] = {}  # casefolded name -> contact id, of this batch
        for element in elements:
            errors, contact = self._check_contact(contacts, element, claimed)
            checked.append((element, errors, contact))
        if summarize and any(errors for _, errors, _ in checked):
            return 400, validation_body([_echo_contact(e, errs) for e, errs, _ in checked if errs])
        now = self.clock.now()
        answers = []
        for element, errors, contact in checked:
            if errors or contact is None:
                answers.append(_echo_contact(element, errors))
                continue
            contact["UpdatedDateUTC"] = now
            contacts[contact["ContactID"]] = contact
            answers.append(to_wire(contact) | {"HasValidationErrors": False, "HasErrors": False,
                                               "StatusAttributeString": "OK"})  # fmt: skip
        if any(contact is not None and not errors for _, errors, contact in checked):
            self._changed()
        return 200, answers

    def _check_contact(
        self, contacts: Mapping[str, dict[str, Any]], element: Any, claimed: dict[str, str]
    ) -> tuple[list[str], dict[str, Any] | None]:
        if not isinstance(element, dict):
            return [CONTACT_NAME_REQUIRED], None
        errors: list[str] = []
        existing = None
        if element.get("ContactID"):
            existing = contacts.get(_guid(element["ContactID"]) or "")
            if existing is None:
                return [CONTACT_NOT_FOUND.format(element["ContactID"])], None
        contact = copy.deepcopy(existing) if existing else _new_contact()
        contact |= {k: copy.deepcopy(element[k]) for k in CONTACT_WRITABLE if k in element}
        name = str(contact.get("Name") or "").strip()
        contact["Name"] = name
        if not name:
            errors.append(CONTACT_NAME_REQUIRED)
        elif len(name) > 255:
            errors.append(CONTACT_NAME_TOO_LONG)
        if len(str(contact.get("ContactNumber") or "")) > 50:
            errors.append(CONTACT_NUMBER_TOO_LONG)
        email = contact.get("EmailAddress")
        if email and not _EMAIL.match(str(email)):
            errors.append(EMAIL_INVALID)
        if name and contact.get("ContactStatus", "ACTIVE") == "ACTIVE":
            folded = name.casefold()
            own_id = contact["ContactID"]
            clash = claimed.get(folded, own_id) != own_id or any(
                c["Name"].casefold() == folded and c["ContactStatus"] == "ACTIVE" and c["ContactID"] != own_id
                for c in contacts.values()
            )
            if clash:
                errors.append(CONTACT_NAME_NOT_UNIQUE.format(name))
            else:
                claimed[folded] = contact["ContactID"]
        return errors, (None if errors else contact)

    # ------------------------------------------------------------------------- invoices, credit notes

    def _write_documents(
        self, tenant: TenantFixture, kind: _DocumentKind, elements: list[Any], summarize: bool
    ) -> tuple[int, Any]:
        books = self._tenant_books(tenant.tenant_id)
        stored: dict[str, dict[str, Any]] = books[f"{kind.name}s"]
        used = {d[kind.number_field] for d in stored.values()}
        next_number = int(books["next_number"].get(kind.name, 1))
        checked: list[tuple[Any, list[str], dict[str, Any] | None]] = []
        for element in elements:
            errors, document = self._check_document(tenant, kind, element)
            if document is not None and not errors:
                number = document[kind.number_field]
                if number is None:
                    next_number, number = _next_free(kind.prefix(tenant), next_number, used)
                    document[kind.number_field] = number
                elif number in used:
                    errors.append(kind.not_unique)
                used.add(number)
            reference = document[kind.number_field] if document else None
            self._create_posts[
                str(reference if reference is not None else _text(element, kind.number_field))
            ] += 1
            checked.append((element, errors, None if errors else document))
        if summarize and any(errors for _, errors, _ in checked):
            return 400, validation_body([_echo_document(kind, e, errs) for e, errs, _ in checked if errs])
        answers = []
        for element, errors, document in checked:
            if document is None:
                answers.append(_echo_document(kind, element, errors))
                continue
            self._books["sequence"] += 1
            document["_sequence"] = self._books["sequence"]
            stored[document[kind.id_field]] = document
            if document["Status"] == "AUTHORISED":
                contact = self._tenant_books(tenant.tenant_id)["contacts"][document["Contact"]["ContactID"]]
                contact["IsCustomer"] = True
            answers.append(to_wire(document) | {"HasErrors": False, "StatusAttributeString": "OK"})
        if any(document is not None for _, _, document in checked):
            books["next_number"][kind.name] = next_number
            self._changed()
        return 200, answers

    def _check_document(
        self, tenant: TenantFixture, kind: _DocumentKind, element: Any
    ) -> tuple[list[str], dict[str, Any] | None]:
        """Every validation error of one element, and the document it would book (numbers unchecked)."""
        if not isinstance(element, dict):
            return [CONTACT_REQUIRED], None
        errors: list[str] = []
        stored = self._tenant_books(tenant.tenant_id)[f"{kind.name}s"]
        if element.get(kind.id_field) and _guid(element[kind.id_field]) in stored:
            return [DOCUMENT_UPDATE_UNSUPPORTED.format(kind.id_field, element[kind.id_field])], None
        if element.get("Type") != kind.type:
            errors.append(INVALID_TYPE.format(kind.label, kind.type))
        contact = self._document_contact(tenant, element.get("Contact"), errors)
        status = element.get("Status") or "DRAFT"
        if status not in _STATUSES:
            errors.append(INVALID_STATUS.format(kind.label))
        amount_types = element.get("LineAmountTypes") or "Exclusive"
        if amount_types not in _LINE_AMOUNT_TYPES:
            errors.append(INVALID_LINE_AMOUNT_TYPES)
        currency = str(element.get("CurrencyCode") or tenant.base_currency).upper()
        if currency != tenant.base_currency and currency not in tenant.currencies:
            errors.append(CURRENCY_NOT_SUBSCRIBED.format(currency))
        dates = {}
        for name in ("Date", "DueDate"):
            value = element.get(name)
            dates[name] = parse_date(value) if value else None
            if value and dates[name] is None:
                errors.append(INVALID_DATE.format(name, value))
        number = element.get(kind.number_field)
        number = str(number).strip() if number not in (None, "") else None
        if number is not None and len(number) > 255:
            errors.append(NUMBER_TOO_LONG.format(kind.number_field))
        raw_lines = element.get("LineItems")
        if not isinstance(raw_lines, list) or not raw_lines:
            errors.append(LINE_ITEMS_REQUIRED)
            raw_lines = []
        lines = [self._line(tenant, amount_types, line, errors) for line in raw_lines]
        if errors or contact is None:
            return errors, None
        sub_total = sum((line["_excl"] for line in lines), Decimal("0"))
        total_tax = sum((line["TaxAmount"] for line in lines), Decimal("0"))
        total = sub_total + total_tax
        if total < 0 and status != "DRAFT":  # negative lines are fine; an approved negative total is not
            return [NEGATIVE_TOTAL], None
        document = {
            kind.id_field: str(uuid.uuid4()),
            "Type": kind.type,
            kind.number_field: number,
            "Reference": element.get("Reference"),
            "Contact": {"ContactID": contact["ContactID"], "ContactNumber": contact.get("ContactNumber"),
                        "Name": contact["Name"], "ContactStatus": contact["ContactStatus"]},
            "Date": dates["Date"] or _midnight(self.clock.now()),
            "DueDate": dates["DueDate"],
            "LineAmountTypes": amount_types,
            "LineItems": [{k: v for k, v in line.items() if k != "_excl"} for line in lines],
            "SubTotal": sub_total,
            "TotalTax": total_tax,
            "Total": total,
            "CurrencyCode": currency,
            "CurrencyRate": _decimal(element.get("CurrencyRate")) or Decimal("1"),
            "Status": status,
            "UpdatedDateUTC": self.clock.now(),
            "HasAttachments": False,
        }  # fmt: skip
        if kind is INVOICE:
            document |= {"AmountDue": total, "AmountPaid": Decimal("0"), "AmountCredited": Decimal("0"),
                         "IsDiscounted": False, "Payments": [], "CreditNotes": []}  # fmt: skip
        else:
            document |= {"RemainingCredit": total, "Allocations": [], "Payments": []}
        return [], document

    def _document_contact(
        self, tenant: TenantFixture, value: Any, errors: list[str]
    ) -> dict[str, Any] | None:
        contact_id = value.get("ContactID") if isinstance(value, dict) else None
        if not contact_id:
            errors.append(CONTACT_REQUIRED)
            return None
        contact = self._tenant_books(tenant.tenant_id)["contacts"].get(_guid(contact_id) or "")
        if contact is None:
            errors.append(CONTACT_NOT_FOUND.format(contact_id))
        return contact  # type: ignore[no-any-return]  # the books are untyped JSON

    @staticmethod
    def _line(tenant: TenantFixture, amount_types: str, line: Any, errors: list[str]) -> dict[str, Any]:
        """One line with its tax; problems are appended to ``errors`` (all of them, as Xero lists them)."""
        line = line if isinstance(line, dict) else {}
        numbers: dict[str, Decimal | None] = {}
        for name in ("Quantity", "UnitAmount", "LineAmount", "TaxAmount", "DiscountRate"):
            raw = line.get(name)
            numbers[name] = _decimal(raw) if raw is not None else None
            if raw is not None and numbers[name] is None:
                errors.append(INVALID_NUMBER.format(name, raw))
        code = str(line.get("AccountCode") or "").strip()
        account = tenant.account(code) if code else None
        if not code:
            errors.append(ACCOUNT_CODE_REQUIRED)
        elif account is None or account.account_class != "REVENUE":
            errors.append(ACCOUNT_CODE_INVALID.format(code))
        elif account.status != "ACTIVE":
            errors.append(ACCOUNT_CODE_ARCHIVED.format(code))
        tax_type = "NONE" if amount_types == "NoTax" else str(line.get("TaxType") or "").strip()
        if not tax_type:
            tax_type = account.tax_type if account and account.account_class == "REVENUE" else ""
        rate = tenant.tax_rate(tax_type)
        if tax_type and (rate is None or rate.status != "ACTIVE" or not rate.applies_to_revenue):
            errors.append(TAX_TYPE_INVALID.format(tax_type))
        quantity = numbers["Quantity"] if numbers["Quantity"] is not None else Decimal("1")
        unit = numbers["UnitAmount"]
        discount = numbers["DiscountRate"] or Decimal("0")
        amount = numbers["LineAmount"]
        if amount is None:
            amount = _cents(quantity * (unit or Decimal("0")) * (1 - discount / 100))
        percent = rate.rate if rate is not None and amount_types != "NoTax" else Decimal("0")
        tax = numbers["TaxAmount"]
        if tax is None or amount_types == "NoTax":
            if amount_types == "Inclusive":
                tax = _cents(amount - amount * 100 / (100 + percent))
            else:
                tax = _cents(amount * percent / 100) if amount_types == "Exclusive" else Decimal("0")
        return {
            "LineItemID": str(uuid.uuid4()),
            "Description": line.get("Description"),
            "Quantity": quantity,
            "UnitAmount": unit if unit is not None else amount,
            "ItemCode": line.get("ItemCode"),
            "AccountCode": code,
            "AccountID": tenant.account_id(code) if account else None,
            "TaxType": tax_type,
            "TaxAmount": tax,
            "LineAmount": amount,
            "DiscountRate": numbers["DiscountRate"],
            "Tracking": copy.deepcopy(line.get("Tracking") or []),
            "_excl": amount - tax if amount_types == "Inclusive" else amount,
        }

    # ---------------------------------------------------------------------------------------- reading

    def read(self, call: ApiCall, collection: str, query: Mapping[str, str], key: str | None) -> Any:
        """A GET of a list (filtered, optionally paged) or of one item by id or number."""
        with self.lock:
            rows = self._rows(call.tenant, collection, query, key)
            if key is not None:
                if not rows:
                    raise XeroApiError(404, NOT_FOUND_TEXT)
                return self._envelope(call, collection, to_wire(rows[:1]))
            page_text = query.get("page")
            if page_text is None:
                return self._envelope(call, collection, to_wire(rows))
            try:
                page = max(1, int(page_text))
                size = min(MAX_PAGE_SIZE, max(1, int(query.get("pageSize") or PAGE_SIZE)))
            except ValueError:
                raise _query_error("page and pageSize must be whole numbers") from None
            selected = rows[(page - 1) * size : page * size]
            answer = self._envelope(call, collection, to_wire(selected))
            answer["pagination"] = {"page": page, "pageSize": size, "pageCount": math.ceil(len(rows) / size),
                                    "itemCount": len(rows)}  # fmt: skip
            return answer

    def _rows(
        self, tenant: TenantFixture, collection: str, query: Mapping[str, str], key: str | None
    ) -> list[dict[str, Any]]:
        if collection == "Accounts":
            rows = _account_rows(tenant)
        elif collection == "TaxRates":
            rows = _tax_rate_rows(tenant)
        elif collection == "Contacts":
            rows = list(self._tenant_books(tenant.tenant_id)["contacts"].values())
        else:
            stored = self._tenant_books(tenant.tenant_id)[f"{_KINDS[collection].name}s"].values()
            rows = sorted(stored, key=lambda d: d["_sequence"])
        if key is not None:
            ids = {"Contacts": ("ContactID", "ContactNumber"), "Invoices": ("InvoiceID", "InvoiceNumber"),
                   "CreditNotes": ("CreditNoteID", "CreditNoteNumber"), "Accounts": ("AccountID", "Code"),
                   "TaxRates": ("TaxType", "TaxType")}[collection]  # fmt: skip
            wanted = _guid(key) or key
            return [r for r in rows if str(r.get(ids[0])) == wanted or str(r.get(ids[1])) == key][:1]
        return _filter(rows, collection, query)

    # ----------------------------------------------------------------------------------- observation

    def booked(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every AUTHORISED invoice and credit note in booking order, with the common contract's keys."""
        with self.lock:
            rows = []
            for tenant_id, books in self._books["tenants"].items():
                if tenant is not None and tenant_id != tenant:
                    continue
                for kind in (INVOICE, CREDIT_NOTE):
                    for document in books[f"{kind.name}s"].values():
                        if document["Status"] == "AUTHORISED":
                            rows.append(self._booking(tenant_id, kind, document))
            return sorted(rows, key=lambda r: r["sequence"])

    def drafts(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Invoices and credit notes stored as DRAFT or SUBMITTED (not booked)."""
        with self.lock:
            return [
                self._booking(tenant_id, kind, document)
                for tenant_id, books in self._books["tenants"].items()
                if tenant is None or tenant_id == tenant
                for kind in (INVOICE, CREDIT_NOTE)
                for document in books[f"{kind.name}s"].values()
                if document["Status"] != "AUTHORISED"
            ]

    def _booking(self, tenant_id: str, kind: _DocumentKind, document: Mapping[str, Any]) -> dict[str, Any]:
        contact = self._tenant_books(tenant_id)["contacts"][document["Contact"]["ContactID"]]
        # Signed from the debtor's side, as every simulator reports its books: a credit note is negative
        # here, while Xero itself shows it with positive amounts.
        sign = -1 if kind.name == "credit_note" else 1
        return {
            "reference": document[kind.number_field],
            "registration_number": document[kind.number_field],
            "external_id": document[kind.id_field],
            "kind": kind.name,
            "status": document["Status"],
            "customer_code": contact.get("ContactNumber"),
            "customer_name": contact["Name"],
            "contact_id": contact["ContactID"],
            "date": document["Date"].date(),
            "total_excl_vat": sign * document["SubTotal"],
            "total_vat": sign * document["TotalTax"],
            "total_incl_vat": sign * document["Total"],
            "currency": document["CurrencyCode"],
            "line_amount_types": document["LineAmountTypes"],
            "lines": copy.deepcopy(document["LineItems"]),
            "tenant": tenant_id,
            "sequence": document["_sequence"],
        }

    def create_posts(self) -> dict[str, int]:
        """How often each invoice / credit note number was judged by a create (booked or refused).

        Idempotent replays, key mismatches and requests an injected fault answered without processing are
        not counted. Elements refused before a number was known count under the number sent, else "".
        """
        with self.lock:
            return dict(self._create_posts)

    def customers(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every contact: ``tenant``, ``id``, ``code`` (ContactNumber), ``name``, ``email``,
        ``vat_number`` (TaxNumber), ``status``, ``addresses``."""
        with self.lock:
            return [
                {"tenant": tenant_id, "id": c["ContactID"], "code": c.get("ContactNumber"),
                 "name": c["Name"], "email": c.get("EmailAddress"), "vat_number": c.get("TaxNumber"),
                 "status": c["ContactStatus"], "addresses": copy.deepcopy(c.get("Addresses") or [])}
                for tenant_id, books in self._books["tenants"].items()
                if tenant is None or tenant_id == tenant
                for c in books["contacts"].values()
            ]  # fmt: skip

    def stats_snapshot(self) -> dict[str, Any]:
        """Calls per operation, token refreshes, 429s (total and per problem), replays, faults, HTTP."""
        with self.lock:
            return {
                "calls": dict(self._calls),
                "total": sum(self._calls.values()),
                "token_refreshes": self._token_refreshes,
                "rate_limited": sum(self._rate_limited.values()),
                "rate_limited_by": dict(self._rate_limited),
                "idempotent_replays": self._replays,
                "faults": self.faults.hits(),
                "http": self.stats.snapshot(),
            }

    def calls_today(self, tenant: str = fx.DEMO_TENANT_ID) -> int:
        """How many calls the organisation made this sandbox day (what its daily limit counts)."""
        with self.lock:
            return int(self._day_count(tenant, self.clock.now())["count"])


# ------------------------------------------------------------------------------------ module helpers


def _new_contact() -> dict[str, Any]:
    return {
        "ContactID": str(uuid.uuid4()),
        "ContactStatus": "ACTIVE",
        "IsSupplier": False,
        "IsCustomer": False,
        "Addresses": [],
        "Phones": [],
    }


def _midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.date(), datetime.min.time(), tzinfo=UTC)


def _text(element: Any, name: str) -> str:
    value = element.get(name) if isinstance(element, dict) else None
    return "" if value is None else str(value)


def _next_free(prefix: str, start: int, used: set[str]) -> tuple[int, str]:
    """The next organisation number not in use, and the counter after it."""
    number = start
    while f"{prefix}{number:04d}" in used:
        number += 1
    return number + 1, f"{prefix}{number:04d}"


def _elements(body: bytes, collection: str) -> list[Any]:
    """The array of a write body; a bare object is taken as an array of one, as Xero does."""
    try:
        payload = json.loads(body or b"null", parse_float=Decimal)
    except ValueError:
        raise _post_data_error("Invalid Json data") from None
    if isinstance(payload, dict) and collection in payload:
        payload = payload[collection]
    elif isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not payload:
        raise _post_data_error(f"The request body contains no {collection}")
    return payload


def _wire_element(element: Any) -> dict[str, Any]:
    """An element as sent, with readable dates in Xero's form (the SDK parses the echo)."""
    if not isinstance(element, dict):
        return {}
    wire: dict[str, Any] = to_wire(element)
    for name in ("Date", "DueDate"):
        moment = parse_date(element.get(name))
        if moment is not None:
            wire[name] = ms_date(moment)
    return wire


def _echo_document(kind: _DocumentKind, element: Any, errors: list[str]) -> dict[str, Any]:
    echo = _wire_element(element)
    echo = {**echo, kind.id_field: ZERO_GUID} if not echo.get(kind.id_field) else echo
    return echo | {"HasErrors": True, "StatusAttributeString": "ERROR",
                   "ValidationErrors": [{"Message": m} for m in errors]}  # fmt: skip


def _echo_contact(element: Any, errors: list[str]) -> dict[str, Any]:
    echo = _wire_element(element)
    return echo | {"HasValidationErrors": True, "HasErrors": True, "StatusAttributeString": "ERROR",
                   "ValidationErrors": [{"Message": m} for m in errors]}  # fmt: skip


def _csv(query: Mapping[str, str], name: str) -> list[str] | None:
    value = query.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _filter(
    rows: Iterable[dict[str, Any]], collection: str, query: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The rows a list GET selects: ``where``, ``IDs``, number lists, statuses, ``searchTerm``."""
    selected = list(rows)
    id_field = {"Contacts": "ContactID", "Invoices": "InvoiceID", "CreditNotes": "CreditNoteID",
                "Accounts": "AccountID"}.get(collection)  # fmt: skip
    if collection == "Contacts" and _truthy(query.get("includeArchived")) is not True:
        selected = [r for r in selected if r.get("ContactStatus") == "ACTIVE"]
    if (ids := _csv(query, "IDs")) is not None and id_field:
        wanted = {_guid(i) or i for i in ids}
        selected = [r for r in selected if r.get(id_field) in wanted]
    if (numbers := _csv(query, "InvoiceNumbers")) is not None and collection == "Invoices":
        selected = [r for r in selected if r.get("InvoiceNumber") in set(numbers)]
    if (contact_ids := _csv(query, "ContactIDs")) is not None and collection in _KINDS:
        wanted = {_guid(i) or i for i in contact_ids}
        selected = [r for r in selected if r["Contact"]["ContactID"] in wanted]
    if (statuses := _csv(query, "Statuses")) is not None:
        selected = [r for r in selected if r.get("Status") in set(statuses)]
    if term := (query.get("searchTerm") or "").strip().casefold():
        fields = {"Contacts": ("Name", "FirstName", "LastName", "ContactNumber", "EmailAddress"),
                  "Invoices": ("InvoiceNumber", "Reference"),
                  "CreditNotes": ("CreditNoteNumber", "Reference")}.get(collection, ("Name",))  # fmt: skip
        selected = [r for r in selected if any(term in str(r.get(f) or "").casefold() for f in fields)]
    if where := (query.get("where") or "").strip():
        predicate = parse_where(where)
        selected = [r for r in selected if predicate(r)]
    return selected


def _account_rows(tenant: TenantFixture) -> list[dict[str, Any]]:
    return [
        {"AccountID": tenant.account_id(a.code), "Code": a.code, "Name": a.name, "Type": a.type,
         "Status": a.status, "TaxType": a.tax_type, "Class": a.account_class,
         "EnablePaymentsToAccount": False, "ShowInExpenseClaims": False, "HasAttachments": False}
        for a in tenant.accounts
    ]  # fmt: skip


def _tax_rate_rows(tenant: TenantFixture) -> list[dict[str, Any]]:
    return [
        {"Name": t.name, "TaxType": t.tax_type, "Status": t.status, "ReportTaxType": t.report_tax_type,
         "CanApplyToRevenue": t.applies_to_revenue, "CanApplyToExpenses": not t.applies_to_revenue,
         "CanApplyToAssets": False, "CanApplyToEquity": False, "CanApplyToLiabilities": False,
         "DisplayTaxRate": t.rate, "EffectiveRate": t.rate,
         "TaxComponents": [{"Name": "VAT", "Rate": t.rate, "IsCompound": False, "IsNonRecoverable": False}]}
        for t in tenant.tax_rates
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ HTTP

_READABLE = ("Contacts", "Invoices", "CreditNotes", "Accounts", "TaxRates")
_WRITABLE = ("Contacts", "Invoices", "CreditNotes")


def _answer(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    if isinstance(payload, str):
        return Response(payload, status, headers=dict(headers or {}), media_type="text/plain")
    return JSONResponse(payload, status, headers=dict(headers or {}))


def _add_identity_routes(app: FastAPI, sandbox: XeroSandbox) -> None:
    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            return _answer(sandbox.token(form, request.headers.get("authorization")))
        except OAuthError as exc:
            return _answer(exc.body, exc.status)

    def connections(request: Request) -> Response:
        try:
            return _answer(sandbox.connections(request.headers.get("authorization")))
        except XeroApiError as exc:
            return _answer(exc.body, exc.status, exc.headers)

    # Xero's paths are case-insensitive; the SDK asks for ``/Connections``, Xero's docs say ``/connections``.
    for path in (CONNECTIONS_PATH, CONNECTIONS_PATH.title()):
        app.add_api_route(path, connections, methods=["GET"])


async def _api_call(
    sandbox: XeroSandbox, request: Request, operation: str, run: Callable[[ApiCall, bytes], tuple[int, Any]]
) -> Response:
    """Admit one API call (auth, tenant, limits), hold its slot while it runs, answer with limit headers."""
    body = await request.body()
    try:
        call = sandbox.admit(
            request.headers.get("authorization"), request.headers.get("xero-tenant-id"), operation
        )
    except XeroApiError as exc:
        return _answer(exc.body, exc.status, exc.headers)
    try:
        if sandbox.config.processing_delay_s > 0:
            await asyncio.sleep(sandbox.config.processing_delay_s)
        try:
            status, payload = run(call, body)
        except XeroApiError as exc:
            return _answer(exc.body, exc.status, call.headers | exc.headers)
        return _answer(payload, status, call.headers)
    finally:
        sandbox.release(call)


def _list_route(sandbox: XeroSandbox, collection: str) -> Callable[[Request], Any]:
    async def read_list(request: Request) -> Response:
        query = dict(request.query_params)
        return await _api_call(
            sandbox,
            request,
            f"GET {collection}",
            lambda call, _: (200, sandbox.read(call, collection, query, None)),
        )

    return read_list


def _item_route(sandbox: XeroSandbox, collection: str) -> Callable[[Request, str], Any]:
    async def read_one(request: Request, key: str) -> Response:
        return await _api_call(
            sandbox,
            request,
            f"GET {collection}/{{id}}",
            lambda call, _: (200, sandbox.read(call, collection, {}, key)),
        )

    return read_one


def _write_route(sandbox: XeroSandbox, collection: str) -> Callable[[Request], Any]:
    async def write(request: Request) -> Response:
        query, method = dict(request.query_params), request.method
        key = request.headers.get("idempotency-key")
        return await _api_call(
            sandbox,
            request,
            f"{method} {collection}",
            lambda call, body: sandbox.write(call, collection, method, query, body, key),
        )

    return write


def _add_api_routes(app: FastAPI, sandbox: XeroSandbox) -> None:
    """One route per collection, so the HTTP statistics count each collection apart."""
    for collection in _READABLE:
        app.add_api_route(f"{API_PREFIX}/{collection}", _list_route(sandbox, collection), methods=["GET"])
        app.add_api_route(
            f"{API_PREFIX}/{collection}/{{key}}", _item_route(sandbox, collection), methods=["GET"]
        )
    for collection in _WRITABLE:
        app.add_api_route(
            f"{API_PREFIX}/{collection}", _write_route(sandbox, collection), methods=["PUT", "POST"]
        )


def _add_control_routes(app: FastAPI, sandbox: XeroSandbox) -> None:
    """Xero's own control routes, next to the common ones of :func:`~.simulator.add_control_routes`."""

    add_books_routes(app, sandbox)
    add_consent_route(app, sandbox.consent, "tenants")


def create_app(sandbox: XeroSandbox) -> FastAPI:
    """Xero's identity and Accounting API of ``sandbox`` as an ASGI app (mounted at ``/xero``)."""
    return create_simulator_app(
        "Xero sandbox", sandbox, _add_identity_routes, _add_api_routes, _add_control_routes
    )


def demo_connection(sandbox_url: str) -> dict[str, Any]:
    """The demo connection: ``host`` is the API host (the mount serves ``/api.xro/2.0`` and
    ``/connections``); login/password are the app's client id and secret; ``token_url`` points at the
    sandbox's identity endpoint instead of Xero's."""
    base = sandbox_url.rstrip("/") + MOUNT
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": base,
        "login": fx.CLIENT_ID,
        "password": fx.CLIENT_SECRET,
        "extra": {"refresh_token": fx.BOOTSTRAP_REFRESH_TOKEN, "token_url": base + TOKEN_PATH, "timeout": 30},
    }


def bookings(sandbox: XeroSandbox) -> list[Booking]:
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


def bench_connection(sandbox_url: str, slot: int, limits: BenchLimits) -> dict[str, Any]:
    """The demo connection, told the windows' lengths of a time-scaled sandbox: the hook reads the
    minute's calls from the answers (``X-MinLimit-Remaining``), but Xero does not say when windows end."""
    return with_extra(demo_connection(sandbox_url), minute_s=limits.minute_s, day_s=limits.minute_s * 24 * 60)


@dataclass
class XeroMinutes:
    """Xero's minute windows as its answers show them: ``X-MinLimit-Remaining`` goes up when a new minute
    has begun. Our own estimate of the minute's end (Xero does not send it) opens one too, for consecutive
    minutes of a single call each, whose counts look alike."""

    minute_s: float
    remaining: int | None = None
    opened: OpenedWindows = field(init=False)

    def __post_init__(self) -> None:
        self.opened = OpenedWindows(self.minute_s)

    def window_end(self, response: requests.Response) -> float | None:
        """The end of the minute ``response`` was counted in; None for answers outside the limits."""
        try:
            remaining = int(response.headers["X-MinLimit-Remaining"])
        except (KeyError, ValueError):
            return None  # the token endpoint and /connections do not count
        went_up = self.remaining is not None and remaining > self.remaining
        self.remaining = remaining
        return self.opened.end_at(time.time(), reopened=went_up)


def bench_windows(hook: Any, minute_s: float) -> WindowsFromAnswers:
    """Xero's own count decides: each answer's remaining calls tell the minute it fell in."""
    return WindowsFromAnswers(XeroMinutes(minute_s).window_end)


SANDBOX = SandboxTool(
    descriptor=DESCRIPTOR,
    mount=MOUNT,
    simulator=XeroSandbox,
    create_app=create_app,
    connection=demo_connection,
    bookings=bookings,
    chaos=ChaosTargets(
        book=Target("PUT", r"^/api\.xro/2\.0/(Invoices|CreditNotes)$"),
        lookup=Target("GET", r"^/api\.xro/2\.0/(Invoices|CreditNotes)$"),  # by InvoiceNumber / Reference
        reads=(Target("GET", r"^/api\.xro/2\.0/"),),
        api=Target("*", r"^/api\.xro/2\.0/"),
        customers=Target("PUT", r"^/api\.xro/2\.0/Contacts$"),
        batch=True,
    ),
    bench=BenchKnobs(
        limit_switch="minute_limit",
        # 50 invoices a call: at 60 calls a minute ten minutes would need 30,000 invoices, so the simulator
        # allows 3 (the hook reads that from X-MinLimit-Remaining): 30 creates of 1,500 invoices, with the
        # contacts' lookup and create, span 11 minutes.
        limit_run=LimitRun(invoices=1500, time_scale=30, limit=3, real_limit=60),
        quick_limit_run=LimitRun(invoices=200, time_scale=60, limit=2, real_limit=60),
        connection=bench_connection,
        windows=bench_windows,
        template_integration=6,
        max_calls_per_invoice=0.04,  # batches of 50 plus one contact lookup and one contact create
        demo_slot=DemoSlot("organisation", {"tenant_id": fx.DEMO_TENANT_ID}, "bench_xero"),
        accepted=(("21", "9", "0"), ("8000", "8010")),
        # Xero's headers announce its limits, so they are raised too (the header-fed budget would pause).
        limits_off={"limits_enabled": False, "minute_limit": 1_000_000, "day_limit": 10_000_000},
    ),
    refusals=(
        Refusal("6", "8000", "config", f"The TaxType code {fx.TAX_DELETED} does not exist"),
        Refusal("21", "8020", "config", "Account code '210' has been archived"),
    ),
)
"""This simulator as the sandbox server, the demo and the harnesses find it (by the tool's name)."""
