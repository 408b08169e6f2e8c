"""Xero Accounting API client on :class:`~invoice_sync.connectors.oauth.OAuthRestHook`.

The shared OAuth machinery (rotating refresh tokens in the vault, one new token after a 401, 429s waited
out, lost writes reported as unknown) comes from the base; what is Xero's own lives here: the
``xero-tenant-id`` header every call carries (the organisation, given by id or resolved by name through
``GET /connections`` once), the minute and day limits read from ``X-MinLimit-Remaining`` /
``X-DayLimit-Remaining``, the ``X-Rate-Limit-Problem`` of a 429, Xero's error bodies, and the
``Idempotency-Key`` of every create.

Connection (``conn_type`` ``xero``; one stored as ``http`` works alike):

- ``host``: ``https://api.xero.com`` (or the sandbox's ``.../xero``); the API is under ``/api.xro/2.0``
  and the tenant list at ``/connections``
- ``login`` / ``password``: the app's OAuth client id and client secret
- ``extra``: ``{"refresh_token": "<from the consent>", "timeout": 30}``; ``token_url`` replaces Xero's
  identity endpoint (the sandbox serves its own); ``minute_s`` and ``day_s`` shorten the rate windows for a
  sandbox running faster than real time (60 and 86,400 seconds by default).

Rate windows: Xero says how many calls are left in the minute and the day, but not when those windows
reopen. The hook keeps its own window starts (the first answer seen after the previous window passed) and
takes "start + length" as the reopening time. Xero's windows roll, so that estimate can only be late,
never early by more than the calls other clients of the organisation made: steady state meets no 429,
and a 429 that comes anyway tells, with ``Retry-After``, exactly how long to wait.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

import requests

from invoice_sync.connectors.hooks import positive_extra
from invoice_sync.connectors.http import RateBudget, Window, epoch_to_datetime
from invoice_sync.connectors.oauth import OAuthRestHook, retry_after_s
from invoice_sync.connectors.xero import APP_MINUTE, DESCRIPTOR
from invoice_sync.connectors.xero.errors import error_text, validation_error
from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    DataError,
    QuotaExceededError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.ports import SharedWindow, TokenVault

API = "/api.xro/2.0"
CONNECTIONS = "/connections"
TOKEN_URL = "https://identity.xero.com/connect/token"
PAGE_SIZE = 100
"""Rows Xero returns per ``page`` of a list."""
MAX_PAGES = 50
"""Pages one lookup follows at most; a lookup for at most a batch of numbers never needs more than one."""
MINUTE_S = 60.0
DAY_S = 86_400.0
APP_MINUTE_LIMIT = APP_MINUTE.units
"""Calls a minute per app across all its organisations (reference ``xero.md``, limits: app-wide)."""
IDEMPOTENCY_PREFIX = "invoice-sync-"
IDEMPOTENCY_KEY_MAX = 128


def idempotency_key(tenant_id: str, method: str, resource: str, body: Any) -> str:
    """The ``Idempotency-Key`` of one write: a digest of the organisation, the route and the body.

    An identical resend (same invoices, same content, same organisation) carries the same key, so Xero
    replays its first answer instead of processing the request again; any other request, even with one
    cent changed, gets another key, so a key is never reused for a different request (which Xero refuses
    with "Idempotency Key ... is used with a different request"). 77 characters, under Xero's 128.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{tenant_id}\n{method} {resource}\n{canonical}".encode()).hexdigest()
    key = IDEMPOTENCY_PREFIX + digest
    assert len(key) <= IDEMPOTENCY_KEY_MAX
    return key


class XeroHook(OAuthRestHook):
    """Calls the Accounting API of one Xero organisation (tenant) for one Airflow connection.

    No I/O happens in the constructor; the connection is read on the first call.

    :param xero_conn_id: Airflow connection with the base URL, client id/secret and the consent's refresh
        token.
    :param vault: durable, locked storage of the connection's rotating tokens, shared by every task.
    :param tenant_id: the organisation's tenant id; or
    :param tenant: its name, resolved through ``GET /connections`` once per hook. Neither (a hook Airflow
        builds for the Connections form): the hook can be tested, not used on an organisation.
    :param options: further keyword arguments of :class:`~invoice_sync.connectors.oauth.OAuthRestHook`
        (budget, sleep, get_attempts, backoff_s, max_throttled, refresh_margin_s, clock).
    """

    conn_name_attr = "xero_conn_id"
    default_conn_name = "xero_default"
    conn_type = DESCRIPTOR.conn_type
    hook_name = DESCRIPTOR.label
    tool_name = "Xero"
    token_url: ClassVar[str] = TOKEN_URL

    def __init__(
        self,
        *,
        xero_conn_id: str = default_conn_name,
        vault: TokenVault | None = None,
        tenant_id: str | None = None,
        tenant: str | None = None,
        **options: Any,
    ) -> None:
        organisation = tenant or tenant_id
        context = f"Xero organisation {organisation}" if organisation else DESCRIPTOR.label
        super().__init__(conn_id=xero_conn_id, context=context, vault=vault, **options)
        self.xero_conn_id = xero_conn_id
        self._tenant_id = tenant_id
        self.tenant_name = tenant
        self._minute_start: float | None = None
        self._day_start: float | None = None
        self._checking_access = False

    def _try_api(self) -> str:
        """List the organisations the connection may use (``/connections`` does not count toward limits)."""
        names = [str(row.get("tenantName")) for row in self.connections()]
        return f"Connection successfully tested; organisations: {', '.join(names) or 'none'}"

    # -- organisation ----------------------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        """The organisation's tenant id; a name is looked up in ``/connections`` once.

        :raises ConfigError: the connection may use organisations, but none of that name.
        :raises AuthError: the connection may use no organisation at all (consent withdrawn).
        """
        if self._tenant_id is None:
            if not self.tenant_name:
                raise ValueError("this Xero hook was made without an organisation; it can only be tested")
            wanted = self.tenant_name.strip().lower()
            rows = self.connections()
            found = [row for row in rows if str(row.get("tenantName") or "").strip().lower() == wanted]
            if not found:
                if not rows:
                    raise AuthError(
                        f"{self.context}: the connection may use no Xero organisation any more; reconnect "
                        "the integration to Xero and pick the organisation"
                    )
                raise ConfigError(
                    f"{self.context}: the connection may use no organisation called {self.tenant_name!r} "
                    f"(it may use: {_described(rows)}); correct the integration's tenant setting"
                )
            self._tenant_id = str(found[0]["tenantId"])
        return self._tenant_id

    def connections(self) -> list[dict[str, Any]]:
        """The organisations (tenants) the connection's consent covers, as ``GET /connections`` lists them."""
        rows = self.call("GET", CONNECTIONS)
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    # -- Accounting API ----------------------------------------------------------------------------------

    def get_all(self, resource: str, key: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every ``key`` row of ``GET /{resource}`` with ``params``, following Xero's pages of 100."""
        rows: list[dict[str, Any]] = []
        self.tenant_id  # noqa: B018 (resolve the organisation before the first call)
        for page in range(1, MAX_PAGES + 1):
            body = self.call("GET", f"{API}/{resource}", params={**params, "page": str(page)})
            found = body.get(key) if isinstance(body, dict) else None
            rows += [row for row in found or [] if isinstance(row, dict)]
            if not found or len(found) < PAGE_SIZE:
                break
        return rows

    def create(self, resource: str, key: str, elements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``PUT /{resource}?summarizeErrors=false`` with ``elements``; Xero's answer per element, in order.

        Each element is judged on its own (``HasErrors``, ``ValidationErrors``) and HTTP 200 alone proves
        nothing. The request carries an :func:`idempotency_key`, so resending it unchanged is harmless.

        :raises OutcomeUnknownError: the answer was lost, unreadable, a 5xx, or has no ``key`` list.
        :raises XeroValidationError: Xero refused the request as a whole; nothing was created.
        """
        return self._write("PUT", resource, key, elements)

    def update(self, resource: str, key: str, elements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``POST /{resource}?summarizeErrors=false``: update elements by their id; see :meth:`create`."""
        return self._write("POST", resource, key, elements)

    def _write(
        self, method: str, resource: str, key: str, elements: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        body = {key: list(elements)}
        headers = {"Idempotency-Key": idempotency_key(self.tenant_id, method, resource, body)}
        answer = self.call(
            method,
            f"{API}/{resource}",
            params={"summarizeErrors": "false"},
            json=body,
            headers=headers,
            safe=False,
        )
        rows = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise self._unknown(f"{self.context}: {method} {resource} answered without its {key}")
        return [row if isinstance(row, dict) else {} for row in rows]

    # -- what OAuthRestHook leaves to the tool ---------------------------------------------------------

    @cached_property
    def _window_lengths(self) -> tuple[float, float]:
        """Length of the minute and the day window in seconds (shorter for a time-scaled sandbox)."""
        extra = self.get_connection(self.xero_conn_id).extra_dejson
        where = f"Xero connection {self.xero_conn_id}"
        return (
            positive_extra(extra, "minute_s", MINUTE_S, where=where),
            positive_extra(extra, "day_s", DAY_S, where=where),
        )

    def _new_budget(self, extra: Mapping[str, Any]) -> RateBudget:
        return self._rate_budget(clock=self._now)

    def _shared_windows(self, connection: Any, extra: Mapping[str, Any]) -> Sequence[SharedWindow]:
        """Xero's app-wide minute, spent by every organisation the app (the connection's client id)
        reaches (reference ``xero.md``, limits: 10,000 calls a minute per app). An organisation's own
        minute and day stay counted from the headers: one task at a time books for an organisation."""
        minute_s, _ = self._window_lengths
        limit = positive_extra(
            extra, "app_minute_limit", APP_MINUTE_LIMIT, where=f"Xero connection {self.conn_id}"
        )
        return (SharedWindow(f"xero:app:{connection.login}:minute", int(limit), minute_s),)

    def _now(self) -> float:
        return self._clock().timestamp()

    def _headers(self) -> dict[str, str]:
        # Unset only while the organisation's name is being resolved through /connections.
        return {"xero-tenant-id": self._tenant_id} if self._tenant_id else {}

    def _observe(self, response: requests.Response) -> None:
        """Record what is left of the organisation's minute and day, and of the app's minute."""
        minute = _header_int(response, "X-MinLimit-Remaining")
        app_minute = _header_int(response, "X-AppMinLimit-Remaining")
        day = _header_int(response, "X-DayLimit-Remaining")
        if minute is None and app_minute is None and day is None:
            return  # /connections and the token endpoint do not count
        minute_s, day_s = self._window_lengths
        now = self._now()
        if self._minute_start is None or now >= self._minute_start + minute_s:
            self._minute_start = now
        if self._day_start is None or now >= self._day_start + day_s:
            self._day_start = now
        left = [value for value in (minute, app_minute) if value is not None]
        self.budget.observe(
            short=Window(min(left), self._minute_start + minute_s) if left else None,
            long=Window(day, self._day_start + day_s) if day is not None else None,
        )

    def _throttled(self, response: requests.Response, attempt: int) -> None:
        """A spent day stops this organisation's run; any other limit is waited out for ``Retry-After``."""
        problem = response.headers.get("X-Rate-Limit-Problem", "").strip().lower()
        wait = retry_after_s(response, default=1.0)
        reopens = self._now() + wait
        if problem.startswith("day"):
            self.budget.observe(long=Window(remaining=0, resets_at=reopens))
            raise QuotaExceededError(
                f"{self.context}: Xero's daily API limit for this organisation is used up "
                "(X-Rate-Limit-Problem: day); the rest waits for the next run",
                resets_at=epoch_to_datetime(reopens),
            )
        self.log.info("%s: Xero refused a call (%s limit), waiting %.1f s", self.context, problem, wait)
        self._minute_start = None  # the next answer starts a new minute
        self.budget.throttled(short=Window(remaining=0, resets_at=reopens))

    def _error(self, response: requests.Response) -> SyncError:
        status = response.status_code
        text = error_text(response)
        if status == 400:
            return validation_error(response, context=self.context) or DataError(
                f"{self.context}: {text}", status=status
            )
        if status == 401:
            return AuthError(
                f"{self.context}: Xero refused a freshly refreshed access token ({text}); reconnect the "
                "integration to Xero (give consent again)",
                status=status,
            )
        if status == 403:
            return self._forbidden(text)
        if status in (404, 413):
            return DataError(f"{self.context}: {text}", status=status)
        return TransientError(f"{self.context}: HTTP {status}: {text}", status=status)

    def _forbidden(self, text: str) -> SyncError:
        """A 403: the token may not use the organisation. ``/connections`` tells a wrong ``tenant_id`` (a
        setting to fix) from withdrawn access (reconnect); it does not count toward the limits."""
        if self._checking_access:  # /connections itself was refused
            return AuthError(f"{self.context}: {text}; reconnect the integration to Xero", status=403)
        self._checking_access = True
        try:
            rows = self.connections()
        except SyncError:
            rows = None
        finally:
            self._checking_access = False
        tenant = self._tenant_id or ""
        if rows and all(str(row.get("tenantId")) != tenant for row in rows):
            return ConfigError(
                f"{self.context}: {text}. Tenant {tenant} is not among the organisations this connection "
                f"may use ({_described(rows)}); correct the integration's tenant_id setting",
                status=403,
            )
        return AuthError(
            f"{self.context}: {text}. Xero refused access to the organisation; reconnect the integration "
            "to Xero and grant access to this organisation (or correct the integration's tenant_id)",
            status=403,
        )


def _header_int(response: requests.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _described(rows: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{row.get('tenantName')} ({row.get('tenantId')})" for row in rows) or "none"
