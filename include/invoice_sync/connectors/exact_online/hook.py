"""Exact Online REST client on Airflow's :class:`~airflow.providers.http.hooks.http.HttpHook`.

The hook owns every piece of I/O with Exact: the connection contract, OAuth2 with rotating refresh
tokens (persisted through a :class:`~invoice_sync.connectors.base.TokenVault`), the per-division rate
budget, retries and the translation of failures into typed errors. Why it does not use
``HttpHook.run``: that turns every HTTP error into a bare ``AirflowException("400:Bad Request")``, and
the connector needs Exact's text and to know whether a write reached the server.

Connection (``conn_type`` http):

- ``host``: base URL, e.g. ``https://start.exactonline.be`` (or the sandbox's ``.../exact``)
- ``login`` / ``password``: the app's OAuth client id and client secret
- ``extra``: ``{"refresh_token": "...", "timeout": 30}``; ``refresh_token`` is the one from the user's
  consent and is used only while the vault holds no tokens yet. Other extra keys become HTTP headers,
  as in ``HttpHook``; the secrets never do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import requests

from invoice_sync.connectors.base import TokenSet, TokenVault
from invoice_sync.connectors.exact_online.errors import classify, error_text
from invoice_sync.connectors.hooks import (
    OAUTH_CONNECTION_FIELDS,
    AccountingHook,
    StoredToken,
    token_answer,
    url_path,
)
from invoice_sync.connectors.http import RateBudget, Window
from invoice_sync.domain.errors import (
    AuthError,
    QuotaExceededError,
    RateLimitedError,
    SyncError,
    TransientError,
)

TOKEN_PATH = "/api/oauth2/token"
REFRESH_MARGIN_S = 30.0
"""Refresh this long before expiry: Exact refuses an earlier refresh ("Access Token not expired")."""
_NOT_EXPIRED = "access token not expired"


class ExactOnlineHook(AccountingHook):
    """Calls Exact Online's REST API for one division on behalf of one Airflow connection.

    No I/O happens in the constructor; the connection is read on the first call.

    :param exact_online_conn_id: Airflow connection holding base URL, client id/secret and the
        consent's refresh token.
    :param vault: durable, locked storage of the connection's rotating tokens.
    :param division: Exact division (administration) every call addresses.
    :param budget: rate budget of this app and division; by default a fresh one per hook.
    :param sleep: how to wait for the rate budget and between retries (injectable for tests).
    :param get_attempts: tries of a GET (or token call) that fails transiently (5xx, network).
    :param backoff_s: first back-off between those tries; it doubles each time.
    :param max_throttled: how often one call is repeated after an unforeseen 429.
    :param refresh_margin_s: refresh the access token this long before it expires (a sandbox running
        faster than real time issues tokens that live only seconds).
    :param clock: current time, timezone-aware UTC, for token expiry.
    """

    conn_name_attr = "exact_online_conn_id"
    default_conn_name = "exact_online_default"
    conn_type = "http"
    hook_name = "Exact Online"
    tool_name = "Exact"
    required_connection_fields = OAUTH_CONNECTION_FIELDS
    default_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}

    def __init__(
        self,
        *,
        exact_online_conn_id: str = default_conn_name,
        vault: TokenVault,
        division: int,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        get_attempts: int = 3,
        backoff_s: float = 1.0,
        max_throttled: int = 3,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(
            conn_id=exact_online_conn_id,
            context=f"Exact Online division {division}",
            sleep=sleep,
            get_attempts=get_attempts,
            backoff_s=backoff_s,
        )
        self.exact_online_conn_id = exact_online_conn_id
        self.vault = vault
        self.division = division
        self.budget = budget or RateBudget(label=self.context, sleep=self._sleep)
        self._max_throttled = max_throttled
        self._clock = clock
        self._token = StoredToken(
            vault, exact_online_conn_id, margin=timedelta(seconds=refresh_margin_s), clock=clock
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Label the generic HTTP form fields with what Exact calls them."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Base URL", "login": "Client ID", "password": "Client secret"},
            "placeholders": {
                "host": "https://start.exactonline.be",
                "extra": '{"refresh_token": "<from the consent>", "timeout": 30}',
            },
        }

    # -- connection ------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the credentials with a call that does not count toward the division's daily limit."""
        try:
            self._send("GET", self._url("/api/v1/current/Me"), params={"$select": "CurrentDivision"})
        except SyncError as error:
            return False, error.message
        return True, "Connection successfully tested"

    # -- public calls ---------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET ``/api/v1/{division}/{path}`` (or an absolute ``__next`` URL) and return its JSON.

        Transient failures are retried with exponential back-off: reading twice is harmless.
        """
        url = path if "://" in path else self._url(f"/api/v1/{self.division}/{path}")
        return self._retrying(lambda: self._json(self._send("GET", url, params=params), url, safe=True))

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
        url = self._url(f"/api/v1/{self.division}/{path}")
        response = self._send("POST", url, json=dict(payload), headers={"Prefer": "return=representation"})
        entity = self._json(response, url, safe=False).get("d")
        if not isinstance(entity, dict):
            raise self._unknown(f"{self.context}: POST {path} answered without the created record")
        return entity

    # -- request machinery ----------------------------------------------------------------------

    def _send(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One API call within the budget, with one token refresh on 401 and a wait on 429.

        Returns a 2xx response; everything else becomes a typed error. A write whose outcome cannot
        be known raises :class:`~invoice_sync.domain.errors.OutcomeUnknownError`.
        """
        safe = method == "GET"
        refreshed = False
        throttled = 0
        while True:
            self.budget.acquire()
            token = self._access_token()
            authorised = {**(headers or {}), "Authorization": f"Bearer {token}"}
            response = self._transmit(method, url, safe=safe, headers=authorised, **kwargs)
            short, long = _rate_windows(response.headers)
            self.budget.observe(short=short, long=long)
            if response.status_code == 401 and not refreshed:
                refreshed = True  # Exact refused the token (expired early, revoked): one new try
                self._access_token(rejected=token)
                continue
            if response.status_code == 429 and _windows_open(short, long):
                # Not a rate window: Exact blocks an endpoint for an hour after too many errors.
                raise QuotaExceededError(f"{self.context}: {error_text(response)}", resets_at=None)
            if response.status_code == 429 and throttled < self._max_throttled:
                throttled += 1  # a 429 means nothing was done, so even a write may be repeated
                self.log.info("%s: rate limited by Exact, waiting for the window to reopen", self.context)
                self.budget.throttled(short=short, long=long)
                continue
            if response.ok:
                return response
            if response.status_code == 429:
                raise RateLimitedError(f"{self.context}: {error_text(response)}")
            error = classify(response.status_code, error_text(response), context=self.context)
            if not safe and response.status_code >= 500:
                raise self._unknown(error.message)
            raise error

    def _json(self, response: requests.Response, url: str, *, safe: bool) -> dict[str, Any]:
        """The JSON body of a 2xx answer; a truncated or garbled one counts as no answer at all."""
        try:
            body = response.json()
        except ValueError as exc:
            detail = f"{self.context}: unreadable answer from {url_path(url)}"
            if safe:
                raise TransientError(detail) from exc
            raise self._unknown(detail) from exc
        return body if isinstance(body, dict) else {}

    # -- OAuth2 -----------------------------------------------------------------------------------

    def _access_token(self, *, rejected: str | None = None) -> str:
        """A usable access token, refreshed through the vault when needed (see :class:`StoredToken`).

        :param rejected: an access token Exact just refused with 401: refresh even if it looks valid.
        """
        return self._token.get(self._request_tokens, rejected=rejected)

    def _request_tokens(self, current: TokenSet | None) -> TokenSet:
        """Spend the stored refresh token (or the consent's) on a new token pair."""
        connection = self.get_connection(self.exact_online_conn_id)
        refresh_token = current.refresh_token if current else connection.extra_dejson.get("refresh_token")
        if not refresh_token:
            raise AuthError(
                f"Exact Online connection {self.exact_online_conn_id}: no refresh token is stored; "
                "connect the integration to Exact Online first"
            )
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": connection.login or "",
            "client_secret": connection.password or "",
        }
        url = self._url(TOKEN_PATH)

        def call() -> dict[str, Any]:
            # Token calls do not count toward the division's budget, so they bypass it.
            # Repeating after a lost answer relies on Exact keeping a replaced refresh token valid
            # for ~10 minutes until its successor is used; where it does not, the retry's
            # invalid_grant tells the user to reconnect, which is then the truth.
            response = self._transmit("POST", url, safe=True, data=form)
            if response.ok:
                return self._json(response, url, safe=True)
            text = error_text(response)
            if current is not None and response.status_code == 401 and _NOT_EXPIRED in text.lower():
                return {}  # refreshed too early (clocks differ): the current tokens still work
            raise self._token_error(response.status_code, text)

        body = self._retrying(call)
        if not body:
            assert current is not None
            return current
        return token_answer(body, refresh_token=refresh_token, now=self._clock(), where=self.context)

    def _token_error(self, status: int, text: str) -> SyncError:
        where = f"Exact Online connection {self.exact_online_conn_id}"
        if status >= 500:
            return TransientError(f"{where}: token refresh failed: {text}", status=status)
        return AuthError(
            f"{where}: {text}. The refresh token is no longer accepted; reconnect the integration "
            "to Exact Online (give consent again)",
            status=status,
        )


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
