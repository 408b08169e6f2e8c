"""Turn Twinfield's answers into the typed errors and error classes of :mod:`invoice_sync.domain`.

Twinfield says "no" in two ways (reference section 8). ProcessXml judges each element itself and answers
HTTP 200 with ``result="0"`` and ``msgtype``/``msg`` on the offending element: that is about one
transaction or one customer, and :func:`message_class` tells whether the integration's mapping must change
(config: VAT code, GL account, daybook, office) or the invoice itself (data: balance, customer code). Whole
calls are refused with a SOAP Fault: an invalid token (refresh and repeat), a missing ``CompanyCode`` or an
office the user has no access to (config). Those faults come before any processing; a fault we do not
recognise might come after it, so for a write it means the outcome is unknown.
"""

from __future__ import annotations

import json
import re

import requests

from invoice_sync.connectors.soap import SoapFault
from invoice_sync.domain.errors import AuthError, ConfigError, SyncError
from invoice_sync.domain.models import ErrorClass

TOKEN_FAULT = re.compile(
    r"token invalid|code 354|logon credentials are not valid anymore|access token.{0,40}(expired|invalid)",
    re.IGNORECASE,
)
"""Faults that mean the access token is no longer accepted: refresh once and repeat (nothing was done)."""

_COMPANY_FAULT = re.compile(
    r"company ontbreekt|companycode|geen toegang tot administratie|no access to (the )?(office|company)",
    re.IGNORECASE,
)
"""Faults that refuse the office in the SOAP header: the integration's ``office`` setting is wrong."""

_CONFIG_MESSAGE = re.compile(
    r"btw-code|vat code|\bVAT \S+ does not exist|not \(yet\) active"
    r"|financial level 1|grootboek|general ledger|debiteurenrekening"
    r"|dagboek|transaction type|daybook"
    r"|administratie|\boffice\b"
    r"|valuta|currency",
    re.IGNORECASE,
)
"""Refusals an accountant fixes in the integration's settings (reference section 8, "fix data" rows that
concern the mapping: VAT code, GL account, office, daybook)."""


def message_class(message: str) -> ErrorClass:
    """Whether one ProcessXml refusal needs the integration's mapping changed (config) or the invoice (data).

    A missing customer (financial level 2), a balance difference, a code outside the office's format and
    anything unrecognised are about the invoice or customer: data.
    """
    if "financial level 2" in message.lower():
        return ErrorClass.DATA
    return ErrorClass.CONFIG if _CONFIG_MESSAGE.search(message) else ErrorClass.DATA


def is_token_fault(fault: SoapFault) -> bool:
    return bool(TOKEN_FAULT.search(fault.text))


def recognised_fault(fault: SoapFault, *, context: str) -> SyncError | None:
    """The typed error for a fault known to refuse the call before processing, else None.

    :param context: where it happened, e.g. ``"Twinfield office NLA001"``.
    """
    text = f"{context}: {fault.text}"
    if is_token_fault(fault):
        return AuthError(
            f"{text}. Twinfield refused a freshly refreshed access token; reconnect the integration to "
            "Twinfield (give consent again)",
            status=fault.status,
        )
    if _COMPANY_FAULT.search(fault.text):
        return ConfigError(f"{text} (check the integration's Twinfield office)", status=fault.status)
    return None


def plain_text(response: requests.Response) -> str:
    """A short text for a non-SOAP answer (an HTML error page, a bare status)."""
    text = response.text.strip()
    if text.startswith("{"):
        try:
            return json.dumps(json.loads(text))[:300]
        except ValueError:
            pass
    if "<" in text:
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())[:300]
    return text or response.reason or f"HTTP {response.status_code}"
