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
    assert set(manual.params.keys()) == {
        "integrations",
        "all_integrations",
        "invoice_numbers",
        "dry_run",
        "retry_failed_only",
    }
    assert nightly.params == {}  # the nightly chooses no integrations: every one with auto_sync


def test_the_manual_params_declare_item_types_and_sizes(dagbag) -> None:
    """Airflow validates a run's conf against these schemas (trigger form and REST API alike), so a value
    of the wrong kind or size is refused before any task starts (issue 14, item 2)."""
    from airflow.sdk.definitions.param import ParamsDict

    params = dagbag.dags["invoice_sync_manual"].params
    integrations = params.get_param("integrations").schema
    assert integrations["items"]["type"] == ["integer", "string"]  # a number is an id, text a name
    assert integrations["maxItems"] and integrations["items"]["maxLength"] == 255  # integrations.name
    numbers = params.get_param("invoice_numbers").schema
    assert numbers["items"]["type"] == "string" and numbers["items"]["maxLength"] == 64  # invoices.number
    assert numbers["maxItems"]
    assert params.get_param("all_integrations").schema["type"] == "boolean"
    assert params["all_integrations"] is False  # an empty selection does not mean all

    def valid(**conf: object) -> bool:
        candidate = ParamsDict({key: params.get_param(key) for key in params})
        try:
            candidate.update(conf)
            candidate.validate()
        except (ValueError, TypeError):
            return False
        return True

    assert valid(integrations=[1, "Atelier Demo BV"], all_integrations=False)
    assert valid(all_integrations=True)
    assert not valid(integrations=[1.5])
    assert not valid(integrations=[{"id": 1}])
    assert not valid(integrations=["x" * 256])
    assert not valid(integrations=list(range(1, integrations["maxItems"] + 2)))
    assert not valid(invoice_numbers=[7])
    assert not valid(invoice_numbers=["2026/" + "9" * 64])
    assert not valid(all_integrations="yes")


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
