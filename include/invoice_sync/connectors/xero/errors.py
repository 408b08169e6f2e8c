"""Turn Xero's answers into the typed errors and error classes of :mod:`invoice_sync.domain`.

Xero says "no" in three ways (reference section 7). With ``summarizeErrors=false`` a create answers HTTP
200 and every element carries its own ``ValidationErrors``: that is about one invoice or contact. Without
it, or when the request as a whole is wrong, HTTP 400 ``ValidationException`` lists the offending
``Elements`` and nothing is created. 401/403 refuse the token or the organisation before anything is done.

Which class a per-element message gets decides what happens next: an unknown or archived account code or
tax type is the integration's mapping (config: an accountant fixes the mapping, resending the invoice
unchanged would fail again the same way); everything else is about the invoice or customer itself (data).
Xero's own words are always kept: they are what its help pages are searched by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from invoice_sync.domain.errors import DataError
from invoice_sync.domain.models import ErrorClass

VALIDATION_EXCEPTION = "ValidationException"

DUPLICATE_NUMBER = re.compile(r"#\s*must be unique|number .{0,40}already (been )?used", re.IGNORECASE)
"""Xero refuses a number it already holds ("Invoice # must be unique."): an earlier attempt may have
booked the invoice, so the outcome is settled by a lookup, never by a blind refusal."""

NAME_TAKEN = re.compile(r"already assigned to another contact", re.IGNORECASE)
"""Contact names are unique among active contacts ("The contact name X is already assigned to another
contact...")."""

CONFIG_MESSAGE = re.compile(
    r"account ?code|valid account|tax ?type|tax ?rate|currency|tracking",
    re.IGNORECASE,
)
"""Per-element texts naming what the integration's mapping or the organisation's settings decide:
account codes (GL mapping), tax types (VAT mapping), currencies the organisation has not enabled."""

IDEMPOTENCY_MISMATCH = re.compile(r"idempotency key", re.IGNORECASE)


class XeroValidationError(DataError):
    """A whole request refused with ``ValidationException``: nothing was created.

    :param elements: the offending elements as Xero echoed them (with their ``ValidationErrors``), so a
        caller maps each one back to its invoice or contact by number.
    """

    def __init__(self, message: str, *, elements: Sequence[Mapping[str, Any]], status: int = 400) -> None:
        super().__init__(message, status=status)
        self.elements = list(elements)


def message_class(message: str) -> ErrorClass:
    """Whether one refusal needs the integration's mapping changed (config) or the invoice (data)."""
    return ErrorClass.CONFIG if CONFIG_MESSAGE.search(message) else ErrorClass.DATA


def validation_messages(element: Mapping[str, Any]) -> list[str]:
    """The ``ValidationErrors`` texts of one answered element, in order, without repeats."""
    errors = element.get("ValidationErrors") or []
    texts = [str(error.get("Message") or "").strip() for error in errors if isinstance(error, Mapping)]
    return list(dict.fromkeys(text for text in texts if text))


def warning_messages(element: Mapping[str, Any]) -> list[str]:
    """The ``Warnings`` texts of one answered element (booked anyway, but worth a log line)."""
    warnings = element.get("Warnings") or []
    return [str(w.get("Message")) for w in warnings if isinstance(w, Mapping) and w.get("Message")]


def has_errors(element: Mapping[str, Any]) -> bool:
    """Whether Xero refused an element of a ``summarizeErrors=false`` answer."""
    status = str(element.get("StatusAttributeString") or "").upper()
    return bool(element.get("HasErrors")) or status == "ERROR" or bool(validation_messages(element))


def body_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_text(response: requests.Response) -> str:
    """Xero's words for a refused call: the validation texts, else ``Detail``/``Message``/``title``."""
    body = body_of(response)
    if isinstance(body, Mapping):
        if body.get("Type") == VALIDATION_EXCEPTION:
            elements = body.get("Elements") or []
            texts = [text for element in elements for text in validation_messages(element)]
            if texts:
                return "; ".join(dict.fromkeys(texts))
        for key in ("Detail", "detail", "Message", "message", "Title", "title", "error"):
            if body.get(key):
                return str(body[key])
    text = " ".join(response.text.split())[:300]
    return text or response.reason or f"HTTP {response.status_code}"


def validation_error(response: requests.Response, *, context: str) -> XeroValidationError | None:
    """The :class:`XeroValidationError` of a 400 ``ValidationException`` answer, else None."""
    body = body_of(response)
    if not isinstance(body, Mapping) or body.get("Type") != VALIDATION_EXCEPTION:
        return None
    elements = [element for element in body.get("Elements") or [] if isinstance(element, Mapping)]
    return XeroValidationError(f"{context}: {error_text(response)}", elements=elements, status=400)
