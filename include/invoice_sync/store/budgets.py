"""Rate windows that several processes spend together, reserved atomically in Redis or the database.

A vendor counts some windows across everything one integrator runs: Twinfield's credits per client id,
Xero's app-wide minute (reference ``README.md``, "limits" column; ``twinfield.md`` and ``xero.md``). A pool
of workers spends such a window from many processes at once, so counting it in each process overspends
it. A :class:`~invoice_sync.domain.ports.BudgetStore` keeps one row per window (its key names the
vendor's scope) and hands out units in one atomic step.

Fairness: a claim does not *try* and retry; it *reserves* units in the earliest window that still has
room, in the order the claims reach the store, and learns how long to wait before spending them. A
waiting tenant therefore holds its place: a tenant that keeps calling queues behind it instead of
grabbing the reopened window first (a FIFO queue per window without a queue to keep). The price: units
reserved by a process that dies before calling are lost for that window, which only makes us slower,
never over the limit. A reservation further ahead than the caller may wait is refused and reserves
nothing.

No Airflow here; which store a task uses is chosen in :mod:`invoice_sync.airflow.budgets`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from invoice_sync.domain.ports import Reservation, SharedWindow
from invoice_sync.store.models import RateWindowRow

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBudgetStore", "SqlBudgetStore"]


def _next_state(
    start: float | None, used: int, now: float, window: SharedWindow, cost: int, max_wait_s: float
) -> tuple[Reservation, float, int]:
    """The one rule both stores apply inside their atomic step: (answer, new start, new used).

    A window opens with the first claim after the previous one ended (the way Twinfield's simulator and
    a client counting for itself see a minute); a full window passes the claim on to the next one.
    """
    if cost > window.limit:
        raise ValueError(f"{window.key}: a claim of {cost} can never fit a window of {window.limit}")
    if start is None or now >= start + window.period_s:
        start, used = now, 0
    if used + cost <= window.limit:
        return Reservation(True, max(0.0, start - now)), start, used + cost
    following = start + window.period_s
    if following - now > max_wait_s:
        return Reservation(False, following - now), start, used
    return Reservation(True, following - now), following, cost


class SqlBudgetStore:
    """Windows as rows of ``sync_rate_windows`` in the invoicing database (PostgreSQL or SQLite).

    Each claim is one transaction that first *writes* the row (a no-op update), so the row lock
    (PostgreSQL) or the database's write lock (SQLite, which would otherwise fail two readers that both
    try to upgrade) is held before the row is read: read-compute-write cannot interleave.

    :param clock: epoch seconds; every process on the machines of one installation must agree on it
        (NTP), since the rows hold absolute instants.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._table = cast(sa.Table, RateWindowRow.__table__)

    def reserve(self, window: SharedWindow, cost: int, *, max_wait_s: float) -> Reservation:
        table = self._table
        key = table.c.key == window.key
        for _ in range(2):  # the second pass only after another process created the row first
            with self._engine.begin() as conn:
                locked = conn.execute(sa.update(table).where(key).values(used=table.c.used))
                if locked.rowcount == 0:
                    try:
                        conn.execute(sa.insert(table).values(key=window.key, start=None, used=0))
                    except IntegrityError:
                        continue
                row = conn.execute(sa.select(table.c.start, table.c.used).where(key)).one()
                answer, start, used = _next_state(
                    row.start, row.used, self._clock(), window, cost, max_wait_s
                )
                if answer.granted:
                    conn.execute(sa.update(table).where(key).values(start=start, used=used))
                return answer
        raise RuntimeError(f"{window.key}: the rate window's row could not be created")  # pragma: no cover


# KEYS[1] the window; ARGV limit, period, cost, max_wait. Redis' own clock (TIME) dates the claim, so
# processes on different machines need not agree on the time. Answers are strings: Lua numbers would
# come back as integers.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = tonumber(redis.call('HGET', KEYS[1], 'start'))
local used = tonumber(redis.call('HGET', KEYS[1], 'used')) or 0
if start == nil or now >= start + period then start = now; used = 0 end
local wait = 0
if used + cost <= limit then
  used = used + cost
  if start > now then wait = start - now end
else
  start = start + period
  wait = start - now
  if wait > max_wait then return {0, string.format('%.6f', wait)} end
  used = cost
end
redis.call('HSET', KEYS[1], 'start', string.format('%.6f', start), 'used', used)
redis.call('PEXPIRE', KEYS[1], math.ceil((start - now + period) * 1000) + 1000)
return {1, string.format('%.6f', wait)}
"""


class RedisBudgetStore:
    """Windows as Redis hashes, each claim one Lua script (atomic: Redis runs one script at a time).

    The script applies the same rule as :class:`SqlBudgetStore` (``_next_state``); a hash expires one
    window after its last reservation, so idle scopes leave nothing behind.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "invoice_sync:rate:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_RESERVE_LUA)

    def reserve(self, window: SharedWindow, cost: int, *, max_wait_s: float) -> Reservation:
        if cost > window.limit:
            raise ValueError(f"{window.key}: a claim of {cost} can never fit a window of {window.limit}")
        granted, wait = self._script(
            keys=[self._prefix + window.key], args=[window.limit, window.period_s, cost, max_wait_s]
        )
        return Reservation(bool(int(granted)), float(wait))
