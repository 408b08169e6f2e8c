"""Yuki's own settings: the administration an integration books in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.settings import ToolSettings, code, guid
from invoice_sync.domain.models import SettingsError


@dataclass(frozen=True, slots=True, kw_only=True)
class YukiSettings(ToolSettings):
    """An integration's settings as Yuki reads them: its administration, by id or by name (at least one)."""

    administration_id: str | None = None
    """The Yuki *administration ID* (a GUID, canonical lower case): what ``ProcessSalesInvoices`` and the
    lookups name. Preferred over the name, which may change."""
    administration: str | None = None
    """The administration's *name* as Yuki lists it (``Administrations``); resolved to its id by the hook
    when no id is set, and used to name the administration in messages."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        administration_id = guid(extra, "administration_id", what="a Yuki administration ID (a GUID)")
        administration = code(extra, "administration", what="the name of a Yuki administration (text)")
        if administration_id is None and administration is None:
            raise SettingsError(
                "administration_id is not set; it must be a Yuki administration ID (a GUID), or set "
                "administration to the administration's name"
            )
        return {"administration_id": administration_id, "administration": administration}

    @property
    def label(self) -> str:
        """How messages name the administration: its name, else its id."""
        return self.administration or self.administration_id or "(not set)"
