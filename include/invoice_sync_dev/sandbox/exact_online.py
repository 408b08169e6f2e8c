"""A faithful simulator of the Exact Online REST API (accounts, sales entries, OAuth, rate limits).

Reference: ``shared/reference/exact_online.md``. What the connector depends on is reproduced exactly:
the ``{"d": ...}`` envelopes, ``/Date(ms)/`` dates, 60-row pages with an absolute ``__next``, the error
envelope and the error texts of the reference's table, booking numbers as last + 1 per journal, the OAuth
flow (600-second access tokens, single-use rotating refresh tokens, the 400 ``access_denied`` "Rate limit
exceeded: access_token not expired" on an early refresh, 200 token calls a day), account codes stored
right-aligned in 18 characters, the per-minute and per-day limits with the six ``X-RateLimit-*`` headers,
and the block after too many failing calls to one endpoint.

:class:`ExactOnlineSandbox` holds the state behind one re-entrant lock (the ASGI app and the tests' Python
calls touch it from different threads); :func:`create_app` exposes it over HTTP, with a control API under
``/_sandbox`` that tests use to inspect the books, inject faults and bend the configuration.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import requests
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from invoice_sync.connectors.exact_online import DESCRIPTOR
from invoice_sync_dev.sandbox import exact_fixtures, odata
from invoice_sync_dev.sandbox.exact_fixtures import (
    DivisionFixture,
    ExactFixtures,
    default_fixtures,
    fixture_guid,
)
from invoice_sync_dev.sandbox.faults import CannedResponse, Scope, route_path
from invoice_sync_dev.sandbox.simulator import (
    CONTROL_PREFIX,
    Simulator,
    SimulatorConfig,
    add_consent_route,
    create_simulator_app,
)
from invoice_sync_dev.sandbox.simulator import OAuthError as OAuthError  # raised by the token endpoint
from invoice_sync_dev.sandbox.tools import (
    BenchKnobs,
    BenchLimits,
    BenchSlot,
    Booking,
    ChaosTargets,
    LimitRun,
    SandboxTool,
    Target,
    WindowsFromAnswers,
)

MOUNT = "/exact"
"""Where the sandbox server serves this simulator (see :data:`SANDBOX`)."""
ACCESS_TOKEN_LIFETIME_S = 600
EARLY_REFRESH_WINDOW_S = 570
"""A refresh while the chain's newest access token is younger than this is refused: Exact issues a new
access token at most ~30 s before the last one expires (reference section 2; PipedreamHQ/pipedream issue
#1655; ossobv/exactonline ``api/autorefresh.py`` quotes Exact's "9 minutes and 30 seconds")."""
TOO_EARLY = "Rate limit exceeded: access_token not expired"
"""Exact's answer to an early refresh: HTTP 400, ``{"error": "access_denied", "error_description": ...}``,
``Reason: TooEarlyToRefreshTokens``, as reported verbatim in websmurf/laravel-exact-online issue #31 (2026)
from picqer/exact-php-client's message (which prints the body and the reason). Before 2026-12 this simulator
answered 401 "Access Token not expired", the wording of Exact's older OAuth page that ossobv quotes."""
TOO_EARLY_REASON = "TooEarlyToRefreshTokens"
TOKEN_CALLS_PER_DAY = 200
"""Exact's cap on token calls per app key and user per day (reference section 2: Invantive forum 1040, and
Exact's "API limits" page). Its exact refusal is unconfirmed: picqer/exact-php-client issue #523 reports
that the token endpoint is rate limited and that Exact can lift it per client id, not the answer's text.
The simulator answers in the confirmed shape of its other token rate limit (400 ``access_denied``,
"Rate limit exceeded: ..."), and the connector relies only on that "Rate limit exceeded" prefix."""
TOKEN_CALLS_EXCEEDED = "Rate limit exceeded: too many token requests today"
AUTH_CODE_LIFETIME_S = 180
ERROR_BUDGET_WINDOW = timedelta(hours=1)
MAX_URL_LENGTH = 6000
PAGE_SIZE = 60

JOURNAL_TYPE_SALES = 20
ENTRY_TYPE_SALES = 20
ENTRY_TYPE_CREDIT_NOTE = 21
ENTRY_STATUS_OPEN = 20
ACCOUNT_STATUSES = ("C", "A", "S", "P")
DEFAULT_ACCOUNT_STATUS = "A"  # "None": an account is only a customer when created as one (unconfirmed)
BUDGETED_ERROR_STATUSES = frozenset({400, 401, 403, 404})
ACCOUNT_FIELD_LIMITS = {
    "Name": 50,
    "AddressLine1": 100,
    "Postcode": 20,
    "City": 50,
    "Email": 100,
    "VATNumber": 20,
}
ACCOUNT_CODE_WIDTH = 18
SALES_ENTRY_FIELD_LIMITS = {"Description": 60, "YourRef": 30}
SALES_ENTRY_LINE_FIELD_LIMITS = {"Description": 60}
"""Column widths the simulated Exact enforces (Exact does not publish them; see the connector's mapping).
A longer value is refused with ``Too long: <Field> (max. N)``, Exact's ``<Kind>: <Field>`` pattern."""
_CENT = Decimal("0.01")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DIVISION_PATH = re.compile(r"^/api/v1/(\d+)/")

ACCOUNT_FIELDS = (
    "ID", "Code", "Name", "Status", "AddressLine1", "AddressLine2", "Postcode", "City", "Country",
    "Email", "Phone", "VATNumber", "ChamberOfCommerce", "SalesVATCode", "PaymentConditionSales",
    "Blocked", "IsSales", "Division", "Created", "Modified",
)  # fmt: skip
ACCOUNT_WRITABLE = frozenset(ACCOUNT_FIELDS) - {"ID", "Division", "Created", "Modified"}
SALES_ENTRY_FIELDS = (
    "EntryID", "Division", "Journal", "JournalDescription", "EntryNumber", "InvoiceNumber", "Type",
    "Status", "Customer", "CustomerName", "EntryDate", "DueDate", "ReportingYear", "ReportingPeriod",
    "PaymentCondition", "PaymentReference", "Currency", "Description", "YourRef", "AmountDC", "AmountFC",
    "VATAmountDC", "VATAmountFC", "Created", "Modified", "SalesEntryLines",
)  # fmt: skip
SALES_ENTRY_WRITABLE = frozenset(
    {"Journal", "Customer", "EntryDate", "DueDate", "ReportingYear", "ReportingPeriod", "PaymentCondition",
     "PaymentReference", "Currency", "Description", "YourRef", "EntryNumber", "InvoiceNumber", "Type",
     "SalesEntryLines"}
)  # fmt: skip
SALES_ENTRY_LINE_WRITABLE = frozenset(
    {"GLAccount", "AmountFC", "VATCode", "VATAmountFC", "VATPercentage", "Description", "Quantity",
     "CostCenter", "CostUnit", "Project", "From", "To"}
)  # fmt: skip
JOURNAL_FIELDS = ("ID", "Code", "Description", "Type", "AllowVariableCurrency", "Division")
GL_ACCOUNT_FIELDS = ("ID", "Code", "Description", "IsBlocked", "Division")
VAT_CODE_FIELDS = (
    "ID",
    "Code",
    "Description",
    "Percentage",
    "Type",
    "VATTransactionType",
    "IsBlocked",
    "Division",
)
DIVISION_FIELDS = ("Code", "Description", "Country", "Currency", "HID")


class ExactApiError(Exception):
    """A failing API call: HTTP status and the text Exact puts in ``error.message.value``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class TooEarlyError(OAuthError):
    """Exact's refusal of a refresh while the chain's access token is still young (see :data:`TOO_EARLY`)."""

    reason = TOO_EARLY_REASON

    def __init__(self) -> None:
        super().__init__(400, "access_denied", TOO_EARLY)


def error_body(message: str) -> dict[str, Any]:
    """Exact's error envelope; clients read ``error.message.value``."""
    return {"error": {"code": "", "message": {"lang": "", "value": message}}}


@dataclass(slots=True)
class ExactConfig(SimulatorConfig):
    """The switches tests flip through ``POST /_sandbox/config``; defaults are Exact's real values."""

    minutely_limit: int = 60
    daily_limit: int = 5000
    limits_enabled: bool = True
    error_budget: int = 10
    error_budget_enabled: bool = True
    early_refresh_rule: bool = True
    token_calls_per_day: int = TOKEN_CALLS_PER_DAY


@dataclass(slots=True)
class _RefreshToken:
    client_id: str
    chain_id: str
    divisions: list[int]
    used: bool = False


@dataclass(slots=True)
class _AccessToken:
    client_id: str
    chain_id: str
    divisions: list[int]
    issued_at: datetime
    expires_at: datetime


@dataclass(slots=True)
class _AuthCode:
    client_id: str
    divisions: list[int]
    expires_at: datetime


@dataclass(slots=True)
class _Books:
    """The persistent state: what a restart with a state file must keep."""

    accounts: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    entries: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    last_entry_numbers: dict[int, dict[str, int]] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    chain_last_access: dict[str, str] = field(default_factory=dict)  # chain id -> newest access token
    auth_codes: dict[str, _AuthCode] = field(default_factory=dict)


@dataclass(slots=True)
class _Window:
    minute_start: datetime
    minute_count: int
    day: date
    day_count: int


@dataclass(frozen=True, slots=True)
class CallContext:
    """An admitted division call: who calls, for which division, and the rate-limit headers to answer."""

    client_id: str
    division: DivisionFixture
    endpoint: str
    headers: dict[str, str]
    permitted_divisions: tuple[int, ...] = ()


def to_wire(value: Any) -> Any:
    """JSON form of an internal value: ``/Date(ms)/`` for datetimes, numbers for Decimals."""
    if isinstance(value, datetime):
        return f"/Date({int(value.timestamp() * 1000)})/"
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def _decimal(value: Any, field_name: str) -> Decimal:
    """A JSON number or numeric string as an exact Decimal; Exact accepts both."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]")
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]") from exc
    if not result.is_finite():
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]")
    return result


def _integer(value: Any, field_name: str) -> int:
    number = _decimal(value, field_name)
    if number != number.to_integral_value():
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]")
    return int(number)


def _date(value: Any, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]")
    try:
        return odata.parse_datetime(value)
    except ValueError as exc:
        raise ExactApiError(400, f"Invalid: {field_name} [{value}]") from exc


def _guid(value: Any) -> str | None:
    """Lower-case GUID text, or None when ``value`` is not a GUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _reject_unknown(payload: Mapping[str, Any], writable: frozenset[str], entity: str) -> None:
    for name in payload:
        if name not in writable and name != "__metadata":
            raise ExactApiError(
                400,
                f"Error processing request stream. The property name '{name}' specified for type "
                f"'Exact.Web.Api.Models.{entity}' is not valid.",
            )


def _check_lengths(payload: Mapping[str, Any], limits: Mapping[str, int]) -> None:
    for name, limit in limits.items():
        value = payload.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise ExactApiError(400, f"Too long: {name} (max. {limit})")


def _account_code(value: Any) -> str | None:
    """An account ``Code`` as Exact stores it: right-aligned with leading spaces in 18 characters, whatever
    the client sent, so a filter must name the padded form (reference section 12; ossobv/exactonline
    ``api/relations.py`` filters ``Code eq '%18s'``). None when no code was sent (Exact numbers it)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if len(text) > ACCOUNT_CODE_WIDTH:
        raise ExactApiError(400, f"Too long: Code (max. {ACCOUNT_CODE_WIDTH})")
    return text.rjust(ACCOUNT_CODE_WIDTH)


def _round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _next_midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


class ExactOnlineSandbox(Simulator[ExactFixtures, ExactConfig]):
    """The simulated Exact Online tenant: app clients, divisions, books, tokens and limits."""

    config_class = ExactConfig

    # ----------------------------------------------------------------- state

    def _default_fixtures(self) -> ExactFixtures:
        return default_fixtures()

    def _fresh_books(self) -> _Books:
        books = _Books()
        for client in self.fixtures.clients:
            books.refresh_tokens[client.bootstrap_refresh_token] = _RefreshToken(
                client.client_id, uuid.uuid4().hex, list(client.divisions)
            )
        for division in self.fixtures.divisions.values():
            books.accounts[division.division] = {}
            books.entries[division.division] = {}
            books.last_entry_numbers[division.division] = {
                j.code: j.first_entry_number - 1 for j in division.journals
            }
        return books

    def _reset_counters(self) -> None:
        self._windows: dict[tuple[str, int], _Window] = {}
        self._errors: defaultdict[tuple[str, int, str], list[datetime]] = defaultdict(list)
        self._blocked_until: dict[tuple[str, int, str], datetime] = {}
        self._rate_limited = 0
        self._error_blocked = 0
        self._token_refreshes = 0
        self._token_calls: Counter[tuple[str, str, date]] = Counter()  # (client, chain, day) -> calls
        self._entry_posts: Counter[str] = Counter()

    @staticmethod
    def _load(saved: Mapping[str, Any]) -> _Books:
        def by_division(section: Mapping[str, Any]) -> dict[int, Any]:
            return {int(k): v for k, v in section.items()}

        return _Books(
            accounts=by_division(saved["accounts"]),
            entries=by_division(saved["entries"]),
            last_entry_numbers=by_division(saved["last_entry_numbers"]),
            refresh_tokens={k: _RefreshToken(**v) for k, v in saved["refresh_tokens"].items()},
            access_tokens={k: _AccessToken(**v) for k, v in saved["access_tokens"].items()},
            chain_last_access=dict(saved["chain_last_access"]),
            auth_codes={k: _AuthCode(**v) for k, v in saved["auth_codes"].items()},
        )

    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        self._books = self._load(saved) if saved else self._fresh_books()

    def _persistable(self) -> dict[str, Any]:
        """Books, tokens and booking-number counters (``asdict`` copies them)."""
        return asdict(self._books)

    # ------------------------------------------------------------------ auth

    def token(self, form: Mapping[str, str]) -> dict[str, str]:
        """``POST /api/oauth2/token``: exchange an authorization code or a refresh token.

        Every call an app makes with its own credentials counts toward the day's token calls of its user,
        refused ones too (an early refresh as well, reference section 2).
        """
        with self.lock:
            client = self.fixtures.client(form.get("client_id", ""))
            if client is None or form.get("client_secret") != client.client_secret:
                raise OAuthError(400, "invalid_client")
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                chain_id, divisions = self._redeem_refresh_token(
                    client.client_id, form.get("refresh_token", "")
                )
            elif grant_type == "authorization_code":
                chain_id, divisions = self._redeem_code(client.client_id, form.get("code", ""))
            else:
                raise OAuthError(400, "unsupported_grant_type")
            return self._issue(client.client_id, chain_id, divisions)

    def _count_token_call(self, client_id: str, chain_id: str) -> None:
        """Spend one of the user's token calls of the day; refuse once they are spent.

        A refresh chain (one consent) stands for the user, the unit Exact counts by with the app key.
        """
        key = (client_id, chain_id, self.clock.now().date())
        if self.config.limits_enabled and self._token_calls[key] >= self.config.token_calls_per_day:
            raise OAuthError(400, "access_denied", TOKEN_CALLS_EXCEEDED)
        self._token_calls[key] += 1

    def _redeem_refresh_token(self, client_id: str, token: str) -> tuple[str, list[int]]:
        record = self._books.refresh_tokens.get(token)
        if record is None or record.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token.")
        self._count_token_call(client_id, record.chain_id)
        if record.used:
            raise OAuthError(400, "invalid_grant", "Old refresh token used.")
        if self.config.early_refresh_rule and self._chain_has_fresh_access_token(record.chain_id):
            raise TooEarlyError()
        record.used = True
        return record.chain_id, record.divisions

    def _chain_has_fresh_access_token(self, chain_id: str) -> bool:
        access = self._books.access_tokens.get(self._books.chain_last_access.get(chain_id, ""))
        if access is None:
            return False
        now = self.clock.now()
        return access.expires_at > now and (now - access.issued_at).total_seconds() < EARLY_REFRESH_WINDOW_S

    def _redeem_code(self, client_id: str, code: str) -> tuple[str, list[int]]:
        """An authorization code is single-use and short-lived; it starts a new refresh chain."""
        record = self._books.auth_codes.pop(code, None)
        if record is None or record.client_id != client_id or record.expires_at <= self.clock.now():
            raise OAuthError(400, "invalid_grant", "Invalid authorization code.")
        chain_id = uuid.uuid4().hex
        self._count_token_call(client_id, chain_id)
        return chain_id, record.divisions

    def _issue(self, client_id: str, chain_id: str, divisions: list[int]) -> dict[str, str]:
        now = self.clock.now()
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        lifetime = timedelta(seconds=ACCESS_TOKEN_LIFETIME_S)
        self._books.access_tokens[access] = _AccessToken(client_id, chain_id, divisions, now, now + lifetime)
        self._books.refresh_tokens[refresh] = _RefreshToken(client_id, chain_id, divisions)
        self._books.chain_last_access[chain_id] = access
        self._token_refreshes += 1
        self._prune_access_tokens(now)
        self._changed()
        real_lifetime = round(self.clock.sandbox_seconds_to_real(ACCESS_TOKEN_LIFETIME_S))
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": str(real_lifetime),
            "refresh_token": refresh,
        }

    def _prune_access_tokens(self, now: datetime) -> None:
        """Forget access tokens that expired long ago, so a long benchmark does not grow the state."""
        horizon = now - timedelta(days=1)
        stale = [t for t, a in self._books.access_tokens.items() if a.expires_at < horizon]
        for token in stale:
            del self._books.access_tokens[token]

    def consent(self, client_id: str, divisions: Sequence[int] | None = None) -> dict[str, str]:
        """A user (re)consents: a fresh refresh token and a single-use authorization code."""
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None:
                raise ValueError(f"unknown client_id {client_id!r}")
            allowed = list(divisions) if divisions is not None else list(client.divisions)
            refresh = secrets.token_urlsafe(32)
            self._books.refresh_tokens[refresh] = _RefreshToken(client_id, uuid.uuid4().hex, allowed)
            code = secrets.token_urlsafe(24)
            expires = self.clock.now() + timedelta(seconds=AUTH_CODE_LIFETIME_S)
            self._books.auth_codes[code] = _AuthCode(client_id, allowed, expires)
            self._changed()
            return {"refresh_token": refresh, "code": code}

    def expire_tokens(self) -> int:
        """Every access token expires now (refreshing is then allowed at once); returns how many."""
        with self.lock:
            now = self.clock.now()
            live = [a for a in self._books.access_tokens.values() if a.expires_at > now]
            for access in live:
                access.expires_at = now
            self._changed()
            return len(live)

    def current_user(self, authorization: str | None) -> dict[str, Any]:
        """``GET current/Me``: who the access token belongs to and its current division."""
        with self.lock:
            access = self._authenticate(authorization)
        return {
            "CurrentDivision": access.divisions[0] if access.divisions else None,
            "UserID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{access.client_id}.sandbox")),
            "UserName": "sandbox.user@example.com",
            "FullName": "Sandbox User",
            "LanguageCode": "en-GB",
        }

    def _authenticate(self, authorization: str | None) -> _AccessToken:
        scheme, _, token = (authorization or "").partition(" ")
        access = self._books.access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if access is None:
            raise ExactApiError(401, "Unauthorized")
        if access.expires_at <= self.clock.now():
            raise ExactApiError(401, "Access token expired")
        return access

    # ------------------------------------------------------ limits and budget

    def admit(self, authorization: str | None, division: str, endpoint: str) -> CallContext:
        """Authenticate a division call, then apply the error-budget block and the rate limits."""
        with self.lock:
            access = self._authenticate(authorization)
            fixture = self.fixtures.divisions.get(int(division)) if division.isdigit() else None
            if fixture is None or fixture.division not in access.divisions:
                raise ExactApiError(403, "Wrong Division")
            key = (access.client_id, fixture.division)
            headers = self._consume_quota(key)
            self._check_error_block((*key, endpoint), headers)
            return CallContext(access.client_id, fixture, endpoint, headers, tuple(access.divisions))

    def _window(self, key: tuple[str, int], now: datetime) -> _Window:
        minute, day = now.replace(second=0, microsecond=0), now.date()
        window = self._windows.setdefault(key, _Window(minute, 0, day, 0))
        if window.minute_start != minute:
            window.minute_start, window.minute_count = minute, 0
        if window.day != day:
            window.day, window.day_count = day, 0
        return window

    def _quota_headers(
        self, window: _Window | None, now: datetime, *, minute_spent: bool = False
    ) -> dict[str, str]:
        minute_used = window.minute_count if window else 0
        day_used = window.day_count if window else 0
        minutely, daily = self.config.minutely_limit, self.config.daily_limit
        return {
            "X-RateLimit-Minutely-Limit": str(minutely),
            "X-RateLimit-Minutely-Remaining": "0" if minute_spent else str(max(0, minutely - minute_used)),
            "X-RateLimit-Minutely-Reset": str(self.clock.to_real_epoch_ms(_next_minute(now))),
            "X-RateLimit-Limit": str(daily),
            "X-RateLimit-Remaining": str(max(0, daily - day_used)),
            "X-RateLimit-Reset": str(self.clock.to_real_epoch_ms(_next_midnight(now))),
        }

    def _consume_quota(self, key: tuple[str, int]) -> dict[str, str]:
        now = self.clock.now()
        window = self._window(key, now)
        if self.config.limits_enabled:
            if window.day_count >= self.config.daily_limit:
                self._rate_limited += 1
                raise ExactApiError(
                    429, "API rate limit exceeded: daily limit", self._quota_headers(window, now)
                )
            if window.minute_count >= self.config.minutely_limit:
                self._rate_limited += 1
                message = "API rate limit exceeded: minutely limit"
                raise ExactApiError(429, message, self._quota_headers(window, now))
        window.minute_count += 1
        window.day_count += 1
        return self._quota_headers(window, now)

    def _check_error_block(self, key: tuple[str, int, str], headers: dict[str, str]) -> None:
        blocked_until = self._blocked_until.get(key)
        if self.config.error_budget_enabled and blocked_until and blocked_until > self.clock.now():
            self._error_blocked += 1
            message = "Too many errors: this endpoint is blocked for this app and division for one hour"
            raise ExactApiError(429, message, headers)

    def record_error(self, context: CallContext, status: int) -> None:
        """Count a failing call against the endpoint's hourly error budget; over budget blocks for an hour."""
        if status not in BUDGETED_ERROR_STATUSES or not self.config.error_budget_enabled:
            return
        with self.lock:
            key = (context.client_id, context.division.division, context.endpoint)
            now = self.clock.now()
            recent = [t for t in self._errors[key] if now - t < ERROR_BUDGET_WINDOW] + [now]
            self._errors[key] = recent
            if len(recent) > self.config.error_budget:
                self._blocked_until[key] = now + ERROR_BUDGET_WINDOW

    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        """An injected error in Exact's error envelope."""
        return CannedResponse(status, json.dumps(error_body(message)).encode())

    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """An injected 429 that looks like the real one, with the caller's actual daily counters."""
        with self.lock:
            now = self.clock.now()
            match = _DIVISION_PATH.match(route_path(scope))
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            access = self._books.access_tokens.get(headers.get("authorization", "").partition(" ")[2])
            window = self._windows.get((access.client_id, int(match.group(1)))) if access and match else None
            self._rate_limited += 1
            quota = self._quota_headers(window, now, minute_spent=True)
        body = json.dumps(error_body("API rate limit exceeded: minutely limit")).encode()
        return CannedResponse(429, body, tuple(quota.items()))

    # -------------------------------------------------------------- accounts

    def create_account(self, division: DivisionFixture, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST crm/Accounts``: validate like Exact, then store; returns the stored entity."""
        _reject_unknown(payload, ACCOUNT_WRITABLE, "Account")
        with self.lock:
            accounts = self._books.accounts[division.division]
            name = str(payload.get("Name") or "").strip()
            if not name:
                raise ExactApiError(400, "Mandatory: Name")
            _check_lengths(payload, ACCOUNT_FIELD_LIMITS)
            if name in division.refused_customer_names:
                raise ExactApiError(400, "Invalid: Customer (Type)")
            status = payload.get("Status") or DEFAULT_ACCOUNT_STATUS
            if status not in ACCOUNT_STATUSES:
                raise ExactApiError(400, f"Invalid: Status [{status}]")
            email = payload.get("Email")
            if email and not _EMAIL.match(str(email)):
                raise ExactApiError(400, f"Invalid: Email [{email}]")
            code = _account_code(payload.get("Code")) or self._next_account_code(accounts.values())
            if any(a["Code"] == code for a in accounts.values()):
                raise ExactApiError(400, "Already exists: Code")
            now = self.clock.now()
            account = dict.fromkeys(ACCOUNT_FIELDS) | {
                k: v for k, v in payload.items() if k in ACCOUNT_WRITABLE
            }
            account_id = str(uuid.uuid4())
            account |= {"ID": account_id, "Code": code, "Name": name, "Status": status}
            account |= {"Blocked": bool(payload.get("Blocked", False)), "Division": division.division}
            account |= {"Created": now, "Modified": now}
            accounts[account_id] = account
            self._changed()
            return account

    @staticmethod
    def _next_account_code(accounts: Any) -> str:
        """Auto-numbering when no Code is sent (unconfirmed): highest numeric code + 1, 18 chars wide."""
        numbers = [int(a["Code"]) for a in accounts if str(a["Code"]).strip().isdigit()]
        return f"{max(numbers, default=0) + 1:>{ACCOUNT_CODE_WIDTH}}"

    # ---------------------------------------------------------- sales entries

    def create_sales_entry(self, division: DivisionFixture, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST salesentry/SalesEntries``: validate in Exact's order; nothing is stored on failure."""
        with self.lock:
            self._entry_posts[str(payload.get("YourRef"))] += 1
        _reject_unknown(payload, SALES_ENTRY_WRITABLE, "SalesEntry")
        with self.lock:
            _check_lengths(payload, SALES_ENTRY_FIELD_LIMITS)
            journal = self._sales_journal(division, payload.get("Journal"))
            customer = self._sales_customer(division, payload.get("Customer"))
            entry_date = (
                _date(payload["EntryDate"], "EntryDate") if payload.get("EntryDate") else self._today()
            )
            year, period = self._reporting_period(division, payload, entry_date)
            condition = self._payment_condition(division, payload, customer)
            currency = self._currency(division, journal.allow_foreign_currency, payload.get("Currency"))
            lines = self._entry_lines(division, payload.get("SalesEntryLines"))
            number = self._entry_number(division, journal.code, payload.get("EntryNumber"))
            entry = self._book_entry(division, journal.code, journal.description, customer, lines)
            due = _date(payload["DueDate"], "DueDate") if payload.get("DueDate") else None
            entry |= {
                "EntryNumber": number,
                "InvoiceNumber": _integer(payload["InvoiceNumber"], "InvoiceNumber")
                if payload.get("InvoiceNumber") is not None
                else number,
                "EntryDate": entry_date,
                "DueDate": due or entry_date + timedelta(days=division.payment_conditions[condition]),
                "ReportingYear": year,
                "ReportingPeriod": period,
                "PaymentCondition": condition,
                "PaymentReference": payload.get("PaymentReference"),
                "Currency": currency,
                "Description": payload.get("Description"),
                "YourRef": payload.get("YourRef"),
            }
            numbers = self._books.last_entry_numbers[division.division]
            numbers[journal.code] = max(numbers[journal.code], number)
            self._books.entries[division.division][entry["EntryID"]] = entry
            self._changed()
            return entry

    def _today(self) -> datetime:
        return datetime.combine(self.clock.now().date(), datetime.min.time(), tzinfo=UTC)

    @staticmethod
    def _sales_journal(division: DivisionFixture, code: Any) -> Any:
        journal = next(
            (j for j in division.journals if code is not None and j.code == str(code).strip()), None
        )
        if journal is None:
            raise ExactApiError(400, "Mandatory: Journal")
        if journal.type != JOURNAL_TYPE_SALES:
            raise ExactApiError(400, "Invalid: Journal (type)")
        return journal

    def _sales_customer(self, division: DivisionFixture, customer_id: Any) -> dict[str, Any]:
        if not customer_id:
            raise ExactApiError(400, "Mandatory: Account")
        customer = self._books.accounts[division.division].get(_guid(customer_id) or "")
        if customer is None:
            raise ExactApiError(400, "Klant werd niet gevonden in Exact")
        if customer["Status"] != "C":
            raise ExactApiError(400, "Invalid: Customer (Type)")
        return customer

    @staticmethod
    def _reporting_period(
        division: DivisionFixture, payload: Mapping[str, Any], entry_date: datetime
    ) -> tuple[int, int]:
        year = payload.get("ReportingYear")
        period = payload.get("ReportingPeriod")
        year = _integer(year, "ReportingYear") if year is not None else entry_date.year
        period = _integer(period, "ReportingPeriod") if period is not None else entry_date.month
        if year not in division.financial_years or not 1 <= period <= division.periods_per_year:
            raise ExactApiError(400, "Unknown: Financial year (Period-date table)")
        if (year, period) in division.closed_periods:
            raise ExactApiError(400, f"Periode is afgesloten: {year}-{period:02d}")
        return year, period

    @staticmethod
    def _payment_condition(
        division: DivisionFixture, payload: Mapping[str, Any], customer: Mapping[str, Any]
    ) -> str:
        chosen = (
            payload.get("PaymentCondition")
            or customer.get("PaymentConditionSales")
            or division.default_payment_condition
        )
        if not chosen or not str(chosen).strip():
            raise ExactApiError(400, "Mandatory: Payment condition")
        condition = str(chosen).strip()
        if condition not in division.payment_conditions:
            raise ExactApiError(400, "Invalid reference: Payment condition")
        return condition

    @staticmethod
    def _currency(division: DivisionFixture, allow_foreign: bool, requested: Any) -> str:
        currency = str(requested).strip().upper() if requested else division.currency
        if currency != division.currency and not allow_foreign:
            raise ExactApiError(400, "Niet toegestaan: Wisselkoers")
        return currency

    def _entry_lines(self, division: DivisionFixture, lines: Any) -> list[dict[str, Any]]:
        if not isinstance(lines, list) or not lines:
            raise ExactApiError(400, "Mandatory: SalesEntryLines")
        return [self._entry_line(division, number, line) for number, line in enumerate(lines, start=1)]

    def _entry_line(self, division: DivisionFixture, number: int, line: Any) -> dict[str, Any]:
        if not isinstance(line, dict):
            raise ExactApiError(400, "Mandatory: SalesEntryLines")
        _reject_unknown(line, SALES_ENTRY_LINE_WRITABLE, "SalesEntryLine")
        _check_lengths(line, SALES_ENTRY_LINE_FIELD_LIMITS)
        gl = self._line_gl_account(division, line.get("GLAccount"))
        vat = self._line_vat_code(division, line.get("VATCode"))
        if line.get("AmountFC") is None:
            raise ExactApiError(400, "Mandatory: AmountFC")
        amount = _decimal(line["AmountFC"], "AmountFC")
        vat_override = line.get("VATAmountFC")
        vat_amount = (
            _decimal(vat_override, "VATAmountFC") if vat_override is not None else amount * vat.percentage
        )
        vat_amount = _round_cents(vat_amount) if vat_override is None else vat_amount
        quantity = _decimal(line["Quantity"], "Quantity") if line.get("Quantity") is not None else None
        return (
            dict.fromkeys(SALES_ENTRY_LINE_WRITABLE)
            | line
            | {
                "ID": str(uuid.uuid4()),
                "LineNumber": number,
                "GLAccount": division.gl_account_id(gl.code),
                "GLAccountCode": gl.code,
                "GLAccountDescription": gl.description,
                "AmountFC": amount,
                "AmountDC": amount,
                "VATCode": vat.code,  # per line: two 0 % lines of different regimes stay apart
                "VATPercentage": vat.percentage,
                "VATAmountFC": vat_amount,
                "VATAmountDC": vat_amount,
                "Quantity": quantity,
                "Division": division.division,
            }
        )

    @staticmethod
    def _line_gl_account(division: DivisionFixture, value: Any) -> Any:
        if not value:
            raise ExactApiError(400, "Mandatory: Account")
        guid = _guid(value)
        gl = next((g for g in division.gl_accounts if division.gl_account_id(g.code) == guid), None)
        if gl is None:
            raise ExactApiError(400, f"Not found: Account ({value}) – G/L Account: Sales")
        if gl.blocked:
            raise ExactApiError(400, "Blocked: Ledger account")
        return gl

    @staticmethod
    def _line_vat_code(division: DivisionFixture, value: Any) -> Any:
        if value is None or not str(value).strip():
            raise ExactApiError(400, "Missing: VAT code")
        vat = next((v for v in division.vat_codes if v.code == str(value).strip()), None)
        if vat is None:
            raise ExactApiError(400, "Invalid reference: VAT code")
        if vat.blocked or vat.transaction_type == "P":
            raise ExactApiError(400, "Not allowed: VAT code")
        return vat

    def _entry_number(self, division: DivisionFixture, journal: str, requested: Any) -> int:
        if requested is None:
            return self._books.last_entry_numbers[division.division][journal] + 1
        number = _integer(requested, "EntryNumber")
        entries = self._books.entries[division.division].values()
        if any(e["Journal"] == journal and e["EntryNumber"] == number for e in entries):
            raise ExactApiError(400, f"Already exists – Entry number: {number}, Journal: {journal}")
        return number

    def _book_entry(
        self,
        division: DivisionFixture,
        journal: str,
        journal_description: str,
        customer: Mapping[str, Any],
        lines: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The computed part of a new entry: keys, totals, type and status."""
        entry_id = str(uuid.uuid4())
        amount = sum((line["AmountFC"] for line in lines), Decimal("0"))
        vat = sum((line["VATAmountFC"] for line in lines), Decimal("0"))
        now = self.clock.now()
        return dict.fromkeys(SALES_ENTRY_FIELDS) | {
            "EntryID": entry_id,
            "Division": division.division,
            "Journal": journal,
            "JournalDescription": journal_description,
            "Type": ENTRY_TYPE_CREDIT_NOTE if amount < 0 else ENTRY_TYPE_SALES,
            "Status": ENTRY_STATUS_OPEN,
            "Customer": customer["ID"],
            "CustomerName": customer["Name"],
            "AmountFC": amount,
            "AmountDC": amount,
            "VATAmountFC": vat,
            "VATAmountDC": vat,
            "Created": now,
            "Modified": now,
            "SalesEntryLines": [line | {"EntryID": entry_id} for line in lines],
        }

    # ------------------------------------------------------------ lookups

    def rows(
        self, division: DivisionFixture, entity_set: str, client_divisions: Sequence[int] = ()
    ) -> list[Any]:
        """Every row of one entity set, in a stable order, as internal dicts."""
        with self.lock:
            if entity_set == "Accounts":
                return list(self._books.accounts[division.division].values())
            if entity_set == "SalesEntries":
                return list(self._books.entries[division.division].values())
        return _REFERENCE_ROWS[entity_set](self.fixtures, division, client_divisions)

    # ------------------------------------------------------------ control

    def entries(self, division: int | None = None) -> list[dict[str, Any]]:
        """Every booked sales entry (wire form), so tests can count duplicates by ``YourRef``."""
        return self._dump(self._books.entries, division)

    def sales_entry_posts(self) -> dict[str, int]:
        """How many sales-entry POSTs the simulated Exact processed, per ``YourRef``, booked or refused.

        Requests an injected fault answered without processing are not counted. Tests use it to prove
        that an unknown outcome was settled by a lookup, never by sending the invoice again.
        """
        with self.lock:
            return dict(self._entry_posts)

    def accounts(self, division: int | None = None) -> list[dict[str, Any]]:
        """Every account (wire form)."""
        return self._dump(self._books.accounts, division)

    def _dump(self, section: Mapping[int, Mapping[str, Any]], division: int | None) -> list[dict[str, Any]]:
        with self.lock:
            selected = [d for d in section if division is None or d == division]
            return [to_wire(row) for d in selected for row in section[d].values()]

    def stats_snapshot(self) -> dict[str, Any]:
        """Calls per route and status, 429s, error-budget blocks, token refreshes and faults hit."""
        with self.lock:
            return self.stats.snapshot() | {
                "rate_limited": self._rate_limited,
                "error_budget_blocked": self._error_blocked,
                "token_refreshes": self._token_refreshes,
                "faults": self.faults.hits(),
            }


def _journal_rows(
    fixtures: ExactFixtures, division: DivisionFixture, _: Sequence[int]
) -> list[dict[str, Any]]:
    return [
        {"ID": _fixture_id(division, "journal", j.code), "Code": j.code, "Description": j.description,
         "Type": j.type, "AllowVariableCurrency": j.allow_foreign_currency, "Division": division.division}
        for j in division.journals
    ]  # fmt: skip


def _gl_rows(fixtures: ExactFixtures, division: DivisionFixture, _: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {"ID": division.gl_account_id(g.code), "Code": g.code, "Description": g.description,
         "IsBlocked": g.blocked, "Division": division.division}
        for g in division.gl_accounts
    ]  # fmt: skip


def _vat_rows(fixtures: ExactFixtures, division: DivisionFixture, _: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {"ID": _fixture_id(division, "vat", v.code), "Code": v.code, "Description": v.description,
         "Percentage": v.percentage, "Type": "E", "VATTransactionType": v.transaction_type,
         "IsBlocked": v.blocked, "Division": division.division}
        for v in division.vat_codes
    ]  # fmt: skip


def _division_rows(
    fixtures: ExactFixtures, _: DivisionFixture, allowed: Sequence[int]
) -> list[dict[str, Any]]:
    return [
        {"Code": d.division, "Description": d.name, "Country": d.country, "Currency": d.currency,
         "HID": d.division}
        for d in fixtures.divisions.values()
        if d.division in allowed
    ]  # fmt: skip


def _fixture_id(division: DivisionFixture, kind: str, code: str) -> str:
    return fixture_guid(division.division, kind, code)


_REFERENCE_ROWS: dict[
    str, Callable[[ExactFixtures, DivisionFixture, Sequence[int]], list[dict[str, Any]]]
] = {
    "Journals": _journal_rows,
    "GLAccounts": _gl_rows,
    "VATCodes": _vat_rows,
    "Divisions": _division_rows,
}


@dataclass(frozen=True, slots=True)
class _EntitySet:
    """One listable resource: its name in the state, its properties and its key."""

    name: str
    fields: tuple[str, ...]
    key: str


_ENTITY_SETS = {
    "crm/Accounts": _EntitySet("Accounts", ACCOUNT_FIELDS, "ID"),
    "salesentry/SalesEntries": _EntitySet("SalesEntries", SALES_ENTRY_FIELDS, "EntryID"),
    "financial/Journals": _EntitySet("Journals", JOURNAL_FIELDS, "ID"),
    "financial/GLAccounts": _EntitySet("GLAccounts", GL_ACCOUNT_FIELDS, "ID"),
    "vat/VATCodes": _EntitySet("VATCodes", VAT_CODE_FIELDS, "ID"),
    "system/Divisions": _EntitySet("Divisions", DIVISION_FIELDS, "Code"),
    "hrm/Divisions": _EntitySet("Divisions", DIVISION_FIELDS, "Code"),
}
_CREATORS: dict[str, Callable[[ExactOnlineSandbox, DivisionFixture, Mapping[str, Any]], dict[str, Any]]] = {
    "crm/Accounts": ExactOnlineSandbox.create_account,
    "salesentry/SalesEntries": ExactOnlineSandbox.create_sales_entry,
}


# ------------------------------------------------------------------ HTTP


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers=dict(headers or {}))


def _error(exc: ExactApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return _json(error_body(exc.message), exc.status, {**(headers or {}), **exc.headers})


def _next_link(request: Request, last_key: str) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
    params.append(("$skiptoken", f"guid'{last_key}'" if _guid(last_key) else last_key))
    return str(request.url.replace(query=urlencode(params, safe="$'(),")))


def _list_response(
    sandbox: ExactOnlineSandbox, request: Request, context: CallContext, entity_set: _EntitySet
) -> dict[str, Any]:
    try:
        options = odata.parse_query(request.query_params, entity_set.fields)
    except odata.ODataError as exc:
        raise ExactApiError(400, str(exc)) from exc
    rows = sandbox.rows(context.division, entity_set.name, context.permitted_divisions)
    page, last_key = odata.select_page(rows, options, key=entity_set.key, page_size=PAGE_SIZE)
    body: dict[str, Any] = {"results": [_read_form(request, odata.project(r, options.select)) for r in page]}
    if last_key is not None:
        body["__next"] = _next_link(request, last_key)
    return {"d": body}


def _single_response(
    sandbox: ExactOnlineSandbox, request: Request, context: CallContext, entity_set: _EntitySet, key: str
) -> dict[str, Any]:
    match = re.fullmatch(r"guid'([^']*)'", key)
    wanted = _guid(match.group(1)) if match else None
    if wanted is None:
        raise ExactApiError(400, f"Invalid key: {key}")
    try:
        select = odata.parse_query(
            {"$select": request.query_params.get("$select", "")}, entity_set.fields
        ).select
    except odata.ODataError as exc:
        raise ExactApiError(400, str(exc)) from exc
    row = next(
        (r for r in sandbox.rows(context.division, entity_set.name) if r[entity_set.key] == wanted), None
    )
    if row is None:
        raise ExactApiError(404, "Not found")
    return {"d": _read_form(request, odata.project(row, select))}


def _read_form(request: Request, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a GET answers it: a sales entry's lines are a deferred link, not the lines themselves.

    OData v2 (Exact's protocol) answers a navigation property without ``$expand`` as
    ``{"__deferred": {"uri": ...}}``; ossobv/exactonline ``api/invoices.py`` follows that URI to read the
    lines of an entry it fetched. A POST answers the created lines in place.
    """
    wire = to_wire(row)
    if "SalesEntryLines" in wire and "EntryID" in row:
        path = f"/api/v1/{row['Division']}/salesentry/SalesEntries(guid'{row['EntryID']}')/SalesEntryLines"
        wire["SalesEntryLines"] = {
            "__deferred": {"uri": str(request.url.replace(path=_mount(request) + path, query=""))}
        }
    return dict(wire)


def _mount(request: Request) -> str:
    """Where the app is mounted (``/exact`` in the sandbox server), so links point back into it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _entry_lines_response(sandbox: ExactOnlineSandbox, context: CallContext, key: str) -> dict[str, Any]:
    """``GET SalesEntries(guid'…')/SalesEntryLines``: the lines a deferred link points to."""
    match = re.fullmatch(r"guid'([^']*)'", key)
    wanted = _guid(match.group(1)) if match else None
    entry = next((r for r in sandbox.rows(context.division, "SalesEntries") if r["EntryID"] == wanted), None)
    if entry is None:
        raise ExactApiError(404, "Not found")
    return {"d": {"results": [to_wire(line) for line in entry["SalesEntryLines"]]}}


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ExactApiError(
            400, "Error processing request stream. The request body is not valid JSON."
        ) from exc
    if not isinstance(payload, dict):
        raise ExactApiError(400, "Error processing request stream. An entity object was expected.")
    return payload


def _add_api_routes(app: FastAPI, sandbox: ExactOnlineSandbox) -> None:
    def division_call(
        request: Request,
        division: str,
        endpoint: str,
        operation: Callable[[CallContext], Any],
        status: int = 200,
    ) -> Response:
        """Run one division call through authentication, limits and the error budget."""
        if len(str(request.url)) > MAX_URL_LENGTH:
            return _error(ExactApiError(414, "Request-URI Too Long"))
        try:
            context = sandbox.admit(request.headers.get("authorization"), division, endpoint)
        except ExactApiError as exc:
            return _error(exc)
        try:
            return _json(operation(context), status, context.headers)
        except ExactApiError as exc:
            sandbox.record_error(context, exc.status)
            return _error(exc, context.headers)

    @app.get("/api/v1/current/Me")
    def me(request: Request) -> Response:
        """Does not count toward the limits (no division in the path)."""
        try:
            return _json({"d": {"results": [sandbox.current_user(request.headers.get("authorization"))]}})
        except ExactApiError as exc:
            return _error(exc)

    for path, entity_set in _ENTITY_SETS.items():

        def list_entities(
            request: Request, division: str, _path: str = path, _set: _EntitySet = entity_set
        ) -> Response:
            return division_call(
                request, division, _path,
                lambda ctx: _list_response(sandbox, request, ctx, _set),
            )  # fmt: skip

        app.add_api_route(f"/api/v1/{{division}}/{path}", list_entities, methods=["GET"])

    for path in _CREATORS:
        entity_set = _ENTITY_SETS[path]

        def get_entity(
            request: Request, division: str, key: str, _path: str = path, _set: _EntitySet = entity_set
        ) -> Response:
            return division_call(
                request, division, _path, lambda ctx: _single_response(sandbox, request, ctx, _set, key)
            )

        async def create_entity(request: Request, division: str, _path: str = path) -> Response:
            payload: dict[str, Any] | ExactApiError
            try:
                payload = await _json_object(request)
            except ExactApiError as exc:
                payload = exc  # still answered after authentication and limits, like Exact does

            def operation(ctx: CallContext) -> dict[str, Any]:
                if isinstance(payload, ExactApiError):
                    raise payload
                return {"d": to_wire(_CREATORS[_path](sandbox, ctx.division, payload))}

            return division_call(request, division, _path, operation, status=201)

        app.add_api_route(f"/api/v1/{{division}}/{path}({{key}})", get_entity, methods=["GET"])
        app.add_api_route(f"/api/v1/{{division}}/{path}", create_entity, methods=["POST"])

    @app.get("/api/v1/{division}/salesentry/SalesEntries({key})/SalesEntryLines")
    def entry_lines(request: Request, division: str, key: str) -> Response:
        return division_call(
            request, division, "salesentry/SalesEntries", lambda ctx: _entry_lines_response(sandbox, ctx, key)
        )


def _add_token_route(app: FastAPI, sandbox: ExactOnlineSandbox) -> None:
    @app.post("/api/oauth2/token")
    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            return _json(sandbox.token(form))
        except OAuthError as exc:
            reason = getattr(exc, "reason", None)
            headers = {"Reason": f"{reason}: {exc}"} if reason else None
            return _json(exc.body, exc.status, headers)


def _add_control_routes(app: FastAPI, sandbox: ExactOnlineSandbox) -> None:
    """Exact's own control routes, next to the common ones of :func:`~.simulator.add_control_routes`."""
    prefix = CONTROL_PREFIX

    @app.get(f"{prefix}/entries")
    def entries(division: int | None = None) -> list[dict[str, Any]]:
        return sandbox.entries(division)

    @app.get(f"{prefix}/accounts")
    def accounts(division: int | None = None) -> list[dict[str, Any]]:
        return sandbox.accounts(division)

    add_consent_route(app, sandbox.consent, "divisions")


def create_app(sandbox: ExactOnlineSandbox) -> FastAPI:
    """The Exact Online API of ``sandbox`` as an ASGI app (mounted at ``/exact`` by the server)."""
    app = create_simulator_app(
        "Exact Online sandbox", sandbox, _add_token_route, _add_api_routes, _add_control_routes
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(error_body(str(exc.detail)), exc.status_code)

    return app


def demo_connection(sandbox_url: str, *, refresh_token: str | None = None) -> dict[str, Any]:
    """The demo connection on the sandbox at ``sandbox_url``: the sandbox app's client id and secret and the
    bootstrap consent's refresh token (``refresh_token``: another consent's, for tests that start from it)."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "login": exact_fixtures.CLIENT_ID,
        "password": exact_fixtures.CLIENT_SECRET,
        "extra": {"refresh_token": refresh_token or exact_fixtures.BOOTSTRAP_REFRESH_TOKEN, "timeout": 30},
    }


def bookings(sandbox: ExactOnlineSandbox) -> list[Booking]:
    """The sales entries in every division, in the common terms (``AmountFC`` is excluding VAT)."""
    return [
        Booking(
            DESCRIPTOR.name,
            str(entry["YourRef"]),
            str(entry["EntryNumber"]),
            str(entry["EntryID"]),
            Decimal(str(entry["AmountFC"])) + Decimal(str(entry["VATAmountFC"])),
            Decimal(str(entry["VATAmountFC"])),
            entry,
        )
        for entry in sandbox.entries()
    ]


BENCH_CONN_ID = "bench_exact"
"""The bench's one Exact connection: one app consent serves every bench division, as in production."""


def bench_slot(slot: int) -> BenchSlot:
    """Bench tenant ``slot``: a division of its own (Exact counts calls per app and division)."""
    division = exact_fixtures.BENCH_DIVISIONS[slot - 1]
    gl_accounts = exact_fixtures.bench_gl_accounts(division)
    return BenchSlot(
        {"division": division, "gl_accounts": gl_accounts, "default_gl_account": gl_accounts["8000"]},
        BENCH_CONN_ID,
    )


def bench_connection(sandbox_url: str, slot: int, limits: BenchLimits) -> dict[str, Any]:
    """The bench app's connection (every slot's): Exact's headers announce its limits, so it says none."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "login": exact_fixtures.BENCH_CLIENT_ID,
        "password": exact_fixtures.BENCH_CLIENT_SECRET,
        "extra": {"refresh_token": exact_fixtures.BENCH_REFRESH_TOKEN, "timeout": 30},
    }


def minute_window_end(response: requests.Response) -> float | None:
    """The end of the minute Exact counted ``response`` in, from its ``X-RateLimit-Minutely-Reset``
    (epoch milliseconds); None for answers outside the limits (the token endpoint)."""
    reset = response.headers.get("X-RateLimit-Minutely-Reset")
    return int(reset) / 1000 if reset is not None else None


SANDBOX = SandboxTool(
    descriptor=DESCRIPTOR,
    mount=MOUNT,
    simulator=ExactOnlineSandbox,
    create_app=create_app,
    connection=demo_connection,
    bookings=bookings,
    chaos=ChaosTargets(
        book=Target("POST", r"^/api/v1/\d+/salesentry/SalesEntries$"),
        lookup=Target("GET", r"^/api/v1/\d+/salesentry/SalesEntries$"),  # filtered on YourRef
        reads=(Target("GET", r"^/api/v1/\d+/"),),
        api=Target("*", r"^/api/v1/\d+/"),
        customers=Target("POST", r"^/api/v1/\d+/crm/Accounts$"),
    ),
    bench=BenchKnobs(
        limit_switch="minutely_limit",
        # 60 calls a minute, about one call per invoice: 660 invoices and their customers span 11 minutes.
        limit_run=LimitRun(invoices=660, time_scale=30, limit=60, real_limit=60),
        quick_limit_run=LimitRun(invoices=50, time_scale=60, limit=20, real_limit=60),
        connection=bench_connection,
        # Calls to the division count, not the token endpoint or current/Me.
        limited_route="{division}",
        windows=lambda hook, minute_s: WindowsFromAnswers(minute_window_end),
        template_integration=2,  # Demo Nederland BV: division 234567, NL VAT codes
        # One sales entry per POST: the minimum is one call per invoice, plus the customers created once.
        calls_target=("about 1.0", 1.05),
        # One sales entry per POST; a small backlog adds its customers (one POST each) and a lookup.
        max_calls_per_invoice=1.3,
        slots=len(exact_fixtures.BENCH_DIVISIONS),
        slot=bench_slot,
        clock_minutes=True,
        naive_baseline=True,
        overhead=2,  # the other extreme: one POST per invoice, customers created first
        accepted=(("21", "9", "0"), ("8000", "8010")),
        # Exact's headers announce its limits, so they are raised too (the header-fed budget would pause).
        limits_off={"limits_enabled": False, "minutely_limit": 1_000_000, "daily_limit": 10_000_000},
    ),
)
"""This simulator as the sandbox server, the demo and the harnesses find it (by the tool's name)."""
