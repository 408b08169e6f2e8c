"""The "Invoice sync" page in the Airflow UI: a FastAPI app that the plugin in ``plugins/`` mounts.

Airflow's api-server mounts it under ``/invoice-sync`` and links it in the navigation; the page itself is
rendered on the server (Jinja2, installed with Airflow) so it needs no build step and works in the UI's
iframe. See :mod:`invoice_sync.airflow.ui.app` for the routes and how they are protected.
"""

from invoice_sync.airflow.ui.app import URL_PREFIX, create_app

__all__ = ["URL_PREFIX", "create_app"]
