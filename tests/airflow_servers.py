"""Airflow's own servers as processes, for the tests that need the real thing.

Shared by the browser test (api-server + scheduler) and the distributed topology test (api-server,
scheduler, dag-processor, triggerer, Celery workers). Importable as ``airflow_servers`` because this
directory holds the root ``conftest.py``, which pytest puts on ``sys.path``.

Every setting is in each process's environment, nothing inherited from the caller's Airflow: a test's
servers never read the developer's ``airflow.cfg`` or metadata DB. Each server runs in a process group
of its own, so stopping (or killing) it also ends what it forked: the LocalExecutor's or a Celery
worker's task processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from invoice_sync.airflow.pools import pools
from invoice_sync_dev.sandbox.process import airflow_bin, connection_env, free_port
from invoice_sync_dev.sandbox.tools import demo_connections

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = airflow_bin()
USER = "admin"
"""The one user of the simple auth manager; an admin, so the REST calls below are allowed."""


def airflow_env(
    home: Path,
    *,
    metadata_db_url: str,
    executor: str = "LocalExecutor",
    extra: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], str, str]:
    """The environment of every server of one Airflow (same home, DB, secrets and API address), the
    api-server's URL, and the password of :data:`USER` (a fresh one, in a passwords file in ``home``).

    The JWT secret and the API secret key must be the same in every process (the api-server signs the
    tasks' tokens, workers and the scheduler present them), so they are drawn once here.
    """
    password = secrets.token_urlsafe(12)
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps({USER: password}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            # Paused: the nightly DAG must not start a run of its own; tests unpause the manual one.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            # Without the base URL the tasks would call the execution API on port 8080.
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
    )
    return env, base_url, password


def demo_connection_env(sandbox_url: str, **extra: Any) -> dict[str, str]:
    """The demo integrations' connections, pointed at the sandbox, as ``AIRFLOW_CONN_*`` variables;
    ``extra`` goes into each connection's extra (``timeout=5``, say)."""
    connections = {}
    for conn_id, connection in demo_connections(sandbox_url).items():
        connection["extra"] = {**connection["extra"], **extra}
        connections[conn_id] = connection
    return connection_env(connections)


def run_airflow(command: list[str], env: Mapping[str, str] | None = None, timeout_s: float = 300) -> float:
    """Run one ``airflow`` command to completion (``db migrate``, ...); fail with its output; the seconds.

    Without ``env`` the command inherits this process's environment (the suite's own Airflow home).
    """
    started = time.monotonic()
    done = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.monotonic() - started


def start(command: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM the servers' process groups all at once, SIGKILL those still there 20 s later (one slow
    server then costs 20 s, not 20 s each in turn)."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0
) -> dict:
    """Wait until the api-server answers its health endpoint; return what it says of the other servers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"api-server exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=3) as response:
                if response.status == 200:
                    return dict(json.load(response))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"api-server not healthy after {timeout_s:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class AirflowApi:
    """Airflow's REST API as the admin user, and the servers' logs for failure messages."""

    base_url: str
    password: str
    logs: Path

    def token(self) -> str:
        body = json.dumps({"username": USER, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["access_token"])

    def call(
        self, method: str, path: str, token: str | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One REST API call as the admin (a fresh token unless one is given)."""
        headers = {"Authorization": f"Bearer {token or self.token()}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data, headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))

    def prepare_deployment(self) -> None:
        """What a deployment does once (README): import the tools' pools (a task in a missing pool is never
        scheduled) and unpause the manual DAG (new DAGs start paused)."""
        token = self.token()
        for name, pool in pools().items():
            self.call("POST", "/api/v2/pools", token, {"name": name, **pool})
        self.call("PATCH", "/api/v2/dags/invoice_sync_manual", token, {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Start a run of ``dag_id`` now, as the trigger form does; its run id."""
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        """Wait until the run ends; its state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout_s
        state, token = "unknown", self.token()
        while time.monotonic() < deadline:
            state = str(
                self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", token)["state"]
            )
            if state in {"success", "failed"}:
                return state
            time.sleep(1)
        pytest.fail(f"run {run_id} still {state} after {timeout_s:.0f}s\n{self.log_tails()}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones one by one."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=1000"
        return list(self.call("GET", path)["task_instances"])

    def log_tails(self) -> str:
        """The end of every process log, so a failing run says why without a rerun."""
        parts = []
        for log in sorted(self.logs.rglob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)
