"""Wait until `make ui` is usable, then return: what scripts/run-ui.sh runs before it prints the login.

Usable means more than a port that answers: the api-server, scheduler, dag-processor and triggerer report
healthy, the printed login gets a token, both DAGs are parsed and unpaused (a metadata DB from an earlier
session may hold them paused; new ones start unpaused), and the Invoice sync page answers. Each watched
process is checked on every round, so a server that dies at start-up fails this at once with its log,
instead of after the timeout.

    python scripts/ui_ready.py URL USER PASSWORD PID=LOG ...
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DAG_IDS = ("invoice_sync_nightly", "invoice_sync_manual")
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
TIMEOUT_S = 300.0
"""Generous: on a busy 2-core machine the four servers' imports alone take most of a minute."""


class NotYet(Exception):
    """The servers are up but something they serve is not ready yet; ask again next round."""


def call(
    url: str, *, method: str = "GET", token: str | None = None, body: dict[str, Any] | None = None
) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


def check_alive(watched: dict[int, Path]) -> None:
    """Exit with the end of its log when a watched process is gone (or a zombie its shell has not reaped)."""
    for pid, log in watched.items():
        stat = Path(f"/proc/{pid}/stat")
        try:
            os.kill(pid, 0)
            gone = stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except ProcessLookupError:
            gone = True
        if gone:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise SystemExit(f"{log.stem} stopped during start-up; the end of {log}:\n{tail}")


def ready(base_url: str, user: str, password: str) -> None:
    """One round of checks; :class:`NotYet` (or a connection error) while something is not ready."""
    health = call(f"{base_url}/api/v2/monitor/health")
    waiting = [name for name in COMPONENTS if (health.get(name) or {}).get("status") != "healthy"]
    if waiting:
        raise NotYet(f"not healthy yet: {', '.join(waiting)}")
    token = call(f"{base_url}/auth/token", method="POST", body={"username": user, "password": password})[
        "access_token"
    ]
    dags = call(f"{base_url}/api/v2/dags?dag_id_pattern=invoice_sync_&limit=100", token=token)["dags"]
    paused = {dag["dag_id"]: dag["is_paused"] for dag in dags}
    missing = [dag_id for dag_id in DAG_IDS if dag_id not in paused]
    if missing:
        raise NotYet(f"not parsed yet: {', '.join(missing)}")
    for dag_id in DAG_IDS:
        if paused[dag_id]:
            call(f"{base_url}/api/v2/dags/{dag_id}", method="PATCH", token=token, body={"is_paused": False})
    call(f"{base_url}/invoice-sync/", token=token)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.rsplit("\n\n", 1)[-1], file=sys.stderr)
        return 2
    base_url, user, password = argv[:3]
    watched = {int(pid): Path(log) for pid, log in (item.split("=", 1) for item in argv[3:])}
    deadline = time.monotonic() + TIMEOUT_S
    last = "no answer yet"
    try:
        while time.monotonic() < deadline:
            check_alive(watched)
            try:
                ready(base_url, user, password)
                return 0
            except (NotYet, urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = str(exc)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 130
    logs = ", ".join(sorted(map(str, watched.values())))
    print(f"Airflow was not ready after {TIMEOUT_S:.0f} s ({last}); logs: {logs}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
