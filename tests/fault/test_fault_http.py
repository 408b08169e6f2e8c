"""Faults on the wire: the tool down, 5xx, timeouts before and after the tool committed, dropped and
garbled answers, 429 bursts, access tokens expiring mid-run. Each ends with the exactly-once invariants
after the faulty run and at most one more."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from world import LEASE_S, statuses

from invoice_sync.store import claims
from invoice_sync.store.models import ClaimRow


def _create(world, kind: str, times: int | None = 2, **extra):
    return world.harness.create_rule(kind, times=times, **extra)


def _wait_for_bookings(world, count: int, timeout_s: float = 20.0) -> int:
    """Wait until the tool has booked at least ``count`` invoices; return how many it has."""
    deadline = time.monotonic() + timeout_s
    while (booked := sum(world.harness.bookings().values())) < count:
        assert time.monotonic() < deadline, "the run did not get that far"
        time.sleep(0.02)
    return booked


def test_tool_down_is_transient_and_the_next_run_books_all(make_world):
    """Connection refused, before and in the middle of a run: the run fails as transient, nothing is lost,
    and once the tool is back the next run books everything (the interrupted POST by lookup, not twice)."""
    world = make_world(persistent=True)
    world.harness.set_faults([_create(world, "latency", times=None, delay_s=0.15)])
    result: dict = {}
    running = threading.Thread(target=lambda: result.update(world.sync()))
    running.start()
    _wait_for_bookings(world, 3)
    world.harness.stop()  # the tool goes down mid-batch
    running.join(timeout=30)
    (outcome,) = result.values()
    assert outcome["status"] == "error" and outcome["error_type"] in {"TransientError", "OutcomeUnknownError"}

    booked_before = world.harness.bookings()
    down = world.sync()  # a retry while the tool is still down
    (outcome,) = down.values()
    assert (outcome["status"], outcome["error_type"]) == ("error", "TransientError")
    assert "ConnectionError" in outcome["error"]

    world.harness.restart()
    assert world.harness.bookings() == booked_before  # the books survived; nothing was sent meanwhile
    world.converge()


FAULTS = {
    # name: (rules on the create call, what the first run's outcome must be)
    "5xx_before_commit": [{"kind": "status", "status": 503}],
    "500_before_commit": [{"kind": "status", "status": 500, "times": 1}],
    "timeout_before_commit": [{"kind": "timeout", "delay_s": 3.0, "times": 1}],
    "commit_then_timeout": [{"kind": "commit_then_timeout", "delay_s": 3.0}],
    "commit_then_drop": [{"kind": "commit_then_drop"}],
    "malformed": [{"kind": "malformed"}],
    # a batch tool books the first part of the call, then the answer is lost (a single invoice: all of it)
    "partial_commit_then_drop": [{"kind": "partial_commit_then_drop"}],
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_lost_or_refused_answer_never_books_twice(world, fault):
    """The tool answers 5xx before committing, or commits and the answer is lost (timeout, dropped
    connection, truncated JSON): the outcome is unknown, settled by lookup, never by sending again."""
    world.harness.set_faults([_create(world, **{"times": 2, **rule}) for rule in FAULTS[fault]])
    first = world.sync()
    assert statuses(first) == {"ok"}, first
    assert world.harness.fault_hits()[FAULTS[fault][0]["kind"]] >= 1
    world.converge()


def test_a_fault_storm_on_writes_and_lookups(world):
    """Every kind at once, at random (seeded), on the create call and on the lookups: the first run may
    stop (a lookup failing three times is transient); the next one converges."""
    create, lookup = world.harness.create_path, world.harness.lookup_path
    method = world.harness.create_method
    rules = [
        {"kind": kind, "method": method, "path": create, "probability": 0.3, "delay_s": 1.5}
        for kind in ("commit_then_drop", "malformed", "commit_then_timeout", "timeout")
    ]
    rules += [{"kind": "status", "status": 502, "method": method, "path": create, "probability": 0.2}]
    lookup_method = world.harness.lookup_method
    rules += [{"kind": "status", "status": 503, "method": lookup_method, "path": lookup, "probability": 0.2}]
    world.harness.set_faults(rules)
    first = world.sync(batch_size=3)
    assert statuses(first) <= {"ok", "error"}
    assert sum(world.harness.fault_hits().values()) >= 2
    world.converge()


def test_429_bursts_are_waited_out_and_lose_nothing(make_world):
    """Bursts of 429 on the create call: the client waits for the announced window each time (no extra
    429 from the real limit, and the time waited adds up), and every invoice is booked once."""
    world = make_world(time_scale=30)  # a sandbox minute lasts two seconds
    minute_s = 60 / 30
    limit = world.harness.minute_limit(12)  # the budget must also pace itself to the real limit
    if limit is None:
        pytest.skip(f"{world.harness.tool} documents no per-minute limit or 429")
    world.harness.configure(**limit)
    world.harness.set_faults([_create(world, "rate_limit", times=3)])
    started = time.monotonic()
    first = world.sync(lease_s=LEASE_S)  # each wait outlasts the lease: waiting renews it
    elapsed = time.monotonic() - started
    assert statuses(first) == {"ok"}, first
    assert world.harness.fault_hits()["rate_limit"] == 3
    # only the injected 429s: the limiter never had to refuse a call
    assert world.harness.rate_limited() == 3
    # after the first 429 a new window had just opened, so the 2nd and 3rd waits were (almost) full ones
    assert elapsed >= 2 * minute_s * 0.9
    world.check()


def test_a_429_burst_longer_than_the_client_waits_is_retried_by_the_next_run(make_world):
    """The client waits out a few 429s (each wait longer than the lease, which waiting renews), then
    gives up with a rate-limit error; the next run books everything once."""
    world = make_world(time_scale=30)
    world.harness.set_faults([_create(world, "rate_limit", times=5)])
    first = world.sync(lease_s=LEASE_S)
    (outcome,) = first.values()
    assert (outcome["status"], outcome["error_type"]) == ("error", "RateLimitedError")
    world.converge()


def test_a_claim_taken_while_waiting_out_429s_ends_the_wait_not_in_a_post(make_world):
    """Waiting renews the lease, and so checks it: when a retry took the integration over while the run
    waited (it looked hung), the run stops at its next renewal instead of repeating the POST."""
    world = make_world(time_scale=30)
    if world.harness.minute_limit(12) is None:
        pytest.skip(f"{world.harness.tool} documents no per-minute limit or 429")
    world.harness.set_faults([_create(world, "rate_limit", times=None)])  # every create call: 429
    result: dict = {}
    running = threading.Thread(target=lambda: result.update(world.sync(lease_s=LEASE_S)))
    running.start()
    deadline = time.monotonic() + 20
    while world.harness.fault_hits().get("rate_limit", 0) < 1:
        assert time.monotonic() < deadline, "the run never reached its first create call"
        time.sleep(0.01)
    with Session(world.store.engine) as session, session.begin():
        session.execute(update(ClaimRow).values(lease_expires_at=claims.utcnow() - timedelta(seconds=1)))
    thief = claims.acquire(world.store.engine, world.primary, "retry#try2")
    hits_at_takeover = world.harness.fault_hits()["rate_limit"]
    running.join(timeout=60)
    assert not running.is_alive()
    (outcome,) = result.values()
    assert (outcome["status"], outcome["error_type"]) == ("lease_lost", "LeaseLostError")
    # Without the check while waiting the client would go on to its last try; at most a POST that had
    # already left when the claim was taken reached the tool.
    assert world.harness.fault_hits()["rate_limit"] <= hits_at_takeover + 1
    assert sum(world.harness.bookings().values()) == 0
    claims.release(world.store.engine, thief)
    world.converge()


def test_a_day_quota_running_out_defers_the_rest_and_the_next_day_books_it(world):
    """The tool's daily quota runs out in the middle of a run: what was sent is booked, the rest is
    deferred (not failed), and the run after the quota is renewed books exactly the deferred ones."""
    limit = world.harness.day_limit(3)
    if limit is None:
        pytest.skip(f"{world.harness.tool} documents no daily quota")
    world.harness.configure(**limit)
    first = world.sync(batch_size=2)
    assert statuses(first) == {"ok"}, first  # a spent quota is not a failure of the run
    (report,) = [r["report"] for r in first.values()]
    assert report["deferred"] > 0 and report["booked"] > 0, report
    booked_before = sum(world.harness.bookings().values())
    assert booked_before == report["booked"]
    world.harness.configure(**world.harness.day_limit(None))  # a new day
    world.converge()


def test_access_tokens_expiring_mid_run(world):
    """The tool expires every access token twice during the batch: the client refreshes (rotating the
    refresh token through the vault) and goes on; nothing fails, nothing is booked twice."""
    world.harness.set_faults([_create(world, "latency", times=None, delay_s=0.1)])
    expired: list[int] = []

    def expire_twice() -> None:
        # after the first bookings, and again once more were booked (with the token got meanwhile);
        # for a batch API "more" comes a whole batch later
        booked = _wait_for_bookings(world, 2)
        expired.append(world.harness.expire_tokens())
        _wait_for_bookings(world, booked + 1)
        expired.append(world.harness.expire_tokens())

    expiring = threading.Thread(target=expire_twice)
    expiring.start()
    first = world.sync()
    expiring.join(timeout=30)
    assert statuses(first) == {"ok"}, first
    assert expired == [1, 1]  # one live token each time, and it was replaced
    assert world.harness.token_refreshes() == 3
    world.check()


def test_lease_env_var_sets_the_task_lease(monkeypatch):
    from invoice_sync.airflow import runtime
    from invoice_sync.store.claims import DEFAULT_LEASE

    monkeypatch.delenv(runtime.LEASE_ENV, raising=False)
    assert runtime.lease_length() == DEFAULT_LEASE
    monkeypatch.setenv(runtime.LEASE_ENV, str(LEASE_S))
    assert runtime.lease_length().total_seconds() == LEASE_S
    monkeypatch.setenv(runtime.LEASE_ENV, "0")
    with pytest.raises(ValueError, match=runtime.LEASE_ENV):
        runtime.lease_length()
