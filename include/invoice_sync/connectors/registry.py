"""Which connector serves which accounting tool (the ``tool`` column of an integration)."""

from __future__ import annotations

from invoice_sync.connectors.base import Connector, ConnectorFactory, TokenVault
from invoice_sync.connectors.exact_online import build_connector as build_exact_online
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import Integration

CONNECTORS: dict[str, ConnectorFactory] = {
    "exact_online": build_exact_online,
}


def connector_for(integration: Integration, vault: TokenVault) -> Connector:
    """The connector for ``integration``'s tool.

    :raises ConfigError: no connector exists for the tool (a typo in the integration, or a tool
        this installation does not support yet); the message lists the known ones.
    """
    factory = CONNECTORS.get(integration.tool)
    if factory is None:
        known = ", ".join(sorted(CONNECTORS))
        raise ConfigError(
            f"Integration {integration.name}: no connector for accounting tool {integration.tool!r} "
            f"(known: {known})"
        )
    return factory(integration, vault)
