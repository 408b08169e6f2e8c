"""Airflow plugin: the "Invoice sync" page in the Airflow UI.

Thin on purpose: the page lives in ``invoice_sync.airflow.ui`` (importable, tested without a plugin
loader). This file only tells the api-server to mount the page's FastAPI app under ``/invoice-sync`` and
the UI to link it in the navigation (an external view, shown in an iframe). The ``href`` keeps its
trailing slash: without it the UI's catch-all route answers instead of the page.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from invoice_sync.airflow.ui import URL_PREFIX, create_app


class InvoiceSyncPlugin(AirflowPlugin):
    name = "invoice_sync"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Invoice sync"}]
    external_views = [
        {
            "name": "Invoice sync",
            "href": f"{URL_PREFIX}/",
            "url_route": "invoice-sync",
            "destination": "nav",
        }
    ]
