"""A small ``invoice-sync-dev chaos`` session: the whole chain under faults must still book exactly once,
on every tool.

One nightly run over one demo integration of every tool with the sandbox's faults at three times
``make chaos``'s rate (every batch tool's booking calls are then hit, a batch booked in part among them)
and the access tokens expired mid-sync, then clean runs until nothing is left (usually one); no SIGKILL. Each
``airflow dags test`` costs about 35 s of Airflow start-up on a 2-core machine; the full-size session,
with several faulty runs and a kill, is ``make chaos``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from invoice_sync_dev.chaos import LOST_ANSWERS, ChaosSettings, run_chaos
from invoice_sync_dev.sandbox.faults import FAULT_KINDS
from invoice_sync_dev.sandbox.tools import sandbox_tools

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(420)]


def test_small_chaos_session_books_every_invoice_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task that failed on a fault is retried by Airflow as in production, only sooner: the DAGs' back-off
    # (30 s and up) was a third of this test's time whenever a fault failed a task.
    monkeypatch.setenv("AIRFLOW__CORE__MAX_TASK_RETRY_DELAY", "2")
    settings = ChaosSettings(
        invoices=60,
        runs=1,
        seed=7,
        kills=0,
        intensity=3.0,
        integrations_per_tool=1,  # each integration is a mapped task: seconds of Airflow each
        token_expiry_chance=1.0,
        fault_kinds=FAULT_KINDS - {"rate_limit"},  # a 429 waits for the next minute: up to 60 s
        workdir=tmp_path,
        db_url=f"sqlite:///{tmp_path / 'invoicing.db'}",
        # tests/conftest.py points AIRFLOW_HOME at the suite's own metadata DB; reuse it.
        airflow_home=Path(os.environ["AIRFLOW_HOME"]),
    )
    out, err = io.StringIO(), io.StringIO()

    verdict = run_chaos(settings, out=out, err=err)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    summary = json.dumps(lines, indent=1) + "\n" + err.getvalue()
    assert verdict.duplicates == 0, summary
    assert verdict.lost_registration_numbers == 0, summary
    assert verdict.unresolved == 0, summary
    assert verdict.unbooked == 0, summary
    assert sum(verdict.faults_injected.values()) > 0, summary
    assert lines[-1]["ok"] is True and lines[-1]["invoices"] == verdict.invoices > 0
    assert [line["run"] for line in lines[:-1]] == list(range(1, verdict.runs + 1))
    assert verdict.runs <= settings.runs + settings.clean_runs
    assert set(verdict.by_tool) == {tool.name for tool in sandbox_tools()}, summary
    for name, figures in verdict.by_tool.items():
        counts = {
            k: figures[k] for k in ("duplicates", "lost_registration_numbers", "unresolved", "unbooked")
        }
        assert counts == dict.fromkeys(counts, 0), (name, summary)
        assert figures["invoices"] == figures["booked"] > 0, (name, summary)
    assert sum(figures["invoices"] for figures in verdict.by_tool.values()) == verdict.invoices
    # Batch-level faults: whole batches committed (or a part of one) and their answers lost. Per tool they
    # are likely, not certain (one integration makes one or two booking calls; a task that failed before
    # booking makes none), so they are counted over the batch tools. A batch booked in part is asserted in
    # tests/sandbox and tests/fault; here it is drawn, not certain.
    batch_tools = [tool.name for tool in sandbox_tools() if tool.chaos.batch]
    lost = sum(verdict.by_tool[name]["booking_answers_lost"] for name in batch_tools)
    assert lost > 0 and "partial_commit_then_drop" in LOST_ANSWERS, summary
