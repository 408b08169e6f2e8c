"""Exact Online's own setting: the division an integration books in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.settings import ToolSettings, whole_number
from invoice_sync.domain.models import SettingsError

_DIVISION = "the division number (Exact's number of the administration, as in its URLs)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExactOnlineSettings(ToolSettings):
    """An integration's settings as Exact Online reads them."""

    division: int
    """The Exact *division* (administration) the entries are booked in: the number Exact puts in every
    API path (``/api/v1/{division}/...``) and shows as the administration's code. One integration books in
    one division; several integrations may share one."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        division = whole_number(extra, "division", what=_DIVISION, minimum=1)
        if division is None:
            raise SettingsError(f"division is not set; it must be {_DIVISION}")
        return {"division": division}
