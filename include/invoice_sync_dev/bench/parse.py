"""``parse``: the slowest DAG file's parse time, past the import of Airflow itself (target under 0.2 s).

The scheduler's DAG processor re-parses every file every few minutes, so whatever a DAG file does at the
top level is paid again and again: imports of pandas or HTTP clients, queries, network calls. Airflow's own
import is the same for every DAG and not ours to shrink, so each probe imports ``airflow.sdk`` first and
times only what executing the file adds, the way the suite's DAG-integrity test does.

Each file is parsed in a fresh interpreter (a DAG processor starts without our modules loaded), with the
network refused and the invoicing database pointed at a path that does not exist, so a file that reached
for either fails here rather than hiding its cost. Each file is probed :data:`ROUNDS` times and its
median kept: the figure is the file's cost, not a scheduling hiccup of the machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from invoice_sync.config import PROJECT_ROOT
from invoice_sync_dev.bench import common

ROUNDS = 3
QUICK_ROUNDS = 1
PROBE = """
import socket, sys, time
import airflow.sdk  # Airflow's own import is not the DAG file's cost
def refuse(*args, **kwargs):
    raise RuntimeError("network access while parsing a DAG")
socket.socket.connect = refuse
socket.create_connection = refuse
start = time.perf_counter()
import runpy
runpy.run_path(sys.argv[1])
print(time.perf_counter() - start)
"""


def dag_files() -> list[Path]:
    folder = Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER") or PROJECT_ROOT / "dags")
    return sorted(path for path in folder.glob("*.py") if not path.name.startswith("_"))


def run(workdir: Path, *, quick: bool = False) -> list[dict[str, Any]]:
    workdir = common.fresh_dir(workdir / "parse")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "INVOICE_SYNC_DB_URL": common.sqlite_url(workdir / "missing" / "invoicing.db"),
    }
    rounds = QUICK_ROUNDS if quick else ROUNDS
    files = dag_files()
    if not files:
        raise RuntimeError("no DAG files to parse")
    per_file: dict[str, float] = {}
    for path in files:
        common.note(f"parse: {path.name} ({rounds} fresh interpreter(s))")
        per_file[path.name] = round(statistics.median(probe(path, env) for _ in range(rounds)), 4)
    if (workdir / "missing").exists():
        raise RuntimeError("parsing a DAG file created the invoicing database")
    slowest = max(per_file, key=per_file.__getitem__)
    return [{"scenario": "parse", "max_s": per_file[slowest], "slowest": slowest, "files": per_file}]


def probe(path: Path, env: dict[str, str]) -> float:
    """Seconds executing ``path`` took in a fresh interpreter after ``import airflow.sdk``."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])
