"""Every DAG file imports cleanly, follows the house policy, and parses fast without any I/O."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from invoice_sync.airflow.pools import pool_name, pools
from invoice_sync.connectors.registry import TOOLS
from invoice_sync_dev.bench.parse import PROBE

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
EXPECTED = {"invoice_sync_nightly", "invoice_sync_manual"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_policy(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "invoice-sync" in dag.tags
    assert dag.default_args["retries"] >= 2
    assert dag.default_args["execution_timeout"] is not None
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.doc_md and dag.doc_md.lstrip().startswith("#")


def test_nightly_and_manual_share_one_graph(dagbag) -> None:
    nightly, manual = dagbag.dags["invoice_sync_nightly"], dagbag.dags["invoice_sync_manual"]
    assert nightly.schedule == "0 2 * * *" and manual.schedule is None
    assert set(manual.task_ids) - set(nightly.task_ids) == {"notify"}
    for dag in (nightly, manual):
        assert dag.get_task("filter_syncable").upstream_task_ids == {"extract_registered_invoices"}
        for tool in TOOLS:  # a group and operator each, for every registered tool
            sync = dag.get_task(f"{tool}.sync")
            assert sync.retry_policy is not None
            assert sync.pool == pool_name(tool) and pool_name(tool) in pools()  # one pool per tool
            assert dag.get_task(f"{tool}.integrations_of_tool").downstream_task_ids == {f"{tool}.sync"}
            assert dag.get_task("write_back_registration_numbers").upstream_task_ids >= {f"{tool}.sync"}
        assert dag.get_task("write_back_registration_numbers").trigger_rule == "all_done"
        assert dag.get_task("summarize").upstream_task_ids >= {"write_back_registration_numbers"}
    notify = manual.get_task("notify")
    assert notify.trigger_rule == "all_done"
    assert "summarize" in notify.upstream_task_ids
    assert set(manual.params.keys()) == {"integrations", "invoice_numbers", "dry_run", "retry_failed_only"}


PARSE_PROBE = PROBE  # the probe `make bench` times parsing with: Airflow imported first, no network


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_parses_fast_without_io(dag_file: Path, tmp_path: Path) -> None:
    """Parsing must not touch the network or the invoicing database (it does not exist here)."""
    env = {**os.environ, "INVOICE_SYNC_DB_URL": f"sqlite:///{tmp_path / 'missing' / 'nope.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(dag_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "missing").exists(), "parsing created the invoicing database"
    seconds = float(result.stdout.strip().splitlines()[-1])
    # Airflow's dagbag_import_timeout is 30 s; a DAG file of ours takes well under one. A generous bound
    # catches top-level work (imports of pandas or HTTP clients, queries) without flaking on a busy box.
    assert seconds < 5, f"{dag_file.name} took {seconds:.2f} s to parse"
