"""Exact Online REST client, on the OAuth 2.0 REST hook it shares with Xero and QuickBooks Online.

The hook owns every piece of I/O with Exact: the connection contract, OAuth2 with rotating refresh
tokens (persisted through a :class:`~invoice_sync.connectors.base.TokenVault`), the per-division rate
budget, retries and the translation of failures into typed errors. The machinery of a call is
:class:`~invoice_sync.connectors.oauth.OAuthRestHook`'s; what is Exact's own is its rate headers, its
error texts and its token request.

Connection (``conn_type`` ``exact_online``; one stored as ``http`` works alike):

- ``host``: base URL, e.g. ``https://start.exactonline.be`` (or the sandbox's ``.../exact``)
- ``login`` / ``password``: the app's OAuth client id and client secret
- ``extra``: ``{"refresh_token": "...", "timeout": 30}``; ``refresh_token`` is the one from the user's
  consent and is used only while the vault holds no tokens yet. Other extra keys become HTTP headers,
  as in ``HttpHook``; the secrets never do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from invoice_sync.connectors.exact_online import DESCRIPTOR
from invoice_sync.connectors.exact_online.errors import classify, error_text
from invoice_sync.connectors.hooks import (
    token_answer,
)
from invoice_sync.connectors.http import Window
from invoice_sync.connectors.oauth import OAuthRestHook
from invoice_sync.domain.errors import (
    AuthError,
    QuotaExceededError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.ports import TokenSet, TokenVault

TOKEN_PATH = "/api/oauth2/token"
REFRESH_MARGIN_S = 30.0
"""Refresh this long before expiry: Exact grants a new access token at most ~30 s before the last one
expires (reference section 2; PipedreamHQ/pipedream issue #1655) and refuses an earlier refresh."""
TOKEN_CALLS_PER_DAY = 200
"""Exact's cap on token calls per app key and user a day (reference sections 2 and 8)."""
_TOO_EARLY = re.compile(r"access[ _]token not expired", re.IGNORECASE)
"""Exact's refusal of an early refresh: HTTP 400 ``{"error": "access_denied", "error_description": "Rate
limit exceeded: access_token not expired"}`` with ``Reason: TooEarlyToRefreshTokens`` (websmurf/
laravel-exact-online issue #31, 2026). Its older OAuth page, quoted in ossobv/exactonline
``api/autorefresh.py``, named a 401 "Access Token not expired"; both mean the current token still works."""
_RATE_LIMITED = re.compile(r"rate limit exceeded", re.IGNORECASE)


class ExactOnlineHook(OAuthRestHook):
    """Calls Exact Online's REST API for one division on behalf of one Airflow connection.

    The call machinery (budget, one new token after a 401, 429s waited out, lost answers) is
    :class:`~invoice_sync.connectors.oauth.OAuthRestHook`'s; this class adds what Exact differs in: its
    ``X-RateLimit-*`` headers, a 429 that is an endpoint block rather than a rate window, its error texts,
    and its token request (credentials in the form, on the API's own host). No I/O happens in the
    constructor; the connection is read on the first call.

    :param exact_online_conn_id: Airflow connection holding base URL, client id/secret and the
        consent's refresh token.
    :param vault: durable, locked storage of the connection's rotating tokens (None: see
        :class:`~invoice_sync.connectors.oauth.OAuthRestHook`).
    :param division: the Exact division (administration) the sync's calls address; a hook Airflow builds
        for the Connections form has none, and its test needs none.
    :param token_calls_per_day: token calls this hook sends in a UTC day before it stops (see
        :class:`TokenCallBudget`).
    :param hook_options: the base's keyword arguments (``budget``, ``sleep``, ``get_attempts``,
        ``backoff_s``, ``max_throttled``, ``clock``); ``refresh_margin_s`` defaults to
        :data:`REFRESH_MARGIN_S` (a sandbox running faster than real time issues tokens that live only
        seconds, so tests shrink it).
    """

    conn_name_attr = "exact_online_conn_id"
    default_conn_name = "exact_online_default"
    conn_type = DESCRIPTOR.conn_type
    hook_name = DESCRIPTOR.label
    tool_name = "Exact"
    token_url = TOKEN_PATH

    def __init__(
        self,
        *,
        exact_online_conn_id: str = default_conn_name,
        vault: TokenVault | None = None,
        division: int | None = None,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        token_calls_per_day: int = TOKEN_CALLS_PER_DAY,
        **hook_options: Any,
    ) -> None:
        super().__init__(
            conn_id=exact_online_conn_id,
            context=f"Exact Online division {division}" if division is not None else "Exact Online",
            vault=vault,
            refresh_margin_s=refresh_margin_s,
            **hook_options,
        )
        self.exact_online_conn_id = exact_online_conn_id
        self.division = division
        self._kept: TokenSet | None = None  # a token Exact refused to replace yet, used until _kept_until
        self._kept_until = datetime.min.replace(tzinfo=UTC)
        self._token_calls = TokenCallBudget(
            token_calls_per_day, self._clock, f"Exact Online connection {exact_online_conn_id}"
        )

    # -- connection ------------------------------------------------------------------------------

    def _try_api(self) -> str:
        """Check the tokens with a call that does not count toward the division's daily limit."""
        self.call("GET", "/api/v1/current/Me", params={"$select": "CurrentDivision"})
        return "Connection successfully tested"

    def _token_response(self, connection: Any, form: Mapping[str, str]) -> requests.Response:
        """Exact takes the client credentials in the form, on the API's own host."""
        credentials = {"client_id": connection.login or "", "client_secret": connection.password or ""}
        return self._transmit(
            "POST", self._url(self.token_url), safe=True, issues_tokens=True, data={**form, **credentials}
        )

    # -- public calls ---------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET ``/api/v1/{division}/{path}`` (or an absolute ``__next`` URL) and return its JSON.

        Transient failures are retried with exponential back-off: reading twice is harmless.
        """
        url = path if "://" in path else self._url(self._in_division(path))
        return _object(
            self._retrying(
                lambda: self._json(self.send("GET", url, safe=True, params=params), url, safe=True)
            )
        )

    def get_all(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row of a list, following ``d.__next`` (Exact pages CRUD lists by 60 rows)."""
        next_path: str | None = path
        next_params = params
        while next_path:
            body = self.get(next_path, next_params).get("d") or {}
            yield from body.get("results", [])
            next_path, next_params = body.get("__next"), None

    def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``/api/v1/{division}/{path}`` and return the created entity (``d``).

        Never retried blindly: when the request may have reached Exact but no complete answer came
        back (read timeout, dropped connection, malformed body, 5xx) this raises
        :class:`~invoice_sync.domain.errors.OutcomeUnknownError`, and the caller looks the record up.

        :raises TransientError: the request was never sent (connection refused); safe to repeat.
        """
        entity = _object(
            self.call(
                "POST",
                self._in_division(path),
                json=dict(payload),
                headers={"Prefer": "return=representation"},
            )
        ).get("d")
        if not isinstance(entity, dict):
            raise self._unknown(f"{self.context}: POST {path} answered without the created record")
        return entity

    def _in_division(self, path: str) -> str:
        if self.division is None:
            raise ValueError("this Exact Online hook was made without a division; it can only be tested")
        return f"/api/v1/{self.division}/{path}"

    # -- what Exact differs in ------------------------------------------------------------------

    def _observe(self, response: requests.Response) -> None:
        short, long = _rate_windows(response.headers)
        self.budget.observe(short=short, long=long)

    def _throttled(self, response: requests.Response, attempt: int) -> None:
        short, long = _rate_windows(response.headers)
        if _windows_open(short, long):
            # Not a rate window: Exact blocks an endpoint for an hour after too many errors.
            raise QuotaExceededError(f"{self.context}: {error_text(response)}", resets_at=None)
        self.log.info("%s: rate limited by Exact, waiting for the window to reopen", self.context)
        self.budget.throttled(short=short, long=long)

    def _error(self, response: requests.Response) -> SyncError:
        return classify(response.status_code, error_text(response), context=self.context)

    # -- OAuth 2.0 ----------------------------------------------------------------------------------

    def _access_token(self, *, rejected: str | None = None) -> str:
        """A usable access token; after a 401, a refresh only when Exact would grant one.

        The vault is read again under its lock first (the base's :class:`~.hooks.StoredToken` does): when
        another worker stored a newer token, that one is used and nothing is refreshed. When the refused
        token is still the stored one and is young (more than the refresh margin before expiry, the ~30 s
        in which Exact accepts a refresh), a refresh would be refused as too early and spend a token call:
        the 401 is reported instead of starting a refresh storm (reference section 2: never refresh on a
        401 of a token younger than ~570 s).
        """
        if rejected is None:
            if self._kept is not None and self._clock() < self._kept_until:
                return self._kept.access_token  # Exact said it is still good; ask again later
            return super()._access_token()
        self._kept = None

        def obtain(current: TokenSet | None) -> TokenSet:
            if current is not None and current.access_token == rejected and self._token.fresh(current):
                left = (_utc(current.expires_at) - self._clock()).total_seconds()
                raise AuthError(
                    f"{self.context}: Exact refused the access token although it has {left:.0f} s left; "
                    "no refresh was sent, as Exact grants a new token only in its last 30 seconds. Check "
                    "that the user still has access to the division; if this persists, reconnect the "
                    "integration to Exact Online",
                    status=401,
                )
            return self._request_tokens(current)

        return self._token.get(obtain, rejected=rejected)

    def _request_tokens(self, current: TokenSet | None) -> TokenSet:
        """Spend the stored refresh token (or the consent's) on a new token pair.

        Unlike the base's request, Exact takes the client credentials in the form, on the API's own host,
        answers an early refresh with a rate-limit refusal that means "the current token is still good",
        and allows an app :data:`TOKEN_CALLS_PER_DAY` token calls per user a day, which this hook counts.
        """
        connection = self.get_connection(self.exact_online_conn_id)
        refresh_token = current.refresh_token if current else connection.extra_dejson.get("refresh_token")
        if not refresh_token:
            raise AuthError(
                f"Exact Online connection {self.exact_online_conn_id}: no refresh token is stored; "
                "connect the integration to Exact Online first"
            )
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        url = self._url(self.token_url)

        def call() -> dict[str, Any]:
            # Token calls do not count toward the division's budget, so they bypass it; they count
            # toward the day's token calls. Repeating after a lost answer relies on Exact keeping a
            # replaced refresh token valid for ~10 minutes until its successor is used; where it does
            # not, the retry's invalid_grant tells the user to reconnect, which is then the truth.
            self._token_calls.spend()
            response = self._token_response(connection, form)
            if response.ok:
                return _object(self._json(response, url, safe=True))
            text = error_text(response)
            if _TOO_EARLY.search(text) and response.status_code in (400, 401):
                return {}  # Exact still honours the current access token
            if _RATE_LIMITED.search(text) or response.status_code == 429:
                raise self._token_calls.refused(text)
            raise self._token_error(response.status_code, text)

        body = self._retrying(call)
        if body:
            return token_answer(body, refresh_token=refresh_token, now=self._clock(), where=self.context)
        if current is None:
            # Another client of this app and user holds the young token; ours is gone from the vault.
            raise TransientError(
                f"{self.context}: Exact will not issue a new access token yet (its last one is less than "
                "10 minutes old) and none is stored here; the next run gets one"
            )
        # Keep it without asking again until half its remaining life (at least half the margin) has
        # passed: each early refresh spends a token call, so the calls until Exact agrees stay few, even
        # when our clock runs ahead of Exact's and says the token has expired.
        now = self._clock()
        hold = max((_utc(current.expires_at) - now) / 2, self._token.margin / 2)
        self._kept, self._kept_until = current, now + hold
        self.log.info("%s: Exact says the current access token is still good; keeping it", self.context)
        return current

    def _token_error(self, status: int, text: str) -> SyncError:
        where = f"Exact Online connection {self.exact_online_conn_id}"
        if status >= 500:
            return TransientError(f"{where}: token refresh failed: {text}", status=status)
        return AuthError(
            f"{where}: {text}. The refresh token is no longer accepted; reconnect the integration "
            "to Exact Online (give consent again)",
            status=status,
        )


class TokenCallBudget:
    """The token calls one hook makes in a UTC day, stopped before Exact's cap blocks the app's user.

    Exact allows :data:`TOKEN_CALLS_PER_DAY` token calls per app key and user a day (reference section 2
    and 8: Invantive forum 1040; picqer/exact-php-client issue #523 on the token endpoint's limit). A
    healthy connection spends one per 10 minutes of work (144 in a full day), so running out means a
    refresh loop: stopping it keeps the user's other tasks and tomorrow's first run working.

    :param limit: token calls allowed a day.
    :param clock: current time, timezone-aware UTC.
    :param where: the connection, for messages.
    """

    def __init__(self, limit: int, clock: Callable[[], datetime], where: str) -> None:
        self.limit = limit
        self._clock = clock
        self._where = where
        self._day: date | None = None
        self.spent = 0

    def spend(self) -> None:
        """Count one token call about to be sent; refuse when the day's calls are spent."""
        today = self._clock().date()
        if today != self._day:
            self._day, self.spent = today, 0
        if self.spent >= self.limit:
            raise QuotaExceededError(
                f"{self._where}: {self.spent} token calls sent today, Exact's limit is {self.limit} per "
                "app and user a day; no more are sent until tomorrow (UTC). This many means the token "
                "keeps being refused: check the connection",
                resets_at=self._tomorrow(),
                status=None,
            )
        self.spent += 1

    def refused(self, text: str) -> QuotaExceededError:
        """Exact's own refusal of a token call for a rate limit (its day's token calls, say)."""
        return QuotaExceededError(
            f"{self._where}: Exact refused a new access token: {text}. The connection is fine; Exact "
            "allows a limited number of token calls a day, so the rest waits for the next run",
            resets_at=self._tomorrow(),
        )

    def _tomorrow(self) -> datetime:
        return datetime.combine(self._clock().date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """``moment`` timezone-aware; the vault may hand back naive UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _object(body: Any) -> dict[str, Any]:
    """Exact answers JSON objects; anything else reads as an empty one."""
    return body if isinstance(body, dict) else {}


def _windows_open(short: Window | None, long: Window | None) -> bool:
    """Whether a 429's headers show calls left in both windows (so the refusal has another cause)."""
    return all(window is not None and (window.remaining or 0) > 0 for window in (short, long))


def _rate_windows(headers: Mapping[str, str]) -> tuple[Window | None, Window | None]:
    """The minutely and daily windows from Exact's ``X-RateLimit-*`` headers (resets in epoch ms)."""

    def window(remaining: str, reset: str) -> Window | None:
        try:
            return Window(remaining=int(headers[remaining]), resets_at=int(headers[reset]) / 1000)
        except (KeyError, ValueError):
            return None

    return (
        window("X-RateLimit-Minutely-Remaining", "X-RateLimit-Minutely-Reset"),
        window("X-RateLimit-Remaining", "X-RateLimit-Reset"),
    )
