"""Every wipe of the development tools refuses a database the demo did not make (issue 14, item 6).

``invoice-sync-dev demo seed --reset``, the chaos session's reseed and the bench's fresh database all
erase the invoicing tables. Pointed by mistake at a real invoicing database (a stray
``INVOICE_SYNC_DB_URL`` or ``CHAOS_DB_URL``), that would be the company's invoices. So they only erase a
database the demo seeding marked as its own, or one with nothing in it, unless the command names that very
database (``--i-mean-this-database``). Each case runs on SQLite and on PostgreSQL, the CLI as a real
subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import make_url

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import CustomerRow, IntegrationRow, InvoiceRow
from invoice_sync_dev.sandbox.demo import NotADemoDatabase, is_demo_database, seed

DEV_CLI = Path(sys.executable).with_name("invoice-sync-dev")
REAL_INVOICE = "2026/0815"


def demo_seed(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INVOICE_SYNC_DB_URL": db_url}
    return subprocess.run(
        [str(DEV_CLI), "demo", "seed", "--invoices", "3", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def a_real_database(db_url: str) -> Engine:
    """A migrated invoicing database with one real integration, customer and invoice."""
    engine = make_engine(db_url)
    prepare(engine)
    now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(IntegrationRow),
            [
                {
                    "id": 41,
                    "name": "ACME NV",
                    "tool": "exact_online",
                    "conn_id": "exact_acme",
                    "updated_at": now,
                }
            ],
        )
        conn.execute(
            insert(CustomerRow), [{"id": 7, "kind": "company", "name": "Client BV", "updated_at": now}]
        )
        conn.execute(
            insert(InvoiceRow),
            [
                {
                    "id": 1001,
                    "integration_id": 41,
                    "number": REAL_INVOICE,
                    "status": "registered",
                    "customer_id": 7,
                    "invoice_date": date(2026, 11, 2),
                    "total_excl_vat": Decimal("100.00"),
                    "updated_at": now,
                }
            ],
        )
    return engine


def still_there(engine: Engine) -> bool:
    with engine.connect() as conn:
        integrations = conn.execute(select(IntegrationRow.name)).scalars().all()
        invoices = conn.execute(select(InvoiceRow.number)).scalars().all()
    return integrations == ["ACME NV"] and invoices == [REAL_INVOICE]


def name_of(db_url: str) -> str:
    """What an operator would type: the database's name (PostgreSQL) or file (SQLite)."""
    return str(make_url(db_url).database)


def test_demo_seed_reset_refuses_a_database_it_did_not_make(db_url: str) -> None:
    engine = a_real_database(db_url)

    result = demo_seed(db_url, "--reset")

    assert result.returncode != 0, result.stdout
    assert "not a demo database" in result.stderr, result.stderr
    assert f"--i-mean-this-database {name_of(db_url)}" in result.stderr, result.stderr
    assert still_there(engine)
    assert not is_demo_database(engine)
    engine.dispose()


def test_a_wrong_name_does_not_unlock_it(db_url: str) -> None:
    engine = a_real_database(db_url)

    result = demo_seed(db_url, "--reset", "--i-mean-this-database", "some_other_database")

    assert result.returncode != 0
    assert still_there(engine)
    engine.dispose()


def test_naming_the_database_resets_it(db_url: str) -> None:
    engine = a_real_database(db_url)

    result = demo_seed(db_url, "--reset", "--i-mean-this-database", name_of(db_url))

    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(InvoiceRow.number == REAL_INVOICE)) == 0
        assert conn.scalar(select(func.count()).select_from(IntegrationRow)) > 1
    assert is_demo_database(engine)  # the demo's data now: a later reset needs no name
    assert demo_seed(db_url, "--reset").returncode == 0
    engine.dispose()


def test_a_demo_database_can_still_be_reset(db_url: str) -> None:
    first = demo_seed(db_url)
    assert first.returncode == 0, first.stderr
    engine = make_engine(db_url)
    assert is_demo_database(engine)

    again = demo_seed(db_url, "--reset")

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("seeded ")
    engine.dispose()


def test_if_empty_leaves_a_real_database_alone(db_url: str) -> None:
    engine = a_real_database(db_url)

    result = demo_seed(db_url, "--if-empty")

    assert result.returncode == 0 and "skipped" in result.stdout
    assert still_there(engine) and not is_demo_database(engine)
    engine.dispose()


def test_seed_in_python_refuses_too(db_url: str) -> None:
    engine = a_real_database(db_url)

    with pytest.raises(NotADemoDatabase):
        seed(engine, invoices=3, reset=True)

    assert still_there(engine)
    engine.dispose()


def test_the_bench_does_not_wipe_a_real_database(db_url: str) -> None:
    from invoice_sync_dev.bench.common import open_db

    engine = a_real_database(db_url)

    with pytest.raises(NotADemoDatabase):
        open_db(db_url)

    assert still_there(engine)
    engine.dispose()


def test_the_bench_still_wipes_its_own_database(tmp_path: Path) -> None:
    from invoice_sync_dev.bench.common import Tenant, open_db, seed_tenants

    url = f"sqlite:///{tmp_path / 'bench.db'}"
    engine = open_db(url)
    seed_tenants(engine, [Tenant(integration_id=1, tool="exact_online", invoices=2)])
    engine.dispose()

    engine = open_db(url)  # a second scenario on the same file

    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(InvoiceRow)) == 0
    engine.dispose()


def test_chaos_does_not_wipe_a_real_database(db_url: str, tmp_path: Path) -> None:
    from invoice_sync_dev.chaos import ChaosSettings, prepare_invoicing_db

    engine = a_real_database(db_url)

    with pytest.raises(NotADemoDatabase):
        prepare_invoicing_db(ChaosSettings(invoices=3, workdir=tmp_path, db_url=db_url))

    assert still_there(engine)
    engine.dispose()


def test_chaos_wipes_a_database_it_is_told_to(db_url: str, tmp_path: Path) -> None:
    from invoice_sync_dev.chaos import ChaosSettings, prepare_invoicing_db

    engine = a_real_database(db_url)
    settings = ChaosSettings(invoices=3, workdir=tmp_path, db_url=db_url, wipe_database=name_of(db_url))

    prepare_invoicing_db(settings)[0].dispose()

    assert not still_there(engine)
    engine.dispose()
