"""Fixtures shared by the whole suite: a sandbox of the accounting APIs on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def sandbox() -> Iterator[object]:
    """A fresh set of accounting-tool simulators over real HTTP on a free loopback port."""
    from invoice_sync.sandbox.server import start_in_thread

    handle = start_in_thread()
    try:
        yield handle
    finally:
        handle.stop()
