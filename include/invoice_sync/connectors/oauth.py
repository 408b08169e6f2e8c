"""JSON REST behind OAuth 2.0 refresh tokens: the client shape Xero and QuickBooks Online share.

Both tools issue short-lived access tokens for a refresh token from the user's consent, take the app's
client id and secret as HTTP Basic credentials at a token endpoint on another host than the API, and
answer JSON. What this module does once for both: keeping the tokens in the vault (refreshed under its
lock, see :class:`~invoice_sync.connectors.hooks.StoredToken`), one new token and one repeat when the tool
refuses a token, waiting out a 429 and repeating the call (a 429 means nothing was done), a rate budget
asked before every call, and the typed error of a write whose answer was lost. What differs per tool (where
the tenant goes, how limits are announced, how errors read) is left to three methods a subclass overrides:
:meth:`OAuthRestHook._observe`, :meth:`OAuthRestHook._throttled` and :meth:`OAuthRestHook._error`.

Connection (``conn_type``: the tool's name, ``exact_online``, ``xero``, ``quickbooks``; connections stored
as ``http`` work alike):

- ``host``: the API's base URL (``https://api.xero.com``, ``https://quickbooks.api.intuit.com``, or the
  sandbox's mount); paths are relative to it
- ``login`` / ``password``: the app's OAuth client id and client secret
- ``extra``: ``{"refresh_token": "<from the consent>", "timeout": 30}``; ``token_url`` replaces the tool's
  token endpoint (the sandbox serves its own). ``refresh_token`` is used only while the vault holds none.

Testing a connection (the Connections form's Test button) must not break it. All three tools rotate
refresh tokens, and a hook that Airflow builds for the form has no durable vault to keep a successor in;
spending the form's refresh token there would leave the connection with a dead one. Such a hook therefore
proves what it can without spending it: it asks the token endpoint to redeem an authorization code that
cannot exist. OAuth 2.0 authenticates the client before it looks at the grant (RFC 6749, sections 3.2.1
and 5.2), so ``invalid_client`` means a wrong client id or secret, in the tool's own words, and any other
refusal of the made-up code means the tool knows the app. A hook with a durable vault (a task's) tests
with real calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import requests

from invoice_sync.connectors.hooks import (
    OAUTH_CONNECTION_FIELDS,
    AccountingHook,
    MemoryTokenVault,
    StoredToken,
    token_answer,
    url_path,
)
from invoice_sync.connectors.http import RateBudget
from invoice_sync.domain.errors import AuthError, RateLimitedError, SyncError, TransientError
from invoice_sync.domain.ports import BudgetStore, TokenSet, TokenVault

PROBE_CODE = "invoice-sync-connection-test"
"""The authorization code a connection test asks the token endpoint to redeem: no tool ever issued it."""


class OAuthRestHook(AccountingHook):
    """Calls one tenant of a JSON API with OAuth 2.0 bearer tokens kept in the token vault.

    No I/O happens in the constructor; the connection is read on the first call.

    :param conn_id: Airflow connection with the base URL, client id/secret and the consent's refresh token.
    :param context: where calls happen, for messages (``"Xero organisation Demo Ltd"``).
    :param vault: durable, locked storage of the connection's rotating tokens, shared by every task; None
        (Airflow building the hook for the Connections form) keeps them in this hook only, and then no
        refresh token is spent (see the module's docstring).
    :param budget: rate budget of this tenant; by default the one :meth:`_new_budget` makes on first use.
    :param sleep: how to wait for the budget, after a 429 and between retries (injectable for tests).
    :param get_attempts: tries of a call that is safe to repeat and fails transiently (5xx, network).
    :param backoff_s: first back-off between those tries; it doubles each time.
    :param max_throttled: how often one call is repeated after a 429 before giving up on it.
    :param refresh_margin_s: refresh the access token this long before it expires.
    :param clock: current time, timezone-aware UTC, for token expiry.
    """

    token_url: ClassVar[str]
    """The tool's token endpoint; a connection's ``token_url`` extra replaces it."""
    required_connection_fields = OAUTH_CONNECTION_FIELDS
    default_headers: dict[str, str] = {"Accept": "application/json"}

    def __init__(
        self,
        *,
        conn_id: str,
        context: str,
        vault: TokenVault | None = None,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        get_attempts: int = 3,
        backoff_s: float = 1.0,
        max_throttled: int = 3,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shared_budgets: BudgetStore | None = None,
    ) -> None:
        super().__init__(
            conn_id=conn_id,
            context=context,
            sleep=sleep,
            get_attempts=get_attempts,
            backoff_s=backoff_s,
            shared_budgets=shared_budgets,
        )
        self.vault = vault if vault is not None else MemoryTokenVault()
        self._budget = budget
        self._max_throttled = max_throttled
        self._clock = clock
        self._token = StoredToken(
            self.vault, conn_id, margin=timedelta(seconds=refresh_margin_s), clock=clock
        )

    @property
    def budget(self) -> RateBudget:
        """The tenant's rate budget, made by :meth:`_new_budget` from the connection on first use."""
        if self._budget is None:
            self._budget = self._new_budget(self.get_connection(self.conn_id).extra_dejson)
        return self._budget

    # -- what a tool's hook overrides -----------------------------------------------------------------

    def _new_budget(self, extra: Mapping[str, Any]) -> RateBudget:
        """The budget when none was given; ``extra`` is the connection's (limits set there)."""
        return RateBudget(label=self.context, sleep=self._sleep)

    def _headers(self) -> dict[str, str]:
        """Headers every API call carries besides the token (a tenant id, say)."""
        return {}

    def _observe(self, response: requests.Response) -> None:
        """Learn the tool's rate windows from an answer (headers, or the local count alone)."""

    def _throttled(self, response: requests.Response, attempt: int) -> None:
        """Wait until a refused (429) call may go again, or raise when that is not today.

        :param attempt: how many 429s this call has had, 1 for the first.
        """
        self.budget.throttled()

    def _error(self, response: requests.Response) -> SyncError:
        """The typed error of a non-2xx answer (other than a first 401 or a 429), with the tool's words."""
        return TransientError(f"{self.context}: HTTP {response.status_code}", status=response.status_code)

    def _token_response(self, connection: Any, form: Mapping[str, str]) -> requests.Response:
        """POST ``form`` to the token endpoint with the app's credentials where the tool wants them: here
        HTTP Basic (RFC 6749, section 2.3.1), at the ``token_url`` extra or :attr:`token_url`."""
        url = str(connection.extra_dejson.get("token_url") or self.token_url)
        credentials = (connection.login or "", connection.password or "")
        return self._transmit(
            "POST",
            url,
            safe=True,
            issues_tokens=True,
            data=dict(form),
            auth=credentials,
            headers={"Accept": "application/json"},
        )

    def _try_api(self) -> str:
        """Test the connection with real API calls (the hook keeps the tokens they need); the message."""
        raise NotImplementedError

    # -- connection test -------------------------------------------------------------------------------

    def _try_connection(self) -> str:
        """Real API calls when the tokens they take outlive the hook, else the client-only check."""
        if self.keeps_tokens:
            return self._try_api()
        return self._check_client()

    def _check_client(self) -> str:
        """Ask the token endpoint to redeem :data:`PROBE_CODE`: proves the URL, client id and secret
        without spending the refresh token (see the module's docstring).

        :raises AuthError: the tool refused the client id or secret (its words in the message).
        :raises TransientError: the token endpoint failed or could not be reached.
        """
        connection = self.get_connection(self.conn_id)
        form = {"grant_type": "authorization_code", "code": PROBE_CODE}
        response = self._retrying(lambda: self._token_response(connection, form))
        if response.status_code >= 500:
            raise TransientError(
                f"{self.hook_name}: the token endpoint failed with HTTP {response.status_code}",
                status=response.status_code,
            )
        text = oauth_error_text(response)
        if response.status_code == 401 or text.split(":", 1)[0] == "invalid_client":
            raise AuthError(
                f"{self.hook_name}: {self.tool_name} refused the client ID and secret: {text}",
                status=response.status_code,
            )
        return (
            f"{self.tool_name} accepted the client ID and secret. The refresh token was not tried: "
            f"{self.tool_name} replaces it when it is used, and this test keeps no tokens, so the first "
            "sync run is the one to spend it"
        )

    # -- calls ---------------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        safe: bool | None = None,
        data: str | bytes | None = None,
    ) -> Any:
        """Send one API call and return its JSON body.

        :param path: relative to the connection's base URL.
        :param data: a body that is not JSON (QuickBooks takes its query text as ``application/text``);
            the caller sets its ``Content-Type``. Give ``json`` or ``data``, not both.
        :param safe: whether repeating the call is harmless; defaults to "it is a GET". Safe calls are
            retried on transient failures; an unsafe call whose answer was lost, unreadable or a 5xx
            raises :class:`~invoice_sync.domain.errors.OutcomeUnknownError` and is never repeated here.
        :raises TransientError: nothing was done (never sent, or a safe call kept failing).
        """
        safe = method.upper() == "GET" if safe is None else safe
        url = self._url(path)

        def once() -> Any:
            body: dict[str, Any] = {"json": json} if data is None else {"data": data}
            response = self.send(method, url, params=params, headers=headers, safe=safe, **body)
            return self._json(response, url, safe=safe)

        return self._retrying(once) if safe else once()

    def send(
        self,
        method: str,
        url: str,
        *,
        safe: bool,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One call within the budget, one new token after a refused one, 429s waited out.

        Returns a 2xx answer; everything else becomes the subclass's typed error, or
        :class:`~invoice_sync.domain.errors.OutcomeUnknownError` for a write answered with a 5xx.
        """
        refreshed = False
        throttled = 0
        while True:
            # The token first: a refresh can wait seconds on another process's, and a unit of a shared
            # window reserved before it would reach the tool in a later window than it was counted in.
            token = self._access_token()
            self.budget.acquire()
            sent = {**self._headers(), **(headers or {}), "Authorization": f"Bearer {token}"}
            response = self._transmit(method, url, safe=safe, headers=sent, **kwargs)
            self._observe(response)
            if response.status_code == 401 and not refreshed:
                refreshed = True  # refused before doing anything: a new token and the same call again
                self._access_token(rejected=token)
                continue
            if response.status_code == 429:
                throttled += 1
                if throttled > self._max_throttled:
                    raise RateLimitedError(f"{self.context}: still refused with 429 after {throttled} waits")
                self._throttled(response, throttled)
                continue
            if response.ok:
                return response
            error = self._error(response)
            if not safe and response.status_code >= 500:
                raise self._unknown(error.message)
            raise error

    def _json(self, response: requests.Response, url: str, *, safe: bool) -> Any:
        """The JSON body of a 2xx answer; a truncated or garbled one counts as no answer at all."""
        try:
            return response.json()
        except ValueError as exc:
            detail = f"{self.context}: unreadable answer from {url_path(url)}"
            if safe:
                raise TransientError(detail) from exc
            raise self._unknown(detail) from exc

    # -- OAuth 2.0 -----------------------------------------------------------------------------------

    def _access_token(self, *, rejected: str | None = None) -> str:
        """A usable access token, refreshed through the vault when needed.

        :param rejected: a token the tool just refused with 401: replace it even if it looks valid.
        """
        return self._token.get(self._request_tokens, rejected=rejected)

    def _request_tokens(self, current: TokenSet | None) -> TokenSet:
        """Spend the stored refresh token (or the consent's) on a new pair; both tools rotate them."""
        connection = self.get_connection(self.conn_id)
        extra = connection.extra_dejson
        refresh_token = current.refresh_token if current else extra.get("refresh_token")
        where = f"{self.hook_name} connection {self.conn_id}"
        if not refresh_token:
            raise AuthError(
                f"{where}: no refresh token is stored; connect the integration to {self.tool_name} first"
            )
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}

        def call() -> Any:
            # Token calls do not count toward the tenant's limits, so the budget is not asked. A repeat
            # after a lost answer spends a refresh token that may already be replaced; the tool's answer
            # (invalid_grant) then tells the user to reconnect, which is then the truth.
            response = self._token_response(connection, form)
            if response.status_code >= 500:
                raise TransientError(f"{where}: token refresh failed with HTTP {response.status_code}")
            if not response.ok:
                raise AuthError(
                    f"{where}: {oauth_error_text(response)}. The refresh token is no longer accepted; "
                    f"reconnect the integration to {self.tool_name} (give consent again)",
                    status=response.status_code,
                )
            return self._json(response, response.url or self.token_url, safe=True)

        body = self._retrying(call)
        return token_answer(body, refresh_token=refresh_token, now=self._clock(), where=self.context)


def oauth_error_text(response: requests.Response) -> str:
    """The token endpoint's own words: ``error`` and ``error_description`` of an OAuth 2.0 error answer,
    else its status (and the start of a non-JSON body, an HTML page from a proxy, say)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        description = body.get("error_description")
        return f"{body['error']}: {description}" if description else str(body["error"])
    text = " ".join(response.text.split())[:200]
    return f"HTTP {response.status_code} from the token endpoint" + (f": {text}" if text else "")


def retry_after_s(response: requests.Response, default: float) -> float:
    """The ``Retry-After`` of an answer in seconds (``default`` when absent or a date)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return default
