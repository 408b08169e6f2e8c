"""End-to-end runs of the real DAGs with ``airflow dags test`` against the sandbox over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow_servers import AIRFLOW, demo_connection_env, run_airflow

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.sandbox.demo import SeedResult, seed
from invoice_sync_dev.sandbox.tools import sandbox_tools


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Migrate the test Airflow metadata DB and import the pools, once per session."""
    run_airflow(["db", "migrate"], timeout_s=600)
    # as every deployment does: a pool per tool (see invoice_sync.airflow.pools)
    pools_file = tmp_path_factory.mktemp("pools") / "pools.json"
    subprocess.run([sys.executable, "-m", "invoice_sync.airflow.pools", str(pools_file)], check=True)
    run_airflow(["pools", "import", str(pools_file)])


@dataclass
class Demo:
    db_url: str
    store: SyncStore
    seeded: SeedResult
    sandbox: Any
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INVOICE_SYNC_DB_URL": self.db_url,
            **demo_connection_env(self.sandbox.url),
            **self.extra_env,
        }

    def run(self, dag_id: str, conf: dict[str, Any] | None = None, *, expect_success: bool = True) -> str:
        """Run one DAG run in-process with ``airflow dags test``; return its log."""
        command = [AIRFLOW, "dags", "test", dag_id]
        if conf is not None:
            command += ["-c", json.dumps(conf)]
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=900)
        log = result.stdout + result.stderr
        succeeded = f"Marking run <DagRun {dag_id} " in log and "> successful" in log
        if expect_success:
            assert result.returncode == 0 and succeeded, log[-6000:]
        return log

    def posts(self, entity: str) -> int:
        """Exact Online POSTs of one entity set that reached the simulator (any status)."""
        calls = self.sandbox.exact.stats_snapshot()["calls"]
        return sum(
            int(count)
            for route, by_status in calls.items()
            if route.startswith("POST ") and route.endswith(entity)
            for count in by_status.values()
        )

    def batch_creates(self) -> dict[str, int]:
        """Invoice creates the batching tools processed, per tool (any outcome): those whose simulator
        counts them per reference (Exact's creates are counted by :meth:`posts`)."""
        simulators = [self.sandbox.simulator(tool.name) for tool in sandbox_tools()]
        return {
            type(simulator).__name__: sum(simulator.create_posts().values())
            for simulator in simulators
            if hasattr(simulator, "create_posts")
        }


def _demo(url: str, sandbox: Any) -> Iterator[Demo]:
    engine = make_engine(url)
    prepare(engine)
    seeded = seed(engine)
    try:
        yield Demo(url, SyncStore(engine), seeded, sandbox)
    finally:
        engine.dispose()


@pytest.fixture
def demo(db_url: str, sandbox: Any, airflow_db: None) -> Iterator[Demo]:
    """The demo data on SQLite and on PostgreSQL."""
    yield from _demo(db_url, sandbox)


@pytest.fixture
def sqlite_demo(sqlite_url: str, sandbox: Any, airflow_db: None) -> Iterator[Demo]:
    """The demo data on SQLite only, for behaviour that does not depend on the database."""
    yield from _demo(sqlite_url, sandbox)


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A loopback HTTP endpoint that records the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/hooks/invoice-sync", received)
    finally:
        server.shutdown()
        server.server_close()
