"""Every environment variable the runtime reads, in one module, each with its default and why.

Values are read when asked for, not at import: a DAG file, a task process and a test may each set them
differently, and none should have to re-import anything to be heard.

``INVOICE_SYNC_DB_URL``             the invoicing database (PostgreSQL in production); default a SQLite file
                                    in the project's ``var/``, so ``make run`` needs nothing installed.
``INVOICE_SYNC_LEASE_SECONDS``      how long a task's claim on an integration lasts unless renewed.
``INVOICE_SYNC_NIGHTLY_CRON``       when the nightly DAG runs (default 02:00) ...
``INVOICE_SYNC_TIMEZONE``           ... in which time zone (default Europe/Brussels).
``INVOICE_SYNC_ALERT_CONN_ID``      the http connection a failed nightly task alerts the operators through
                                    (default ``invoice_sync_alerts``; no such connection: no alerts).
``INVOICE_SYNC_REDIS_URL``          a redis:// URL where the rate windows several tasks share are counted;
                                    unset: Celery's ``[celery] broker_url`` when that is Redis, else the
                                    invoicing database (see :func:`redis_url`).
``INVOICE_SYNC_PLAIN_HTTP_HOSTS``   comma-separated host names a connection may reach over plain http
                                    besides this machine: a sandbox on a private network, such as compose's
                                    ``sandbox`` service (default none: anything else must use https).

The key sealing stored OAuth tokens is not ours: it is Airflow's ``[core] fernet_key``, read through
Airflow's configuration (:func:`invoice_sync.airflow.runtime.token_keys`), so there is one key to keep.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (``include/invoice_sync/config.py`` -> two levels up); only the embedded defaults use it."""
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "invoicing.db"

DB_URL_ENV = "INVOICE_SYNC_DB_URL"
LEASE_ENV = "INVOICE_SYNC_LEASE_SECONDS"
NIGHTLY_CRON_ENV = "INVOICE_SYNC_NIGHTLY_CRON"
TIMEZONE_ENV = "INVOICE_SYNC_TIMEZONE"
ALERT_CONN_ENV = "INVOICE_SYNC_ALERT_CONN_ID"
PLAIN_HTTP_HOSTS_ENV = "INVOICE_SYNC_PLAIN_HTTP_HOSTS"
REDIS_URL_ENV = "INVOICE_SYNC_REDIS_URL"


def database_url() -> str:
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def redis_url(broker_url: str | None = None) -> str | None:
    """Where shared rate windows are counted: ``INVOICE_SYNC_REDIS_URL``, else ``broker_url`` (Celery's,
    which the caller reads from Airflow's configuration) when it is a Redis URL, else None (the invoicing
    database counts them). Redis first because every claim is one round trip there, where the database
    takes a transaction with a row lock.
    """
    explicit = os.environ.get(REDIS_URL_ENV, "").strip()
    if explicit:
        return explicit
    if broker_url and broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return broker_url
    return None


def lease_length(default: timedelta) -> timedelta:
    """``INVOICE_SYNC_LEASE_SECONDS``, else ``default``. Short leases let tests and the chaos command see a
    killed task's integration taken over in seconds; production keeps the default.

    :raises ValueError: the value is not a positive number of seconds (named, with the variable).
    """
    value = os.environ.get(LEASE_ENV, "").strip()
    if not value:
        return default
    seconds = float(value)
    if seconds <= 0:
        raise ValueError(f"{LEASE_ENV} must be a positive number of seconds, not {value!r}")
    return timedelta(seconds=seconds)


def nightly_schedule() -> str:
    return os.environ.get(NIGHTLY_CRON_ENV, "0 2 * * *")


def timezone() -> str:
    return os.environ.get(TIMEZONE_ENV, "Europe/Brussels")


def alert_conn_id() -> str:
    """The http connection operators' alerts are posted to; see :mod:`invoice_sync.airflow.alerts`."""
    return os.environ.get(ALERT_CONN_ENV) or "invoice_sync_alerts"


def plain_http_hosts() -> frozenset[str]:
    """``INVOICE_SYNC_PLAIN_HTTP_HOSTS``, lower-cased: the operator's explicit list of non-loopback hosts
    credentials may reach over plain http (a sandbox service): the https rule has no exception in code."""
    listed = os.environ.get(PLAIN_HTTP_HOSTS_ENV, "")
    return frozenset(host.strip().lower().rstrip(".") for host in listed.split(",") if host.strip())
