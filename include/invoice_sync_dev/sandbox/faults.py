"""Tool-independent fault injection for the simulators, as pure ASGI middleware.

Exactly-once delivery is only proven if the connector survives the failures real APIs produce: slow
answers, 5xx, 429, a request that hangs past the client's timeout, and the nastiest one, a request the
tool *committed* but whose answer never arrived intact. Each rule names a method and a path regex (matched
against the path inside the tool's mount) and one kind:

``latency``             sleep ``delay_s``, then process normally
``status``              answer ``status`` (+ ``body``) without processing
``rate_limit``          answer the tool's own 429 (the tool supplies it) without processing
``timeout``             hang ``delay_s`` (default 60 s) without processing, then answer 504
``commit_then_timeout`` process and commit, then hang ``delay_s`` before sending the real answer
``commit_then_drop``    process and commit, then send a response whose body is shorter than its
                        Content-Length and close the connection (the client sees an incomplete read)
``malformed``           process and commit, then answer 200 with truncated JSON
``partial_commit_then_drop``  a batch call: process and commit only part of the batch (the tool's
                        ``partial`` function cuts the request), then drop the answer as ``commit_then_drop``
                        does; a call that is no batch is simply committed and dropped. A tool that gave up
                        half-way through a batch (a worker restart, a gateway timeout) leaves exactly this:
                        some invoices booked, the others not, and the caller knowing neither.

SOAP services put many operations behind one path, so a simulator may give the injector a ``describe``
function: the middleware then reads the request body first and matches rules against the path plus what
``describe`` returns (``/ws/Sales.asmx#ProcessSalesInvoices``), before replaying the body to the app.
Likewise a batch tool gives ``partial``: the request body with only the first part of its batch kept.

A hang ends early when the client disconnects, so a client timeout never leaves the server busy.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FAULT_KINDS = frozenset(
    {
        "latency",
        "status",
        "rate_limit",
        "timeout",
        "commit_then_timeout",
        "commit_then_drop",
        "partial_commit_then_drop",
        "malformed",
    }
)
_DEFAULT_DELAY_S = {"latency": 1.0, "timeout": 60.0, "commit_then_timeout": 60.0}


@dataclass(frozen=True, slots=True)
class CannedResponse:
    """A complete HTTP answer built without running the application."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


@dataclass(slots=True)
class FaultRule:
    """One injected failure; ``times`` counts down on every hit (None = unlimited)."""

    kind: str
    method: str = "*"
    path: str = ".*"
    times: int | None = None
    probability: float = 1.0
    status: int = 500
    body: Any = None
    delay_s: float | None = None
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        self.method = self.method.upper()
        self._pattern = re.compile(self.path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from the JSON the control API receives; unknown keys are an error, not ignored."""
        allowed = {"kind", "method", "path", "times", "probability", "status", "body", "delay_s"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {sorted(unknown)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_pattern", None)
        return data

    @property
    def effective_delay_s(self) -> float:
        return self.delay_s if self.delay_s is not None else _DEFAULT_DELAY_S.get(self.kind, 0.0)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and self._pattern.search(path) is not None


def _default_error_response(status: int, message: str) -> CannedResponse:
    return CannedResponse(status, json.dumps({"error": message}).encode())


class FaultInjector:
    """The fault rules of one simulator mount, with a seeded random source and hit counts per kind.

    The tool supplies how its errors and its 429 look, so the injected answers are indistinguishable
    from the real tool's. Paths under ``exempt_prefixes`` (the control API) are never faulted.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        error_response: Callable[[int, str], CannedResponse] = _default_error_response,
        rate_limit_response: Callable[[Scope], CannedResponse] | None = None,
        exempt_prefixes: tuple[str, ...] = ("/_sandbox",),
        describe: Callable[[Scope, bytes], str] | None = None,
        partial: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.describe = describe
        """Suffix of the path that rules match, from the request and its body (SOAP operations)."""
        self.partial = partial
        """The request body with only the first part of its batch (None: the body carries no batch of
        two or more), for ``partial_commit_then_drop``."""
        self._rules: list[FaultRule] = []
        self._hits: Counter[str] = Counter()
        self._seed = seed
        self._random = random.Random(seed)
        self.error_response = error_response
        self.rate_limit_response = rate_limit_response or (lambda _scope: error_response(429, "Too many"))
        self.exempt_prefixes = exempt_prefixes

    def set_rules(self, rules: Iterable[FaultRule | Mapping[str, Any]]) -> None:
        """Replace every rule (validated first, so a bad list leaves the old rules in place)."""
        parsed = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        with self._lock:
            self._rules = parsed

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def reset(self) -> None:
        """Drop the rules and the hit counts, and reseed, as if freshly created."""
        with self._lock:
            self._rules = []
            self._hits.clear()
            self._random = random.Random(self._seed)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_dict() for r in self._rules]

    def hits(self) -> dict[str, int]:
        with self._lock:
            return dict(self._hits)

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The first rule that fires for this request, consuming one of its ``times``."""
        if path.startswith(self.exempt_prefixes):
            return None
        with self._lock:
            for rule in self._rules:
                if rule.times is not None and rule.times <= 0:
                    continue
                if not rule.matches(method, path):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                self._hits[rule.kind] += 1
                return rule
        return None

    def canned_status(self, rule: FaultRule) -> CannedResponse:
        if rule.body is None:
            return self.error_response(rule.status, "Injected fault")
        body = rule.body if isinstance(rule.body, str) else json.dumps(rule.body)
        return CannedResponse(rule.status, body.encode())


def first_part(items: list[Any]) -> list[Any] | None:
    """The items a partially committed batch keeps (the first half, at least one), or None when fewer than
    two: a single item cannot be committed in part."""
    return items[: len(items) // 2] if len(items) >= 2 else None


def partial_json_batch(*keys: str) -> Callable[[bytes], bytes | None]:
    """``partial`` for a JSON tool whose batch is the list under one of ``keys`` of the request object."""

    def cut(body: bytes) -> bytes | None:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        for key in keys:
            items = payload.get(key)
            kept = first_part(items) if isinstance(items, list) else None
            if kept is not None:
                return json.dumps({**payload, key: kept}).encode()
        return None

    return cut


def route_path(scope: Mapping[str, Any]) -> str:
    """The request path inside the mount (Starlette keeps the full path and moves the prefix to root_path)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


@dataclass(slots=True)
class _Captured:
    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def headers_with_length(self, length: int) -> list[tuple[bytes, bytes]]:
        kept = [(k, v) for k, v in self.headers if k.lower() != b"content-length"]
        return [*kept, (b"content-length", str(length).encode())]


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> _Captured:
    """Run the application to completion (it commits) while holding back its answer."""
    captured = _Captured()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            captured.body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return captured


async def _hang(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds`` or until the client disconnects; True when it disconnected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return False
        if message["type"] == "http.disconnect":
            return True
    return False


async def _send_canned(send: Send, response: CannedResponse) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in response.headers]
    headers += [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _send_captured(send: Send, captured: _Captured, *, status: int | None = None) -> None:
    body = bytes(captured.body)
    headers = captured.headers_with_length(len(body))
    await send({"type": "http.response.start", "status": status or captured.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body over once, then listens to the client again."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class FaultMiddleware:
    """Pure ASGI middleware applying a :class:`FaultInjector` to one simulator app."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if self.injector.describe is not None and not path.startswith(self.injector.exempt_prefixes):
            body = await _read_body(receive)
            path += self.injector.describe(scope, body)
            receive = _replay(body, receive)
        rule = self.injector.pick(scope["method"], path)
        if rule is None:
            await self.app(scope, receive, send)
            return
        handler = getattr(self, f"_{rule.kind}")
        await handler(rule, scope, receive, send)

    async def _latency(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(rule.effective_delay_s)
        await self.app(scope, receive, send)

    async def _status(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_canned(send, self.injector.canned_status(rule))

    async def _rate_limit(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_canned(send, self.injector.rate_limit_response(scope))

    async def _timeout(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _hang(receive, rule.effective_delay_s):
            await _send_canned(send, self.injector.error_response(504, "Gateway Timeout"))

    async def _commit_then_timeout(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        captured = await _capture(self.app, scope, receive)
        if not await _hang(receive, rule.effective_delay_s):
            await _send_captured(send, captured)

    async def _commit_then_drop(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        captured = await _capture(self.app, scope, receive)
        body = bytes(captured.body)
        headers = captured.headers_with_length(len(body) + 64)
        await send({"type": "http.response.start", "status": captured.status, "headers": headers})
        # Part of the body, then return without finishing: the server closes the connection mid-body.
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})

    async def _partial_commit_then_drop(
        self, rule: FaultRule, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await _read_body(receive)
        part = self.injector.partial(body) if self.injector.partial is not None else None
        if part is not None:
            kept = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*kept, (b"content-length", str(len(part)).encode())]}
            body = part
        await self._commit_then_drop(rule, scope, _replay(body, receive), send)

    async def _malformed(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        captured = await _capture(self.app, scope, receive)
        captured.body = captured.body[: max(1, len(captured.body) // 2)]
        await _send_captured(send, captured, status=200)
