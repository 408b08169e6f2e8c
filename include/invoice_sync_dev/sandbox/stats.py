"""Per-route call statistics of a simulator, as pure ASGI middleware.

Tests and benchmarks assert on how a connector *talks* to a tool (how many lookups per batch, whether any
429 was provoked, how often it refreshed its token), not only on the resulting books. Counting by route
template (``GET /api/v1/{division}/crm/Accounts``) keeps the numbers comparable across divisions and ids.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

from invoice_sync_dev.sandbox.faults import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"


class CallStats:
    """Thread-safe counters of calls per (method, route template) and per status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: defaultdict[str, Counter[int]] = defaultdict(Counter)

    def record(self, method: str, template: str, status: int) -> None:
        with self._lock:
            self._calls[f"{method} {template}"][status] += 1

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()

    def snapshot(self) -> dict[str, Any]:
        """``{"calls": {"GET /x": {"200": 3}}, "by_status": {"200": 3}, "total": 3}`` (JSON-ready)."""
        with self._lock:
            calls = {key: {str(s): n for s, n in sorted(c.items())} for key, c in sorted(self._calls.items())}
            by_status: Counter[int] = Counter()
            for counter in self._calls.values():
                by_status.update(counter)
        return {
            "calls": calls,
            "by_status": {str(s): n for s, n in sorted(by_status.items())},
            "total": sum(by_status.values()),
        }


class CallStatsMiddleware:
    """Records the final status of every HTTP request under the route template that served it.

    One SOAP endpoint serves every operation of a tool, and tests count the operations apart. So a handler
    may name the operation it served in the scope under ``operation_key``; that name is appended to the
    template (``POST /cluster/webservices/processxml.asmx#ProcessXmlString/transactions``).
    """

    def __init__(
        self,
        app: ASGIApp,
        stats: CallStats,
        exempt_prefixes: tuple[str, ...] = (),
        operation_key: str | None = None,
    ) -> None:
        self.app = app
        self.stats = stats
        self.exempt_prefixes = exempt_prefixes
        self.operation_key = operation_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        outer_route = scope.get("route")  # set by an enclosing router (the server's mount)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = UNMATCHED_ROUTE if route is outer_route else getattr(route, "path", UNMATCHED_ROUTE)
            if not template.startswith(self.exempt_prefixes):
                operation = scope.get(self.operation_key, "") if self.operation_key else ""
                self.stats.record(scope["method"], template + operation, status)
