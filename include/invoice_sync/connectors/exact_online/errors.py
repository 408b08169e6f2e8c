"""Turn Exact Online's error answers into the typed errors of :mod:`invoice_sync.domain.errors`.

The class decides what happens next (design section 4): a config error means the accountant must
change the integration's mapping (journal, VAT code, G/L account, payment condition, currency), a data
error means this invoice or customer must be fixed, and neither is ever retried, because Exact blocks
an app key that sends more than 10 failing calls an hour to one endpoint. Exact's own text is always
kept: it is what a bookkeeper searches for in Exact's help pages.
"""

from __future__ import annotations

import re

import requests

from invoice_sync.domain.errors import AuthError, ConfigError, DataError, SyncError, TransientError

# Texts (EN and NL) naming something the integration's settings decide. Reference section 10.
_CONFIG_PATTERNS = re.compile(
    r"journal|dagboek"
    r"|vat code|btw-code|btw code|vat percentage|btw-percentage|vat line amount"
    r"|g/l account|gl account|ledger account|grootboek|mandatory: account\b|verplicht: rekening\b"
    r"|payment condition|betalingsconditie|vervaldatum"
    r"|wisselkoers|exchange rate",
    re.IGNORECASE,
)
# Texts that mean the user's authorisation no longer covers the call, whatever the status code.
_AUTH_PATTERNS = re.compile(r"wrong division|verkeerde administratie", re.IGNORECASE)

ALREADY_EXISTS = re.compile(r"already exists|in gebruik", re.IGNORECASE)
"""Exact refuses a second entry with the same number: an earlier attempt may have booked it."""


def error_text(response: requests.Response) -> str:
    """Exact's own message from an error answer, whatever shape it came in.

    API errors carry ``{"error": {"message": {"value": ...}}}``; the OAuth endpoint answers
    ``{"error": "invalid_grant", "error_description": ...}``; some answers only have a ``Reason``
    header or a bare status line.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            value = message.get("value") if isinstance(message, dict) else message
            if value:
                return str(value)
        description = body.get("error_description")
        if isinstance(error, str) and description:
            return f"{description} ({error})"
        if isinstance(error, str) and error:
            return error
    for candidate in (response.headers.get("Reason"), response.text.strip()[:300], response.reason):
        if candidate:
            return str(candidate)
    return f"HTTP {response.status_code}"


def classify(status: int, message: str, *, context: str) -> SyncError:
    """The typed error for an Exact Online answer with ``status`` and Exact's ``message``.

    401 and 403 only reach here after the hook already refreshed the token once, so they mean the
    authorisation itself is gone. 5xx is transient; the caller decides whether a write's outcome
    is unknown instead (the server may have committed before failing).

    :param status: HTTP status code of the answer.
    :param message: Exact's text, see :func:`error_text`.
    :param context: where it happened, e.g. ``"Exact Online division 123456"``.
    """
    text = f"{context}: {message}"
    if status in (401, 403) or _AUTH_PATTERNS.search(message):
        return AuthError(f"{text} (reconnect the integration to Exact Online)", status=status)
    if status >= 500:
        return TransientError(text, status=status)
    # "Already exists – Entry number: N, Journal: J" names the journal but is about this entry.
    if not ALREADY_EXISTS.search(message) and _CONFIG_PATTERNS.search(message):
        return ConfigError(text, status=status)
    return DataError(text, status=status)
