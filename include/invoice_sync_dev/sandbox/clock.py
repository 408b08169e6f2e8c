"""Sandbox time: a UTC clock that may run faster than the wall clock.

Per-minute and per-day rate limits and 10-minute token lifetimes are too slow to exercise in tests at
real speed. The simulators read time only from a :class:`SandboxClock`; with ``time_scale=60`` a sandbox
minute passes in one real second. Anything a client sees as an absolute instant (rate-limit reset
headers) is converted back into real-world epoch milliseconds, so a client needs no knowledge of the scale.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SandboxClock:
    """UTC time running ``time_scale`` times faster than real time from the moment it was created.

    ``start`` lets a restarted sandbox continue from where a saved state left off, so tokens issued in
    an earlier (possibly faster) run never appear to be issued in the future.
    """

    def __init__(self, time_scale: float = 1.0, *, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = float(time_scale)
        self._real_start = time.time()
        self._sandbox_start = start if start is not None else datetime.fromtimestamp(self._real_start, UTC)

    def now(self) -> datetime:
        """The current sandbox instant (timezone-aware, UTC)."""
        elapsed_real = time.time() - self._real_start
        return self._sandbox_start + timedelta(seconds=elapsed_real * self.time_scale)

    def to_real_epoch_ms(self, sandbox_dt: datetime) -> int:
        """The real-world UTC epoch milliseconds at which ``sandbox_dt`` will occur (or occurred)."""
        sandbox_offset = (sandbox_dt - self._sandbox_start).total_seconds()
        return int((self._real_start + sandbox_offset / self.time_scale) * 1000)

    def sandbox_seconds_to_real(self, seconds: float) -> float:
        """How many real seconds ``seconds`` of sandbox time take."""
        return seconds / self.time_scale
