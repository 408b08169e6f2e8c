"""The layering of DESIGN.md section 2, checked on the import statements themselves.

Data flows store -> engine -> connector and back through the engine; the domain has no Airflow and no
I/O; the runtime package never reaches into the development package. A violation is named by file and
line, so a reviewer sees the one import that crossed a line rather than a vague architecture complaint.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

INCLUDE = Path(__file__).resolve().parents[1] / "include"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    # No Airflow, no database, no HTTP, no XML, no other layer: rules and ports only.
    "invoice_sync/domain": (
        "airflow",
        "sqlalchemy",
        "requests",
        "lxml",
        "pandas",
        "invoice_sync.store",
        "invoice_sync.engine",
        "invoice_sync.connectors",
        "invoice_sync.airflow",
    ),
    # The store speaks SQL only: no connector (its ports are the domain's), no HTTP, no Airflow.
    "invoice_sync/store": ("airflow", "requests", "invoice_sync.connectors", "invoice_sync.engine"),
    # The engine is tool-independent: it books through the Connector port, never a tool's module.
    "invoice_sync/engine": ("airflow", "requests", "invoice_sync.connectors", "invoice_sync.airflow"),
    # Connectors never touch the database.
    "invoice_sync/connectors": ("sqlalchemy", "invoice_sync.store", "invoice_sync.engine"),
    # Nothing shipped imports the development package (simulators, demo, bench, chaos).
    "invoice_sync": ("invoice_sync_dev",),
}


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def crossings(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((INCLUDE / layer).rglob("*.py")):
        for line, module in imports_of(path):
            if any(module == name or module.startswith(name + ".") for name in forbidden):
                found.append(f"{path.relative_to(INCLUDE)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert (INCLUDE / layer).is_dir()
    assert not crossings(layer, FORBIDDEN[layer])


def test_the_check_sees_an_import_that_crosses(tmp_path: Path) -> None:
    module = tmp_path / "crossing.py"
    module.write_text("from invoice_sync.connectors.base import HookConnector\nimport airflow.sdk\n")
    assert [name for _, name in imports_of(module)] == ["invoice_sync.connectors.base", "airflow.sdk"]
