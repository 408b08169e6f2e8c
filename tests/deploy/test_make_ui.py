"""`make ui` keeps its promise: one command serves Airflow's UI on the embedded defaults, prints a URL and a
login that work, and a Ctrl-C leaves no process behind and no port held.

The test runs the target's body, ``scripts/run-ui.sh`` (the venv exists already), with a home, metadata DB,
invoicing DB and run directory of its own under tmp and a free port, exactly as a developer's terminal
would: the script is the leader of the foreground process group and the Ctrl-C is a SIGINT to that group.
Waiting is on the script's output and on the API, never on a fixed delay.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from invoice_sync_dev.sandbox.process import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run-ui.sh"
DAG_IDS = {"invoice_sync_nightly", "invoice_sync_manual"}
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads sessions from /proc")


@dataclass
class Ui:
    process: subprocess.Popen[str]
    output: list[str]
    url: str
    user: str
    password: str
    sandbox_port: int


def session_members(session_id: int) -> list[int]:
    """Every live process of the session (the script's, which it started as its leader), zombies
    included: whatever the script started keeps its session, even in process groups of its own."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session_id:
            members.append(int(stat.parent.name))
    return members


def port_is_free(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def call(url: str, token: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as response:
        return response.status, response.read()


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _restore_sigint() -> None:
    # A terminal's Ctrl-C reaches a make started from an interactive shell, where SIGINT is not ignored;
    # a shell that ran pytest in the background may have left it ignored, and bash cannot trap a signal
    # ignored at its start.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Ui]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOICE_SYNC"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "INVOICE_SYNC_DB_URL": f"sqlite:///{tmp_path / 'invoicing.db'}",
            "INVOICE_SYNC_RUN_DIR": str(tmp_path / "var"),
            "INVOICE_SYNC_UI_PORT": str(port),
        }
    )
    process = subprocess.Popen(
        [str(SCRIPT)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_restore_sigint,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(line.startswith("Ctrl-C") for line in output):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no login after {START_TIMEOUT_S:.0f}s:\n" + "\n".join(output))
            if line is None:
                pytest.fail(f"run-ui.sh exited ({process.wait()}) before serving:\n" + "\n".join(output))
            output.append(line)
        text = "\n".join(output)
        url = re.search(r"^Airflow UI:\s+(\S+)$", text, re.MULTILINE)
        login = re.search(r"^Login:\s+(\S+) / (\S+)$", text, re.MULTILINE)
        sandbox = re.search(r"Accounting sandbox on 127\.0\.0\.1:(\d+)", text)
        assert url and login and sandbox, text
        assert url[1] == f"http://127.0.0.1:{port}"
        yield Ui(process, output, url[1], login[1], login[2], int(sandbox[1]))
    finally:
        if process.poll() is None:  # the test failed before its Ctrl-C: leave nothing running
            for pid in session_members(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait(timeout=30)


@pytest.mark.e2e
def test_make_ui_serves_the_ui_with_a_working_login_and_stops_cleanly_on_ctrl_c(ui: Ui) -> None:
    # The printed login gets a token (Airflow's simple auth manager).
    _, body = call(f"{ui.url}/auth/token", body={"username": ui.user, "password": ui.password})
    token = json.loads(body)["access_token"]

    # Both DAGs are there and unpaused.
    _, body = call(f"{ui.url}/api/v2/dags?dag_id_pattern=invoice_sync_", token)
    paused = {dag["dag_id"]: dag["is_paused"] for dag in json.loads(body)["dags"]}
    assert paused == dict.fromkeys(DAG_IDS, False)

    # The Invoice sync page answers, and shows the demo integrations (the plugin reads the demo DB).
    status, body = call(f"{ui.url}/invoice-sync/", token)
    assert status == 200
    assert "Atelier Demo BV" in body.decode()

    # Ctrl-C: SIGINT to the terminal's foreground process group, which the script leads. The servers run
    # in process groups of their own, in the script's session: each must be gone afterwards.
    started = session_members(ui.process.pid)
    assert len(started) >= 6, started  # the script, the sandbox and four servers at least
    os.killpg(ui.process.pid, signal.SIGINT)
    assert ui.process.wait(timeout=STOP_TIMEOUT_S) == 130
    deadline = time.monotonic() + 10  # only for the kernel to reap what init inherited
    while session_members(ui.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_members(ui.process.pid) == []
    assert port_is_free(int(ui.url.rsplit(":", 1)[1]))
    assert port_is_free(ui.sandbox_port)
