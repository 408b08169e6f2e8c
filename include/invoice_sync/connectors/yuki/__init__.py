"""Yuki: sales invoices (with their contacts) over Yuki's SOAP web services.

``hook`` does the I/O (access key -> 24-hour session shared through the token vault, the domain's daily
call budget, typed errors), ``mapping`` holds the pure ``SalesInvoices`` document rules, ``connector`` puts
both behind the engine's ``Connector`` contract.
"""

from __future__ import annotations

from invoice_sync.connectors.yuki.connector import YukiConnector, build_connector
from invoice_sync.connectors.yuki.hook import YukiHook

__all__ = ["YukiConnector", "YukiHook", "build_connector"]
