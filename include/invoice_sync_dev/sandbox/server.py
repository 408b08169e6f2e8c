"""One HTTP server hosting every accounting-tool simulator under its own path prefix.

A connection's host points at the tool's mount (``http://127.0.0.1:8765/exact``, the ``mount`` of the
tool's :class:`~.tools.SandboxTool`), so connectors call
the same paths as against the real tool. ``serve`` is the blocking entry point of
``invoice-sync-dev sandbox serve`` (and of ``make run``); ``start_in_thread`` gives tests and benchmarks a
server on a free loopback port. With a state path, every tool's state survives restarts.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

from invoice_sync_dev.sandbox.faults import FaultInjector
from invoice_sync_dev.sandbox.persistence import StateFile
from invoice_sync_dev.sandbox.tools import sandbox_of, sandbox_tools

if TYPE_CHECKING:
    from invoice_sync_dev.sandbox.exact_online import ExactOnlineSandbox


@dataclass(frozen=True, slots=True)
class Simulators:
    """The simulator objects behind one server, for tests and seeders to inspect directly.

    :param by_tool: tool name (an integration's ``tool``, ``"exact_online"``) -> its simulator.
    """

    by_tool: dict[str, Any]

    @property
    def exact(self) -> ExactOnlineSandbox:
        simulator: ExactOnlineSandbox = self.by_tool["exact_online"]
        return simulator


def build_simulators(
    *, time_scale: float = 1.0, state_path: str | os.PathLike[str] | None = None
) -> Simulators:
    """Create every simulator, restoring and persisting its state through ``state_path`` when given."""
    state_file = StateFile(state_path) if state_path else None
    by_tool: dict[str, Any] = {}
    for sandbox in sandbox_tools():
        section = sandbox.state_section
        simulator = sandbox.simulator(
            time_scale=time_scale,
            saved_state=state_file.section(section) if state_file else None,
            on_change=(lambda state, key=section: state_file.save(key, state)) if state_file else None,
        )
        if state_file is not None and state_file.section(section) is None:
            state_file.save(section, simulator.state())
        by_tool[sandbox.name] = simulator
    return Simulators(by_tool)


def create_root_app(
    *,
    time_scale: float = 1.0,
    state_path: str | os.PathLike[str] | None = None,
    simulators: Simulators | None = None,
) -> FastAPI:
    """The combined ASGI app: each tool's simulator mounted under its prefix."""
    simulators = simulators or build_simulators(time_scale=time_scale, state_path=state_path)
    routes: list[BaseRoute] = [
        Mount(sandbox.mount, app=sandbox.create_app(simulators.by_tool[sandbox.name]))
        for sandbox in sandbox_tools()
    ]
    app = FastAPI(
        title="invoice-sync-dev sandbox", routes=routes, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.simulators = simulators

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"tools": {sandbox.name: sandbox.mount for sandbox in sandbox_tools()}}

    @app.get("/_books")
    def books() -> list[dict[str, Any]]:
        """Every booking of every simulator in the same terms (:class:`~.tools.Booking`), for a harness
        that runs the sandbox as a process of its own and judges the books of every tool alike."""
        return [
            {
                "tool": booking.tool,
                "reference": booking.reference,
                "registration_number": booking.registration_number,
            }
            for sandbox in sandbox_tools()
            for booking in sandbox.bookings(simulators.by_tool[sandbox.name])
        ]

    return app


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints one ``sandbox listening on`` line once it accepts connections."""

    announce = True

    @property
    def bound_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.announce:
            print(f"sandbox listening on http://{self.config.host}:{self.bound_port}", flush=True)


def _server(app: FastAPI, host: str, port: int, log_level: str) -> _AnnouncingServer:
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="off", timeout_graceful_shutdown=1
    )
    return _AnnouncingServer(config)


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    time_scale: float = 1.0,
    state_path: str | None = None,
) -> None:
    """Run the sandbox in the foreground until interrupted."""
    app = create_root_app(time_scale=time_scale, state_path=state_path)
    _server(app, host, port, "info").run()


@dataclass(slots=True)
class SandboxHandle:
    """A sandbox server running in a daemon thread."""

    url: str
    simulators: Simulators
    _server: _AnnouncingServer
    _thread: threading.Thread

    @property
    def exact_url(self) -> str:
        return self.url_of("exact_online")

    @property
    def exact(self) -> ExactOnlineSandbox:
        return self.simulators.exact

    @property
    def faults(self) -> FaultInjector:
        """The fault rules of the Exact mount."""
        return self.simulators.exact.faults

    def simulator(self, tool: str) -> Any:
        """The simulator of one tool, by the tool's name (an integration's ``tool``, ``"exact_online"``)."""
        return self.simulators.by_tool[tool]

    def url_of(self, tool: str) -> str:
        """Base URL of one tool's mount, by the tool's name."""
        return sandbox_of(tool).url(self.url)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    time_scale: float = 1.0,
    state_path: str | os.PathLike[str] | None = None,
    startup_timeout_s: float = 10.0,
) -> SandboxHandle:
    """Start a sandbox on ``host:port`` (0 = a free port) and return once it accepts connections."""
    simulators = build_simulators(time_scale=time_scale, state_path=state_path)
    server = _server(create_root_app(simulators=simulators), host, port, "warning")
    server.announce = False
    thread = threading.Thread(target=server.run, name="invoice-sync-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"sandbox did not start on {host}:{port}")
        time.sleep(0.01)
    return SandboxHandle(f"http://{host}:{server.bound_port}", simulators, server, thread)
