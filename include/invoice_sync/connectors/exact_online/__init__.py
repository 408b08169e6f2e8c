"""Exact Online: sales entries and customer accounts over Exact's REST API.

``hook`` does the I/O (OAuth2 with rotating refresh tokens, rate budget, typed errors), ``mapping``
holds the pure payload rules, ``connector`` puts both behind the engine's ``Connector`` contract.
"""

from __future__ import annotations

from invoice_sync.connectors.exact_online.connector import ExactOnlineConnector, build_connector
from invoice_sync.connectors.exact_online.hook import ExactOnlineHook

__all__ = ["ExactOnlineConnector", "ExactOnlineHook", "build_connector"]
