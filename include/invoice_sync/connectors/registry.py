"""Which connector serves which accounting tool (the ``tool`` column of an integration).

Connectors are named by import path and loaded on first use: the DAG files need the list of tools to
build one TaskGroup per tool, and parsing a DAG must not import every HTTP client there is.
"""

from __future__ import annotations

from importlib import import_module
from typing import cast

from invoice_sync.connectors.base import Connector, ConnectorFactory, TokenVault
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import Integration

CONNECTORS: dict[str, str] = {
    "exact_online": "invoice_sync.connectors.exact_online:build_connector",
    "yuki": "invoice_sync.connectors.yuki:build_connector",
    "twinfield": "invoice_sync.connectors.twinfield:build_connector",
    "xero": "invoice_sync.connectors.xero:build_connector",
    "quickbooks": "invoice_sync.connectors.quickbooks:build_connector",
}
TOOLS: tuple[str, ...] = tuple(CONNECTORS)


def factory_for(tool: str) -> ConnectorFactory:
    path = CONNECTORS.get(tool)
    if path is None:
        raise KeyError(tool)
    module, _, name = path.partition(":")
    return cast(ConnectorFactory, getattr(import_module(module), name))


def connector_for(integration: Integration, vault: TokenVault) -> Connector:
    """The connector for ``integration``'s tool.

    :raises ConfigError: no connector exists for the tool (a typo in the integration, or a tool
        this installation does not support yet); the message lists the known ones.
    """
    try:
        factory = factory_for(integration.tool)
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ConfigError(
            f"Integration {integration.name}: no connector for accounting tool {integration.tool!r} "
            f"(known: {known})"
        ) from None
    return factory(integration, vault)
