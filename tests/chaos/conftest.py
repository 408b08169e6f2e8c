"""The chaos session's own marker (the suite runs with ``--strict-markers``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: real DAG runs under random faults (about a minute)")
