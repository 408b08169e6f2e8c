"""What the rest of the project needs to know about an accounting tool, in one place per tool.

Each tool's package (``invoice_sync.connectors.<tool>``) exports one :class:`ToolDescriptor` as
``DESCRIPTOR``, and :mod:`invoice_sync.connectors.registry` lists them. Pools, the DAGs' task groups, the
Airflow provider's connection types, the page's filters and the development package's simulators, demo
and harnesses all derive from that list, so adding a tool never means typing its name into them.

The connector and hook are named by import path, not imported: parsing a DAG file needs the list of
tools, and must not import every HTTP client to get it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from invoice_sync.connectors.settings import ToolSettings


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A window the vendor documents: ``units`` (calls or credits) per ``window_s`` seconds.

    What capacity planning (the bench's night model) assumes before any call is made, and the default of
    a hook that counts the window itself; the live figures come from the vendor's headers or the
    connection.

    :param scope: ``"tenant"``: each tenant's own (Exact's division, Xero's organisation), shared only by
        tenants on one of them; ``"tool"``: one for all of an installation's tenants of the tool
        (Twinfield's client id, Xero's app).
    :param sliding: the vendor allows ``units`` in *any* span of ``window_s`` (QuickBooks), instead of per
        window that opens with a call or on the clock.
    """

    name: str
    units: int
    window_s: float
    scope: Literal["tenant", "tool"] = "tenant"
    sliding: bool = False

    @property
    def shared_units(self) -> int:
        """Units per window when several tasks spend it through a shared store.

        The store hands out windows that follow each other (one opens when the last has ended). A
        sliding limit is also counted across the seam of two such windows, where both could be spent
        in full within ``window_s``; half the units per window keeps any span within the limit.
        """
        return max(1, self.units // 2) if self.sliding else self.units


@dataclass(frozen=True, slots=True)
class ToolDescriptor:
    """One accounting tool as the project wires it.

    :param name: the ``tool`` value of an integration (``"exact_online"``); also the Airflow connection
        type of its hook, the suffix of its pool, and the module name of its simulator in the development
        package.
    :param label: the tool's name for people (``"Exact Online"``), in the page, notifications and the
        Connections form.
    :param connector: ``"module:attribute"`` of its ``ConnectorFactory``.
    :param hook: ``"module:attribute"`` of its Airflow hook class (the provider's connection type).
    :param form: ``"module:attribute"`` of its :class:`~invoice_sync.connectors.forms.ConnectionForm`, how
        Airflow's Connections form shows the connection type (importable without the hook).
    :param settings: ``"module:attribute"`` of its :class:`~invoice_sync.connectors.settings.ToolSettings`
        subclass, which reads the tool's own fields of an integration's settings (importable without the
        connector, so the operator and the page can check them before any client exists).
    :param pool_slots: how many of its sync tasks may run at once across all DAG runs (its Airflow pool):
        what the tool's app-wide or per-address limits allow.
    :param rate_limits: the vendor's documented rate windows (``../reference/<tool>.md``, limits).
    """

    name: str
    label: str
    connector: str
    hook: str
    form: str
    settings: str
    pool_slots: int
    rate_limits: tuple[RateLimit, ...] = ()

    @property
    def conn_type(self) -> str:
        """The Airflow connection type of the tool's hook (the provider registers one per tool)."""
        return self.name

    @property
    def pool(self) -> str:
        """The Airflow pool its sync tasks run in."""
        return f"invoice_sync_{self.name}"

    def load_connector(self) -> Any:
        """The connector factory, imported now (a task is about to use it)."""
        return _load(self.connector)

    def load_hook(self) -> Any:
        """The hook class, imported now."""
        return _load(self.hook)

    def load_settings(self) -> type[ToolSettings]:
        """The tool's typed settings class, imported now."""
        return cast("type[ToolSettings]", _load(self.settings))

    def load_form(self) -> Any:
        """The connection form, imported now (no hook, no HTTP client comes with it)."""
        return _load(self.form)


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)
