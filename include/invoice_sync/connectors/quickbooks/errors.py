"""Read QuickBooks Online's ``Fault`` answers and sort them into error classes.

QuickBooks answers a refusal with ``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}],
"type": ...}}``: as the body of a 4xx, inside a batch item, and sometimes in an HTTP 200. The ``code`` says
what happened far more reliably than the status or the text, so classification goes by code (reference
section 7). The class decides what happens next:

====================  =============================================================================
code                  class and what follows
====================  =============================================================================
6140                  duplicate ``DocNumber``: settled by a lookup (Booked when QuickBooks holds our
                      number), otherwise data
6240                  duplicate ``DisplayName``: the customer is looked up again and linked when it is
                      ours, otherwise the customer link fails with QuickBooks' text
6210                  config: the books are closed for the invoice date; the message asks the
                      accountant to reopen the period (it is QuickBooks' closing-date setting, not
                      the invoice, that must change)
3001 (or HTTP 429)    throttled: nothing was done; the hook waits a (scaled) minute and repeats
5010                  transient (stale object)
120, 3100, 3200       auth, as every code below 500 (the hook has already fetched a new token once)
6190                  quota: the company's subscription is not active; nothing can be booked until it
                      is, so the rest of the run is deferred and the next run tries again (a
                      subscription renewed by then needs nobody to press "retry")
610, 2500             config: a reference (item, tax code) of the mapping does not exist
500-599               config: an operation this company does not support
2020, 2050, 6000 ...  data: the invoice or customer must change (every other validation code)
>= 10000              severe server error: on a write the outcome is unknown
====================  =============================================================================

QuickBooks' own ``Message`` and ``Detail`` are always kept: they are what a bookkeeper searches for in
Intuit's help pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.domain.errors import (
    AuthError,
    ConfigError,
    DataError,
    QuotaExceededError,
    SyncError,
    TransientError,
)
from invoice_sync.domain.models import ErrorClass

DUPLICATE_DOC_NUMBER = 6140
DUPLICATE_NAME = 6240
THROTTLED = 3001
STALE_OBJECT = 5010
PERIOD_CLOSED = 6210
COMPANY_STATUS = 6190
AUTH_CODES = frozenset({120, 3100, 3200})
"""Authorization failure, the app's access to this company withdrawn, authentication failed."""
INVALID_REFERENCE = frozenset({610, 2500})
SEVERE_FROM = 10_000
"""Codes from here on are server faults (python-quickbooks' ``SevereException``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One ``Error`` of a QuickBooks ``Fault``."""

    code: int
    message: str
    detail: str = ""
    element: str = ""

    @property
    def text(self) -> str:
        """``Message: Detail`` as QuickBooks wrote them, without repeating a detail that adds nothing."""
        detail = self.detail.strip()
        if not detail or detail == self.message or detail in self.message:
            return self.message or f"error {self.code}"
        return f"{self.message}: {detail}" if self.message else detail


def faults_of(body: Any) -> list[Fault]:
    """The errors of the ``Fault`` in ``body`` (an answer or a batch item); empty when there is none."""
    fault = body.get("Fault") if isinstance(body, dict) else None
    if not isinstance(fault, dict):
        return []
    errors = fault.get("Error")
    found = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        try:
            code = int(str(error.get("code", "0")).strip() or 0)
        except ValueError:
            code = 0
        found.append(
            Fault(
                code=code,
                message=str(error.get("Message") or ""),
                detail=str(error.get("Detail") or ""),
                element=str(error.get("element") or ""),
            )
        )
    if not found:  # a Fault without readable errors is still a refusal
        found.append(Fault(code=0, message=f"QuickBooks answered a {fault.get('type') or 'Fault'}"))
    return found


def describe(faults: list[Fault]) -> str:
    """Every error's text, with its code, in QuickBooks' order."""
    return "; ".join(f"{fault.text} (code {fault.code})" if fault.code else fault.text for fault in faults)


def is_throttled(faults: list[Fault]) -> bool:
    return any(fault.code == THROTTLED for fault in faults)


def error_class(fault: Fault) -> ErrorClass | None:
    """The class of one refusal; ``None`` for a severe server fault, whose outcome is unknown on a write.

    6140 and 6240 are classed as data here; the connector settles them by a lookup before that counts.
    """
    code = fault.code
    if code in AUTH_CODES or 0 < code < 500:
        return ErrorClass.AUTH
    if code in (THROTTLED, STALE_OBJECT):
        return ErrorClass.TRANSIENT
    if code == COMPANY_STATUS:
        return ErrorClass.QUOTA
    if code == PERIOD_CLOSED or code in INVALID_REFERENCE or 500 <= code < 600:
        return ErrorClass.CONFIG
    if code >= SEVERE_FROM:
        return None
    return ErrorClass.DATA


def advice(fault: Fault) -> str:
    """What a bookkeeper does about a refusal, appended to QuickBooks' own words ('' when they suffice)."""
    code = fault.code
    if code == PERIOD_CLOSED:
        return (
            "the books are closed for this date in QuickBooks: ask the accountant to reopen the period "
            "(Account and settings > Advanced > Close the books) or to move the closing date, then sync again"
        )
    if code in INVALID_REFERENCE:
        return (
            "a reference QuickBooks does not know: check that the integration's item and tax code "
            "mappings name active QuickBooks items and tax codes"
        )
    if code == COMPANY_STATUS:
        return (
            "the QuickBooks company's subscription is not active; invoices wait until its owner "
            "reactivates it, and the next run tries again"
        )
    if code == STALE_OBJECT:
        return "QuickBooks changed the record meanwhile; the next run tries again"
    return ""


def message(fault: Fault, *, context: str) -> str:
    """``context: QuickBooks' text (code n)`` plus the advice for that code."""
    text = f"{context}: {describe([fault])}"
    extra = advice(fault)
    return f"{text} ({extra})" if extra else text


def fault_error(faults: list[Fault], *, context: str, status: int | None) -> SyncError:
    """The typed error of a call QuickBooks refused as a whole; the first fault decides its class."""
    first = faults[0]
    text = f"{context}: {describe(faults)}"
    extra = advice(first)
    if extra:
        text = f"{text} ({extra})"
    cls = error_class(first)
    if cls is ErrorClass.AUTH:
        return AuthError(f"{text} (reconnect the integration to QuickBooks Online)", status=status)
    if cls is ErrorClass.QUOTA:
        return QuotaExceededError(text, status=status)
    if cls is ErrorClass.CONFIG:
        return ConfigError(text, status=status)
    if cls is ErrorClass.DATA:
        return DataError(text, status=status)
    return TransientError(text, status=status)


def status_error(status: int, body_text: str, *, context: str) -> SyncError:
    """The typed error of a non-2xx answer without a readable ``Fault``."""
    text = f"{context}: HTTP {status}" + (f" ({body_text[:200]})" if body_text else "")
    if status in (401, 403):
        return AuthError(f"{text} (reconnect the integration to QuickBooks Online)", status=status)
    if status == 404:
        return ConfigError(f"{text} (check the integration's realm_id)", status=status)
    if status >= 500:
        return TransientError(text, status=status)
    return DataError(text, status=status)
