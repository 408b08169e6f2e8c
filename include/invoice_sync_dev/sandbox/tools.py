"""What the development package knows about each accounting tool, found from the runtime registry.

The runtime's :data:`invoice_sync.connectors.registry.DESCRIPTORS` is the only list of tools. The
development side adds to each descriptor what only development needs (where the simulator is mounted,
how it is built, the demo connection, the benchmark's knobs), and it does so by convention instead of a
second list: the simulator of tool ``<name>`` is the module ``invoice_sync_dev.sandbox.<name>``, which
exports ``SANDBOX``, a :class:`SandboxTool`. So adding a tool is its connector package, its simulator
module and one line in the registry; the sandbox server, the demo connections, the bench and the tests'
helpers loop over :func:`sandbox_tools` and pick it up.

A per-tool *difference* lives in the tool's own module (its ``SANDBOX``); a loop over tools lives here or
in the harness that needs it, never as a typed-out list of names.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import import_module
from typing import Any

from invoice_sync.connectors.descriptor import ToolDescriptor
from invoice_sync.connectors.registry import DESCRIPTORS


@dataclass(frozen=True, slots=True)
class Booking:
    """One booking in a simulator's books, in the same terms for every tool (the tests' oracle).

    :param reference: our invoice number, as the tool keeps it.
    :param registration_number: the number the tool gave the booking (what is written back).
    :param external_id: the tool's id the ledger must hold, where the tool gives one.
    :param total_incl_vat: the booked total, from the debtor's side (a credit note is negative).
    :param record: the simulator's own record, for tool-specific checks.
    """

    tool: str
    reference: str
    registration_number: str
    external_id: str | None
    total_incl_vat: Decimal
    total_vat: Decimal
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BenchKnobs:
    """How the benchmark treats a tool's simulator.

    :param template_integration: id of the demo integration whose settings a seeded bench tenant of the
        tool copies (its division, organisation, VAT codes...).
    :param accepted: (VAT rates, GL accounts) the simulator books without complaint: a benchmark measures
        bookings, not the demo's deliberate refusals.
    :param limits_off: the simulator configuration that switches its rate limits off. Tools whose headers
        announce their limits get them raised too, or the header-fed budget would still pace itself.
    :param unpaced: connection extras that tell the connector limits it counts itself, raised alongside
        ``limits_off`` (tools that send no rate headers need them, or the client paces itself anyway).
    :param limit_switch: the simulator's configuration switch of the limit the ``limit_<tool>`` scenario
        saturates (and may lower).
    :param told_by: the bench ``Limits`` field that tells the connector that limit, for tools that announce
        none in headers (None: the hook learns a lowered limit from the answers).
    :param total_is_limited: the simulator's ``total`` statistic counts exactly the calls its limits count
        (else the limit scenario counts the calls to the routes the limit applies to).
    """

    template_integration: int
    accepted: tuple[tuple[str, ...], tuple[str, ...]]
    limits_off: Mapping[str, Any]
    limit_switch: str
    unpaced: Mapping[str, Any] = field(default_factory=dict)
    told_by: str | None = None
    total_is_limited: bool = False


@dataclass(frozen=True, slots=True)
class SandboxTool:
    """One tool's simulator as the sandbox server, the demo and the harnesses use it.

    :param descriptor: the runtime's descriptor of the tool (name, label, connection type).
    :param mount: the path prefix the simulator is served under (``"/exact"``): a connection's host is
        ``<sandbox url><mount>``. Also the section of the sandbox's state file that keeps its books.
    :param simulator: the simulator class, constructed with ``time_scale``, ``saved_state`` and
        ``on_change``; it has ``state()``, ``faults`` and ``stats_snapshot()``.
    :param create_app: the ASGI app of one simulator object (the tool's HTTP API and control routes).
    :param connection: the demo Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) for a sandbox at the given
        URL, with the tool's own connection type (``descriptor.conn_type``).
    :param bookings: every booking in a simulator object's books (:class:`Booking`).
    :param bench: the benchmark's knobs for the tool.
    """

    descriptor: ToolDescriptor
    mount: str
    simulator: Callable[..., Any]
    create_app: Callable[[Any], Any]
    connection: Callable[[str], dict[str, Any]]
    bookings: Callable[[Any], list[Booking]]
    bench: BenchKnobs

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def state_section(self) -> str:
        """The section of the sandbox's state file with this simulator's books (its mount, unprefixed)."""
        return self.mount.strip("/")

    def url(self, sandbox_url: str) -> str:
        """Base URL of the tool's mount on the sandbox at ``sandbox_url``."""
        return sandbox_url.rstrip("/") + self.mount


@cache
def sandbox_tools() -> tuple[SandboxTool, ...]:
    """Every tool's :class:`SandboxTool`, in the registry's order.

    :raises LookupError: a registered tool has no simulator module, or its module exports no ``SANDBOX``
        for this descriptor (the convention this module relies on).
    """
    found = []
    for descriptor in DESCRIPTORS:
        module_name = f"invoice_sync_dev.sandbox.{descriptor.name}"
        try:
            sandbox = import_module(module_name).SANDBOX
        except (ModuleNotFoundError, AttributeError) as exc:
            raise LookupError(
                f"tool {descriptor.name!r} is registered but {module_name} has no SANDBOX: every tool needs "
                "a simulator (see docs/adding-a-connector.md)"
            ) from exc
        if sandbox.descriptor is not descriptor:
            raise LookupError(f"{module_name}.SANDBOX describes {sandbox.name!r}, not {descriptor.name!r}")
        found.append(sandbox)
    return tuple(found)


def sandbox_of(tool: str) -> SandboxTool:
    """The :class:`SandboxTool` of ``tool`` (an integration's ``tool`` value)."""
    for sandbox in sandbox_tools():
        if sandbox.name == tool:
            return sandbox
    raise KeyError(f"no simulator for tool {tool!r}")


def demo_connections(sandbox_url: str) -> dict[str, dict[str, Any]]:
    """conn id -> demo connection, for every connection the demo integrations use.

    The demo data (:data:`invoice_sync_dev.sandbox.demo.INTEGRATIONS`) says which connection each
    integration uses; each connection gets its tool's demo connection on the sandbox at ``sandbox_url``.
    """
    from invoice_sync_dev.sandbox.demo import INTEGRATIONS

    return {
        integration.conn_id: sandbox_of(integration.tool).connection(sandbox_url)
        for integration in INTEGRATIONS
    }


def export_lines(sandbox_url: str) -> list[str]:
    """``export AIRFLOW_CONN_<ID>='<json>'`` lines for every demo connection: what ``make run`` and
    ``make ui`` evaluate (``invoice-sync-dev sandbox connections URL`` prints them)."""
    return [
        f"export AIRFLOW_CONN_{conn_id.upper()}={shlex.quote(json.dumps(connection))}"
        for conn_id, connection in demo_connections(sandbox_url).items()
    ]
