"""Typed per-tool settings: what each tool needs beyond the shared mapping, read once per integration.

The app stores an integration's settings as one JSON object.
:class:`~invoice_sync.domain.models.IntegrationSettings` reads the part every tool shares (journal, VAT-code
and GL-account maps, ...) and keeps the rest in ``extra``; each tool's ``settings`` module subclasses
:class:`ToolSettings` to read its own fields from there (Twinfield's office, Xero's organisation, ...).
A value that cannot be read, or a required one that is missing, is that integration's configuration error
naming the field and the value, found when the integration is picked up, not halfway through building a
payload.

Keys a tool does not know stay in ``extra``, unread, as before: the app may keep keys of its own there, so
an unknown key is no proof of a typo.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from typing import Any, Self

from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import (
    Integration,
    IntegrationSettings,
    SettingsError,
    shown,
    unreadable_settings,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSettings(IntegrationSettings):
    """An integration's settings as one tool reads them: the shared fields plus the tool's own."""

    @classmethod
    def read(cls, extra: dict[str, Any]) -> dict[str, Any]:
        """The tool's own fields from ``extra``, popping each key it reads (the rest stays in ``extra``).

        :raises SettingsError: a value that cannot be read, or a required one that is missing; the message
            names the key and the value.
        """
        raise NotImplementedError

    @classmethod
    def parse(cls, settings: IntegrationSettings) -> Self:
        """``settings`` read for this tool; settings already read for it are returned as they are."""
        if isinstance(settings, cls):
            return settings
        extra = dict(settings.extra)
        own = cls.read(extra)
        shared = {f.name: getattr(settings, f.name) for f in fields(IntegrationSettings) if f.name != "extra"}
        return cls(**shared, **own, extra=extra)

    def applied_to(self, integration: Integration) -> Integration:
        """``integration`` carrying these settings, for the connector that reads them."""
        return replace(integration, settings=self)

    @classmethod
    def of(cls, integration: Integration) -> Self:
        """``integration``'s settings read for this tool.

        :raises ConfigError: naming the integration, the setting and its value, in the words the store uses
            for settings it cannot read at all (so the page, the bell and the ledger say it alike).
        """
        try:
            return cls.parse(integration.settings)
        except SettingsError as exc:
            raise ConfigError(unreadable_settings(integration.id, exc)) from None


def with_tool_settings(integration: Integration) -> Integration:
    """``integration`` carrying its tool's typed settings, or, when they cannot be read, marked
    ``unreadable`` with the reason (as the store marks a row it cannot read), so the operator refuses its
    invoices and the page says why. An integration already unreadable, or of a tool this installation does
    not know (the operator names the known ones), comes back unchanged."""
    from invoice_sync.connectors.registry import BY_NAME  # the registry imports the tools' packages

    descriptor = BY_NAME.get(integration.tool)
    if integration.unreadable or descriptor is None:
        return integration
    try:
        settings = descriptor.load_settings().of(integration)
    except ConfigError as exc:
        return replace(integration, unreadable=exc.message)
    return settings.applied_to(integration)


# -- readers of one field ---------------------------------------------------------------------------------
# People type these settings by hand: a number where a code belongs is fine (a JSON number is how an office
# or account code often arrives), a fraction, a list or a boolean is not.


def code(extra: dict[str, Any], key: str, *, what: str) -> str | None:
    """The code at ``key`` (text or a whole number, stripped), None when absent or empty."""
    value = extra.pop(key, None)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise SettingsError(f"{key} is {shown(value)}; it must be {what}")
    return value.strip() or None


def required_code(extra: dict[str, Any], key: str, *, what: str) -> str:
    """The code at ``key``; :class:`SettingsError` when it is missing."""
    found = code(extra, key, what=what)
    if found is None:
        raise SettingsError(f"{key} is not set; it must be {what}")
    return found


def whole_number(extra: dict[str, Any], key: str, *, what: str, minimum: int = 0) -> int | None:
    """The whole number at ``key`` (a JSON number or digits as text), None when absent.

    Text must be ASCII digits only: ``int()`` also reads full-width digits, ``_`` separators and a sign,
    which in a hand-typed division or company id are typos to name, not numbers to guess."""
    value = extra.pop(key, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SettingsError(f"{key} is {shown(value)}; it must be {what}")
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()):
        raise SettingsError(f"{key} is {shown(value)}; it must be {what}")
    number = int(value)
    if number < minimum:
        raise SettingsError(f"{key} is {shown(value)}; it must be {what}")
    return number


def guid(extra: dict[str, Any], key: str, *, what: str) -> str | None:
    """The GUID at ``key`` in its canonical lower-case form, None when absent or empty."""
    text = code(extra, key, what=what)
    if text is None:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise SettingsError(f"{key} is {shown(text)}; it must be {what}") from None


def currency(extra: dict[str, Any], key: str) -> str | None:
    """The ISO 4217 currency code at ``key``, upper-case, None when absent or empty."""
    text = code(extra, key, what="a three-letter currency code (ISO 4217, e.g. EUR)")
    if text is None:
        return None
    if len(text) != 3 or not text.isascii() or not text.isalpha():
        raise SettingsError(
            f"{key} is {shown(text)}; it must be a three-letter currency code (ISO 4217, e.g. EUR)"
        )
    return text.upper()


def currencies(extra: dict[str, Any], key: str) -> tuple[str, ...]:
    """The list of ISO 4217 currency codes at ``key``, upper-case and without repeats; () when absent."""
    value = extra.pop(key, None)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SettingsError(f"{key} is {shown(value)}; it must be a list of three-letter currency codes")
    found: list[str] = []
    for index, item in enumerate(value):
        one = currency({f"{key}[{index}]": item}, f"{key}[{index}]")
        if one is None:
            raise SettingsError(f"{key}[{index}] is {shown(item)}; it must be a three-letter currency code")
        found.append(one)
    return tuple(dict.fromkeys(found))
