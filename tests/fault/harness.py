"""How the fault suite drives one accounting tool's simulator, so every test runs for every connector.

A new connector adds one :class:`ToolHarness` subclass (how to start its sandbox, which call creates an
invoice, how to count bookings per reference, its Airflow connection) and appends it to ``HARNESSES``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from invoice_sync.store.models import IntegrationRow, InvoiceRow


@dataclass(frozen=True)
class Seeded:
    """Demo data for one tool, and what a correct sync must make of it."""

    integration_ids: tuple[int, ...]
    """Every integration of the tool in the seeded database."""
    primary: int
    """The integration single-integration tests sync: no deliberately broken invoices."""
    valid: dict[int, tuple[str, ...]]
    """Per integration, the references (invoice numbers) that must end up booked exactly once."""
    refused: frozenset[str]
    """References the sync or the tool must refuse."""


class ToolHarness(ABC):
    """One accounting tool's simulator, started on a free loopback port (or a given one)."""

    tool: str
    """The ``tool`` value of the integrations it serves."""
    conn_id: str
    """The Airflow connection the seeded integrations use."""
    create_path: str
    """Regex of the "create invoice" call inside the tool's mount, for fault rules (method POST)."""
    lookup_path: str
    """Regex of the call that looks invoices up by reference (method GET)."""

    # -- lifecycle ----------------------------------------------------------------------------------

    @abstractmethod
    def start(self, *, time_scale: float = 1.0, state_path: Path | None = None, port: int = 0) -> None:
        """Start the simulator; with ``state_path``, its books survive :meth:`restart`."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the simulator: connections to it are refused from now on."""

    @abstractmethod
    def restart(self) -> None:
        """Start it again on the same port with the books it had (needs ``state_path``)."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Base URL of the sandbox server (the connection's host is derived from it)."""

    # -- faults and switches --------------------------------------------------------------------------

    @abstractmethod
    def set_faults(self, rules: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def fault_rules(self) -> list[dict[str, Any]]:
        """The current rules, ``times`` counted down."""

    @abstractmethod
    def fault_hits(self) -> dict[str, int]:
        """How often each fault kind fired."""

    @abstractmethod
    def expire_tokens(self) -> int:
        """Every access token (or session) expires now."""

    @abstractmethod
    def configure(self, **switches: Any) -> None:
        """Tool-specific switches, e.g. a per-minute limit."""

    # -- what the tool saw ------------------------------------------------------------------------------

    @abstractmethod
    def bookings(self) -> Counter[str]:
        """Booked invoices per reference (our invoice number)."""

    @abstractmethod
    def registration_numbers(self) -> dict[str, str]:
        """Reference -> the tool's registration number (the lowest, if booked twice)."""

    @abstractmethod
    def posts(self) -> Counter[str]:
        """Create calls the tool *processed* per reference, whatever the outcome; over the whole test."""

    @abstractmethod
    def token_refreshes(self) -> int: ...

    @abstractmethod
    def rate_limited(self) -> int:
        """429 answers, the injected ones included."""

    # -- the invoicing side --------------------------------------------------------------------------

    @abstractmethod
    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        """The Airflow connection (JSON form) pointing at this sandbox, with an HTTP timeout."""

    def connection_env(self, *, timeout_s: float) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(self.connection(timeout_s=timeout_s))}

    @abstractmethod
    def seed(self, engine: Engine, *, invoices: int) -> Seeded:
        """Fill an empty, migrated invoicing database with demo data for this tool."""


class ExactOnlineHarness(ToolHarness):
    tool = "exact_online"
    create_path = r"/salesentry/SalesEntries$"
    lookup_path = r"/salesentry/SalesEntries$"

    def __init__(self) -> None:
        from invoice_sync.sandbox.demo import DEMO_CONN_ID

        self.conn_id = DEMO_CONN_ID
        self._handle: Any = None
        self._earlier_posts: Counter[str] = Counter()
        self._options: dict[str, Any] = {}

    def start(self, *, time_scale: float = 1.0, state_path: Path | None = None, port: int = 0) -> None:
        from invoice_sync.sandbox.server import start_in_thread

        self._options = {"time_scale": time_scale, "state_path": state_path}
        self._handle = start_in_thread(port=port, time_scale=time_scale, state_path=state_path)

    def stop(self) -> None:
        if self._handle is not None:
            self._earlier_posts += Counter(self._handle.exact.sales_entry_posts())
            self._handle.stop()

    def restart(self) -> None:
        assert self._options.get("state_path"), "restart needs a state file"
        port = int(self.url.rsplit(":", 1)[1])
        self.start(port=port, **self._options)

    @property
    def url(self) -> str:
        return str(self._handle.url)

    @property
    def _exact(self) -> Any:
        return self._handle.exact

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        self._exact.faults.set_rules(rules)

    def fault_rules(self) -> list[dict[str, Any]]:
        return list(self._exact.faults.rules())

    def fault_hits(self) -> dict[str, int]:
        return dict(self._exact.faults.hits())

    def expire_tokens(self) -> int:
        return int(self._exact.expire_tokens())

    def configure(self, **switches: Any) -> None:
        self._exact.configure(**switches)

    def bookings(self) -> Counter[str]:
        return Counter(str(entry["YourRef"]) for entry in self._exact.entries())

    def registration_numbers(self) -> dict[str, str]:
        numbers: dict[str, str] = {}
        for entry in sorted(self._exact.entries(), key=lambda e: int(e["EntryNumber"])):
            numbers.setdefault(str(entry["YourRef"]), str(entry["EntryNumber"]))
        return numbers

    def posts(self) -> Counter[str]:
        return self._earlier_posts + Counter(self._exact.sales_entry_posts())

    def token_refreshes(self) -> int:
        return int(self._exact.stats_snapshot()["token_refreshes"])

    def rate_limited(self) -> int:
        return int(self._exact.stats_snapshot()["rate_limited"])

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync.sandbox.connections import exact_online_connection

        connection = exact_online_connection(self.url)
        connection["extra"]["timeout"] = timeout_s  # type: ignore[index]
        return connection

    def seed(self, engine: Engine, *, invoices: int) -> Seeded:
        from invoice_sync.sandbox.demo import seed

        result = seed(engine, invoices=invoices)
        refused = frozenset(result.expected_rejections)
        valid: dict[int, tuple[str, ...]] = {}
        with Session(engine) as session:
            integrations = session.scalars(
                select(IntegrationRow).where(IntegrationRow.tool == self.tool).order_by(IntegrationRow.id)
            ).all()
            for integration in integrations:
                rows = session.scalars(
                    select(InvoiceRow)
                    .where(InvoiceRow.integration_id == integration.id)
                    .order_by(InvoiceRow.id)
                ).all()
                valid[integration.id] = tuple(
                    row.number
                    for row in rows
                    if row.number
                    and row.status != "draft"
                    and row.registration_number is None
                    and (integration.sync_from is None or row.invoice_date >= integration.sync_from)
                    and row.number not in refused
                )
        return Seeded(tuple(valid), primary=3, valid=valid, refused=refused)


HARNESSES: dict[str, type[ToolHarness]] = {"exact_online": ExactOnlineHarness}
