"""QuickBooks Online Accounting API v3 client on :class:`~invoice_sync.connectors.oauth.OAuthRestHook`.

The shared OAuth hook keeps the rotating refresh tokens in the vault, re-tokens once on a 401, waits out a
429 and reports a write whose answer was lost. What QuickBooks adds, and this hook does:

- the company (``realmId``) in every path, ``/v3/company/{realm}/...``, and :data:`MINOR_VERSION` on
  every call;
- ``Fault`` answers read by code (:mod:`.errors`), including a ``Fault`` carried by an HTTP 200;
- a ``requestid`` on every write (:func:`request_id`), so a resend of the same request is answered from
  QuickBooks' memory instead of being executed twice;
- the limits counted locally, because QuickBooks announces none in headers: :class:`SlidingBudget` keeps
  every realm under 500 requests a minute and 10 a second, and batch calls under 40 a minute besides;
  with a shared store the realm's minute and second are also counted there, across the tasks that
  follow each other on one company;
  a 429 (or throttle fault 3001) is waited out for a minute, as Intuit asks, and the call repeated.

Connection (``conn_type`` ``quickbooks``; one stored as ``http`` works alike):

- ``host``: ``https://quickbooks.api.intuit.com`` (or the sandbox's ``.../quickbooks`` mount)
- ``login`` / ``password``: the app's OAuth client id and client secret
- ``extra``: ``{"refresh_token": "<from the consent>", "timeout": 30}``, optionally ``token_url`` (the
  sandbox serves its own), ``requests_per_minute`` (500), ``requests_per_second`` (10),
  ``batches_per_minute`` (40) — lower them when several apps share one client id — and ``minute_s``
  (60): how long a minute lasts, for a sandbox whose clock runs faster.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import requests

from invoice_sync.connectors.hooks import positive_extra
from invoice_sync.connectors.http import RateBudget
from invoice_sync.connectors.oauth import OAuthRestHook
from invoice_sync.connectors.quickbooks import DESCRIPTOR, REALM_MINUTE, REALM_SECOND
from invoice_sync.connectors.quickbooks.errors import (
    SEVERE_FROM,
    describe,
    fault_error,
    faults_of,
    is_throttled,
    status_error,
)
from invoice_sync.connectors.quickbooks.mapping import custom_numbers_problem
from invoice_sync.domain.errors import ConfigError, RateLimitedError, SyncError, TransientError
from invoice_sync.domain.ports import BudgetLeft, BudgetStore, SharedWindow, TokenVault

MINOR_VERSION = 75
"""The API minor version every call asks for. Intuit stopped supporting minor versions 1-74 on
1 August 2025 (they are refused since); 75 is the minimum and the default, and naming it keeps the
entities' shape fixed when Intuit moves the default on."""
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
BATCH_MAX = 30
"""Items per batch call: Intuit's maximum (a larger batch is refused as a whole)."""
REQUEST_ID_NAMESPACE = uuid.UUID("6d3e2a9c-5b0f-4c1e-9f57-3a8d2c71e0b4")
"""Namespace of the name-based (uuid5) request ids: fixed, so every worker derives the same id."""
REQUESTS_PER_MINUTE = REALM_MINUTE.units
REQUESTS_PER_SECOND = REALM_SECOND.units
BATCHES_PER_MINUTE = 40
MINUTE_S = 60.0


def request_id(realm_id: str, endpoint: str, payload: Any) -> str:
    """The ``requestid`` of a write: a uuid5 of the realm, the endpoint and the request's content.

    Deterministic, so a resend of the same content (a retry after a lost answer, another worker taking
    over) carries the same id, and QuickBooks answers it with the original result instead of booking
    again. Content that differs (another batch composition, a corrected invoice) gets a new id and is
    executed; its duplicate ``DocNumber`` is then what stops a second booking. The price: a request
    QuickBooks refused is refused again, from memory, while QuickBooks remembers its id (how long is not
    documented), unless something in it changes. 36 characters: within the 36 a batch allows.
    """
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{realm_id}\n{endpoint}\n{canonical}"))


class SlidingBudget(RateBudget):
    """Call budget for a tool that announces no limits: every window counted locally, sliding.

    Each window is ``(limit, period_s)``: at most ``limit`` calls in *any* span of ``period_s``, because
    Intuit does not say where its minute starts, and a window that starts with our first call could let
    two bursts meet inside QuickBooks' minute. A call waits until every window has room.

    QuickBooks counts a call when it arrives, which is some time after we took its place; so a call's
    place is dated again when its answer is in (:meth:`settle`): the arrival lies before that, and a later
    call that waits for that date can never meet the earlier one inside QuickBooks' window, however long
    the network took. A call whose answer never came keeps the date it was sent.

    :param windows: the limits, e.g. ``[(500, 60.0), (10, 1.0)]``.
    :param throttle_wait_s: how long a 429 is waited out (Intuit: a minute; scaled for a sandbox).
    :param shared: windows other tasks spend too (another integration's task on the same company),
        reserved in ``store`` once the local windows have room; see :attr:`RateLimit.shared_units
        <invoice_sync.connectors.descriptor.RateLimit.shared_units>` for their size.
    :param store: where ``shared`` windows are counted; None counts in this budget only.
    """

    def __init__(
        self,
        *,
        label: str,
        windows: Sequence[tuple[int, float]],
        throttle_wait_s: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = 0.01,
        shared: Sequence[SharedWindow] = (),
        store: BudgetStore | None = None,
    ) -> None:
        super().__init__(label=label, sleep=sleep, clock=clock, margin_s=margin_s, shared=shared, store=store)
        self.windows = tuple((max(1, int(limit)), period) for limit, period in windows)
        self.throttle_wait_s = throttle_wait_s
        self._sent: tuple[list[list[float]], ...] = tuple([] for _ in self.windows)
        """Per window, the dates of the calls in it (one-element lists, so :meth:`settle` can move them)."""
        self._window_lock = threading.Lock()
        self._taken = threading.local()

    def acquire(self, cost: int = 1) -> None:
        """Take ``cost`` calls, first waiting until enough earlier calls have left every window."""
        with self._window_lock:
            while True:
                now = self._clock()
                wait = 0.0
                for index, (limit, period) in enumerate(self.windows):
                    dates = sorted(date for (date,) in self._sent[index] if date > now - period)
                    self._sent[index][:] = [[date] for date in dates]
                    if len(dates) + cost > limit:
                        wait = max(wait, dates[len(dates) + cost - limit - 1] + period - now + self._margin_s)
                if wait <= 0:
                    places = [[now] for _ in range(cost) for _ in self.windows]
                    for index, sent in enumerate(self._sent):
                        sent.extend(places[index :: len(self.windows)])
                    self._taken.places = places
                    self._reserve_shared(cost)
                    return
                self._pause(wait)

    def settle(self) -> None:
        """The call this thread last took places for has its answer: date its places now."""
        places = getattr(self._taken, "places", None)
        if not places:
            return
        with self._window_lock:
            now = self._clock()
            for place in places:
                place[0] = now
        self._taken.places = None

    def left(self) -> BudgetLeft:
        """Calls left in the longest window (the minute) right now; QuickBooks has no daily limit."""
        with self._window_lock:
            now = self._clock()
            index = max(range(len(self.windows)), key=lambda i: self.windows[i][1])
            limit, period = self.windows[index]
            used = sum(1 for (date,) in self._sent[index] if date > now - period)
        return BudgetLeft(short=max(limit - used, 0), long=None)

    def throttled(self, **_: Any) -> None:
        """QuickBooks refused a call for its rate (429 or fault 3001) without saying until when: wait the
        minute Intuit asks for. The caller repeats the call afterwards (nothing was done)."""
        with self._window_lock:
            self._pause(self.throttle_wait_s)


class QuickBooksHook(OAuthRestHook):
    """Calls one QuickBooks Online company (realm) on behalf of one Airflow connection.

    No I/O happens in the constructor; the connection is read on the first call.

    :param quickbooks_conn_id: Airflow connection with base URL, client id/secret and the consent's
        refresh token.
    :param vault: durable, locked storage of the connection's rotating tokens.
    :param realm_id: the company every call addresses; a hook Airflow builds for the Connections form has
        none, and can only be tested.
    :param batch_budget: budget of batch calls; by default made from the connection (40 a minute).
    :param options: further keyword arguments of :class:`~invoice_sync.connectors.oauth.OAuthRestHook`
        (``budget``, ``sleep``, ``backoff_s``, ``refresh_margin_s``, ...).
    """

    conn_name_attr = "quickbooks_conn_id"
    default_conn_name = "quickbooks_default"
    conn_type = DESCRIPTOR.conn_type
    hook_name = DESCRIPTOR.label
    tool_name = "QuickBooks"
    token_url: ClassVar[str] = TOKEN_URL

    def __init__(
        self,
        *,
        quickbooks_conn_id: str = default_conn_name,
        vault: TokenVault | None = None,
        realm_id: str | None = None,
        batch_budget: RateBudget | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            conn_id=quickbooks_conn_id,
            context=f"QuickBooks company {realm_id}" if realm_id else DESCRIPTOR.label,
            vault=vault,
            **options,
        )
        self.quickbooks_conn_id = quickbooks_conn_id
        self.realm_id = realm_id or ""
        self._batch_budget = batch_budget

    # -- budgets ------------------------------------------------------------------------------------

    def _limit(self, extra: Mapping[str, Any], key: str, default: float) -> float:
        return positive_extra(extra, key, default, where=f"{self.hook_name} connection {self.conn_id}")

    def _realm_windows(self, extra: Mapping[str, Any]) -> tuple[tuple[int, float], tuple[int, float]]:
        """(requests, seconds) of the realm's minute and second (scaled by ``minute_s``)."""
        minute_s = self._limit(extra, "minute_s", MINUTE_S)
        return (
            (int(self._limit(extra, "requests_per_minute", REQUESTS_PER_MINUTE)), minute_s),
            (int(self._limit(extra, "requests_per_second", REQUESTS_PER_SECOND)), minute_s / 60),
        )

    def _new_budget(self, extra: Mapping[str, Any]) -> RateBudget:
        """500 requests in any minute and 10 in any second per realm, counted here and, with a store, in
        the windows every task on this company shares (:meth:`_shared_windows`)."""
        minute, second = self._realm_windows(extra)
        _, minute_s = minute
        return SlidingBudget(
            label=self.context,
            windows=[minute, second],
            throttle_wait_s=minute_s,
            sleep=self._sleep,
            shared=self._shared_windows_to_reserve(),
            store=self.shared_budgets,
        )

    def _shared_windows(self, connection: Any, extra: Mapping[str, Any]) -> Sequence[SharedWindow]:
        """The realm's minute (per company) and second (per company and app), when tasks that follow each
        other on one company, or run beside each other, spend them: two integrations into one company, or
        a bench whose tenants share the sandbox's. Each task's own count starts empty, and a burst at its
        start met the second a task before it had spent, a 429 and a minute's wait. Half of each limit per
        shared window, since Intuit's windows slide (:attr:`RateLimit.shared_units
        <invoice_sync.connectors.descriptor.RateLimit.shared_units>`)."""
        if not self.realm_id:
            return ()
        (per_minute, minute_s), (per_second, second_s) = self._realm_windows(extra)
        minute = replace(REALM_MINUTE, units=per_minute, window_s=minute_s)
        second = replace(REALM_SECOND, units=per_second, window_s=second_s)
        return (
            SharedWindow(f"quickbooks:realm:{self.realm_id}:minute", minute.shared_units, minute_s),
            SharedWindow(
                f"quickbooks:realm:{self.realm_id}:app:{connection.login}:second",
                second.shared_units,
                second_s,
            ),
        )

    @property
    def waited_s(self) -> float:
        return self.budget.waited_s + (self._batch_budget.waited_s if self._batch_budget else 0.0)

    @property
    def batch_budget(self) -> RateBudget:
        """Batch calls: 40 in any minute per realm, counted on top of :attr:`budget` (a batch call is
        also a request)."""
        if self._batch_budget is None:
            extra = self.get_connection(self.conn_id).extra_dejson
            minute_s = self._limit(extra, "minute_s", MINUTE_S)
            self._batch_budget = SlidingBudget(
                label=f"{self.context} (batch calls)",
                windows=[(int(self._limit(extra, "batches_per_minute", BATCHES_PER_MINUTE)), minute_s)],
                throttle_wait_s=minute_s,
                sleep=self._sleep,
            )
        return self._batch_budget

    def _observe(self, response: requests.Response) -> None:
        """No limits in the headers; the answer only dates the call in the budget's windows."""
        if isinstance(self.budget, SlidingBudget):
            self.budget.settle()

    def _throttled(self, response: requests.Response, attempt: int) -> None:
        self.log.info("%s: throttled by QuickBooks (HTTP 429), waiting a minute", self.context)
        self.budget.throttled()

    def _error(self, response: requests.Response) -> SyncError:
        try:
            body = response.json()
        except ValueError:
            body = None
        faults = faults_of(body)
        if faults:
            return fault_error(faults, context=self.context, status=response.status_code)
        return status_error(response.status_code, response.text.strip(), context=self.context)

    # -- calls ----------------------------------------------------------------------------------------

    def _try_api(self) -> str:
        """Read the company's information and preferences: proves the tokens, the client and the realm, and
        that the company keeps the invoice numbers we send (custom transaction numbers on; see
        :func:`.mapping.custom_numbers_problem`)."""
        self.company_info()
        problem = custom_numbers_problem(self.preferences(), where=self.context)
        if problem is not None:
            raise ConfigError(problem)
        return "Connection successfully tested"

    def company_info(self) -> dict[str, Any]:
        """``GET companyinfo/{realm}``: the company's name, country and settings."""
        body = self.api("GET", f"companyinfo/{self.realm_id}", safe=True)
        info = body.get("CompanyInfo")
        return info if isinstance(info, dict) else {}

    def preferences(self) -> dict[str, Any]:
        """``GET preferences``: the company's settings, the ``Preferences`` entity (``{}`` when absent).

        The path and the wrapper are python-quickbooks' (``PrefMixin.get`` in ``quickbooks/mixins.py`` reads
        ``{api}/company/{realm}/preferences`` and unwraps ``Preferences``; Intuit's API reference,
        Preferences entity).
        """
        body = self.api("GET", "preferences", safe=True)
        preferences = body.get("Preferences")
        return preferences if isinstance(preferences, dict) else {}

    def query(self, text: str) -> dict[str, Any]:
        """``POST query`` with ``text`` and return its ``QueryResponse`` (``{}`` when nothing matched).

        POSTed rather than put in the URL: a query naming a page of customers is long.
        """
        body = self.api(
            "POST",
            "query",
            data=text.encode("utf-8"),
            headers={"Content-Type": "application/text"},
            safe=True,
        )
        answer = body.get("QueryResponse")
        return answer if isinstance(answer, dict) else {}

    def batch(self, items: Sequence[Mapping[str, Any]], *, write: bool) -> list[dict[str, Any]]:
        """``POST batch`` with up to :data:`BATCH_MAX` items; returns the ``BatchItemResponse`` list.

        :param write: the batch creates something. It then carries a :func:`request_id` and is never
            repeated here: a lost answer raises :class:`~invoice_sync.domain.errors.OutcomeUnknownError`.
            A batch of queries is safe to repeat.
        """
        if not 0 < len(items) <= BATCH_MAX:
            raise ValueError(f"a QuickBooks batch holds 1 to {BATCH_MAX} items, not {len(items)}")
        payload = {"BatchItemRequest": list(items)}
        params = {"requestid": request_id(self.realm_id, "batch", payload)} if write else {}
        budget = self.batch_budget
        budget.acquire()
        try:
            body = self.api("POST", "batch", params=params, json=payload, safe=not write)
        finally:
            if isinstance(budget, SlidingBudget):
                budget.settle()
        answers = body.get("BatchItemResponse")
        if not isinstance(answers, list):
            detail = f"{self.context}: the batch answer has no BatchItemResponse"
            raise self._unknown(detail) if write else TransientError(detail)
        return [answer for answer in answers if isinstance(answer, dict)]

    def api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        safe: bool,
    ) -> dict[str, Any]:
        """One call to ``/v3/company/{realm}/{path}`` with the minor version; a ``Fault`` in a 2xx answer
        is raised like a refused call's (a throttle fault is waited out and the call repeated)."""
        if not self.realm_id:
            raise ValueError("this QuickBooks hook was made without a company (realm); it can only be tested")
        query = {"minorversion": str(MINOR_VERSION), **(params or {})}
        endpoint = f"/v3/company/{self.realm_id}/{path}"
        for attempt in range(self._max_throttled + 1):
            body = self.call(method, endpoint, params=query, json=json, data=data, headers=headers, safe=safe)
            if not isinstance(body, dict):
                detail = f"{self.context}: unexpected answer from {path}"
                raise TransientError(detail) if safe else self._unknown(detail)
            faults = faults_of(body)
            if not faults:
                return body
            if is_throttled(faults):
                if attempt == self._max_throttled:
                    break
                self.log.info("%s: throttled by QuickBooks (fault 3001), waiting a minute", self.context)
                self.budget.throttled()
                continue
            if not safe and any(fault.code >= SEVERE_FROM for fault in faults):
                raise self._unknown(f"{self.context}: {describe(faults)}")
            raise fault_error(faults, context=self.context, status=200)
        raise RateLimitedError(
            f"{self.context}: still throttled after {self._max_throttled} waits of a minute"
        )
