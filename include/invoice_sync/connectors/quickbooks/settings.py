"""QuickBooks Online's own settings: the company an integration books in, and its currencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.settings import ToolSettings, currencies, currency, required_code
from invoice_sync.domain.models import SettingsError, shown

DEFAULT_HOME_CURRENCY = "EUR"


@dataclass(frozen=True, slots=True, kw_only=True)
class QuickBooksSettings(ToolSettings):
    """An integration's settings as QuickBooks Online reads them."""

    realm_id: str
    """The company's *realm ID* (digits, e.g. ``9341452710923456``): QuickBooks' id of the company, in
    every API path (``/v3/company/{realmId}/...``) and returned with the authorisation."""
    home_currency: str = DEFAULT_HOME_CURRENCY
    """The company's *home currency* (ISO 4217), the one it takes without multicurrency."""
    currencies: tuple[str, ...] = ()
    """Further currencies the company takes once *multicurrency* is switched on in QuickBooks."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        what = "a QuickBooks company's realm ID (digits)"
        realm_id = required_code(extra, "realm_id", what=what)
        if not realm_id.isdigit():
            raise SettingsError(f"realm_id is {shown(realm_id)}; it must be {what}")
        own: dict[str, Any] = {"realm_id": realm_id, "currencies": currencies(extra, "currencies")}
        home = currency(extra, "home_currency")
        if home is not None:
            own["home_currency"] = home
        return own

    @property
    def accepted_currencies(self) -> list[str]:
        """The currencies the company takes: its home currency first, then the others, without repeats."""
        return list(dict.fromkeys([self.home_currency, *self.currencies]))
