"""Fixtures shared by the whole suite: the sandbox on loopback and invoicing databases.

PostgreSQL tests use a throw-away database per test on the server named by ``INVOICE_SYNC_TEST_PG_URL``
(default: the local server with trust auth). Without a reachable server they skip, except under
``CI=true``, where a missing server fails the run instead of silently testing less.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.repository import SyncStore

ROOT = Path(__file__).resolve().parents[1]

# The helper modules beside this file hold asserts of their own; pytest explains a failing assert only
# in modules registered before their first import.
pytest.register_assert_rewrite("synced_books", "airflow_servers")

# Airflow reads its home when first imported, so this runs before any test module imports it (nothing
# imported above imports Airflow). Tests get their own metadata DB: under $AIRFLOW_HOME/pytest when
# AIRFLOW_HOME is set (never the user's own DB), else in a temporary directory.
_home = os.environ.get("AIRFLOW_HOME")
AIRFLOW_TEST_HOME = (
    Path(_home) / "pytest" if _home else Path(tempfile.mkdtemp(prefix="invoice-sync-airflow-"))
)
AIRFLOW_TEST_HOME.mkdir(parents=True, exist_ok=True)
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_TEST_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


def _pg_admin_url() -> str:
    """The server PostgreSQL tests create throw-away databases on.

    ``INVOICE_SYNC_TEST_PG_URL`` if set; else the server of ``INVOICE_SYNC_DB_URL`` when that is PostgreSQL
    (tests never touch that database itself); else the local server with trust auth.
    """
    if os.environ.get("INVOICE_SYNC_TEST_PG_URL"):
        return os.environ["INVOICE_SYNC_TEST_PG_URL"]
    app_url = os.environ.get("INVOICE_SYNC_DB_URL", "")
    if app_url.startswith("postgresql"):
        return make_url(app_url).set(database="postgres").render_as_string(hide_password=False)
    return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


PG_ADMIN_URL = _pg_admin_url()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def sandbox() -> Iterator[object]:
    """A fresh set of accounting-tool simulators over real HTTP on a free loopback port."""
    from invoice_sync_dev.sandbox.server import start_in_thread

    handle = start_in_thread()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    try:
        engine = create_engine(
            PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # no server here
        message = f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string()}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (required under CI=true)")
        pytest.skip(message)
    return PG_ADMIN_URL


@contextmanager
def _pg_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the admin URL's server, named ``<prefix>_<random>``; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    with _pg_database(pg_admin_url, "invoice_sync_test") as url:
        yield url


@pytest.fixture(scope="module")
def pg_databases(pg_admin_url: str) -> Iterator[Callable[[str], str]]:
    """Makes new, empty PostgreSQL databases (``prefix`` starts each name) that last until the module's
    tests are done, for fixtures that set up servers once per module."""
    with ExitStack() as stack:
        yield lambda prefix: stack.enter_context(_pg_database(pg_admin_url, prefix))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'invoicing.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on SQLite (embedded default) and on PostgreSQL (production)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str) -> Iterator[SyncStore]:
    """An invoicing database with the app's tables and ours, migrated, and no rows."""
    engine = make_engine(db_url)
    prepare(engine)
    try:
        yield SyncStore(engine)
    finally:
        engine.dispose()
