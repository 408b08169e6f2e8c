"""The registry is the one list of tools: no other tracked file types out two or more tool names as a list.

Adding a tool must be its connector package, its simulator module and one line in
``invoice_sync/connectors/registry.py``; a list of tool names anywhere else is a place the new tool would be
forgotten. The checker reads Python files as syntax (lists, tuples, sets, dict keys and keyword arguments
whose string literals name two or more registered tools, ``for``/``in`` over such a tuple included) and
other text files (shell, Makefile, YAML, TOML, Markdown) line by line (two or more tool names as words on
one line). Per-integration data (``tool="yuki"`` in a record) names one tool per record and is not a list.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path

import pytest

from invoice_sync.airflow import pools
from invoice_sync.config import PROJECT_ROOT
from invoice_sync.connectors.registry import DESCRIPTORS, TOOLS
from invoice_sync_dev.sandbox.tools import sandbox_tools

REGISTRY = "include/invoice_sync/connectors/registry.py"
TEXT_SUFFIXES = (".sh", ".yaml", ".yml", ".toml", ".md")


def _names_in(nodes: Iterable[ast.expr | None], tools: frozenset[str]) -> set[str]:
    return {n.value for n in nodes if isinstance(n, ast.Constant) and n.value in tools}


def python_lists(source: str, tools: frozenset[str]) -> list[int]:
    """Lines of ``source`` with a literal collection naming two or more of ``tools``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            names = _names_in(node.elts, tools)
        elif isinstance(node, ast.Dict):
            names = _names_in(node.keys, tools)
        elif isinstance(node, ast.Call):
            names = {keyword.arg for keyword in node.keywords if keyword.arg in tools}
        else:
            continue
        if len(names) >= 2:
            found.append(node.lineno)
    return sorted(set(found))


def text_lists(text: str, tools: frozenset[str]) -> list[int]:
    """Lines of ``text`` that name two or more of ``tools`` as words."""
    patterns = [re.compile(rf"(?<![\w-]){re.escape(tool)}(?![\w-])") for tool in tools]
    return [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if sum(1 for pattern in patterns if pattern.search(line)) >= 2
    ]


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(set(listed))


def violations(tools: frozenset[str]) -> list[str]:
    found = []
    for path in tracked_files():
        file = PROJECT_ROOT / path
        if path == REGISTRY or not file.is_file():
            continue
        if path.endswith(".py"):
            lines = python_lists(file.read_text(), tools)
        elif path.endswith(TEXT_SUFFIXES) or Path(path).name == "Makefile":
            lines = text_lists(file.read_text(errors="replace"), tools)
        else:
            continue
        found += [f"{path}:{line}" for line in lines]
    return found


def test_no_file_but_the_registry_lists_tools() -> None:
    assert len(TOOLS) >= 2, "the check needs two tools to mean anything"
    assert violations(frozenset(TOOLS)) == [], "derive these from invoice_sync.connectors.registry"


@pytest.mark.parametrize(
    "snippet",
    [
        'TOOLS = ("exact_online", "yuki")',
        'MOUNTS = {"yuki": "/yuki", "xero": "/xero"}',
        "for tool in ['twinfield', 'quickbooks']:\n    pass",
        'if tool in {"exact_online", "xero"}:\n    pass',
        "limits = dict(yuki=1, quickbooks=2)",
    ],
)
def test_the_checker_finds_a_typed_out_list(snippet: str) -> None:
    assert python_lists(f"x = 1\n{snippet}\n", frozenset(TOOLS)) == [2]


def test_the_checker_leaves_single_tools_and_text_alone() -> None:
    tools = frozenset(TOOLS)
    assert python_lists('tool = "yuki"\nrecord = dict(tool="xero", conn_id="x")\n', tools) == []
    assert text_lists("for conn in exact_online yuki; do\n", tools) == [1]
    assert text_lists("exact_online_demo and yuki-like words\n", tools) == []


@pytest.mark.parametrize("descriptor", DESCRIPTORS, ids=[d.name for d in DESCRIPTORS])
def test_every_tool_has_a_simulator_a_pool_and_a_dag_group(descriptor: object) -> None:
    """The conventions the derived places rely on: ``invoice_sync_dev.sandbox.<name>.SANDBOX`` describes
    the tool (with its demo connection on the tool's own connection type), and the pools include it."""
    name = descriptor.name  # type: ignore[attr-defined]  # parametrized as object, a ToolDescriptor
    sandbox = import_module(f"invoice_sync_dev.sandbox.{name}").SANDBOX
    assert sandbox.descriptor is descriptor and sandbox in sandbox_tools()
    assert sandbox.connection("http://sandbox")["conn_type"] == descriptor.conn_type  # type: ignore[attr-defined]  # parametrized as object, a ToolDescriptor
    assert sandbox.mount.startswith("/")
    assert pools.pool_name(name) in pools.pools()
    # The DAGs' task group per tool: tests/dags/test_dag_integrity.py checks one per registered tool.
