"""The accounting tools this installation supports: the only list of tools in the project.

Adding a tool is its package under ``invoice_sync/connectors/`` (exporting a ``DESCRIPTOR``) plus one line
here; see ``docs/adding-a-connector.md``. Everything else (pools, DAG task groups, the provider's
connection types, the page's filters, the development package's simulators and demo) reads this list.
Importing it imports only the descriptors, never a connector or an HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from invoice_sync.connectors import exact_online, quickbooks, twinfield, xero, yuki
from invoice_sync.connectors.descriptor import ToolDescriptor
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import Integration
from invoice_sync.domain.ports import Connector, ConnectorFactory, TokenVault

DESCRIPTORS: tuple[ToolDescriptor, ...] = (
    exact_online.DESCRIPTOR,
    yuki.DESCRIPTOR,
    twinfield.DESCRIPTOR,
    xero.DESCRIPTOR,
    quickbooks.DESCRIPTOR,
)

BY_NAME: Mapping[str, ToolDescriptor] = {descriptor.name: descriptor for descriptor in DESCRIPTORS}
TOOLS: tuple[str, ...] = tuple(BY_NAME)
"""The tools' names (the ``tool`` values integrations may have), in the registry's order."""


def descriptor_of(tool: str) -> ToolDescriptor:
    """The descriptor of ``tool``; :class:`KeyError` when no connector exists for it."""
    return BY_NAME[tool]


def factory_for(tool: str) -> ConnectorFactory:
    return cast(ConnectorFactory, descriptor_of(tool).load_connector())


def connector_for(integration: Integration, vault: TokenVault, **hook_options: Any) -> Connector:
    """The connector for ``integration``'s tool; ``hook_options`` go to its hook (``shared_budgets``).

    :raises ConfigError: no connector exists for the tool (a typo in the integration, or a tool
        this installation does not support yet); the message lists the known ones.
    """
    try:
        factory = factory_for(integration.tool)
    except KeyError:
        known = ", ".join(sorted(TOOLS))
        raise ConfigError(
            f"Integration {integration.name}: no connector for accounting tool {integration.tool!r} "
            f"(known: {known})"
        ) from None
    return factory(integration, vault, **hook_options)
