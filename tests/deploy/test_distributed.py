"""The production topology of docker-compose.yaml, run natively: every server a process of its own.

PostgreSQL holds Airflow's metadata and the invoicing data (two fresh databases), Redis on loopback is the
Celery broker, and api-server, scheduler, dag-processor, triggerer and two Celery workers run as separate
processes with the CeleryExecutor, as the containers of the compose file do. Runs are started through the
REST API, as the Invoice sync page and the trigger form start them.

What it proves, in order (the second test continues from the first one's books):
1. A manual run for four integrations succeeds, both workers run some of its tasks, and the invoicing
   database and the simulators' books agree: every valid invoice booked once and written back.
2. One worker is killed with SIGKILL (its whole process group: the Celery parent, its pool and the task
   it was running) while it syncs an integration. The scheduler notices the silent task (heartbeat
   timeout), retries it on the surviving worker, the retry takes the dead holder's claim over once its
   lease ran out, looks up what the dead task had sent, and the run succeeds with nothing booked twice.

Timings are shortened for a test (production values in brackets): claim lease 10 s (3 min), heartbeat
timeout 15 s (5 min), HTTP timeout 5 s (30 s), retry delay 2 s (30 s and more). ``-s`` shows the start-up
time and memory of the topology.

PostgreSQL or Redis missing -> skip, except under ``CI=true``, where they are required.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from airflow_servers import (
    AIRFLOW,
    AirflowApi,
    airflow_env,
    demo_connection_env,
    run_airflow,
    start,
    stop,
    wait_healthy,
)
from sqlalchemy import make_url
from synced_books import assert_synced_exactly_once, invoices

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import InvoiceRow
from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.sandbox.demo import SeedResult, seed
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread

MANUAL = "invoice_sync_manual"
WORKERS = ("worker-1", "worker-2")
FIRST_RUN = {4, 5, 6, 7}
"""Yuki, Twinfield, Xero and QuickBooks Online: four tools' task groups, enough tasks for two workers."""
KILLED_RUN = {1, 2, 3}
"""The three Exact Online integrations, slowed down so that a worker dies in the middle of one."""
RUN_TIMEOUT_S = 300.0
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("INVOICE_SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(900)]


@dataclass
class Topology(AirflowApi):
    """The running servers, the invoicing database they sync and the simulators they sync to."""

    store: SyncStore = field(repr=False)
    sandbox: SandboxHandle = field(repr=False)
    seeded: SeedResult = field(repr=False)
    seeded_invoices: list[InvoiceRow] = field(repr=False)
    servers: dict[str, subprocess.Popen[bytes]] = field(repr=False)

    def rss_mib(self) -> float:
        """Resident memory of every server and everything it forked, in MiB."""
        total = 0
        for process in self.servers.values():
            try:
                root = psutil.Process(process.pid)
                for each in (root, *root.children(recursive=True)):
                    total += each.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (required under CI=true)")
        pytest.skip(message)


def _wait_until_ready(topology: Topology, timeout_s: float = 240.0) -> None:
    """Every server up: the api-server reports scheduler, triggerer and dag-processor healthy, both
    workers told Celery they are ready, and the dag-processor has serialized the manual DAG."""
    deadline = time.monotonic() + timeout_s
    api = topology.servers["api-server"]
    health = wait_healthy(topology.base_url, api, topology.logs / "api-server.log", timeout_s)
    pending: set[str] = {"health", "dag", *WORKERS}
    while pending and time.monotonic() < deadline:
        for name, process in topology.servers.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited ({process.returncode})\n{topology.log_tails()}")
        if "health" in pending:
            health = wait_healthy(topology.base_url, api, topology.logs / "api-server.log")
            if all(
                health.get(part, {}).get("status") == "healthy"
                for part in ("scheduler", "triggerer", "dag_processor")
            ):
                pending.discard("health")
        for worker in WORKERS:
            if (
                worker in pending
                and f"{worker}@" in (log := (topology.logs / f"{worker}.log").read_text(errors="replace"))
                and " ready." in log
            ):
                pending.discard(worker)
        if "dag" in pending:
            try:
                topology.call("GET", f"/api/v2/dags/{MANUAL}")
                pending.discard("dag")
            except OSError:
                pass
        time.sleep(1)
    if pending:
        pytest.fail(
            f"not ready after {timeout_s:.0f}s: {sorted(pending)} (health: {health})\n{topology.log_tails()}"
        )


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory, pg_databases: Callable[[str], str]
) -> Iterator[Topology]:
    _redis_or_skip()
    tmp = tmp_path_factory.mktemp("distributed")
    home, logs = tmp / "airflow", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    urls = {
        "metadata": pg_databases("invoice_sync_airflow"),
        "invoicing": pg_databases("invoice_sync_invoicing"),
    }
    sandbox = start_in_thread()  # the books and OAuth tokens the tasks create must last the module
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        engine = make_engine(urls["invoicing"])
        prepare(engine)
        seeded = seed(engine)
        store = SyncStore(engine)
        connections = demo_connection_env(sandbox.url, timeout=5)
        metadata = make_url(urls["metadata"])
        env, base_url, password = airflow_env(
            home,
            metadata_db_url=urls["metadata"],
            executor="CeleryExecutor",
            extra={
                **connections,
                "INVOICE_SYNC_DB_URL": urls["invoicing"],
                "INVOICE_SYNC_LEASE_SECONDS": "10",
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
                + metadata.set(drivername="postgresql").render_as_string(hide_password=False),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                # A queue of its own: nothing else that uses this Redis takes these tasks or gives them any.
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"invoice-sync-test-{uuid.uuid4().hex[:10]}",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                # The DAGs' exponential back-off retries after 30 to 59 s; the scheduler caps it at this.
                "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "2",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        migrate_s = run_airflow(["db", "migrate"], env)
        started = time.monotonic()
        # --skip-serve-logs: the log servers would bind every interface on fixed ports; all processes
        # share one logs folder here, so the api-server reads the task logs from disk.
        commands = {
            "api-server": ["api-server"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for worker in WORKERS:
            commands[worker] = [
                "celery",
                "worker",
                "--celery-hostname",
                f"{worker}@%h",
                "--skip-serve-logs",
                "--pid",
                str(tmp / f"{worker}.pid"),
            ]
        for name, command in commands.items():
            server_env = {**env, "INVOICE_SYNC_TEST_WORKER": name} if name in WORKERS else env
            servers[name] = start([AIRFLOW, *command], server_env, logs / f"{name}.log")
        topology = Topology(base_url, password, logs, store, sandbox, seeded, invoices(store), servers)
        _wait_until_ready(topology)
        ready_s = time.monotonic() - started
        topology.prepare_deployment()
        print(
            f"\ndistributed topology: db migrate {migrate_s:.1f} s; six servers up and ready in "
            f"{ready_s:.1f} s; resident memory when idle {topology.rss_mib():.0f} MiB"
        )
        yield topology
    finally:
        stop(*servers.values())
        sandbox.stop()


def _hostnames(tis: list[dict[str, Any]]) -> set[str]:
    return {str(ti["hostname"]) for ti in tis if ti.get("hostname")}


def test_a_manual_run_is_shared_by_both_workers_and_books_every_invoice_once(topology: Topology) -> None:
    run_id = topology.trigger(MANUAL, {"integrations": sorted(FIRST_RUN)})
    state = topology.wait_for_run(MANUAL, run_id, RUN_TIMEOUT_S)
    assert state == "success", f"run {run_id} ended {state}\n{topology.log_tails()}"
    print(f"\nafter the first run: resident memory {topology.rss_mib():.0f} MiB")

    tis = topology.task_instances(MANUAL, run_id)
    ran = [ti for ti in tis if ti["state"] == "success"]
    assert {ti["task_id"] for ti in ran} >= {
        "extract_registered_invoices",
        "write_back_registration_numbers",
        "notify",
    }
    assert _hostnames(ran) == set(WORKERS), [(ti["task_id"], ti["hostname"]) for ti in ran]

    synced = assert_synced_exactly_once(
        topology.store, topology.sandbox, topology.seeded, topology.seeded_invoices, FIRST_RUN
    )
    assert synced, "the run booked nothing"


def test_a_worker_killed_mid_run_costs_a_retry_not_a_double_booking(topology: Topology) -> None:
    # Slow Exact down, so the sync of an integration takes seconds and the kill lands inside one.
    topology.sandbox.faults.set_rules(
        [{"method": "POST", "path": "SalesEntries$", "kind": "latency", "delay_s": 0.4}]
    )
    run_id = topology.trigger(MANUAL, {"integrations": sorted(KILLED_RUN)})
    victim = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while victim is None:
        assert time.monotonic() < deadline, f"no Exact sync ever ran\n{topology.log_tails()}"
        running = [
            ti
            for ti in topology.task_instances(MANUAL, run_id)
            if ti["task_id"] == "exact_online.sync"
            and ti["state"] == "running"
            and ti.get("hostname") in WORKERS
        ]
        if running and len(topology.sandbox.exact.entries()) >= 2:
            victim = running[0]
        else:
            time.sleep(0.2)
    worker = str(victim["hostname"])
    os.killpg(topology.servers[worker].pid, signal.SIGKILL)
    topology.servers[worker].wait(timeout=10)
    topology.sandbox.faults.set_rules([])

    state = topology.wait_for_run(MANUAL, run_id, RUN_TIMEOUT_S)
    assert state == "success", f"run {run_id} ended {state}\n{topology.log_tails()}"
    (retried,) = [
        ti
        for ti in topology.task_instances(MANUAL, run_id)
        if (ti["task_id"], ti["map_index"]) == (victim["task_id"], victim["map_index"])
    ]
    survivor = next(name for name in WORKERS if name != worker)
    assert retried["try_number"] > victim["try_number"] and retried["hostname"] == survivor, retried
    assert_synced_exactly_once(
        topology.store, topology.sandbox, topology.seeded, topology.seeded_invoices, FIRST_RUN | KILLED_RUN
    )
