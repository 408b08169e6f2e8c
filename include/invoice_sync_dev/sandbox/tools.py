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
from datetime import date
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


DEMO_REFUSED_ON = date(2026, 7, 2)
"""The invoice date of the demo's deliberately refused invoices, unless a :class:`Refusal` needs another."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """One invoice the demo seeds for the tool to refuse, inside a batch whose other invoices book.

    :param vat_rate: the VAT rate of its one line (a rate the tool refuses, or one we leave unmapped).
    :param gl_account: the GL account of that line.
    :param error_class: what the sync must classify the refusal as (``"config"``, ``"data"``).
    :param message: a fragment of the message a bookkeeper must see (the tool's own text, or our check's).
    :param invoice_date: the invoice's date (a closed period needs one inside it).
    """

    vat_rate: str
    gl_account: str
    error_class: str
    message: str
    invoice_date: date = DEMO_REFUSED_ON


@dataclass(frozen=True, slots=True)
class DemoSlot:
    """The one bench tenant of a tool whose simulator has no bench tenants of its own: the demo's.

    :param what: what the tool calls a tenant (``"organisation"``), for messages.
    :param settings: the integration settings that point at it.
    :param conn_id: the bench's Airflow connection for it (the demo connection's content).
    """

    what: str
    settings: Mapping[str, str]
    conn_id: str


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
    :param max_calls_per_invoice: the most calls per booked invoice a quick ``limit_<tool>`` run may spend:
        the tool's booking calls (one over the invoices one call books) plus its customer calls and
        lookups spread over a small backlog (``tests/bench`` holds every run to it).
    :param slots: bench tenants (divisions, domains, offices) the simulator's fixtures hold, each with
        rate windows of its own; the ``tenants`` scenario runs over the tools with more than one.
    :param demo_slot: for a tool with one slot, the demo tenant (organisation, company) it is.
    :param overhead: the tool's place in the ``overhead`` scenario (1 first; the quick run measures only
        the first), None when that scenario does not measure it.
    """

    template_integration: int
    accepted: tuple[tuple[str, ...], tuple[str, ...]]
    limits_off: Mapping[str, Any]
    limit_switch: str
    unpaced: Mapping[str, Any] = field(default_factory=dict)
    told_by: str | None = None
    total_is_limited: bool = False
    max_calls_per_invoice: float = 0.05
    slots: int = 1
    demo_slot: DemoSlot | None = None
    overhead: int | None = None


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
    :param refusals: the invoices the demo seeds for the tool to refuse (in its first demo integration).
    """

    descriptor: ToolDescriptor
    mount: str
    simulator: Callable[..., Any]
    create_app: Callable[[Any], Any]
    connection: Callable[[str], dict[str, Any]]
    bookings: Callable[[Any], list[Booking]]
    bench: BenchKnobs
    refusals: tuple[Refusal, ...] = ()

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
