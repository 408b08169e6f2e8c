"""The sandbox and Airflow as subprocesses, for the tools that drive whole DAG runs.

``make chaos`` and ``make bench`` run Airflow in subprocesses, each with a home and metadata DB of its own,
against a sandbox that must outlive each run and be steered between runs (faults, limits, books), so the
sandbox runs as a process of its own, reached through each tool's control API (``<mount>/_sandbox/...``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from invoice_sync.config import PROJECT_ROOT
from invoice_sync_dev.sandbox.tools import sandbox_of


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SandboxProcess:
    """``invoice-sync-dev sandbox serve`` as a subprocess, steered through each tool's control API.

    Use as a context manager; ``stop`` terminates it. ``time_scale`` is sandbox seconds per real second
    (the limit scenarios compress the tools' minute windows with it).
    """

    def __init__(self, workdir: Path, *, time_scale: float = 1.0, name: str = "sandbox") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.time_scale = time_scale
        self.log_path = workdir / f"{name}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        command = [
            sys.executable,
            "-m",
            "invoice_sync_dev.cli",
            "sandbox",
            "serve",
            "--port",
            str(self.port),
            "--time-scale",
            str(time_scale),
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "sandbox listening" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox did not start; see {self.log_path}")
            time.sleep(0.1)

    def control(self, tool: str, method: str, name: str, body: Any = None) -> Any:
        """Call ``<mount>/_sandbox/<name>`` of ``tool`` (an integration's ``tool`` value)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{sandbox_of(tool).url(self.url)}/_sandbox/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def configure(self, tool: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control(tool, "POST", "config", changes)
        return result

    def stats(self, tool: str) -> dict[str, Any]:
        result: dict[str, Any] = self.control(tool, "GET", "stats")
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def connection_env(conns: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` variables for ``conns``: how both Airflow and a bare hook find them."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in conns.items()}


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def airflow_env(
    airflow_home: Path,
    db_url: str,
    conns: Mapping[str, Mapping[str, Any]],
    *,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an Airflow subprocess: its own home and metadata DB, the invoicing DB, the
    connections as ``AIRFLOW_CONN_*``. ``AIRFLOW_HOME`` and ``INVOICE_SYNC_DB_URL`` of the caller are
    overridden so a benchmark or a chaos run can never touch the data ``make run`` works on."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
        or str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "INVOICE_SYNC_DB_URL": db_url,
        "PYTHONUNBUFFERED": "1",
        **connection_env(conns),
        **(extra or {}),
    }
