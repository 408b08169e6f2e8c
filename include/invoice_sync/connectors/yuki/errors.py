"""Turn Yuki's SOAP faults and per-invoice messages into typed errors (:mod:`invoice_sync.domain.errors`).

Yuki announces problems two ways (reference section 8): a SOAP Fault refuses a whole call (access key,
session, key rights, administration, bundle, daily limit), and a ``Succeeded=false`` invoice result carries
a ``Message`` about that one invoice (tax code, GL account, decimals, duplicate number). The class decides
what happens next: auth means reconnect the integration, config means the accountant fixes the mapping or
Yuki's settings, data means this invoice must change, quota waits for tomorrow. Yuki's own text is always
kept: it is what a bookkeeper searches for in Yuki's help pages.

Faults we do not recognise are not classified here (``None``): on a write the hook then reports the
outcome as unknown, because a fault that is not a known refusal might follow partial processing.
"""

from __future__ import annotations

import re

from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError, SyncError, TransientError
from invoice_sync.domain.models import ErrorClass

_INVALID = re.compile(r"\binvalid\b|\bongeldig", re.IGNORECASE)
_SESSION = re.compile(r"session", re.IGNORECASE)
_CREDENTIALS = re.compile(r"access ?key|api ?key|authenticat", re.IGNORECASE)
_QUOTA = re.compile(r"(daily )?call limit|limit exceeded|too many calls|quota", re.IGNORECASE)
_KEY_RIGHTS = re.compile(r"not allowed for this (access )?key|no rights|service not allowed", re.IGNORECASE)
_ADMINISTRATION = re.compile(
    r"(unknown|invalid) administration|no access to (this|any) administration"
    r"|does not seem to have access to any administration|inactive domain|domain (is )?(disabled|inactive)",
    re.IGNORECASE,
)
_BUNDLE = re.compile(r"bundle|functionality is not available|sales webservice|feature", re.IGNORECASE)
_TRANSIENT = re.compile(r"timeout|timed out|temporarily|try again later|server too busy", re.IGNORECASE)

CONFIG_MESSAGE = re.compile(
    r"tax code|vat ?type|vat code|btw-?code|gl ?account|glaccountcode|ledger account|grootboek",
    re.IGNORECASE,
)
"""Per-invoice texts naming something the integration's mapping decides (VAT type, GL account)."""

DUPLICATE = re.compile(r"already exists|duplicate|already (been )?used|bestaat al|al gebruikt", re.IGNORECASE)
"""Yuki refuses a reference it already holds: an earlier attempt may have booked the invoice."""


def is_session_fault(text: str) -> bool:
    """Whether a fault says the session id is no longer accepted (older than 24 h, closed, unknown)."""
    return bool(_INVALID.search(text) and _SESSION.search(text))


def is_quota_fault(text: str) -> bool:
    return bool(_QUOTA.search(text))


def classify_fault(text: str, *, context: str) -> SyncError | None:
    """The typed error for a SOAP fault Yuki raises before processing anything, or None when unknown.

    :param text: Yuki's ``faultstring``.
    :param context: where it happened, e.g. ``"Yuki administration Demo Yuki BV"``.
    """
    message = f"{context}: {text}"
    if is_quota_fault(text):
        return QuotaExceededError(f"{message} (the domain's web service calls for today are used up)")
    if _KEY_RIGHTS.search(text):
        return ConfigError(f"{message} (give the access key the right to this web service in Yuki)")
    if _ADMINISTRATION.search(text):
        return ConfigError(f"{message} (check the administration in the integration's settings)")
    if _BUNDLE.search(text):
        return ConfigError(f"{message} (the administration's Yuki subscription lacks the Sales web service)")
    if _INVALID.search(text) and (_SESSION.search(text) or _CREDENTIALS.search(text)):
        return AuthError(f"{message} (reconnect the integration with a valid Yuki web service access key)")
    if _TRANSIENT.search(text):
        return TransientError(message)
    return None


def invoice_error_class(message: str) -> ErrorClass:
    """The class of one invoice's refusal: config for mapping problems, data for everything else."""
    if not DUPLICATE.search(message) and CONFIG_MESSAGE.search(message):
        return ErrorClass.CONFIG
    return ErrorClass.DATA
