"""Xero's own settings: the organisation an integration books in, and the currencies it accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.settings import ToolSettings, code, currencies, guid
from invoice_sync.domain.models import SettingsError


@dataclass(frozen=True, slots=True, kw_only=True)
class XeroSettings(ToolSettings):
    """An integration's settings as Xero reads them: its organisation by tenant id or by name (one at
    least), and optionally the currencies it takes."""

    tenant_id: str | None = None
    """The organisation's *tenant id* (a GUID, canonical lower case), sent as the ``xero-tenant-id``
    header of every call; listed by Xero's ``/connections``."""
    tenant: str | None = None
    """The organisation's *name* (``tenantName`` in ``/connections``); resolved to its tenant id by the
    hook when no id is set, and used to name the organisation in messages."""
    currencies: tuple[str, ...] = ()
    """The currencies the organisation accepts (ISO 4217, upper case): its base currency plus those added
    under Xero's *Currencies* setting. Empty: not checked before sending."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        tenant_id = guid(extra, "tenant_id", what="a Xero tenant id (a GUID, listed by /connections)")
        tenant = code(extra, "tenant", what="the name of a Xero organisation (text)")
        if tenant_id is None and tenant is None:
            raise SettingsError(
                "tenant_id is not set; it must be a Xero tenant id (a GUID), or set tenant to the "
                "organisation's name"
            )
        return {"tenant_id": tenant_id, "tenant": tenant, "currencies": currencies(extra, "currencies")}

    @property
    def label(self) -> str:
        """How messages name the organisation: its name when configured, else its tenant id."""
        return self.tenant or self.tenant_id or "(not set)"
