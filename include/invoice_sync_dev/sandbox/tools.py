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
from typing import Any, Literal

import requests

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
class BenchSlot:
    """One of the bench tenants (division, domain, office) a simulator's fixtures hold.

    :param settings: the integration settings that point at it.
    :param conn_id: the bench's Airflow connection it is reached through (tenants may share one).
    """

    settings: Mapping[str, Any]
    conn_id: str


@dataclass(frozen=True, slots=True)
class BenchLimits:
    """What a bench connection tells its connector about limits the tool does not announce in headers.

    :param minute_s: real seconds of a sandbox minute: the length of the windows our connector counts
        itself, or whose end the tool does not say.
    :param limit: the limit a ``limit_<tool>`` run lowered the simulator's ``limit_switch`` to; a tool
        that announces it nowhere is told it by its connection. None: the simulator's own.
    """

    minute_s: float = 60.0
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class LimitRun:
    """The size of a ``limit_<tool>`` run: a backlog spanning the windows it must, at a time scale.

    :param invoices: the backlog.
    :param time_scale: sandbox seconds per real second.
    :param limit: the limit the simulator (and the connection, where it must be told) is set to.
    :param real_limit: the tool's documented limit, reported beside ``limit``.
    :param window: what the limit is counted over (``"minute"``, ``"day"``). A ``"day"`` run spans one
        window: it spends the day and defers the rest, and its utilisation is the day's calls over the
        limit (the call log has no second window to compare with).
    """

    invoices: int
    time_scale: float
    limit: int
    real_limit: int
    window: Literal["minute", "day"] = "minute"


@dataclass(frozen=True, slots=True)
class WindowsFromAnswers:
    """The tool counts: each answer of the hook says which rate window it was counted in.

    :param window_end: the end (real epoch seconds) of the window ``response`` was counted in; None for
        an answer outside the limits (a token endpoint) or one that says nothing.
    """

    window_end: Callable[[requests.Response], float | None]


@dataclass(frozen=True, slots=True)
class WindowsFromBudget:
    """Our connector counts: what one of the hook's budgets hands out falls in the window it names then.

    :param budget: the hook's budget whose ``acquire(cost)`` takes the limited units.
    :param window_end: the end (real epoch seconds) of the window a take right now falls in.
    """

    budget: Any
    window_end: Callable[[], float | None]


@dataclass
class OpenedWindows:
    """Windows that open with the first call after the previous one ended and last ``length_s``.

    Xero's simulator counts its minute so. QuickBooks' minute slides (at most so many calls in *any*
    minute), which holds in particular for every minute that opens with a call: grouping the calls into
    such minutes measures the pacing against the limit without knowing where Intuit's minute starts.
    """

    length_s: float
    end: float | None = None

    def end_at(self, now: float, *, reopened: bool = False) -> float:
        """The end of the window a call at ``now`` falls in (a new one if ``reopened``)."""
        if reopened or self.end is None or now >= self.end:
            self.end = now + self.length_s
        return self.end


def with_extra(connection: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """``connection`` (an Airflow connection dict) with ``extra`` added to its extras."""
    return {**connection, "extra": {**dict(connection.get("extra") or {}), **extra}}


@dataclass(frozen=True, slots=True)
class BenchKnobs:
    """How the benchmark treats a tool's simulator.

    :param template_integration: id of the demo integration whose settings a seeded bench tenant of the
        tool copies (its division, organisation, VAT codes...).
    :param accepted: (VAT rates, GL accounts) the simulator books without complaint: a benchmark measures
        bookings, not the demo's deliberate refusals.
    :param limits_off: the simulator configuration that switches its rate limits off. Tools whose headers
        announce their limits get them raised too, or the header-fed budget would still pace itself.
    :param limit_switch: the simulator's configuration switch of the limit the ``limit_<tool>`` scenario
        saturates (and may lower).
    :param limit_run: the full ``limit_<tool>`` run: at least ten windows of the limit.
    :param quick_limit_run: the quick one (the suite's smoke test): a few windows.
    :param connection: the bench's Airflow connection of bench slot ``slot`` (1-based) on the sandbox at
        a URL, telling the connector what :class:`BenchLimits` it must be told.
    :param unpaced: connection extras that tell the connector limits it counts itself, raised alongside
        ``limits_off`` (tools that send no rate headers need them, or the client paces itself anyway).
    :param limited_route: a fragment of the simulator's route names (compared case-insensitively) whose
        calls its limits count, where its ``total`` statistic counts other calls too; None: ``total``
        counts exactly the limited calls.
    :param windows: how the limit scenario counts the hook's limited calls into rate windows, given the
        hook and the real seconds of a sandbox minute; None for a day's window (the simulator counts it).
    :param limit_figures: the figures a ``limit_<tool>`` line adds from the simulator's statistics (say,
        the credits beside the calls), or its notes.
    :param calls_target: the issue's target for calls per invoice in a ``limit_<tool>`` run, as (how it
        is stated, the most that meets it).
    :param max_calls_per_invoice: the most calls per booked invoice a quick ``limit_<tool>`` run may spend:
        the tool's booking calls (one over the invoices one call books) plus its customer calls and
        lookups spread over a small backlog (``tests/bench`` holds every run to it).
    :param slots: bench tenants (divisions, domains, offices) the simulator's fixtures hold, each with
        rate windows of its own; the ``tenants`` scenario runs over the tools with more than one.
    :param slot: bench slot ``n`` (1-based) of a tool with more than one.
    :param demo_slot: for a tool with one slot, the demo tenant (organisation, company) it is.
    :param clock_minutes: the tool's minute windows are the clock's, the same for every caller (not
        opened by one's first call): the ``tenants`` scenario starts each phase at such a minute's start.
    :param naive_baseline: the ``naive`` scenario books this tool's ``limit_<tool>`` backlog the naive
        way and compares (its code is written against this tool's API).
    :param overhead: the tool's place in the ``overhead`` scenario (1 first; the quick run measures only
        the first, as does the ``memory`` scenario), None when that scenario does not measure it.
    """

    template_integration: int
    accepted: tuple[tuple[str, ...], tuple[str, ...]]
    limits_off: Mapping[str, Any]
    limit_switch: str
    limit_run: LimitRun
    quick_limit_run: LimitRun
    connection: Callable[[str, int, BenchLimits], dict[str, Any]]
    unpaced: Mapping[str, Any] = field(default_factory=dict)
    limited_route: str | None = None
    windows: Callable[[Any, float], WindowsFromAnswers | WindowsFromBudget] | None = None
    limit_figures: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    calls_target: tuple[str, float] = ("<= 0.05", 0.05)
    max_calls_per_invoice: float = 0.05
    slots: int = 1
    slot: Callable[[int], BenchSlot] | None = None
    demo_slot: DemoSlot | None = None
    clock_minutes: bool = False
    naive_baseline: bool = False
    overhead: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Calls a fault rule aims at: an HTTP method (``"*"``: any) and a regex of the path inside the tool's
    mount (a SOAP tool's path ends in ``#<operation>``, see :mod:`.faults`)."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class ChaosTargets:
    """Where ``make chaos`` aims each kind of fault at a tool (``invoice_sync_dev.chaos``).

    :param book: the call that books invoices, the one whose lost answer exactly-once is about.
    :param lookup: the idempotency lookup that settles a lost answer (by our invoice number).
    :param reads: calls that only read, which the hook retries itself.
    :param api: every call of the tool's API, never its token or session endpoint (a lost token answer
        burns a rotating refresh token, which only a new consent repairs: another story).
    :param customers: the call that creates customers, if the tool has one of its own.
    :param batch: the booking call carries many invoices (a lost answer leaves them all unknown).
    """

    book: Target
    lookup: Target
    reads: tuple[Target, ...]
    api: Target
    customers: Target | None = None
    batch: bool = False


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
    :param chaos: where ``make chaos`` aims its faults.
    """

    descriptor: ToolDescriptor
    mount: str
    simulator: Callable[..., Any]
    create_app: Callable[[Any], Any]
    connection: Callable[[str], dict[str, Any]]
    bookings: Callable[[Any], list[Booking]]
    bench: BenchKnobs
    chaos: ChaosTargets
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
