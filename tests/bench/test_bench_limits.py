"""The limit, naive and tenants benchmark scenarios in quick mode: their logic, not their timings.

Each scenario starts its own sandbox process; the whole module takes about a minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from invoice_sync.connectors.registry import TOOLS
from invoice_sync_dev.bench import limits, tenants
from invoice_sync_dev.bench.tenants import CallLog
from invoice_sync_dev.sandbox.tools import BenchLimits, sandbox_of, sandbox_tools
from invoice_sync_dev.sandbox.xero import XeroMinutes

MINUTE_WINDOWS = [tool for tool in TOOLS if limits.setup(tool, quick=True).window == "minute"]
"""The tools whose limit is a minute's (Yuki's is the domain's day)."""


@pytest.fixture(scope="module")
def limit_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("bench")
    return {line["scenario"]: line for line in limits.run(workdir, quick=True)}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_limit_run_never_provokes_a_429_and_spends_the_fewest_calls(
    limit_lines: dict[str, dict[str, Any]], tool: str
) -> None:
    line = limit_lines[f"limit_{tool}"]
    assert list(line)[0] == "scenario"
    assert "error" not in line, line
    assert line["tool"] == tool
    assert line["http_429"] == 0, line
    # The tool's booking calls plus its customer calls over the quick backlog (SANDBOX.bench).
    assert line["calls_per_invoice"] <= sandbox_of(tool).bench.max_calls_per_invoice, line
    assert line["api_calls"] > 0 and 0 < line["utilisation"] <= 1.0, line


@pytest.mark.parametrize("tool", MINUTE_WINDOWS)
def test_a_limit_run_spans_several_windows_and_books_everything(
    limit_lines: dict[str, dict[str, Any]], tool: str
) -> None:
    line = limit_lines[f"limit_{tool}"]
    assert line["window"] == "minute"
    assert line["windows"] >= 3, line
    assert line["booked"] == line["invoices"] and line["deferred"] == 0, line


def test_yuki_spends_its_whole_day_and_defers_the_rest(limit_lines: dict[str, dict[str, Any]]) -> None:
    line = limit_lines["limit_yuki"]
    assert line["window"] == "day"
    assert line["api_calls"] == line["limit"]  # every call of the day, not one more (no quota fault)
    assert line["booked"] + line["deferred"] == line["invoices"] and line["deferred"] > 0, line


def test_the_naive_baseline_makes_more_calls_than_ours(limit_lines: dict[str, dict[str, Any]]) -> None:
    line = limit_lines["naive"]
    ours = limit_lines["limit_exact_online"]
    assert line["booked"] == line["invoices"] == ours["invoices"]
    assert line["ours_api_calls"] == ours["api_calls"]
    # a lookup and a create per invoice, the customer looked up each time: about three calls each
    assert line["calls_per_invoice"] >= 2.5, line
    assert line["ratio"] == pytest.approx(ours["api_calls"] / line["api_calls"], abs=0.001)
    assert line["ratio"] < 0.5 and line["http_429"] == 0, line


def test_the_tenants_run_isolates_tenants(tmp_path: Path) -> None:
    (line,) = tenants.run(tmp_path, quick=True)
    assert list(line)[0] == "scenario" and line["scenario"] == "tenants"
    assert "errors" not in line, line
    assert line["isolated"] is True  # every tenant booked exactly its own backlog
    assert line["booked"] == line["tenants"] * line["invoices_per_tenant"]
    assert (
        set(line["by_tool"]) == {s.name for s in sandbox_tools() if s.bench.slots > 1} == set(tenants.TOOLS)
    )
    assert line["http_429"] == 0
    assert line["ratio"] > 0


def test_tenants_get_rate_windows_of_their_own() -> None:
    planned = tenants.plan(tenants.TENANTS, 10)
    assert len(planned) == 20
    exact = [t.settings["division"] for t in planned if t.tool == "exact_online"]
    yuki = [t.conn_id for t in planned if t.tool == "yuki"]  # a domain (access key) per tenant
    offices = [t.settings["office"] for t in planned if t.tool == "twinfield"]
    for slots in (exact, yuki, offices):
        assert len(slots) == len(set(slots)) > 0


@pytest.mark.parametrize("tool", sorted(tenants.DEMO_SLOTS))
def test_tools_without_bench_tenants_have_one_slot_the_demo_one(tool: str) -> None:
    tenant = tenants.bench_tenant(1, tool, 1, 10)
    assert dict(tenant.settings) == dict(tenants.DEMO_SLOTS[tool].settings)
    with pytest.raises(ValueError, match="one bench slot, 1"):
        tenants.bench_tenant(2, tool, 2, 10)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_gives_the_bench_a_tenant_and_its_connection(tool: str) -> None:
    """What the bench needs of a new tool is its SANDBOX.bench: a slot 1 and that slot's connection."""
    tenant = tenants.bench_tenant(1, tool, 1, 10)
    conns = tenants.bench_connections("http://sandbox:1", [tenant], BenchLimits(minute_s=2.0, limit=3))
    assert list(conns) == [tenant.conn_id]
    assert conns[str(tenant.conn_id)]["conn_type"] == sandbox_of(tool).descriptor.conn_type
    assert limits.setup(tool, quick=True).invoices < limits.setup(tool, quick=False).invoices


def test_xero_minutes_follow_the_remaining_count() -> None:
    minutes = XeroMinutes(minute_s=3600.0)
    ends = [minutes.window_end(_answer({"X-MinLimit-Remaining": left})) for left in ("2", "1", "0", "2", "1")]
    assert ends[0] == ends[1] == ends[2] != ends[3] == ends[4]  # the count went up: a new minute
    assert minutes.window_end(_answer({})) is None  # the token endpoint and /connections do not count


def _answer(headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers.update(headers)
    return response


def test_utilisation_counts_every_window_but_the_last() -> None:
    log = CallLog()
    for window, calls in ((1.0, 60), (2.0, 54), (3.0, 7)):
        log.add(window, calls)
    assert log.utilisation(60) == pytest.approx(114 / 120, abs=0.001)
    single = CallLog()
    single.add(1.0, 30)
    assert single.utilisation(60) is None  # one window says nothing about the pacing
