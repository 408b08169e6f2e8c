"""Faithful local simulators of the accounting tools' APIs.

The real APIs cannot be reached from development machines or CI, so every connector is built and tested
against a simulator that reproduces what matters for correctness: the URLs, the OAuth flow with expiring
access tokens and rotating refresh tokens, payload validation with the tool's own error texts, booking
numbers, lookups, rate limits with the real headers, and injectable faults (latency, 5xx, 429, timeouts,
a commit followed by a dropped connection).

One server process hosts every tool under its own path prefix (see :mod:`.server`); Exact Online lives at
``/exact``. A :class:`~.clock.SandboxClock` with a time scale makes per-minute and per-day limits and token
lifetimes testable in seconds.
"""
