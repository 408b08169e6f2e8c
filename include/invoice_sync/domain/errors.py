"""Typed errors raised by connectors, so the engine and Airflow's retry rules can tell them apart.

The message is always the tool's own text (plus what we know about where it happened), because that is
what a bookkeeper searches for in the tool's help pages.
"""

from __future__ import annotations

from datetime import datetime

from invoice_sync.domain.models import ErrorClass


class SyncError(Exception):
    error_class: ErrorClass = ErrorClass.TRANSIENT

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TransientError(SyncError):
    """Network trouble, 5xx before the tool committed, a minute limit: worth a retry with back-off."""

    error_class = ErrorClass.TRANSIENT


class RateLimitedError(TransientError):
    """The tool's per-minute window is spent; ``retry_at`` says when it opens again."""

    def __init__(self, message: str, *, retry_at: datetime | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_at = retry_at


class OutcomeUnknownError(TransientError):
    """A write was sent but no answer came back (timeout, dropped connection, 5xx after sending).

    Never resend blindly: look the invoice up by our own number first.
    """


class DataError(SyncError):
    """The tool refused this invoice or customer; it must be fixed before it is sent again."""

    error_class = ErrorClass.DATA


class ConfigError(SyncError):
    """The integration's settings or mappings do not fit the tool (journal, VAT code, GL account)."""

    error_class = ErrorClass.CONFIG


class AuthError(SyncError):
    """The connection must be re-authorised (refresh token dead, access withdrawn)."""

    error_class = ErrorClass.AUTH


class QuotaExceededError(SyncError):
    """The tool's daily budget is spent; what is left waits for the next run (deferred, not failed)."""

    error_class = ErrorClass.QUOTA

    def __init__(self, message: str, *, resets_at: datetime | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.resets_at = resets_at


class LeaseLostError(Exception):
    """Another run took over this integration: stop at once, push and write nothing more."""
