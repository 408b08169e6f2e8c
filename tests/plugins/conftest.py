"""The Invoice sync page inside a real Airflow api-server app, in-process.

``airflow.api_fastapi.app.create_app()`` builds the app the way ``airflow api-server`` does: plugins from
the project's ``plugins/`` folder mounted under their prefix, the SimpleAuthManager (not in all-admins
mode, so a request without a token is anonymous), the REST API at ``/api/v2``. The metadata DB is migrated
and the DAGs serialized once, so "Sync now" creates real dag runs that the tests read back through the
REST API. The invoicing DB is a temporary SQLite file with the demo data, after one engine sync of the
Exact integrations against the in-thread sandbox (so the ledger holds real rejections).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow_servers import run_airflow
from page_world import Api, Seeded
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from synced_books import sync_and_write_back

from invoice_sync.store.claims import utcnow
from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import InvoiceRow, LedgerState
from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.sandbox.demo import seed
from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection
from invoice_sync_dev.sandbox.server import start_in_thread

ROOT = Path(__file__).resolve().parents[2]
EXACT_INTEGRATIONS = (1, 2)
"""Synced once; integration 3 (manual only) is left unsynced, so the page has invoices never tried."""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    url = f"sqlite:///{tmp_path_factory.mktemp('page') / 'invoicing.db'}"
    engine = make_engine(url)
    prepare(engine)
    result = seed(engine, tools=("exact_online",))
    store = SyncStore(engine)
    sandbox = start_in_thread()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INVOICE_SYNC_DB_URL", url)
        patch.setenv("AIRFLOW_CONN_EXACT_DEMO", json.dumps(exact_online_connection(sandbox.url)))
        try:
            sync_and_write_back(store, EXACT_INTEGRATIONS, holder="ui-test")
        finally:
            sandbox.stop()
        deferred, changed = _defer_one_and_change_one(store)
        store.notify(
            recipient="admin",
            title="Sync finished: 12 invoices and 3 customers synced, 1 error",
            body={
                "run_id": "manual__bell-test",
                "errors": [{"text": "Invoice X-1: the bell's error text", "hint": "The bell's hint."}],
            },
            integration_id=1,
        )
        yield Seeded(store, result, deferred, changed)
    engine.dispose()


def _defer_one_and_change_one(store: SyncStore) -> tuple[str, str]:
    """A deferred invoice (the daily budget ran out) and a synced invoice edited afterwards."""
    pending = [row for row in store.unsynced_invoices(3) if row.state is None]
    claim = store.acquire(3, "ui-test-defer", lease=timedelta(minutes=1))
    store.mark(claim, [pending[0].invoice_id], LedgerState.DEFERRED, "ui-test", error_class="quota")
    store.release(claim)
    with Session(store.engine) as session, session.begin():
        synced = session.scalars(
            select(InvoiceRow)
            .where(InvoiceRow.integration_id == 1, InvoiceRow.registration_number.is_not(None))
            .order_by(InvoiceRow.id)
            .limit(1)
        ).one()
        number = synced.number
        session.execute(
            update(InvoiceRow)
            .where(InvoiceRow.id == synced.id)
            .values(updated_at=utcnow() + timedelta(minutes=5))
        )
    return str(pending[0].number), str(number)


@pytest.fixture(scope="session")
def airflow_metadata() -> None:
    """Migrate the test metadata DB and serialize the DAGs, so the REST API can create dag runs."""
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        run_airflow(command, timeout_s=600)


@pytest.fixture(scope="module")
def api(airflow_metadata: None, seeded: Seeded) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INVOICE_SYNC_DB_URL", str(seeded.store.engine.url))
        patch.setenv(
            "AIRFLOW__CORE__AUTH_MANAGER",
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        )
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "invoice-sync-ui-tests")
        from airflow import plugins_manager, settings
        from airflow.api_fastapi import app as airflow_app
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        # Plugins load once per process from settings.PLUGINS_FOLDER: point it at the project's folder
        # and forget whatever another test module loaded before.
        patch.setattr(settings, "PLUGINS_FOLDER", str(ROOT / "plugins"))
        _clear_plugin_caches(plugins_manager)
        airflow_app.purge_cached_app()
        app = airflow_app.create_app()
        manager = airflow_app.get_auth_manager()
        tokens: dict[str, dict[str, str]] = {}
        for name in ("admin", "viewer"):  # SimpleAuthManager roles: admin may trigger, viewer may only read
            jwt = manager.generate_jwt(SimpleAuthManagerUser(username=name, role=name))
            tokens[name] = {"Authorization": f"Bearer {jwt}"}
        try:
            yield Api(TestClient(app), tokens["admin"], tokens["viewer"])
        finally:
            airflow_app.purge_cached_app()
            _clear_plugin_caches(plugins_manager)


def _clear_plugin_caches(plugins_manager: Any) -> None:
    for name in dir(plugins_manager):
        cached = getattr(plugins_manager, name)
        if callable(cached) and hasattr(cached, "cache_clear"):
            cached.cache_clear()
