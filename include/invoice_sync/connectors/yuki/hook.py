"""Yuki SOAP client on :class:`~invoice_sync.connectors.soap.SoapHook` (Airflow's ``HttpHook`` underneath).

The hook owns every piece of I/O with Yuki: the connection contract, the session id from ``Authenticate``
(kept in the :class:`~invoice_sync.connectors.base.TokenVault` so every task of a connection shares one
session instead of opening one per task: each ``Authenticate`` costs one of the domain's daily calls), the
daily call budget, and the translation of SOAP faults into typed errors.

Connection (``conn_type`` ``yuki``; one stored as ``http`` works alike):

- ``host``: base URL, e.g. ``https://api.yukiworks.be`` (or the sandbox's ``.../yuki``)
- ``password``: the web-service access key (Yuki: Settings > Web services)
- ``extra``: ``{"timeout": 30, "daily_limit": 1000}``; ``daily_limit`` is the domain's allowance of calls
  per day (1,000 by default, 5,000 or 10,000 with Yuki's web-service features). Yuki sends no rate-limit
  headers, so the budget counts calls locally and stops the run before the domain's allowance is spent.

A session lives 24 hours; the hook renews it a margin before that and, when Yuki calls a session invalid
earlier (closed, or another process replaced it), authenticates once more and repeats the call: a fault
means Yuki processed nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from invoice_sync.connectors.hooks import (
    BASE_URL,
    ConnectionField,
    MemoryTokenVault,
    StoredToken,
)
from invoice_sync.connectors.http import RateBudget, Window
from invoice_sync.connectors.soap import (
    Element,
    SoapFault,
    SoapHook,
    child,
    element,
    find,
    find_all,
    local,
    parse,
    text,
)
from invoice_sync.connectors.yuki import DESCRIPTOR, DOMAIN_DAY
from invoice_sync.connectors.yuki.errors import classify_fault, is_quota_fault, is_session_fault
from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    QuotaExceededError,
    RateLimitedError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.ports import BudgetStore, SharedWindow, TokenSet, TokenVault

YUKI_NS = "http://www.theyukicompany.com/"
SESSION_LIFETIME_S = 24 * 3600.0
SESSION_MARGIN_S = 600.0
"""Renew a session this long before its 24 hours are up, so no call goes out with a dying session."""
DEFAULT_DAILY_LIMIT = DOMAIN_DAY.units


def _daily_limit(extra: Mapping[str, Any]) -> int:
    """The domain's calls a day from the connection's ``daily_limit`` (the plan's; 1,000 when unset)."""
    return int(extra.get("daily_limit") or DEFAULT_DAILY_LIMIT)


SALES = "Sales"
ACCOUNTING = "Accounting"

Param = tuple[str, "str | Element | None"]


class YukiHook(SoapHook):
    """Calls Yuki's web services for one administration on behalf of one Airflow connection.

    No I/O happens in the constructor; the connection is read on the first call.

    :param yuki_conn_id: Airflow connection holding base URL and access key.
    :param vault: durable, locked storage of the connection's session id; None (Airflow building the hook
        for the Connections form) keeps it in this hook only.
    :param administration_id: the administration's GUID; or
    :param administration: its name, resolved through ``Administrations`` once per hook. Neither (a hook
        Airflow builds for the Connections form): the hook can be tested, not used on an administration.
    :param budget: the domain's daily call budget; by default one per hook sized from the connection.
    :param sleep: how to wait between retries (injectable for tests).
    :param get_attempts: tries of a read that fails transiently (5xx, network).
    :param backoff_s: first back-off between those tries; it doubles each time.
    :param session_lifetime_s: how long Yuki keeps a session (24 h).
    :param session_margin_s: renew the session this long before it would expire.
    :param clock: current time, timezone-aware UTC, for session expiry.
    """

    conn_name_attr = "yuki_conn_id"
    default_conn_name = "yuki_default"
    conn_type = DESCRIPTOR.conn_type
    hook_name = DESCRIPTOR.label
    tool_name = "Yuki"
    required_connection_fields = (BASE_URL, ConnectionField("password", "Access key (password)"))
    default_headers: dict[str, str] = {}

    def __init__(
        self,
        *,
        yuki_conn_id: str = default_conn_name,
        vault: TokenVault | None = None,
        administration_id: str | None = None,
        administration: str | None = None,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        get_attempts: int = 3,
        backoff_s: float = 1.0,
        session_lifetime_s: float = SESSION_LIFETIME_S,
        session_margin_s: float = SESSION_MARGIN_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shared_budgets: BudgetStore | None = None,
    ) -> None:
        named = administration or administration_id
        super().__init__(
            conn_id=yuki_conn_id,
            context=f"Yuki administration {named}" if named else DESCRIPTOR.label,
            sleep=sleep,
            get_attempts=get_attempts,
            backoff_s=backoff_s,
            shared_budgets=shared_budgets,
        )
        self.yuki_conn_id = yuki_conn_id
        self.vault = vault if vault is not None else MemoryTokenVault()
        self._administration_id = administration_id
        self.administration_name = administration
        self._budget = budget
        self._session_lifetime = timedelta(seconds=session_lifetime_s - session_margin_s)
        self._clock = clock
        self._token = StoredToken(self.vault, yuki_conn_id, clock=clock)
        self.authentications = 0
        """Sessions this hook opened (each costs one of the domain's daily calls)."""

    @property
    def budget(self) -> RateBudget:
        """The domain's daily budget, sized from the connection's ``daily_limit`` (read on first use).

        With a shared store the day is counted there (:meth:`_shared_windows`), since every
        administration of the domain spends it; without one, in this process.
        """
        if self._budget is None:
            limit = _daily_limit(self.get_connection(self.yuki_conn_id).extra_dejson)
            self._budget = self._rate_budget(long_limit=None if self.shared_budgets else limit)
        return self._budget

    def _shared_windows(self, connection: Any, extra: Mapping[str, Any]) -> Sequence[SharedWindow]:
        """The domain's day, spent by every administration its access key reaches (reference ``yuki.md``,
        limits: per domain, shared by every integration). The key names the domain; only a digest of it
        goes into the window's name, which Redis and the database keep in clear.

        Like the local count, the day runs 24 hours from its first call: Yuki does not document when its
        counter resets, and a window that opens later than Yuki's only makes us stop early.
        """
        domain = hashlib.sha256((connection.password or "").encode()).hexdigest()[:16]
        day = SharedWindow(f"yuki:domain:{domain}:day", _daily_limit(extra), DOMAIN_DAY.window_s, daily=True)
        return (day,)

    def _try_connection(self) -> str:
        """Open a session and list the administrations the key sees (two of the day's calls).

        Safe with any vault: the access key does not change by being used.
        """
        names = [row["name"] for row in self.administrations()]
        return f"Connection successfully tested; administrations: {', '.join(names) or 'none'}"

    # -- public calls ---------------------------------------------------------------------------

    @property
    def administration_id(self) -> str:
        """The administration's GUID; a name is looked up in ``Administrations`` once.

        :raises ConfigError: no administration of that name is visible to the access key.
        """
        if self._administration_id is None:
            if not self.administration_name:
                raise ValueError("this Yuki hook was made without an administration; it can only be tested")
            wanted = self.administration_name.strip().lower()
            rows = self.administrations()
            found = next((row["id"] for row in rows if row["name"].strip().lower() == wanted), None)
            if found is None:
                names = ", ".join(row["name"] for row in rows) or "none"
                if not rows:
                    raise AuthError(
                        f"{self.context}: the access key works, but it does not seem to have access to any "
                        "administration (reconnect the integration with a key of the right domain)"
                    )
                raise ConfigError(
                    f"{self.context}: the access key sees no administration called "
                    f"{self.administration_name!r} "
                    f"(it sees: {names}); correct the integration's administration setting"
                )
            self._administration_id = found
        return self._administration_id

    def administrations(self) -> list[dict[str, str]]:
        """The administrations the access key may use: ``id``, ``name``, ``country``, ``domain_id``."""
        result = self.call(ACCOUNTING, "Administrations", [], safe=True)
        holder = find(result, "Administrations") if result is not None else None
        return [
            {
                "id": (row.get("ID") or "").strip().lower(),
                "name": text(row, "Name"),
                "country": text(row, "Country"),
                "domain_id": text(row, "DomainID"),
            }
            for row in (find_all(holder, "Administration") if holder is not None else [])
        ]

    def process_sales_invoices(self, document: Element) -> Element:
        """``ProcessSalesInvoices`` for ``document``; returns the ``SalesInvoicesImportResponse`` element.

        Never repeated blindly. The response arrives as child elements or as escaped XML text; both are
        read.

        :raises OutcomeUnknownError: the answer was lost, unreadable or an unrecognised fault.
        """
        params: list[Param] = [("administrationId", self.administration_id), ("xmlDoc", document)]
        result = self.call(SALES, "ProcessSalesInvoices", params, safe=False, session_param="sessionId")
        response = self._import_response(result)
        if response is None:
            raise self._unknown(f"{self.context}: ProcessSalesInvoices answered without an import response")
        return response

    def outstanding_items(self, reference: str) -> list[dict[str, str]]:
        """``CheckOutstandingItemAdmin``: the administration's items with ``reference``, in Yuki's order."""
        params: list[Param] = [("administrationID", self.administration_id), ("Reference", reference)]
        result = self.call(ACCOUNTING, "CheckOutstandingItemAdmin", params, safe=True)
        holder = find(result, "OutstandingItems") if result is not None else None
        if holder is None and result is not None and (result.text or "").strip():
            holder = _parse_text(result.text or "")
        return [
            {
                "id": (item.get("ID") or "").strip(),
                "reference": text(item, "Reference"),
                "open_amount": text(item, "OpenAmount"),
                "original_amount": text(item, "OriginalAmount"),
            }
            for item in (find_all(holder, "Item") if holder is not None else [])
        ]

    # -- request machinery ----------------------------------------------------------------------

    def call(
        self,
        service: str,
        operation: str,
        params: Sequence[Param],
        *,
        safe: bool,
        session_param: str = "sessionID",
    ) -> Element | None:
        """One operation with the current session; returns its ``<Operation>Result`` element.

        A session fault makes one new ``Authenticate`` and one repeat (a fault means nothing was
        processed). Reads are retried on transient failures.
        """

        def attempt() -> Element | None:
            rejected: str | None = None
            while True:
                session = self._session(service, rejected=rejected)
                body = element(YUKI_NS, operation)
                child(body, session_param, session)
                for name, value in params:
                    node = child(body, name)
                    if isinstance(value, etree._Element):
                        node.append(value)
                    elif value is not None:
                        node.text = value
                try:
                    return self._post(service, operation, body, safe=safe)
                except SoapFault as fault:
                    if is_session_fault(fault.text) and rejected is None:
                        self.log.info("%s: Yuki refused the session, authenticating again", self.context)
                        rejected = session
                        continue
                    raise self._fault_error(fault, safe=safe) from fault

        return self._retrying(attempt) if safe else attempt()

    def _post(
        self, service: str, operation: str, body: Element, *, safe: bool, budgeted: bool = True
    ) -> Element | None:
        """Post one envelope within the daily budget (``budgeted=False``: the caller took its unit); the
        ``Result`` element of a 200 answer."""
        if budgeted:
            self.budget.acquire()
        path = f"/ws/{service}.asmx"
        response, content = self.post_envelope(path, YUKI_NS + operation, body, safe=safe)
        if content is None:
            status = response.status_code
            detail = f"{self.context}: {operation} answered HTTP {status} without a SOAP envelope"
            if status == 429:  # a gateway's refusal: nothing reached Yuki
                raise RateLimitedError(f"{detail} (too many requests)")
            if status in (401, 403):
                raise AuthError(detail, status=status)
            if 400 <= status < 500:
                raise TransientError(detail, status=status)
            if safe:
                raise TransientError(detail, status=status)
            raise self._unknown(detail)
        # Matched by local name, like every element of an answer: Yuki's results carry children without a
        # namespace (xmlns=""; DatrixFinances XMLService.cs reads them so), and only the name is certain.
        if local(content) != f"{operation}Response":
            detail = f"{self.context}: {operation} answered with an unexpected {local(content)}"
            if safe:
                raise TransientError(detail)
            raise self._unknown(detail)
        return find(content, f"{operation}Result")

    def _fault_error(self, fault: SoapFault, *, safe: bool) -> SyncError:
        """The typed error for a fault; an unrecognised one on a write means "outcome unknown"."""
        if is_quota_fault(fault.text):
            resets_at = _next_midnight(self._clock())
            self.budget.observe(long=Window(remaining=0, resets_at=resets_at.timestamp()))
            return QuotaExceededError(f"{self.context}: {fault.text}", resets_at=resets_at)
        error = classify_fault(fault.text, context=self.context)
        if error is not None:
            return error
        detail = f"{self.context}: Yuki answered with a SOAP fault: {fault.text}"
        return TransientError(detail, status=fault.status) if safe else self._unknown(detail)

    # -- session --------------------------------------------------------------------------------

    def _session(self, service: str, *, rejected: str | None = None) -> str:
        """A usable session id, opened through the vault when none is stored, it is old, or Yuki just
        refused ``rejected`` (see :class:`StoredToken`).

        A new session costs one of the domain's calls, taken from the budget *before* the vault's lock:
        with the day counted in the invoicing database, a reservation under the lock would wait for the
        very transaction that holds it on SQLite, whose lock is the whole file's (the Yuki task of the
        suite's chaos session hung there). If another worker stores a session meanwhile, the unit is spent
        for nothing: never over the limit. A retried ``Authenticate`` (a transient failure) is not counted
        again.
        """
        if self._token.stale(rejected=rejected):
            self.budget.acquire()
        return self._token.get(lambda _current: self._authenticate(service), rejected=rejected)

    def _authenticate(self, service: str) -> TokenSet:
        access_key = self.get_connection(self.yuki_conn_id).password
        if not access_key:
            raise AuthError(
                f"Yuki connection {self.yuki_conn_id}: no web service access key is set (password)"
            )
        body = element(YUKI_NS, "Authenticate")
        child(body, "accessKey", access_key)

        def call() -> Element | None:
            try:
                return self._post(service, "Authenticate", body, safe=True, budgeted=False)
            except SoapFault as fault:
                raise self._fault_error(fault, safe=True) from fault

        session = text(self._retrying(call))
        if not session:
            raise TransientError(f"{self.context}: Authenticate answered without a session id")
        self.authentications += 1
        return TokenSet(
            access_token=session, refresh_token="", expires_at=self._clock() + self._session_lifetime
        )

    def _import_response(self, result: Element | None) -> Element | None:
        if result is None:
            return None
        response = find(result, "SalesInvoicesImportResponse")
        if response is None and (result.text or "").strip():
            response = _parse_text(result.text or "")
        return response


def _parse_text(value: str) -> Element | None:
    """An XML answer Yuki sent as escaped text; None when it is not XML."""
    try:
        return parse(value.strip())
    except etree.XMLSyntaxError:
        return None


def _next_midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
