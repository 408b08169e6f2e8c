"""``invoice-sync-dev bench`` (``make bench``): throughput at the accounting APIs' own limits.

The physical limit of a sync is the fewest calls the tools allow, spent at exactly the rate they allow,
in parallel across tenants; and our own code must cost little next to that. Each scenario measures one
side of it against the sandbox (a subprocess, time-scaled where minute windows would make the bench
slow) and returns JSON lines; this runner prints each line as soon as it is known, then a table of the
figures beside the targets of issue 5. A missed target is a finding to report, not a failure: the exit
status is non-zero only when a scenario could not run.

Scenarios live in modules of this package, each with ``run(workdir, *, quick=False) -> list[dict]``
(every dict starts with ``"scenario"``; ratio scenarios carry ``"ratio"``). A module may also expose
``SCENARIOS`` (name -> function of the same shape) so one of its scenarios can run alone. Modules are
imported only when their scenario runs, so the command starts fast and one broken module cannot stop
the others.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, TextIO

from invoice_sync.connectors.registry import TOOLS

MARKER = ".invoice-sync-bench"
"""Left in the workdir so a later run knows it may wipe it (it never wipes a directory without it)."""


def scenario_names() -> list[str]:
    """Every scenario, in the order a full run takes them."""
    return [
        "overhead",
        *(f"limit_{tool}" for tool in TOOLS),
        "naive",
        "tenants",
        "night",
        "extract",
        "memory",
        "parse",
    ]


def module_of(name: str) -> str:
    """The module that implements scenario ``name``."""
    if name.startswith("limit_") or name == "naive":
        return "invoice_sync_dev.bench.limits"
    return f"invoice_sync_dev.bench.{name}"


# -- targets ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One figure of the table: the field, how the issue states its target, and whether a value meets it
    (``None``: the figure is reported without a target)."""

    field: str
    text: str = ""
    met: Callable[[Any], bool] | None = None


def _calls_target(line: Mapping[str, Any]) -> Target:
    """The tool's own target for calls per invoice (``SANDBOX.bench.calls_target``)."""
    from invoice_sync_dev.sandbox.tools import sandbox_of  # imports the simulators: only for a table

    tool = str(line.get("tool", line["scenario"].removeprefix("limit_")))
    text, at_most = sandbox_of(tool).bench.calls_target
    return Target("calls_per_invoice", text, lambda v: v <= at_most)


def targets(line: Mapping[str, Any]) -> list[Target]:
    """The table's figures for one result line (issue 5, "Targets")."""
    scenario = str(line["scenario"])
    if scenario == "overhead":
        return [
            Target("ms_per_invoice", "< 2", lambda v: v < 2),
            Target("wall_s"),
            Target("startup_s"),
            Target("peak_rss_mb"),
        ]
    if scenario.startswith("limit_"):
        return [
            Target("api_calls"),
            _calls_target(line),
            Target("utilisation", ">= 0.9", lambda v: v >= 0.9),
            Target("http_429", "0", lambda v: v == 0),
        ]
    if scenario == "naive":
        return [Target("ratio", "ours / naive"), Target("api_calls"), Target("ours_api_calls")]
    if scenario == "tenants":
        return [Target("ratio", "<= 1.3", lambda v: v <= 1.3), Target("wall_s")]
    if scenario == "night":
        return [
            Target("error_pct", "|e| <= 15", lambda v: abs(v) <= 15),
            Target("predicted_s"),
            Target("measured_s"),
            Target("predicted_10k_h", "<= 4", lambda v: v <= 4),
            Target("bottleneck_10k"),
        ]
    if scenario == "extract":
        return [Target("ratio", "<= 2", lambda v: v <= 2), Target("query_ms")]
    if scenario == "memory":
        return [Target("ratio", "<= 1.5", lambda v: v <= 1.5), Target("peak_rss_mb")]
    if scenario == "parse":
        return [Target("max_s", "< 0.2", lambda v: v < 0.2), Target("slowest")]
    return [Target(key) for key in line if key != "scenario"]


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    """The figures of ``lines`` beside their targets, one row per figure."""
    rows = [("scenario", "figure", "ours", "target", "verdict")]
    for line in lines:
        label = str(line["scenario"])
        if "tool" in line and not label.endswith(str(line["tool"])):
            label += f" ({line['tool']})"
        if "error" in line or "skipped" in line:
            rows.append((label, "-", "error" if "error" in line else "skipped", "", ""))
            continue
        for target in targets(line):
            if target.field not in line:
                continue
            value = line[target.field]
            verdict = ""
            if target.met is not None and isinstance(value, int | float):
                verdict = "met" if target.met(value) else "MISSED"
            rows.append((label, target.field, _cell(value), target.text, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text.rstrip() for text in rendered)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " / ".join(_cell(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- running ----------------------------------------------------------------------------------------


def prepare_workdir(workdir: Path) -> Path:
    """Empty ``workdir`` for a fresh run; refuse to wipe a directory some earlier bench run did not make."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise RuntimeError(
                f"{workdir} is not empty and was not made by invoice-sync-dev bench; not wiping it"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()
    return workdir


def run_bench(
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    workdir: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> list[dict[str, Any]]:
    """Run the scenarios ``names`` (default: all), printing each result line as it comes; return them.

    A module that does not exist (yet) is skipped with a message; a scenario that raises gets an
    ``error`` line and the others still run.
    """
    from invoice_sync_dev.bench.common import WORKDIR

    chosen = list(names or scenario_names())
    unknown = [name for name in chosen if name not in scenario_names()]
    if unknown:
        raise ValueError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(scenario_names())}"
        )
    chosen = [name for name in scenario_names() if name in chosen]  # the canonical order
    root = prepare_workdir(workdir or WORKDIR)
    lines: list[dict[str, Any]] = []
    whole_module_done: set[str] = set()
    for name in chosen:
        module_name = module_of(name)
        if module_name in whole_module_done:
            continue
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"bench: {name}: skipped, {module_name} does not exist", file=err, flush=True)
            lines.append(_emit(out, {"scenario": name, "skipped": f"{module_name} does not exist"}))
            continue
        function = getattr(module, "SCENARIOS", {}).get(name)
        if function is None:  # the module runs all its scenarios at once
            function = module.run
            whole_module_done.add(module_name)
        print(f"bench: {name}: running{' (quick)' if quick else ''}", file=err, flush=True)
        started = time.monotonic()
        try:
            results = function(root, quick=quick)
        except Exception as exc:
            traceback.print_exc(file=err)
            lines.append(_emit(out, {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        for result in results:
            lines.append(_emit(out, result))
        print(f"bench: {name}: done in {time.monotonic() - started:.1f} s", file=err, flush=True)
    return lines


def _emit(out: TextIO, line: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(line), file=out, flush=True)
    return line


def main(names: Sequence[str] | None = None, *, quick: bool = False, workdir: Path | None = None) -> int:
    """Entry point of ``invoice-sync-dev bench``: 0 unless a scenario could not run."""
    started = time.monotonic()
    results = sys.stdout
    try:
        # Scenarios that run the engine in this process log through Airflow's logging, which writes to
        # stdout: keep stdout for the JSON lines and the table only.
        with contextlib.redirect_stdout(sys.stderr):
            lines = run_bench(names, quick=quick, workdir=workdir, out=results)
    except (RuntimeError, ValueError) as exc:
        print(f"invoice-sync-dev bench: {exc}", file=sys.stderr)
        return 2
    print()
    print(table(lines))
    print(f"\nbench: {len(lines)} result(s) in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 1 if any("error" in line for line in lines) else 0
