"""``[core] hostname_callable`` of the distributed topology test: each Celery worker's name.

Both workers of the test run on one machine, so the fully qualified domain name Airflow records on every
task instance would not tell them apart. Each worker process gets ``INVOICE_SYNC_TEST_WORKER`` in its
environment; the task instances it runs then carry that name as their ``hostname``.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("INVOICE_SYNC_TEST_WORKER") or socket.getfqdn()
