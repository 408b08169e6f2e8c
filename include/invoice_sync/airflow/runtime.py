"""What every task needs from its surroundings: the store, the vault, and who it is in this run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.configuration import conf

from invoice_sync import config
from invoice_sync.domain.ports import BudgetStore
from invoice_sync.store.budgets import RedisBudgetStore, SqlBudgetStore
from invoice_sync.store.claims import DEFAULT_LEASE
from invoice_sync.store.db import database_url, shared_engine
from invoice_sync.store.repository import SyncStore
from invoice_sync.store.tokens import SqlTokenVault

LEASE_ENV = config.LEASE_ENV


def lease_length() -> timedelta:
    """How long a task's claim on an integration lasts unless renewed (``INVOICE_SYNC_LEASE_SECONDS``, else
    :data:`~invoice_sync.store.claims.DEFAULT_LEASE`)."""
    return config.lease_length(DEFAULT_LEASE)


def open_store() -> SyncStore:
    return SyncStore(shared_engine(database_url()), lease=lease_length())


def token_keys() -> tuple[str, ...]:
    """Airflow's own Fernet keys, newest first: ``[core] fernet_key`` wherever Airflow reads it (airflow.cfg,
    ``AIRFLOW__CORE__FERNET_KEY``, their ``_CMD`` and ``_SECRET`` variants), split at commas as Airflow's
    ``get_fernet`` splits ``new,old``. One key for connections and tokens alike, so rotating Airflow's
    rotates ours. Read on every call, not once per process: a command or secrets backend may hand out a
    new key, and tests change it."""
    value = conf.get("core", "fernet_key", fallback="") or ""
    return tuple(key.strip() for key in value.split(",") if key.strip())


def open_vault(store: SyncStore) -> SqlTokenVault:
    return SqlTokenVault(store.engine, keys=token_keys())


def open_budgets(store: SyncStore) -> BudgetStore:
    """Where the rate windows several tasks spend together are counted: Redis when configured
    (``INVOICE_SYNC_REDIS_URL``, or Celery's ``[celery] broker_url`` when Celery runs the tasks and its
    broker is Redis), else the invoicing database. See :mod:`invoice_sync.store.budgets`.

    Celery's broker only under the CeleryExecutor: the celery provider gives ``broker_url`` a default
    (``redis://redis:6379/0``) that names no server at all under another executor.
    """
    celery = "CeleryExecutor" in (conf.get("core", "executor", fallback="") or "")
    url = config.redis_url(conf.get("celery", "broker_url", fallback=None) if celery else None)
    if url is None:
        return SqlBudgetStore(store.engine)
    import redis

    return RedisBudgetStore(redis.Redis.from_url(url))


def sync_run_id(context: Any) -> str:
    """The ledger's run key. Run ids repeat across DAGs (``manual__<date>``), so the DAG id is part of it."""
    dag_run = context["dag_run"]
    return f"{dag_run.dag_id}:{dag_run.run_id}"


def holder_id(context: Any) -> str:
    """Who holds a claim: one try of one task instance. A retry is a different holder on purpose."""
    ti = context["ti"]
    return f"{sync_run_id(context)}:{ti.task_id}[{ti.map_index}]#try{ti.try_number}"
