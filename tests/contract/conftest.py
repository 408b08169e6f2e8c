"""What every vendor-client contract test starts from: one sandbox server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    """The simulators over real HTTP on a free loopback port; each test resets the one it drives."""
    handle = start_in_thread()
    yield handle
    handle.stop()
