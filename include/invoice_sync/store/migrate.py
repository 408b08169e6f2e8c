"""Schema management: Alembic for the sync-owned tables, ``create_all`` for the app's tables.

The app's tables belong to the invoicing application; we create them only for the embedded demo and the
tests (``create_app_schema``). Our own tables evolve through Alembic revisions kept in the package, with
their own version table so they never collide with the app's migrations.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from invoice_sync.store.models import AppBase

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "sync_alembic_version"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def create_app_schema(engine: Engine) -> None:
    AppBase.metadata.create_all(engine)


def prepare(engine: Engine) -> None:
    """Everything a fresh database needs: the app's tables (demo) and ours, migrated to head."""
    create_app_schema(engine)
    upgrade(engine)
