"""One module per accounting tool: an HTTP client on Airflow's HttpHook and the payload mapping.

Connectors never touch the database; what they need to persist (rotating OAuth tokens) goes through
the :class:`~invoice_sync.connectors.base.TokenVault` the engine hands them.
"""
