"""What every accounting-tool client does the same way, on Airflow's :class:`HttpHook`.

Each tool's hook subclasses :class:`AccountingHook` and adds only what its API differs in (the auth flow,
the envelope, how errors and limits are announced). The shared part is the connection contract (base URL
in ``host``, secrets never turned into headers, ``timeout`` from the extra), one keep-alive session, the
retry of calls that are safe to repeat, and the one question every write raises when it fails: did the
request reach the tool? Why not ``HttpHook.run``: it turns every HTTP error into a bare
``AirflowException("400:Bad Request")``, and a connector needs the tool's text and that answer.

The connection contract is also declared, so it can be checked before a task does anything: each hook
names the fields its tool cannot work without in :attr:`AccountingHook.required_connection_fields`, and
:meth:`AccountingHook.check_connection` reports every one that is empty in one message. People fill these
connections in by hand; without the check, a forgotten client secret surfaces only as the tool's refusal
of a token request, minutes into a run, in the tool's words rather than the form's.

Each hook is also a connection type of the project's Airflow provider (:mod:`invoice_sync.airflow.provider`):
``conn_type`` is the tool's name, the form is declared beside it (:mod:`invoice_sync.connectors.forms`),
and :meth:`AccountingHook.test_connection` is what the form's Test button runs. Connections stored with
``conn_type`` ``http`` keep working: a hook reads its connection by id and never looks at the type.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowNotFoundException

from invoice_sync.config import plain_http_hosts
from invoice_sync.connectors.http import RateBudget, mask_tokens, request_never_sent
from invoice_sync.domain.errors import (
    ConfigError,
    OutcomeUnknownError,
    RateLimitedError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.ports import BudgetLeft, BudgetStore, SharedWindow, TokenSet, TokenVault

T = TypeVar("T")

SECRET_EXTRA_KEYS = ("refresh_token", "client_secret", "access_token", "access_key")
"""Extra keys that hold secrets: ``HttpHook`` would send every extra key as a header."""
SETTING_EXTRA_KEYS = ("timeout", "token_url")
"""Extra keys that configure the client (numbers are never taken for headers anyway)."""
SANDBOX_HEADER = "Invoice-Sync-Sandbox"
"""The response header every answer of invoice-sync's sandbox carries (its value: the simulated tool). No
real accounting API sends it, so an answer, and every number in it, is recognisably the sandbox's."""
CONNECTIONS_PAGE = "Admin > Connections"
"""Where people fill connections in (Airflow's UI); named in every message about a missing field."""


@dataclass(frozen=True, slots=True)
class ConnectionField:
    """One field of a tool's Airflow connection that must be filled in, named the way people see it.

    :param name: the connection's attribute (``host``, ``login``, ``password``), or the extra's key.
    :param label: how a message names it: the form's label with the attribute, ``"Client ID (login)"``.
    :param in_extra: the field is a key of the connection's JSON extra.
    :param until_tokens_stored: needed only while the token vault holds nothing for the connection (the
        consent's refresh token: once spent, the vault keeps its successors and the connection's copy
        may be stale or cleared).
    """

    name: str
    label: str
    in_extra: bool = False
    until_tokens_stored: bool = False

    def missing_from(self, connection: Any, extra: Mapping[str, Any]) -> bool:
        """Whether ``connection`` (with its parsed ``extra``) leaves the field empty or blank."""
        value = extra.get(self.name) if self.in_extra else getattr(connection, self.name, None)
        return value is None or not str(value).strip()


BASE_URL = ConnectionField("host", "Base URL (host)")
CLIENT_ID = ConnectionField("login", "Client ID (login)")
CLIENT_SECRET = ConnectionField("password", "Client secret (password)")
CONSENT_REFRESH_TOKEN = ConnectionField(
    "refresh_token", "refresh_token (extra)", in_extra=True, until_tokens_stored=True
)
OAUTH_CONNECTION_FIELDS = (BASE_URL, CLIENT_ID, CLIENT_SECRET, CONSENT_REFRESH_TOKEN)
"""What an OAuth 2.0 app's connection needs: where the API is, the app's credentials, the user's consent."""


class MemoryTokenVault:
    """Tokens kept by one hook object only: for hooks Airflow builds itself (the Connections form's Test),
    which have no durable vault.

    What a hook stores here is lost with it, so a hook holding one never spends a refresh token that the
    tool replaces on use (see :attr:`AccountingHook.keeps_tokens`).
    """

    def __init__(self) -> None:
        self._tokens: dict[str, TokenSet] = {}
        self._lock = threading.Lock()

    def load(self, conn_id: str) -> TokenSet | None:
        return self._tokens.get(conn_id)

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet:
        with self._lock:
            tokens = refresher(self._tokens.get(conn_id))
            self._tokens[conn_id] = tokens
            return tokens


class AccountingHook(HttpHook):
    """The I/O machinery shared by the tools' hooks; no I/O happens in the constructor.

    :param conn_id: Airflow connection with the tool's base URL and credentials.
    :param context: where a call happens, for messages (``"Yuki administration Demo BV"``).
    :param sleep: how to wait between retries (injectable for tests).
    :param get_attempts: tries of a call that is safe to repeat and fails transiently (5xx, network).
    :param backoff_s: first back-off between those tries; it doubles each time.
    """

    tool_name = "the tool"
    """How messages name the tool ("Exact", "Yuki")."""
    default_timeout_s = 30.0
    required_connection_fields: ClassVar[tuple[ConnectionField, ...]] = (BASE_URL,)
    """The connection fields the tool cannot work without; each hook names its own."""
    budget_unit: ClassVar[str] = "calls"
    """What the tool's rate budget counts, for progress lines (Twinfield: credits)."""

    vault: TokenVault
    """Every tool's hook keeps the connection's tokens (or session) here; set by the subclass."""

    @property
    def budget(self) -> RateBudget:
        """The rate budget the hook paces itself with; each tool builds its own from the connection."""
        raise NotImplementedError

    def __init__(
        self,
        *,
        conn_id: str,
        context: str,
        sleep: Callable[[float], None] = time.sleep,
        get_attempts: int = 3,
        backoff_s: float = 1.0,
        shared_budgets: BudgetStore | None = None,
    ) -> None:
        super().__init__(method="POST", http_conn_id=conn_id)
        self.shared_budgets = shared_budgets
        """Where the windows other tasks spend too are counted (Redis or the database); None: in this
        process only, as for a hook Airflow builds for the Connections form."""
        self.conn_id = conn_id
        self.context = context
        self._raw_sleep = sleep
        self._keep_alive: Callable[[], None] | None = None
        self._keep_alive_every_s = 0.0
        self._get_attempts = get_attempts
        self._backoff_s = backoff_s
        self.timeout_s = self.default_timeout_s
        """HTTP timeout of every call; the connection's ``timeout`` extra overrides it."""
        self._trusts_environment = True
        self._environment: dict[str, dict[str, Any]] = {}
        """Per host, what requests takes from the environment (see :attr:`session`)."""
        self.expects_sandbox: bool | None = None
        """Whether the integration this hook books for is a demo (True: every answer must come from the
        sandbox) or not (False: none may); None checks nothing (a connection test, a tool-less script).
        Set by the connector from the integration's ``demo`` setting."""

    def _shared_windows(self, connection: Any, extra: Mapping[str, Any]) -> Sequence[SharedWindow]:
        """The tool's windows that other tasks spend too, keyed by the vendor's scope; none by default."""
        return ()

    def _shared_windows_to_reserve(self) -> Sequence[SharedWindow]:
        """The tool's shared windows when the task has a store to reserve them in; none without one."""
        if not self.shared_budgets:
            return ()
        connection = self.get_connection(self.conn_id)
        return self._shared_windows(connection, connection.extra_dejson)

    def _rate_budget(self, **local: Any) -> RateBudget:
        """The hook's budget: the local windows ``local`` describes (see :class:`RateBudget`) plus the
        tool's shared windows, reserved in :attr:`shared_budgets` when the task has a store."""
        options: dict[str, Any] = {"label": self.context, "sleep": self._sleep} | local
        return RateBudget(**options, shared=self._shared_windows_to_reserve(), store=self.shared_budgets)

    def keep_alive_while_waiting(self, renew: Callable[[], None], every_s: float) -> None:
        """Have every wait of this hook call ``renew`` at least every ``every_s`` seconds and once at its end.

        The engine renews its claim's lease this way. A 429 or a spent rate window can make a call wait
        longer than the lease; without it the run would lose its claim while merely being patient. And
        since ``renew`` raises when the claim was taken meanwhile, a wait in front of a POST ends in that
        error instead of in the POST: the lease is checked again right before the request leaves.
        """
        if every_s <= 0:
            raise ValueError(f"renewing every {every_s} s would never wait")
        self._keep_alive, self._keep_alive_every_s = renew, every_s

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (rate budget, 429, retry back-off), renewing the run's claim meanwhile."""
        if self._keep_alive is None:
            self._raw_sleep(seconds)
            return
        left = seconds
        while left > 0:
            step = min(left, self._keep_alive_every_s)
            self._raw_sleep(step)
            left -= step
            self._keep_alive()

    @cached_property
    def session(self) -> requests.Session:
        """One keep-alive session for all calls; authorisation is added per request.

        The connection itself is not kept on the hook (its repr shows the extra, secrets included);
        whatever needs the secrets reads the connection again.

        With ``trust_env`` on (the default; the connection's extra may turn it off), requests reads the
        process environment (proxy variables, CA bundle variables, ``~/.netrc``) again for *every*
        request. Over an Airflow worker's environment that cost half a millisecond a call, a sixth of our
        whole cost per invoice for a tool that books one invoice per call. So the session sends with
        ``trust_env`` off and each request carries what the environment said for its host, read once per
        host (:meth:`_environment_for`). Authorisation never came from ``.netrc``: every call sets its
        own.
        """
        session = self.get_conn()
        self._trusts_environment = session.trust_env
        session.trust_env = False
        return session

    def _environment_for(self, url: str) -> dict[str, Any]:
        """The proxies, CA bundle and client certificate requests would take for ``url`` from the
        environment and the session, read on the first request to its host."""
        host = urlsplit(url).netloc
        settings = self._environment.get(host)
        if settings is None:
            session = self.session
            settings = {"proxies": dict(session.proxies), "verify": session.verify, "cert": session.cert}
            if self._trusts_environment:
                with requests.Session() as reader:
                    reader.proxies, reader.verify, reader.cert = session.proxies, session.verify, session.cert
                    merged = reader.merge_environment_settings(url, {}, None, None, None)
                settings = {key: merged[key] for key in ("proxies", "verify", "cert")}
            self._environment[host] = settings
        return settings

    def _configure_session_from_auth(self, session: requests.Session, connection: Any) -> requests.Session:
        # HttpHook would send login/password as Basic auth on every call; the tools want their own
        # credentials in their own place (a token request's body, a SOAP parameter).
        session.auth = None
        return session

    def _configure_session_from_extra(
        self, session: requests.Session, connection: Any, extra_options: dict[str, Any]
    ) -> requests.Session:
        session = super()._configure_session_from_extra(session, connection, extra_options)
        self.timeout_s = float(self.merged_extra.get("timeout") or self.default_timeout_s)
        for key in (*SECRET_EXTRA_KEYS, *SETTING_EXTRA_KEYS):  # HttpHook makes extra keys into headers
            session.headers.pop(key, None)
        for key in list(session.headers):
            if not isinstance(session.headers[key], str | bytes):
                session.headers.pop(key)  # numbers and lists in the extra are settings, not headers
        return session

    def check_connection(self) -> None:
        """Check the connection's fields against :attr:`required_connection_fields`, reading it once.

        No network I/O: run at task start, so a connection filled in halfway fails in seconds with the
        form's words, instead of as the tool's refusal of the first call. The vault is consulted only when
        a field needed just until the first tokens (the consent's refresh token) is empty.

        :raises ConfigError: the connection does not exist, or names every empty required field, or every
            URL credentials would go to in clear (not https, not this machine: :func:`safe_to_reach`).
        """
        where = f"{self.hook_name} connection {self.conn_id}"
        try:
            connection = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            raise ConfigError(f"{where} does not exist; add it under {CONNECTIONS_PAGE}") from None
        extra = connection.extra_dejson
        missing = [f for f in self.required_connection_fields if f.missing_from(connection, extra)]
        if any(f.until_tokens_stored for f in missing) and self.vault.load(self.conn_id) is not None:
            missing = [f for f in missing if not f.until_tokens_stored]
        if missing:
            them = "it" if len(missing) == 1 else "them"
            raise ConfigError(
                f"{where}: missing {enumeration([f.label for f in missing])}; "
                f"fill {them} in under {CONNECTIONS_PAGE}"
            )
        refused = [
            f"{label} {url} is not on this machine and does not use https; "
            f"change it to {'https' + url[url.index(':') :]}"
            for label, url in self._connection_urls(connection, extra)
            if not safe_to_reach(url)
        ]
        if refused:
            raise ConfigError(f"{where}: {'; '.join(refused)} under {CONNECTIONS_PAGE}")

    def _connection_urls(self, connection: Any, extra: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The URLs the connection sends credentials to, each with the field it comes from: the base URL the
        way ``HttpHook`` builds it (a bare host takes the connection's schema, ``http`` by default), and the
        ``token_url`` extra (the token request carries the client secret and the refresh token)."""
        host = str(connection.host or "").strip()
        base_url = host if "://" in host else f"{connection.schema or 'http'}://{host}"
        if connection.port:
            base_url = f"{base_url}:{connection.port}"
        urls = [(BASE_URL.label, base_url)]
        token_url = str(extra.get("token_url") or "").strip()
        if token_url:
            urls.append(("token_url (extra)", urljoin(base_url, token_url)))
        return urls

    @property
    def keeps_tokens(self) -> bool:
        """Whether tokens this hook obtains outlive it: false for a hook Airflow built for the Connections
        form (its vault is a :class:`MemoryTokenVault`), true for a sync task's."""
        return not isinstance(self.vault, MemoryTokenVault)

    def test_connection(self) -> tuple[bool, str]:
        """What the Connections form's Test button and ``airflow connections test`` run.

        First the fields the tool cannot work without (so a half-filled form is told what is missing in
        the form's words), then a real call to the tool (:meth:`_try_connection`). A refusal comes back as
        ``(False, message)`` with the tool's own words in it, the way a task would report it.
        """
        try:
            self.check_connection()
            return True, self._try_connection()
        except SyncError as error:
            return False, error.message

    def _try_connection(self) -> str:
        """Call the tool with the connection; the message of a success. Each tool's hook says how."""
        raise NotImplementedError

    def budget_left(self) -> BudgetLeft:
        """What the rate budget may still spend, in the tool's unit; no I/O beyond reading the connection
        when the budget was never used yet."""
        return replace(self.budget.left(), unit=self.budget_unit)

    @property
    def waited_s(self) -> float:
        """Seconds this hook waited for its rate windows or after a 429 (statistics, the bench's
        calibration); a tool with more than one budget adds them up."""
        return self.budget.waited_s

    @property
    def request_timeout_s(self) -> float:
        """The longest one request may take; reads the connection, no network I/O."""
        self.session  # noqa: B018 (configuring the session reads the connection's timeout)
        return self.timeout_s

    def _url(self, path: str) -> str:
        # Reading the session first sets ``base_url`` from the connection.
        self.session  # noqa: B018
        return self.url_from_endpoint(path)

    def _retrying(self, call: Callable[[], T]) -> T:
        """Run a call that is safe to repeat, retrying transient failures with exponential back-off."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._get_attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff_s, max=30),
            retry=tenacity.retry_if_exception(worth_repeating),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(call)

    def _transmit(
        self, method: str, url: str, *, safe: bool, issues_tokens: bool = False, **kwargs: Any
    ) -> requests.Response:
        """Send one request; a network failure becomes a typed error by whether it may have acted.

        :param safe: whether repeating the request is harmless (reads, token refreshes), so a lost
            answer is merely transient.
        :param issues_tokens: the request redeems a rotating refresh token. Its answer is kept whoever
            gave it (see :meth:`_check_origin`): the old token is spent, and throwing the new one away
            would cost a person a new consent. The next call, which books nothing yet, is refused instead.
        """
        try:
            session = self.session
            environment = self._environment_for(url)
            response = session.request(method, url, timeout=self.timeout_s, **environment, **kwargs)
            # Read the body now: a connection dropped mid-body must count as "no answer".
            response.content  # noqa: B018
        except requests.RequestException as exc:
            detail = f"{self.context}: {method} {url_path(url)} failed ({type(exc).__name__})"
            if safe or request_never_sent(exc):
                raise TransientError(detail) from exc
            raise self._unknown(detail) from exc
        if not issues_tokens:
            self._check_origin(response, url)
        return response

    def _check_origin(self, response: requests.Response, url: str) -> None:
        """Refuse an answer from the wrong world: the sandbox answering a production integration (its
        numbers would be written back as if the tool had booked them) or a real tool answering a demo one
        (the demo would book for real). Checked on every answer but a token refresh's (see
        :meth:`_transmit`), so the first call after the tokens, a session request or a customer lookup,
        already stops the integration with nothing booked."""
        if self.expects_sandbox is None:
            return
        simulated = response.headers.get(SANDBOX_HEADER)
        if simulated is not None and not self.expects_sandbox:
            raise ConfigError(
                f"{self.context}: {url_path(url)} answered from invoice-sync's sandbox ({simulated}), "
                f"not from {self.tool_name}, and this integration is not marked as a demo: "
                "nothing is booked and no sandbox number is written back. Point the connection "
                f"{self.conn_id!r} at {self.tool_name}'s own API, or, for a demo integration, set "
                '"demo": true in its settings'
            )
        if simulated is None and self.expects_sandbox:
            raise ConfigError(
                f"{self.context}: {url_path(url)} answered as the real {self.tool_name}, not as "
                "invoice-sync's sandbox, and this integration is marked as a demo: nothing is booked. "
                f'Point the connection {self.conn_id!r} at the sandbox, or remove "demo": true from the '
                "integration's settings to book for real"
            )

    def _unknown(self, detail: str) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"{detail}; {self.tool_name} may have processed the request, look it up before resending"
        )


class StoredToken:
    """The access token (or session id) of one connection, kept in the :class:`TokenVault`.

    Every task of the connection shares it, so a worker asks the tool for a new one only when the stored
    one is about to expire or the tool refused it, and then under the vault's lock: another worker may
    have replaced it while this one waited, and its token serves both (spending a rotating refresh token
    twice would kill the connection).

    :param margin: replace a token this long before it expires.
    :param clock: current time, timezone-aware UTC.
    """

    def __init__(
        self,
        vault: TokenVault,
        conn_id: str,
        *,
        margin: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.vault = vault
        self.conn_id = conn_id
        self.margin = margin
        self.clock = clock
        self._tokens: TokenSet | None = None

    def get(self, obtain: Callable[[TokenSet | None], TokenSet], *, rejected: str | None = None) -> str:
        """A usable token; ``obtain(current)`` asks the tool for a new one when none will do.

        :param rejected: a token the tool just refused: replace it even if it looks valid.
        """
        tokens = self._tokens or self.vault.load(self.conn_id)
        if tokens is None or self._unusable(tokens, rejected):

            def refresher(current: TokenSet | None) -> TokenSet:
                # Under the vault's lock, with what is stored *now*.
                if current is not None and current.access_token != rejected and self.fresh(current):
                    return current
                return obtain(current)

            tokens = self.vault.refresh(self.conn_id, refresher)
        if tokens is not self._tokens:
            mask_tokens(tokens)
        self._tokens = tokens
        return tokens.access_token

    def stale(self, *, rejected: str | None = None) -> bool:
        """Whether :meth:`get` would ask the tool for a new token now (unless another worker stores one
        first): for a tool whose token call spends a rate window, to take it before the vault's lock."""
        tokens = self._tokens or self.vault.load(self.conn_id)
        return tokens is None or self._unusable(tokens, rejected)

    def _unusable(self, tokens: TokenSet, rejected: str | None) -> bool:
        return rejected is not None or not self.fresh(tokens)

    def fresh(self, tokens: TokenSet) -> bool:
        expires_at = tokens.expires_at
        if expires_at.tzinfo is None:  # stores may hand back naive UTC
            expires_at = expires_at.replace(tzinfo=UTC)
        return expires_at - self.clock() > self.margin


def token_answer(body: Any, *, refresh_token: str, now: datetime, where: str) -> TokenSet:
    """The tokens of an OAuth 2.0 token answer; a tool that keeps the refresh token omits it.

    :param refresh_token: the one just spent, kept when the answer names no successor.
    :param where: the tool and tenant, for the message when the answer is incomplete.
    :raises TransientError: the answer lacks the access token or its lifetime (nothing to store).
    """
    try:
        return TokenSet(
            access_token=str(body["access_token"]),
            refresh_token=str(body.get("refresh_token") or refresh_token),
            expires_at=now + timedelta(seconds=int(body["expires_in"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransientError(f"{where}: the token answer was incomplete") from exc


def positive_extra(extra: Mapping[str, Any], key: str, default: float, *, where: str) -> float:
    """A positive number from a connection's extra, or ``default`` when it is not set.

    :param where: the connection, for the message (``"Twinfield connection twinfield_demo"``).
    :raises ConfigError: the value is not a positive number (a typo must not switch pacing off).
    """
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if number <= 0:
        raise ConfigError(f"{where}: extra {key!r} must be a positive number")
    return number


def safe_to_reach(url: str) -> bool:
    """Whether credentials may go to ``url``: over https, or to this machine (127.0.0.0/8, ::1,
    ``localhost``), where the sandbox answers over plain http, or to a host the operator listed in
    ``INVOICE_SYNC_PLAIN_HTTP_HOSTS`` (compose's sandbox service). Anything else crosses a network in
    clear, and a production connection never should (issue 14, item 8)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "https":
        return True
    hostname = (parts.hostname or "").rstrip(".")
    if hostname == "localhost" or hostname in plain_http_hosts():
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def enumeration(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``: a list the way a sentence names it."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def worth_repeating(error: BaseException) -> bool:
    """Transient failures are retried in the hook; a spent minute window is left to Airflow's retry."""
    return isinstance(error, TransientError) and not isinstance(error, RateLimitedError | OutcomeUnknownError)


def url_path(url: str) -> str:
    """A URL without its query string, for messages (filters can hold customer data)."""
    return url.split("?", 1)[0]
