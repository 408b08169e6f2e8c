"""Twinfield client: OAuth2 on the login host, ProcessXml over SOAP on the organisation's cluster.

The hook owns every piece of I/O with Twinfield: the connection contract, OAuth2 access tokens (one hour;
the refresh token is reusable and, as far as anyone knows, not rotated) kept in a
:class:`~invoice_sync.connectors.base.TokenVault` so all tasks share them, the cluster URL that the token
validation endpoint names, the credit budget, and the translation of faults into typed errors.

Connection (``conn_type`` ``twinfield``; one stored as ``http`` works alike):

- ``host``: the login host, ``https://login.twinfield.com`` (or the sandbox's ``.../twinfield``); the
  cluster that serves ProcessXml is learnt from ``accesstokenvalidation`` (``twf.clusterUrl``)
- ``login`` / ``password``: the app's OAuth client id and client secret (sent as HTTP Basic to the token
  endpoint only)
- ``extra``: ``{"refresh_token": "<from the consent>", "timeout": 30}``; optionally
  ``"credits_per_minute"`` (default 1,000) and ``"minute_s"`` (default 60): the client id's credit
  allowance and the length of its window in real seconds. Twinfield sends no rate-limit headers, so the
  hook can only pace itself to limits it is told; set them lower when several processes share one client
  id (each its share), or for a sandbox running faster than real time (``minute_s`` = 60 / time scale).

Credits (reference section 7): a read (ProcessXml ``list``/``read``/``columns``) costs 1, anything else 3,
1,000 per minute per client id. The hook counts them down locally in a
:class:`~invoice_sync.connectors.http.RateBudget` and waits before it would overspend; a 429 that comes
anyway (another process spending the same client id's credits) is waited out from ``Retry-After``, growing
exponentially, and the call repeated: a 429 means nothing was processed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from lxml import etree

from invoice_sync.connectors.hooks import (
    OAUTH_CONNECTION_FIELDS,
    MemoryTokenVault,
    StoredToken,
    positive_extra,
    token_answer,
)
from invoice_sync.connectors.http import RateBudget, Window
from invoice_sync.connectors.oauth import oauth_error_text
from invoice_sync.connectors.soap import Element, SoapFault, SoapHook, child, element, parse, text
from invoice_sync.connectors.twinfield import CLIENT_ID_MINUTE, DESCRIPTOR
from invoice_sync.connectors.twinfield.errors import (
    is_token_fault,
    plain_text,
    recognised_fault,
)
from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    RateLimitedError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.ports import BudgetStore, SharedWindow, TokenSet, TokenVault

TOKEN_PATH = "/auth/authentication/connect/token"
VALIDATION_PATH = "/auth/authentication/connect/accesstokenvalidation"
PROCESS_XML_PATH = "/webservices/processxml.asmx"
TWF_NS = "http://www.twinfield.com/"
PROCESS_XML_ACTION = "http://www.twinfield.com/ProcessXmlString"

CREDITS_PER_MINUTE = CLIENT_ID_MINUTE.units
READ_COST = 1
"""ProcessXml ``list``, ``read`` and ``columns`` (and finder searches)."""
WRITE_COST = 3
"""Everything else, whatever the size of the request."""
BUDGET_MARGIN_S = 1.0
"""Extra wait after our minute ends: Twinfield's minute began when it received our first call, a little
after we counted it (how Twinfield measures the minute is unconfirmed)."""
REFRESH_MARGIN_S = 60.0
"""Refresh this long before the access token expires, so no call goes out with a token about to die."""


class TwinfieldHook(SoapHook):
    """Calls Twinfield's ProcessXml for one office on behalf of one Airflow connection.

    No I/O happens in the constructor; the connection is read on the first call.

    :param twinfield_conn_id: Airflow connection with the login host, client id/secret and the consent's
        refresh token.
    :param vault: durable, locked storage of the connection's tokens, shared by every task; None (Airflow
        building the hook for the Connections form) keeps them in this hook only, which is safe here:
        Twinfield does not replace a refresh token when it is used.
    :param office: the Twinfield office (company) code every call addresses (SOAP ``CompanyCode``); a hook
        Airflow builds for the Connections form has none and can list the offices, nothing else.
    :param budget: credit budget of this client id; by default a fresh one per hook, sized from the
        connection's ``credits_per_minute`` and ``minute_s`` extras (read on first use).
    :param sleep: how to wait for the budget and between retries (injectable for tests).
    :param get_attempts: tries of a call that is safe to repeat and fails transiently (5xx, network).
    :param backoff_s: first back-off between those tries; it doubles each time.
    :param max_throttled: how often one call is repeated after a 429.
    :param refresh_margin_s: refresh the access token this long before it expires.
    :param clock: current time, timezone-aware UTC, for token expiry.
    :param shared_budgets: where the client id's credits are counted across tasks (every office of an
        integrator spends them); None counts them in this hook only.
    """

    conn_name_attr = "twinfield_conn_id"
    default_conn_name = "twinfield_default"
    conn_type = DESCRIPTOR.conn_type
    hook_name = DESCRIPTOR.label
    tool_name = "Twinfield"
    required_connection_fields = OAUTH_CONNECTION_FIELDS
    budget_unit = "credits"
    default_headers: dict[str, str] = {}

    def __init__(
        self,
        *,
        twinfield_conn_id: str = default_conn_name,
        vault: TokenVault | None = None,
        office: str | None = None,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        get_attempts: int = 3,
        backoff_s: float = 1.0,
        max_throttled: int = 3,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shared_budgets: BudgetStore | None = None,
    ) -> None:
        super().__init__(
            conn_id=twinfield_conn_id,
            context=f"Twinfield office {office}" if office else DESCRIPTOR.label,
            sleep=sleep,
            get_attempts=get_attempts,
            backoff_s=backoff_s,
            shared_budgets=shared_budgets,
        )
        self.twinfield_conn_id = twinfield_conn_id
        self.vault = vault if vault is not None else MemoryTokenVault()
        self.office = office
        self._budget = budget
        self._max_throttled = max_throttled
        self._clock = clock
        self._token = StoredToken(
            self.vault, twinfield_conn_id, margin=timedelta(seconds=refresh_margin_s), clock=clock
        )
        self._cluster: tuple[str, str] | None = None
        """(access token, cluster URL) the validation endpoint last answered."""

    @property
    def budget(self) -> RateBudget:
        """The client id's credit budget, sized from the connection's extras (read on first use).

        The margin after each window scales with the window: it covers the moment between our count and
        Twinfield's, which a shortened (time-scaled) minute shortens alike.
        """
        if self._budget is None:
            credits, minute_s = self._credit_window(self.get_connection(self.twinfield_conn_id).extra_dejson)
            self._budget = self._rate_budget(
                # Counted in the shared window instead when there is one: a local count would start its
                # minute elsewhere and only add waits.
                short_limit=None if self.shared_budgets else int(credits),
                short_period_s=minute_s,
                margin_s=BUDGET_MARGIN_S * minute_s / 60.0,
            )
        return self._budget

    def _credit_window(self, extra: Mapping[str, Any]) -> tuple[float, float]:
        """Credits per minute and the minute's length (shorter for a time-scaled sandbox)."""
        where = f"Twinfield connection {self.twinfield_conn_id}"
        credits = positive_extra(extra, "credits_per_minute", CREDITS_PER_MINUTE, where=where)
        return credits, positive_extra(extra, "minute_s", 60.0, where=where)

    def _shared_windows(self, connection: Any, extra: Mapping[str, Any]) -> Sequence[SharedWindow]:
        """Twinfield counts credits per ClientId, one for all of an integrator's organisations
        (reference ``README.md``, limits; ``twinfield.md`` section 7): the connection's login."""
        credits, minute_s = self._credit_window(extra)
        return (SharedWindow(f"twinfield:client:{connection.login}:minute", int(credits), minute_s),)

    def _try_connection(self) -> str:
        """List the organisation's offices (one credit) and check this office, if any, is among them."""
        offices = self.process_xml(_list_offices(), read=True)
        codes = [text(node) for node in offices if isinstance(node.tag, str)]
        if self.office is None:
            return f"Connection successfully tested; offices: {', '.join(codes) or 'none'}"
        if self.office not in codes:
            raise ConfigError(
                f"{self.context}: the user has no access to this office (offices: {', '.join(codes)})"
            )
        return "Connection successfully tested"

    # -- ProcessXml -------------------------------------------------------------------------------------

    def process_xml(self, request: Element, *, read: bool, repeatable: bool | None = None) -> Element:
        """Send one ProcessXml document and return the root element of Twinfield's answer.

        :param read: whether the document only reads (``list``, ``read``, ``columns``): 1 credit, else 3.
        :param repeatable: whether sending it twice is harmless (reads; an upsert by code); such calls are
            retried on transient failures. Defaults to ``read``.
        :raises OutcomeUnknownError: a non-repeatable write whose answer was lost, unreadable, or a fault
            we do not recognise (it might have come after processing).
        :raises AuthError: the authorisation is gone (refresh refused, token refused after a refresh).
        :raises ConfigError: the office in the SOAP header is refused.
        :raises RateLimitedError: still 429 after waiting ``max_throttled`` times.
        :raises TransientError: nothing was processed (never sent, or a repeatable call kept failing).
        """
        cost = READ_COST if read else WRITE_COST
        safe = read if repeatable is None else repeatable
        xml = etree.tostring(request, encoding="unicode")

        def call() -> Element:
            return self._send(xml, cost=cost, safe=safe)

        return self._retrying(call) if safe else call()

    def _send(self, xml: str, *, cost: int, safe: bool) -> Element:
        """One ProcessXml call within the budget; one token refresh on a token fault, a wait on 429."""
        refreshed = False
        throttled = 0
        while True:
            # Credentials first: the token calls cost no credits, and the budget's minute should start
            # as close as possible to when Twinfield sees the call.
            token, cluster = self._credentials()
            self.budget.acquire(cost)
            body = element(TWF_NS, "ProcessXmlString")
            child(body, "xmlRequest", xml)
            header = element(TWF_NS, "Header")
            child(header, "AccessToken", token)
            if self.office is not None:  # listing the offices needs none
                child(header, "CompanyCode", self.office)
            try:
                response, content = self.post_envelope(
                    cluster + PROCESS_XML_PATH, PROCESS_XML_ACTION, body, header=header, safe=safe
                )
            except SoapFault as fault:
                if is_token_fault(fault) and not refreshed:
                    refreshed = True  # refused before processing: a new token and the same call again
                    self._access_token(rejected=token)
                    continue
                raise self._fault_error(fault, safe) from fault
            if response.status_code == 429:
                throttled += 1
                if throttled > self._max_throttled:
                    raise RateLimitedError(f"{self.context}: Twinfield kept answering 429 Too Many Requests")
                self._wait_retry_after(response, throttled)
                continue
            if content is None:
                raise self._http_error(response, safe)
            return self._result(content, safe)

    def _result(self, content: Element, safe: bool) -> Element:
        """The answer inside ``ProcessXmlStringResponse``; a missing or garbled one is no answer."""
        result = text(content, "ProcessXmlStringResult")
        try:
            return parse(result)
        except etree.XMLSyntaxError as exc:
            detail = f"{self.context}: Twinfield's ProcessXml answer was empty or unreadable"
            if safe:
                raise TransientError(detail) from exc
            raise self._unknown(detail) from exc

    def _fault_error(self, fault: SoapFault, safe: bool) -> SyncError:
        known = recognised_fault(fault, context=self.context)
        if known is not None:
            return known
        detail = f"{self.context}: Twinfield answered with a SOAP fault: {fault.text}"
        if safe:
            return TransientError(detail, status=fault.status)
        return self._unknown(detail)

    def _http_error(self, response: requests.Response, safe: bool) -> SyncError:
        """A non-SOAP answer (an HTML error page from a proxy or the web server, an empty body)."""
        detail = f"{self.context}: HTTP {response.status_code} from Twinfield: {plain_text(response)}"
        if response.status_code in (401, 403):
            return AuthError(
                f"{detail} (reconnect the integration to Twinfield)", status=response.status_code
            )
        if response.status_code == 404:
            return ConfigError(f"{detail} (check the connection's host)", status=response.status_code)
        if response.ok or response.status_code >= 500:
            return TransientError(detail, status=response.status_code) if safe else self._unknown(detail)
        return TransientError(detail, status=response.status_code)  # refused by the web server: not processed

    def _wait_retry_after(self, response: requests.Response, attempt: int) -> None:
        """Wait ``Retry-After`` (doubling with each further 429, as Twinfield asks) before repeating."""
        try:
            retry_after = max(0.0, float(response.headers.get("Retry-After", "1")))
        except ValueError:
            retry_after = 1.0
        delay = max(retry_after, 0.1) * 2 ** (attempt - 1)
        self.log.info(
            "%s: Twinfield answered 429, waiting %.1f s before repeating the call", self.context, delay
        )
        self.budget.throttled(short=Window(remaining=0, resets_at=time.time() + delay))

    # -- OAuth2 and the cluster -------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        """A live access token and its cluster URL (validated once per hook and after each new token)."""
        token = self._access_token()
        cluster = self._validated_cluster(token)
        if cluster is None:  # the login host no longer accepts it (revoked, or our clock is off)
            token = self._access_token(rejected=token)
            cluster = self._validated_cluster(token)
        if cluster is None:
            raise AuthError(
                f"Twinfield connection {self.twinfield_conn_id}: a freshly issued access token was refused; "
                "reconnect the integration to Twinfield (give consent again)"
            )
        return token, cluster

    def _validated_cluster(self, token: str) -> str | None:
        if self._cluster is not None and self._cluster[0] == token:
            return self._cluster[1]
        url = self._url(VALIDATION_PATH)

        def call() -> dict[str, Any] | None:
            response = self._transmit("GET", url, safe=True, params={"token": token})
            if response.status_code >= 500:
                raise TransientError(f"{self.context}: token validation failed: {plain_text(response)}")
            if not response.ok:
                return None
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"{self.context}: unreadable token validation answer") from exc
            return body if isinstance(body, dict) else {}

        body = self._retrying(call)
        if body is None:
            return None
        cluster = str(body.get("twf.clusterUrl") or "").rstrip("/")
        if not cluster:
            raise TransientError(f"{self.context}: the token validation named no cluster (twf.clusterUrl)")
        self._cluster = (token, cluster)
        return cluster

    def _access_token(self, *, rejected: str | None = None) -> str:
        """A usable access token, refreshed through the vault when needed (see :class:`StoredToken`).

        :param rejected: an access token Twinfield just refused: refresh even if it looks valid.
        """
        return self._token.get(self._request_tokens, rejected=rejected)

    def _request_tokens(self, current: TokenSet | None) -> TokenSet:
        """A new access token for the stored refresh token (or the consent's from the connection).

        Twinfield's refresh token is reusable, so a lost answer is simply asked again. When the stored one
        is refused but the connection holds another (the user consented again and updated it), that one
        is tried before giving up.
        """
        connection = self.get_connection(self.twinfield_conn_id)
        consent = connection.extra_dejson.get("refresh_token")
        candidates = list(
            dict.fromkeys(t for t in (current.refresh_token if current else None, consent) if t)
        )
        if not candidates:
            raise AuthError(
                f"Twinfield connection {self.twinfield_conn_id}: no refresh token is stored; "
                "connect the integration to Twinfield first"
            )
        refused: AuthError | None = None
        for refresh_token in candidates:
            try:
                return self._redeem(refresh_token, connection.login or "", connection.password or "")
            except AuthError as error:
                refused = error
        assert refused is not None
        raise refused

    def _redeem(self, refresh_token: str, client_id: str, client_secret: str) -> TokenSet:
        url = self._url(TOKEN_PATH)
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}

        def call() -> dict[str, Any]:
            # Not counted in the credits, so the budget is not asked.
            response = self._transmit(
                "POST", url, safe=True, issues_tokens=True, data=form, auth=(client_id, client_secret)
            )
            if response.status_code >= 500:
                raise TransientError(f"{self.context}: token refresh failed: {plain_text(response)}")
            if not response.ok:
                raise AuthError(
                    f"Twinfield connection {self.twinfield_conn_id}: {oauth_error_text(response)}. The "
                    "refresh token is no longer accepted; reconnect the integration to Twinfield "
                    "(give consent again)",
                    status=response.status_code,
                )
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"{self.context}: unreadable token answer") from exc
            return body if isinstance(body, dict) else {}

        body = self._retrying(call)
        return token_answer(body, refresh_token=refresh_token, now=self._clock(), where=self.context)


def _list_offices() -> Element:
    request = element(None, "list")
    child(request, "type", "offices")
    return request
