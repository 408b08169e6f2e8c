"""Smoke test of ``invoice-sync-dev bench``: the runner and the overhead, extract, memory and parse scenarios
in quick mode (small sizes).

The figures are not asserted: on a shared 2-core machine timings say little, and a missed target is a
finding ``make bench`` reports, not a failure. What is asserted is that each scenario runs end to end,
that its lines carry the issue's fields, and that they are sane (everything it synced got its number,
ratios are positive, the table shows the figures beside their targets).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from invoice_sync.connectors.registry import TOOLS
from invoice_sync_dev.bench import (
    MARKER,
    extract,
    memory,
    overhead,
    parse,
    prepare_workdir,
    run_bench,
    scenario_names,
    table,
)


def test_runner_prints_json_lines_in_order_and_skips_what_does_not_exist(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()

    lines = run_bench(["extract"], quick=True, workdir=tmp_path / "bench", out=out, err=err)

    assert [json.loads(text) for text in out.getvalue().splitlines()] == lines
    (line,) = lines
    assert list(line)[0] == "scenario" and line["scenario"] == "extract"
    assert line["ratio"] > 0
    assert (tmp_path / "bench" / MARKER).exists()


def test_runner_refuses_unknown_scenarios_and_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        run_bench(["nope"], workdir=tmp_path / "bench", out=io.StringIO(), err=io.StringIO())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(RuntimeError, match="not wiping"):
        prepare_workdir(foreign)
    assert (foreign / "precious.txt").exists()


def test_scenario_order_covers_every_tool() -> None:
    names = scenario_names()
    assert names[0] == "overhead" and names[-3:] == ["extract", "memory", "parse"]
    limits = {f"limit_{tool}" for tool in TOOLS}
    assert limits | {"naive", "tenants"} <= set(names)


def test_table_puts_figures_beside_targets() -> None:
    rendered = table(
        [
            {
                "scenario": "overhead",
                "tool": "yuki",
                "wall_s": 20.0,
                "ms_per_invoice": 1.2,
                "peak_rss_mb": 300,
            },
            {"scenario": "extract", "ratio": 2.5, "query_ms": [1.0, 2.5]},
            {"scenario": "tenants", "error": "RuntimeError: boom"},
        ]
    )
    rows = {tuple(row.split()[:3]) for row in rendered.splitlines()}
    assert ("overhead", "(yuki)", "ms_per_invoice") in rows
    assert any("ratio" in row and "MISSED" in row and "<= 2" in row for row in rendered.splitlines())
    assert any(row.startswith("tenants") and "error" in row for row in rendered.splitlines())


def test_extract_quick(tmp_path: Path) -> None:
    (line,) = extract.run(tmp_path, quick=True)
    assert line["scenario"] == "extract"
    assert line["unsynced"] == extract.QUICK_UNSYNCED
    assert line["invoices"] == list(extract.QUICK_TOTALS)
    assert line["ratio"] > 0 and all(ms > 0 for ms in line["query_ms"])


def test_parse_quick(tmp_path: Path) -> None:
    (line,) = parse.run(tmp_path, quick=True)
    assert line["scenario"] == "parse"
    assert set(line["files"]) == {path.name for path in parse.dag_files()}
    assert line["max_s"] == max(line["files"].values()) > 0
    assert line["slowest"] in line["files"]


@pytest.mark.timeout(120)
def test_memory_quick(tmp_path: Path) -> None:
    (line,) = memory.run(tmp_path, quick=True)
    assert line["scenario"] == "memory"
    assert line["invoices"] == list(memory.QUICK_SIZES)
    assert all(mb > 50 for mb in line["peak_rss_mb"])
    assert line["ratio"] == pytest.approx(line["peak_rss_mb"][1] / line["peak_rss_mb"][0], abs=0.01)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_overhead_quick(tmp_path: Path) -> None:
    """Two real ``airflow dags test`` runs (start-up, then the sync); every invoice gets its number."""
    lines = overhead.run(tmp_path, quick=True)
    assert [line["tool"] for line in lines] == list(overhead.QUICK_TOOLS)
    for line in lines:
        assert line["scenario"] == "overhead"
        assert line["invoices"] == overhead.QUICK_INVOICES
        assert {"wall_s", "ms_per_invoice", "peak_rss_mb", "startup_s"} <= set(line)
        assert line["peak_rss_mb"] > 50
        # Yuki takes 25 invoices a call: a few calls, never one per invoice.
        assert line["api_calls"] <= line["invoices"] / 10
