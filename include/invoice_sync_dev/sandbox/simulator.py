"""What every accounting-tool simulator shares: its lifecycle, its configuration and its control API.

Each simulator (Exact Online, Yuki, Twinfield) keeps one tool's tenant behind one re-entrant lock, and the
server builds, persists and mounts them all the same way (see :mod:`.server`). What differs per tool, such
as authentication, envelopes, error bodies and limits, stays in the tool's module. What does not differ lives
here, so a fix to how a sandbox is restored, reset, reconfigured or steered over ``/_sandbox`` reaches
every tool at once:

- :class:`Simulator`, the base class: the lock, fixtures, configuration, call statistics, fault
  injector, resumed sandbox clock, the persistence callback, ``state``, ``reset`` and ``configure``;
- :class:`SimulatorConfig`: validated updates of a tool's configuration dataclass;
- :func:`create_simulator_app`: a tool's ASGI app with the control routes every tool answers
  (:func:`add_control_routes`) and the statistics and fault middleware around it (:func:`add_middleware`),
  plus :func:`add_consent_route` for the tools with an OAuth consent step.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from invoice_sync.connectors.hooks import SANDBOX_HEADER
from invoice_sync_dev.sandbox.clock import SandboxClock
from invoice_sync_dev.sandbox.faults import (
    ASGIApp,
    CannedResponse,
    FaultInjector,
    FaultMiddleware,
    Message,
    Receive,
    Scope,
    Send,
)
from invoice_sync_dev.sandbox.stats import CallStats, CallStatsMiddleware

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CONTROL_PREFIX = "/_sandbox"
"""Where every simulator's control API lives; never faulted and never counted in the call statistics."""


class SimulatorConfig:
    """Mixin for a tool's configuration dataclass (the switches tests flip via ``POST /_sandbox/config``).

    A test that mistypes a key or sends ``"60"`` for ``60`` must fail loudly, not run against defaults
    without noticing, so updates are checked against the dataclass's fields and their types.
    """

    __slots__ = ()

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """A copy with ``changes`` applied; unknown keys or wrong types are refused, not ignored."""
        instance = cast("DataclassInstance", self)
        types = {f.name: type(getattr(self, f.name)) for f in fields(instance)}
        for key, value in changes.items():
            if key not in types:
                raise ValueError(f"unknown config key {key!r}; expected one of {sorted(types)}")
            if type(value) is not types[key]:
                raise ValueError(f"config {key!r} must be {types[key].__name__}")
        return cast(Self, replace(instance, **dict(changes)))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data (what the control API answers)."""
        return asdict(cast("DataclassInstance", self))


class OAuthError(Exception):
    """A failing token call; the body follows OAuth 2.0 (``error``, ``error_description``)."""

    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        super().__init__(description or error)
        self.status = status
        self.body = {"error": error} | ({"error_description": description} if description else {})


def json_ready(value: Any) -> Any:
    """JSON form of internal values for a control API: amounts as strings, instants as ISO text.

    Decimal amounts travel as text so tests compare them exactly, without float rounding.
    """
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def resume_instant(saved_state: Mapping[str, Any] | None) -> datetime | None:
    """Continue sandbox time where a saved run stopped if that lies ahead of the wall clock.

    A run with a fast clock may have saved an instant in the real future; starting the restarted clock at
    the wall clock would make tokens issued then look issued in the future.
    """
    if not saved_state or "saved_at" not in saved_state:
        return None
    saved_at: datetime = saved_state["saved_at"]
    return max(datetime.now(UTC), saved_at)


FixturesT = TypeVar("FixturesT")
ConfigT = TypeVar("ConfigT", bound=SimulatorConfig)


class Simulator(ABC, Generic[FixturesT, ConfigT]):
    """The base of a simulated tool tenant: state behind a lock, restorable, resettable and observable.

    Every public method is safe to call from any thread (the ASGI app and the tests' Python calls touch the
    state from different threads). ``on_change`` (given the persistable state) is called after each
    mutation, still under the lock, so saves happen in mutation order.

    A subclass names its :attr:`config_class` and supplies the hooks below: where its default fixtures
    come from, how its books are restored and exported, its counters, and how its injected errors and
    429s look, so injected faults are indistinguishable from the real tool's answers.
    """

    config_class: type[ConfigT]
    """The tool's configuration dataclass; its defaults are the real tool's values."""

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        fixtures: FixturesT | None = None,
        config: ConfigT | None = None,
        saved_state: Mapping[str, Any] | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        seed: int = 0,
    ) -> None:
        self.lock = threading.RLock()
        self.fixtures: FixturesT = fixtures or self._default_fixtures()
        self._default_config: ConfigT = config or self.config_class()
        self.config: ConfigT = self._default_config.updated({})
        self._on_change = on_change
        self.stats = CallStats()
        self.faults = FaultInjector(
            seed=seed,
            error_response=self._fault_error_response,
            rate_limit_response=self._rate_limit_fault_response,
            exempt_prefixes=(CONTROL_PREFIX,),
            describe=self._fault_describe(),
            partial=self._fault_partial(),
        )
        self._restore(saved_state)
        self.clock = SandboxClock(time_scale, start=resume_instant(saved_state))
        self._reset_counters()

    # ------------------------------------------------------------------ tool hooks

    @abstractmethod
    def _default_fixtures(self) -> FixturesT:
        """The fixtures used when the caller passes none."""

    @abstractmethod
    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        """Load the books from a saved state, or start from the fixtures when there is none."""

    @abstractmethod
    def _persistable(self) -> dict[str, Any]:
        """The books as plain data, detached from the live state (called under the lock)."""

    @abstractmethod
    def _reset_counters(self) -> None:
        """Forget what is counted only for observation and rate limiting (never persisted)."""

    @abstractmethod
    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        """How the tool answers an injected error with ``status``."""

    @abstractmethod
    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """How the tool answers an injected 429 to the request ``scope``."""

    def _fault_describe(self) -> Callable[[Scope, bytes], str] | None:
        """What fault rules match besides the path (a SOAP tool names its operation); None: the path only."""
        return None

    def _fault_partial(self) -> Callable[[bytes], bytes | None] | None:
        """How a batch request keeps only the first part of its batch, for ``partial_commit_then_drop``
        (see :mod:`.faults`); None: the tool takes one invoice per call."""
        return None

    @abstractmethod
    def expire_tokens(self) -> int:
        """Every access token (or session) expires now; returns how many were live."""

    @abstractmethod
    def stats_snapshot(self) -> dict[str, Any]:
        """The counters tests assert on (JSON-ready)."""

    # ------------------------------------------------------------------ shared lifecycle

    def state(self) -> dict[str, Any]:
        """The persistable state as plain data, with the sandbox instant it was taken (``saved_at``)."""
        with self.lock:
            return self._persistable() | {"saved_at": self.clock.now()}

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.state())

    def reset(self) -> None:
        """Back to the fixtures: fresh books and tokens, default config, no faults, no counters."""
        with self.lock:
            self._restore(None)
            self.config = self._default_config.updated({})
            self.faults.reset()
            self.stats.reset()
            self._reset_counters()
            self._changed()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change limits and switches (see :attr:`config_class`); returns the new configuration."""
        with self.lock:
            self.config = self.config.updated(changes)
            return self.config.to_dict()


# ------------------------------------------------------------------ HTTP


SimulatorT = TypeVar("SimulatorT", bound="Simulator[Any, Any]")


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(json_ready(payload), status_code=status)


async def _apply_json(request: Request, apply: Callable[[Any], Any], *, empty: bytes = b"") -> Response:
    """Answer what ``apply`` makes of the JSON body; a malformed body or a refused value is a 400 with the
    reason, so a test that sends a bad rule or config sees why instead of a bare 500."""
    try:
        return _json(apply(json.loads(await request.body() or empty)))
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, 400)


def create_simulator_app(
    title: str,
    simulator: SimulatorT,
    *add_routes: Callable[[FastAPI, SimulatorT], None],
    operation_key: str | None = None,
) -> FastAPI:
    """A tool's ASGI app: the tool's own routes (``add_routes``, in order), then the common control routes,
    wrapped in the call statistics and fault middleware (see :func:`add_middleware`)."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)
    for add in add_routes:
        add(app, simulator)
    add_control_routes(app, simulator)
    add_middleware(app, simulator, operation_key=operation_key)
    return app


def add_control_routes(app: FastAPI, simulator: Simulator[Any, Any]) -> None:
    """The control routes every simulator answers under ``/_sandbox``: stats, faults, config, tokens, reset.

    Tools add their own inspection routes (bookings, accounts, consent) next to these.
    """
    prefix = CONTROL_PREFIX

    @app.get(f"{prefix}/stats")
    def stats() -> Response:
        return _json(simulator.stats_snapshot())

    @app.get(f"{prefix}/faults")
    def get_faults() -> Response:
        return _json(simulator.faults.rules())

    def replace_rules(rules: Any) -> list[dict[str, Any]]:
        simulator.faults.set_rules(rules)
        return simulator.faults.rules()

    @app.post(f"{prefix}/faults")
    async def set_faults(request: Request) -> Response:
        return await _apply_json(request, replace_rules)

    @app.delete(f"{prefix}/faults")
    def clear_faults() -> Response:
        simulator.faults.clear()
        return _json([])

    @app.post(f"{prefix}/expire-tokens")
    def expire_tokens() -> Response:
        return _json({"expired": simulator.expire_tokens()})

    @app.get(f"{prefix}/config")
    def get_config() -> Response:
        return _json(simulator.config.to_dict())

    @app.post(f"{prefix}/config")
    async def set_config(request: Request) -> Response:
        return await _apply_json(request, lambda changes: simulator.configure(**changes), empty=b"{}")

    @app.post(f"{prefix}/reset")
    def reset() -> Response:
        simulator.reset()
        return _json({"status": "reset"})


def add_middleware(app: FastAPI, simulator: Simulator[Any, Any], *, operation_key: str | None = None) -> None:
    """Wrap a tool's app in call statistics (inner), fault injection, and the sandbox mark (outermost).

    Faults sit outside: a request a fault answers without processing never reached the tool, so it is not
    counted as a call the tool served. The control API is exempt from both. ``operation_key``: see
    :class:`~invoice_sync_dev.sandbox.stats.CallStatsMiddleware`.
    """
    app.add_middleware(
        CallStatsMiddleware,
        stats=simulator.stats,
        exempt_prefixes=(CONTROL_PREFIX,),
        operation_key=operation_key,
    )
    app.add_middleware(FaultMiddleware, injector=simulator.faults)
    app.add_middleware(SandboxMarkMiddleware, simulated=app.title)


class SandboxMarkMiddleware:
    """Marks every answer, faults' canned ones included, with :data:`SANDBOX_HEADER`: a connector then
    recognises the sandbox's answers and numbers, and refuses them for an integration that is not a demo
    (and a real tool's for one that is)."""

    def __init__(self, app: ASGIApp, simulated: str) -> None:
        self.app = app
        self.mark = (SANDBOX_HEADER.lower().encode(), simulated.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.mark]}
            await send(message)

        await self.app(scope, receive, marked)


def add_books_routes(app: FastAPI, sandbox: Any, *, tenant_param: str = "tenant") -> None:
    """``GET /_sandbox/bookings`` and ``/_sandbox/customers``: the simulator's ``booked(tenant)`` and
    ``customers(tenant)``, every tenant's or, with the query parameter ``tenant_param``, one tenant's."""

    @app.get(f"{CONTROL_PREFIX}/bookings")
    def bookings(request: Request) -> Response:
        return _json(sandbox.booked(request.query_params.get(tenant_param)))

    @app.get(f"{CONTROL_PREFIX}/customers")
    def customers(request: Request) -> Response:
        return _json(sandbox.customers(request.query_params.get(tenant_param)))


def add_consent_route(app: FastAPI, consent: Callable[[str, Any], dict[str, str]], scope_field: str) -> None:
    """``POST /_sandbox/consent`` for a tool with an OAuth consent step: a user (re)consents.

    The body is ``{"client_id": ..., <scope_field>: ...}`` (what the consent covers: Exact's divisions,
    Twinfield's organisation); the answer is ``consent(client_id, scope)``, a fresh refresh token and
    authorization code. An unknown client is a 400.
    """

    @app.post(f"{CONTROL_PREFIX}/consent")
    async def consent_route(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        try:
            return _json(consent(body.get("client_id", ""), body.get(scope_field)))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
