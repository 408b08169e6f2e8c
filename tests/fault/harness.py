"""How the fault suite drives one accounting tool's simulator, so every test runs for every connector.

A new connector adds one :class:`ToolHarness` subclass here (how to start its sandbox, which call creates
an invoice, how to count bookings per reference, its Airflow connection) naming its ``tool``;
``HARNESSES`` finds it and lists the harnesses in the registry's order.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from invoice_sync.connectors.registry import TOOLS
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
    """Regex of the "create invoice" call inside the tool's mount, for fault rules (``create_method``).
    SOAP tools append the operation (``/ws/Sales\\.asmx#ProcessSalesInvoices$``), see ``FaultInjector``."""
    create_method: str = "POST"
    """The HTTP method of the create call (Xero creates with PUT)."""
    lookup_path: str
    """Regex of the call that looks invoices up by reference (method ``lookup_method``)."""
    lookup_method: str = "GET"

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

    def create_rule(self, kind: str, *, times: int | None, **extra: Any) -> dict[str, Any]:
        """A fault rule on the create call (see :class:`~invoice_sync_dev.sandbox.faults.FaultInjector`)."""
        return {"kind": kind, "method": self.create_method, "path": self.create_path, "times": times, **extra}

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
    def create_calls(self) -> int:
        """Create calls the tool received (one per invoice for Exact, one per batch for SOAP tools)."""

    @abstractmethod
    def is_create_request(self, method: str, url: str, body: Any) -> bool:
        """Whether a request the client sends is the create call (for client-side instrumentation)."""

    def booking_order(self) -> list[str]:
        """References in the order the tool booked them."""
        return [ref for ref, _ in sorted(self.registration_numbers().items(), key=lambda item: item[1])]

    def minute_limit(self, calls: int) -> dict[str, Any] | None:
        """The switches that limit the tool to about ``calls`` create calls a minute, or None when the
        tool documents no per-minute limit (its 429 behaviour is then unknown and not tested)."""
        return None

    def day_limit(self, calls: int | None) -> dict[str, Any] | None:
        """The switches that leave ``calls`` calls for today (None: the tool's normal allowance), or None
        when the tool documents no daily quota."""
        return None

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


class SandboxHarness(ToolHarness):
    """A tool served by the project's own sandbox server (``invoice_sync_dev.sandbox.server``).

    Subclasses name the tool (its simulator in the sandbox server) and say how to read its books;
    starting, stopping,
    faults and switches work the same for every simulator.
    """

    primary_integration: int

    def __init__(self) -> None:
        self._handle: Any = None
        self._earlier_posts: Counter[str] = Counter()
        self._options: dict[str, Any] = {}

    def start(self, *, time_scale: float = 1.0, state_path: Path | None = None, port: int = 0) -> None:
        from invoice_sync_dev.sandbox.server import start_in_thread

        self._options = {"time_scale": time_scale, "state_path": state_path}
        self._handle = start_in_thread(port=port, time_scale=time_scale, state_path=state_path)

    def stop(self) -> None:
        if self._handle is not None:
            self._earlier_posts += self._processed_creates()
            self._handle.stop()

    def restart(self) -> None:
        assert self._options.get("state_path"), "restart needs a state file"
        port = int(self.url.rsplit(":", 1)[1])
        self.start(port=port, **self._options)

    @property
    def url(self) -> str:
        return str(self._handle.url)

    @property
    def simulator(self) -> Any:
        return self._handle.simulator(self.tool)

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        self.simulator.faults.set_rules(rules)

    def fault_rules(self) -> list[dict[str, Any]]:
        return list(self.simulator.faults.rules())

    def fault_hits(self) -> dict[str, int]:
        return dict(self.simulator.faults.hits())

    def expire_tokens(self) -> int:
        return int(self.simulator.expire_tokens())

    def configure(self, **switches: Any) -> None:
        self.simulator.configure(**switches)

    def posts(self) -> Counter[str]:
        return self._earlier_posts + self._processed_creates()

    def token_refreshes(self) -> int:
        return int(self.simulator.stats_snapshot()["token_refreshes"])

    def rate_limited(self) -> int:
        return int(self.simulator.stats_snapshot()["rate_limited"])

    def _processed_creates(self) -> Counter[str]:
        return Counter(self.simulator.create_posts())

    def seed(self, engine: Engine, *, invoices: int) -> Seeded:
        from invoice_sync_dev.sandbox.demo import seed

        result = seed(engine, invoices=invoices, tools=(self.tool,))
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
        return Seeded(tuple(valid), primary=self.primary_integration, valid=valid, refused=refused)


class ExactOnlineHarness(SandboxHarness):
    tool = "exact_online"
    create_path = r"/salesentry/SalesEntries$"
    lookup_path = r"/salesentry/SalesEntries$"
    primary_integration = 3

    def __init__(self) -> None:
        from invoice_sync_dev.sandbox.demo import DEMO_CONN_ID

        super().__init__()
        self.conn_id = DEMO_CONN_ID

    def bookings(self) -> Counter[str]:
        return Counter(str(entry["YourRef"]) for entry in self.simulator.entries())

    def registration_numbers(self) -> dict[str, str]:
        numbers: dict[str, str] = {}
        for entry in sorted(self.simulator.entries(), key=lambda e: int(e["EntryNumber"])):
            numbers.setdefault(str(entry["YourRef"]), str(entry["EntryNumber"]))
        return numbers

    def _processed_creates(self) -> Counter[str]:
        return Counter(self.simulator.sales_entry_posts())

    def seed(self, engine: Engine, *, invoices: int) -> Seeded:
        self._engine = engine  # expire_tokens ages the stored tokens there too
        return super().seed(engine, invoices=invoices)

    def expire_tokens(self) -> int:
        """Exact's tokens expire by age (600 s), and our side knows their age: ten minutes pass for both.
        (The hook refreshes after a 401 only when the stored token is old enough for Exact to grant it.)"""
        from sqlalchemy import update

        from invoice_sync.store.claims import utcnow
        from invoice_sync.store.models import TokenRow

        expired = super().expire_tokens()
        with Session(self._engine) as session, session.begin():
            stored = update(TokenRow).where(TokenRow.conn_id == self.conn_id)
            session.execute(stored.values(expires_at=utcnow()))
        return expired

    def create_calls(self) -> int:
        calls = self.simulator.stats_snapshot()["calls"]
        return sum(calls.get("POST /api/v1/{division}/salesentry/SalesEntries", {}).values())

    def is_create_request(self, method: str, url: str, body: Any) -> bool:
        return method.upper() == "POST" and re.search(self.create_path, url.split("?", 1)[0]) is not None

    def booking_order(self) -> list[str]:
        return [ref for ref, _ in sorted(self.registration_numbers().items(), key=lambda item: int(item[1]))]

    def minute_limit(self, calls: int) -> dict[str, Any] | None:
        return {"minutely_limit": calls}

    def day_limit(self, calls: int | None) -> dict[str, Any] | None:
        used = self.simulator.stats_snapshot()["total"]  # every API call counts; token calls are apart
        return {"daily_limit": 5000 if calls is None else used + calls}

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection

        connection = exact_online_connection(self.url)
        connection["extra"]["timeout"] = timeout_s  # type: ignore[index]  # the demo extra is a dict
        return connection


class BookedHarness(SandboxHarness):
    """A simulator that lists its bookings the common way (``booked()``, ``reference`` and
    ``registration_number`` in booking order)."""

    def bookings(self) -> Counter[str]:
        return Counter(str(item["reference"]) for item in self.simulator.booked())

    def registration_numbers(self) -> dict[str, str]:
        numbers: dict[str, str] = {}
        for item in self.simulator.booked():  # in booking order: the first booking wins
            numbers.setdefault(str(item["reference"]), str(item["registration_number"]))
        return numbers

    def booking_order(self) -> list[str]:
        return list(dict.fromkeys(str(item["reference"]) for item in self.simulator.booked()))


class SoapHarness(BookedHarness):
    """Yuki and Twinfield: one SOAP endpoint serves many operations; the create is told by its body."""

    lookup_method = "POST"

    def is_create_request(self, method: str, url: str, body: Any) -> bool:
        if not isinstance(body, str | bytes):
            return False  # a form or JSON body: a token call, not a SOAP envelope
        data = body.encode() if isinstance(body, str) else body
        return (
            method.upper() == "POST"
            and url.split("?", 1)[0].endswith(self.create_endpoint)
            and (self.create_marker in data)
        )

    create_endpoint: str
    create_marker: bytes
    """A byte string only the create call's body holds (the operation, or the escaped XML root)."""


class YukiHarness(SoapHarness):
    tool = "yuki"
    create_path = r"/ws/Sales\.asmx#ProcessSalesInvoices$"
    lookup_path = r"/ws/Accounting\.asmx#CheckOutstandingItemAdmin$"
    primary_integration = 4
    create_endpoint = "/ws/Sales.asmx"
    create_marker = b"ProcessSalesInvoices"

    def __init__(self) -> None:
        from invoice_sync_dev.sandbox.demo import YUKI_CONN_ID

        super().__init__()
        self.conn_id = YUKI_CONN_ID

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync_dev.sandbox.yuki import demo_connection as yuki_connection

        connection = yuki_connection(self.url)
        connection["extra"]["timeout"] = timeout_s  # type: ignore[index]  # the demo extra is a dict
        return connection

    def create_calls(self) -> int:
        return int(self.simulator.stats_snapshot()["calls"].get("ProcessSalesInvoices", 0))

    def day_limit(self, calls: int | None) -> dict[str, Any] | None:
        used = int(self.simulator.stats_snapshot()["total"])  # the domain's calls so far, Authenticate too
        return {"daily_limit": 1000 if calls is None else used + calls}


class TwinfieldHarness(SoapHarness):
    tool = "twinfield"
    create_path = r"processxml\.asmx#ProcessXmlString/transactions$"
    lookup_path = r"processxml\.asmx#ProcessXmlString/columns$"
    primary_integration = 5
    create_endpoint = "/webservices/processxml.asmx"
    create_marker = b"&lt;transactions"

    def __init__(self) -> None:
        from invoice_sync_dev.sandbox.demo import TWINFIELD_CONN_ID

        super().__init__()
        self.conn_id = TWINFIELD_CONN_ID

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync_dev.sandbox.twinfield import demo_connection as twinfield_connection

        connection = twinfield_connection(self.url)
        connection["extra"]["timeout"] = timeout_s  # type: ignore[index]  # the demo extra is a dict
        return connection

    def create_calls(self) -> int:
        route = "POST /cluster/webservices/processxml.asmx#ProcessXmlString/transactions"
        return sum(self.simulator.stats_snapshot()["calls"].get(route, {}).values())

    def minute_limit(self, calls: int) -> dict[str, Any] | None:
        return {"credits_per_minute": 3 * calls}  # a transaction write costs three credits


class XeroHarness(BookedHarness):
    tool = "xero"
    create_path = r"/api\.xro/2\.0/(Invoices|CreditNotes)$"
    create_method = "PUT"
    lookup_path = r"/api\.xro/2\.0/(Invoices|CreditNotes)$"
    primary_integration = 6
    create_operations = ("PUT Invoices", "PUT CreditNotes")

    def __init__(self) -> None:
        from invoice_sync_dev.sandbox.demo import XERO_CONN_ID

        super().__init__()
        self.conn_id = XERO_CONN_ID

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync_dev.sandbox.xero import demo_connection as xero_connection

        connection = xero_connection(self.url)
        connection["extra"]["timeout"] = timeout_s  # type: ignore[index]  # the demo extra is a dict
        return connection

    def create_calls(self) -> int:
        calls = self.simulator.stats_snapshot()["calls"]
        return sum(int(calls.get(operation, 0)) for operation in self.create_operations)

    def is_create_request(self, method: str, url: str, body: Any) -> bool:
        path = url.split("?", 1)[0]
        return method.upper() == self.create_method and re.search(self.create_path, path) is not None

    def minute_limit(self, calls: int) -> dict[str, Any] | None:
        return {"minute_limit": calls}

    def day_limit(self, calls: int | None) -> dict[str, Any] | None:
        from invoice_sync_dev.sandbox.xero_fixtures import DEMO_TENANT_ID

        used = self.simulator.calls_today(DEMO_TENANT_ID)
        return {"day_limit": 5000 if calls is None else used + calls}


class QuickBooksHarness(BookedHarness):
    tool = "quickbooks"
    booking_batch = r"batch#create/\S*(Invoice|CreditMemo)"
    """A batch call that creates invoices or credit memos, as the simulator names it (see ``batch_kind``)."""
    create_path = r"/v3/company/[^/]+/" + booking_batch
    lookup_path = r"/v3/company/[^/]+/batch#query$"
    lookup_method = "POST"
    primary_integration = 7

    def __init__(self) -> None:
        from invoice_sync_dev.sandbox.demo import QUICKBOOKS_CONN_ID

        super().__init__()
        self.conn_id = QUICKBOOKS_CONN_ID

    def start(self, *, time_scale: float = 1.0, state_path: Path | None = None, port: int = 0) -> None:
        super().start(time_scale=time_scale, state_path=state_path, port=port)
        # Each run of the suite is a new process with a fresh local budget (QuickBooks sends no headers to
        # learn from), and the suite starts runs back to back: two of them within one second can together
        # pass 10 calls a second, which a nightly run never does. The per-second window is the one
        # QuickBooks answers with a minute's wait, longer than the suite's leases; the connector tests
        # cover pacing to it.
        self.configure(second_limit=100)

    def connection(self, *, timeout_s: float) -> dict[str, Any]:
        from invoice_sync_dev.sandbox.quickbooks import demo_connection as quickbooks_connection

        connection = quickbooks_connection(self.url)
        # No Retry-After either: after a 429 the connector waits a minute, a sandbox minute here.
        scale = float(self._options.get("time_scale", 1.0))
        connection["extra"] |= {"timeout": timeout_s, "minute_s": 60 / scale}  # type: ignore[operator]  # the demo extra is a dict
        return connection

    def create_calls(self) -> int:
        calls = self.simulator.stats_snapshot()["calls"]
        return sum(int(n) for operation, n in calls.items() if re.match(self.booking_batch, operation))

    def is_create_request(self, method: str, url: str, body: Any) -> bool:
        from invoice_sync_dev.sandbox.quickbooks import batch_kind

        if method.upper() != "POST" or not url.split("?", 1)[0].endswith("/batch"):
            return False
        if isinstance(body, str | bytes):
            try:
                body = json.loads(body)
            except ValueError:
                return False
        return re.match(self.booking_batch, "batch" + batch_kind(body)) is not None

    def minute_limit(self, calls: int) -> dict[str, Any] | None:
        return {"batch_minute_limit": calls}

    def day_limit(self, calls: int | None) -> dict[str, Any] | None:
        return None  # QuickBooks Online documents no daily limit


def _harnesses() -> dict[str, type[ToolHarness]]:
    """tool -> its harness, for every registered tool in the registry's order: each concrete subclass of
    :class:`ToolHarness` names its ``tool``.

    :raises LookupError: a registered tool has no harness (every connector must run the fault suite).
    """
    found: dict[str, type[ToolHarness]] = {}
    pending = list(ToolHarness.__subclasses__())
    while pending:
        harness = pending.pop()
        pending += harness.__subclasses__()
        if "tool" in vars(harness):
            found[harness.tool] = harness
    missing = [tool for tool in TOOLS if tool not in found]
    if missing:
        raise LookupError(f"no fault harness for {', '.join(missing)}: add a ToolHarness subclass")
    return {tool: found[tool] for tool in TOOLS}


HARNESSES = _harnesses()
