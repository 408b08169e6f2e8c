"""Twinfield's own settings: the office, the debtors control account and how debtor codes are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.settings import ToolSettings, required_code, whole_number

DEFAULT_CUSTOMER_CODE_OFFSET = 1000
"""Customer 1 becomes debtor 1001: Twinfield offices usually number debtors from 1000 (the demo office's
format is ``1[0-9]{3,5}``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TwinfieldSettings(ToolSettings):
    """An integration's settings as Twinfield reads them."""

    office: str
    """The Twinfield *office* (administration) code, e.g. ``NLA001``: every ProcessXml document and
    browse names it, and the access token must give access to it."""
    debtors_account: str
    """The *debtors control account* (general ledger account of type debtors, e.g. ``1300``): ``dim1`` of
    each transaction's total line, the customer being ``dim2``."""
    customer_code_offset: int = DEFAULT_CUSTOMER_CODE_OFFSET
    """What is added to our customer id to make its *debtor code* (dimension of type ``DEB``), so the code
    is known without asking Twinfield and falls inside the office's debtor number range."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        own: dict[str, Any] = {
            "office": required_code(extra, "office", what="a Twinfield office code (e.g. NLA001)"),
            "debtors_account": required_code(
                extra, "debtors_account", what="the code of Twinfield's debtors control account (e.g. 1300)"
            ),
        }
        offset = whole_number(
            extra,
            "customer_code_offset",
            what="a whole number of 0 or more, added to the customer id to make its Twinfield debtor code",
        )
        if offset is not None:
            own["customer_code_offset"] = offset
        return own
