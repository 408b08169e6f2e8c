"""HTTP helpers every connector shares: the rate budget and "was the request ever sent?".

Accounting APIs count calls in a short window (per minute) and a long one (per day) and say so in
response headers. Steady state must never hit a 429 (design invariant 6), so a client waits for the
short window to reopen *before* it calls, and stops the run when the long window is spent: waiting a
day inside a task helps nobody, the rest of the work is deferred to the next run instead.

Writes need one more fact: whether a failed request reached the server. A refused connection means
nothing was sent and the call may be repeated; a read timeout or a dropped connection after sending
means the tool may have booked it, and only a lookup can tell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from invoice_sync.domain.errors import QuotaExceededError, RateLimitedError
from invoice_sync.domain.ports import BudgetLeft, BudgetStore, SharedWindow, TokenSet

__all__ = ["RateBudget", "Window", "epoch_to_datetime", "request_never_sent"]

SHARED_MARGIN_S = 0.15
"""Added to every shared window on top of ``margin_s``: calls from many processes reach the tool after
delays of their own (a process woken late on a busy machine, the network), which a minute shortened for
a time-scaled sandbox does not shorten. A tool that opens its window with the first call it sees would
otherwise count the next window's first calls in the previous one."""


@dataclass(slots=True)
class Window:
    """What the tool last said about one rate-limit window.

    ``None`` means "not told yet": the budget then lets the call through and learns from its answer.
    """

    remaining: int | None = None
    resets_at: float | None = None
    """UTC epoch seconds at which ``remaining`` is refilled."""

    def spent(self, now: float, cost: int = 1) -> bool:
        """Whether a call costing ``cost`` units must wait for (or give up on) this window."""
        return self.remaining is not None and self.remaining < cost and self._open_until(now)

    def _open_until(self, now: float) -> bool:
        # Without a reset time a spent window stays spent: better to stop than to hammer the tool.
        return self.resets_at is None or self.resets_at > now


class RateBudget:
    """Call budget of one rate-limited scope (for Exact Online: one app and one division).

    The connector reports the headers of every response with :meth:`observe`; before each call it asks
    :meth:`acquire`, which sleeps until a spent short window reopens and raises
    :class:`~invoice_sync.domain.errors.QuotaExceededError` when the long window is spent. The budget
    also counts calls down locally between answers, so threads sharing it do not overshoot while their
    answers are still in flight. It is thread-safe.

    :param label: context for error messages, e.g. ``"Exact Online division 123456"``.
    :param sleep: how to wait (injectable so tests need not wait for real).
    :param clock: current UTC time as epoch seconds.
    :param max_wait_s: longest wait for the short window; a longer one (clock skew, a misreported
        reset) raises :class:`~invoice_sync.domain.errors.RateLimitedError` so Airflow retries later.
    :param margin_s: extra wait after the announced reset, for the difference between the clocks.
    :param short_limit: for a tool that sends no rate-limit headers, the size of the short window
        (units per ``short_period_s``), counted down locally; with headers, leave it None.
    :param long_limit: the same for the long (daily) window of ``long_period_s``.
    :param shared: windows other processes spend too (a Twinfield client id's credits, a Xero app's
        minute), reserved in ``store`` before each call on top of the local view; each is lengthened by
        ``margin_s`` like a local wait. The tool's headers still correct the local windows.
    :param store: where ``shared`` windows are counted; None counts every window in this process only.
    """

    def __init__(
        self,
        *,
        label: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_wait_s: float = 90.0,
        margin_s: float = 0.05,
        short_limit: int | None = None,
        short_period_s: float = 60.0,
        long_limit: int | None = None,
        long_period_s: float = 86_400.0,
        shared: Sequence[SharedWindow] = (),
        store: BudgetStore | None = None,
    ) -> None:
        self.label = label
        self._limits = ((short_limit, short_period_s), (long_limit, long_period_s))
        self.short = Window()
        self.long = Window()
        self._sleep = sleep
        self._clock = clock
        self._max_wait_s = max_wait_s
        self._margin_s = margin_s
        self._shared = tuple(shared) if store is not None else ()
        self._store = store
        self._lock = threading.Lock()
        self.waited_s = 0.0
        """Total time spent waiting for the short window (for run statistics)."""

    def observe(self, *, short: Window | None = None, long: Window | None = None) -> None:
        """Record what the tool's latest answer said; windows it did not mention keep their state."""
        with self._lock:
            if short is not None and short.remaining is not None:
                self.short = short
            if long is not None and long.remaining is not None:
                self.long = long

    def left(self) -> BudgetLeft:
        """What each window may still spend as far as this budget knows, without waiting or asking.

        A window that has passed counts as full where its size is known locally, and as unknown where
        only the tool's next answer will tell.
        """
        with self._lock:
            now = self._clock()
            (short_limit, _), (long_limit, _) = self._limits
            return BudgetLeft(
                short=_left_in(self.short, short_limit, now), long=_left_in(self.long, long_limit, now)
            )

    def acquire(self, cost: int = 1) -> None:
        """Take ``cost`` units (one call, or a tool's credits) from the budget, waiting for the short
        window if it has fewer left.

        :raises QuotaExceededError: the long (daily) window is spent.
        :raises RateLimitedError: the short window would take longer than ``max_wait_s`` to reopen.
        """
        with self._lock:
            self._refill(self._clock())
            self._check_long(cost)
            now = self._clock()
            if self.short.spent(now, cost):
                self._wait_for_short(now)
                self._refill(self._clock())
            for window in (self.short, self.long):
                if window.remaining is not None:
                    window.remaining -= cost
            self._reserve_shared(cost)

    def _reserve_shared(self, cost: int) -> None:
        """Reserve ``cost`` in every shared window, then wait (through the injected ``sleep``, which
        renews the run's claim) until the latest of them opens.

        A refusal leaves what earlier windows reserved: spent for nothing, never overspent.
        """
        if self._store is None:
            return
        wait = 0.0
        for window in self._shared:
            padded = SharedWindow(
                window.key, window.limit, window.period_s + self._margin_s + SHARED_MARGIN_S, window.daily
            )
            reservation = self._store.reserve(padded, cost, max_wait_s=self._max_wait_s)
            if not reservation.granted:
                reopens = epoch_to_datetime(self._clock() + reservation.wait_s)
                if window.daily:
                    raise QuotaExceededError(
                        f"{self.label}: the daily API limit shared by {window.key} is used up; "
                        "the rest waits for the next run",
                        resets_at=reopens,
                    )
                raise RateLimitedError(
                    f"{self.label}: the API limit shared by {window.key} is used up for "
                    f"{reservation.wait_s:.0f} s, longer than a task waits",
                    retry_at=reopens,
                )
            wait = max(wait, reservation.wait_s)
        if wait > 0:
            self._pause(wait)

    def _refill(self, now: float) -> None:
        """Open a fresh window where the tool's limit is known locally and the last one has passed."""
        (short_limit, short_period), (long_limit, long_period) = self._limits
        if short_limit is not None and _passed(self.short, now):
            self.short = Window(short_limit, now + short_period)
        if long_limit is not None and _passed(self.long, now):
            self.long = Window(long_limit, now + long_period)

    def throttled(self, *, short: Window | None = None, long: Window | None = None) -> None:
        """Handle a 429 the budget did not foresee: stop for a spent long window, else wait it out.

        The caller repeats the refused call afterwards (a 429 means nothing was done).
        """
        self.observe(short=short, long=long)
        with self._lock:
            self._check_long()
            self._wait_for_short(self._clock())

    def _check_long(self, cost: int = 1) -> None:
        if self.long.spent(self._clock(), cost):
            resets_at = epoch_to_datetime(self.long.resets_at)
            when = f" until {resets_at.isoformat()}" if resets_at else ""
            raise QuotaExceededError(
                f"{self.label}: the daily API limit is used up{when}; the rest waits for the next run",
                resets_at=resets_at,
            )

    def _wait_for_short(self, now: float) -> None:
        resets_at = self.short.resets_at
        # Refused without being told when to come back (or a reset already past): a short breather.
        delay = resets_at - now + self._margin_s if resets_at is not None and resets_at > now else 1.0
        if delay > self._max_wait_s:
            raise RateLimitedError(
                f"{self.label}: the per-minute API limit is used up and reopens only in {delay:.0f} s",
                retry_at=epoch_to_datetime(resets_at),
            )
        self._pause(delay)
        # The window reopened; its new size is learnt from the next answer.
        self.short = Window()

    def _pause(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleep(seconds)


def _passed(window: Window, now: float) -> bool:
    return window.remaining is None or (window.resets_at is not None and window.resets_at <= now)


def _left_in(window: Window, limit: int | None, now: float) -> int | None:
    if _passed(window, now):
        return limit
    assert window.remaining is not None  # a window that has not passed has been told its remaining
    return max(window.remaining, 0)


def epoch_to_datetime(epoch_s: float | None) -> datetime | None:
    """UTC datetime of an epoch in seconds, or ``None``."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def request_never_sent(exc: requests.RequestException) -> bool:
    """Whether ``exc`` happened before the request reached the server, so repeating it is safe.

    True only for a refused or timed-out *connect* (and DNS failures, which surface the same way);
    a read timeout, a reset or a dropped connection mid-answer may come after the server acted.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def mask_tokens(tokens: TokenSet) -> None:
    """Register fresh OAuth tokens with Airflow's secrets masker.

    Airflow masks what it knows to be secret (connection passwords and sensitive extras); tokens a
    connector obtains at run time are new to it, so every connector hands them over before any log line
    could carry one.
    """
    from airflow.sdk.log import mask_secret

    mask_secret(tokens.access_token)
    mask_secret(tokens.refresh_token)
