"""How Exact Online's answers become typed errors, and the shared rate budget."""

from __future__ import annotations

import json

import pytest
import requests

from invoice_sync.connectors.exact_online.errors import classify, error_text
from invoice_sync.connectors.http import RateBudget, Window, request_never_sent
from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    DataError,
    QuotaExceededError,
    RateLimitedError,
    TransientError,
)

CONTEXT = "Exact Online division 123456"


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (400, "Mandatory: Journal", ConfigError),
        (400, "Verplicht: Dagboek", ConfigError),
        (400, "Invalid: Journal (type)", ConfigError),
        (400, "Invalid reference: VAT code", ConfigError),
        (400, "Ongeldige referentie: Btw-code", ConfigError),
        (400, "Not allowed: VAT code", ConfigError),
        (400, "Invalid: VAT percentage []", ConfigError),
        (400, "Invoer 17: VAT line amount does not match base lines", ConfigError),
        (400, "Not found: Account (x) – G/L Account: Sales", ConfigError),
        (400, "Blocked: Ledger account", ConfigError),
        (400, "Ongeldig grootboekrekeningtype", ConfigError),
        (400, "Mandatory: Payment condition", ConfigError),
        (400, "Niet toegestaan: Wisselkoers", ConfigError),
        (400, "Invalid: Customer (Type)", DataError),
        (400, "Klant werd niet gevonden in Exact", DataError),
        (400, "Invalid: Email []", DataError),
        (400, "Periode is afgesloten: 2025-12", DataError),
        (400, "Unknown: Financial year (Period-date table)", DataError),
        (400, "Already exists – Entry number: 26700001, Journal: 70", DataError),
        (400, "Invalid VAT number", DataError),
        (404, "Not found", DataError),
        (401, "Unauthorized", AuthError),
        (403, "Forbidden", AuthError),
        (400, "Wrong Division", AuthError),
        (500, "Internal server error", TransientError),
        (503, "Service unavailable", TransientError),
    ],
)
def test_classify(status, text, expected):
    error = classify(status, text, context=CONTEXT)
    assert type(error) is expected
    assert error.message.startswith(f"{CONTEXT}: {text}")
    assert error.status == status


def _response(status: int, body: object = None, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = (json.dumps(body) if not isinstance(body, str) else body).encode() if body else b""
    response.headers.update(headers or {})
    response.reason = "Bad Request"
    return response


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (_response(400, {"error": {"code": "", "message": {"lang": "", "value": "Mandatory: Journal"}}}),
         "Mandatory: Journal"),
        (_response(400, {"error": "invalid_grant", "error_description": "The user is not active"}),
         "The user is not active (invalid_grant)"),
        (_response(401, None, {"Reason": "Access Token not expired"}), "Access Token not expired"),
        (_response(502, "<html>bad gateway</html>"), "<html>bad gateway</html>"),
        (_response(400), "Bad Request"),
    ],
)  # fmt: skip
def test_error_text_reads_every_shape(response, expected):
    assert error_text(response) == expected


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def _budget(fake_time: FakeTime, **kwargs) -> RateBudget:
    return RateBudget(label=CONTEXT, sleep=fake_time.sleep, clock=fake_time.clock, margin_s=0, **kwargs)


def test_budget_lets_calls_through_until_the_window_is_spent(fake_time):
    budget = _budget(fake_time)
    budget.acquire()  # nothing known yet
    budget.observe(short=Window(2, fake_time.now + 40), long=Window(100, fake_time.now + 3600))
    budget.acquire()
    budget.acquire()
    assert fake_time.sleeps == []
    budget.acquire()  # counted down to zero locally: waits for the reset instead of provoking a 429
    assert fake_time.sleeps == [40]
    assert budget.waited_s == 40


def test_budget_ignores_a_spent_window_whose_reset_passed(fake_time):
    budget = _budget(fake_time)
    budget.observe(short=Window(0, fake_time.now - 1))
    budget.acquire()
    assert fake_time.sleeps == []


def test_spent_daily_window_raises_quota_exceeded(fake_time):
    budget = _budget(fake_time)
    budget.observe(long=Window(0, fake_time.now + 7200))
    with pytest.raises(QuotaExceededError, match="daily API limit") as caught:
        budget.acquire()
    assert caught.value.resets_at is not None
    assert caught.value.resets_at.timestamp() == pytest.approx(fake_time.now + 7200)


def test_throttled_waits_for_the_minute_or_stops_for_the_day(fake_time):
    budget = _budget(fake_time)
    budget.throttled(short=Window(0, fake_time.now + 12), long=Window(10, fake_time.now + 999))
    assert fake_time.sleeps == [12]
    with pytest.raises(QuotaExceededError):
        budget.throttled(short=Window(0, fake_time.now + 12), long=Window(0, fake_time.now + 999))


def test_a_429_without_a_usable_reset_gets_a_short_breather(fake_time):
    budget = _budget(fake_time)
    budget.throttled(short=Window(0, fake_time.now - 5), long=Window(10, fake_time.now + 999))
    assert fake_time.sleeps == [1.0]
    budget.acquire()  # the window is unknown again, so the next call goes out at once
    assert fake_time.sleeps == [1.0]


def test_too_long_a_wait_is_left_to_airflow(fake_time):
    budget = _budget(fake_time, max_wait_s=60)
    budget.observe(short=Window(0, fake_time.now + 600))
    with pytest.raises(RateLimitedError) as caught:
        budget.acquire()
    assert caught.value.retry_at is not None
    assert fake_time.sleeps == []


def test_request_never_sent_only_for_connect_failures():
    refused = _connection_error("http://127.0.0.1:9/")
    assert request_never_sent(refused)
    assert not request_never_sent(requests.ReadTimeout("read timed out"))
    assert not request_never_sent(requests.ConnectionError("Connection aborted.", "RemoteDisconnected"))
    assert not request_never_sent(requests.exceptions.ChunkedEncodingError("incomplete read"))


def _connection_error(url: str) -> requests.ConnectionError:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError as error:
        return error
    raise AssertionError("port 9 answered")
