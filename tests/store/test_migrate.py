"""Migrations create our tables, under our own version table, and can run any number of times."""

from __future__ import annotations

from sqlalchemy import inspect, text

from invoice_sync.store.migrate import VERSION_TABLE, prepare, upgrade

SYNC_TABLES = {"sync_ledger", "sync_customer_links", "sync_runs", "sync_tokens", "sync_claims"}
APP_TABLES = {"customers", "integrations", "invoices", "invoice_lines", "notifications"}


def test_prepare_creates_app_and_sync_tables_with_our_version_table(store):
    tables = set(inspect(store.engine).get_table_names())
    assert SYNC_TABLES | APP_TABLES | {VERSION_TABLE} <= tables
    assert VERSION_TABLE == "sync_alembic_version"
    assert "alembic_version" not in tables  # the app's own migrations keep theirs
    with store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0002"]


def test_migrations_are_idempotent_and_keep_data(store, data):
    data.integration()
    data.invoices(3)
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sync_runs (dag_id, run_id, run_type, counts, started_at) "
                "VALUES ('d', 'r', 'manual', '{}', CURRENT_TIMESTAMP)"
            )
        )
    before = _schema(store.engine)
    upgrade(store.engine)
    prepare(store.engine)
    assert _schema(store.engine) == before
    with store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM sync_runs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM invoices")).scalar() == 3


def test_the_ledger_has_its_unique_key_and_indexes(store):
    inspector = inspect(store.engine)
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("sync_ledger")}
    assert ("integration_id", "invoice_id") in unique
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("sync_ledger")}
    assert indexes["ix_sync_ledger_state"] == ["integration_id", "state"]
    assert indexes["ix_sync_ledger_run"] == ["run_id"]
    invoice_indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("invoices")}
    assert invoice_indexes["ix_invoices_unsynced"] == ["integration_id", "id"]


def _schema(engine) -> dict[str, list[str]]:
    inspector = inspect(engine)
    return {
        table: sorted(column["name"] for column in inspector.get_columns(table))
        for table in sorted(inspector.get_table_names())
    }
