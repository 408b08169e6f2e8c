"""How Airflow's Connections form shows each tool's connection, declared without importing any hook.

Each tool's package has a ``form`` module with one :class:`ConnectionForm`, named by its descriptor
(``ToolDescriptor.form``); :mod:`invoice_sync.airflow.provider` hands them to Airflow as provider info,
the declarative shape Airflow 3.2+ reads (``ui-field-behaviour`` and ``conn-fields``; the hook methods
``get_ui_field_behaviour`` / ``get_connection_form_widgets`` are deprecated there).

Why not on the hooks: Airflow asks for provider info while a hook module is still being imported (the HTTP
provider's import starts provider discovery), so provider info that imported the hooks would import them
in a circle. This module and the ``form`` modules import nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FormField = dict[str, Any]
"""One extra field of the form, as provider info's ``conn-fields`` declares it: ``label``, ``description``
and a JSON ``schema`` (``"format": "password"`` makes it a secret, masked and never shown again)."""


@dataclass(frozen=True, slots=True)
class ConnectionForm:
    """One tool's connection form.

    :param hidden: standard fields the tool does not use (``schema``, ``port``, ...).
    :param relabeling: standard fields under the tool's own names (``{"login": "Client ID"}``).
    :param placeholders: example values, by standard field or extra key.
    :param extra_fields: the extra's keys the form asks for, by key (provider info's ``conn-fields``).
    """

    hidden: tuple[str, ...]
    relabeling: dict[str, str]
    placeholders: dict[str, str] = field(default_factory=dict)
    extra_fields: dict[str, FormField] = field(default_factory=dict)

    def ui_field_behaviour(self) -> dict[str, Any]:
        """Provider info's ``ui-field-behaviour`` (a fresh copy: Airflow may change what it is given)."""
        return {
            "hidden-fields": list(self.hidden),
            "relabeling": dict(self.relabeling),
            "placeholders": dict(self.placeholders),
        }

    def conn_fields(self) -> dict[str, FormField]:
        """Provider info's ``conn-fields`` (a fresh copy)."""
        return {key: {**spec, "schema": dict(spec["schema"])} for key, spec in self.extra_fields.items()}


TIMEOUT: FormField = {
    "label": "Timeout (seconds)",
    "description": "How long one HTTP request to the tool may take (30 when empty).",
    "schema": {"type": ["integer", "null"], "minimum": 1},
}
REFRESH_TOKEN: FormField = {
    "label": "Refresh token",
    "description": (
        "The refresh token of the user's consent. Used for the first tokens only: after that the sync keeps "
        "the tool's newer ones in its token store."
    ),
    "schema": {"type": ["string", "null"], "format": "password"},
}
TOKEN_URL: FormField = {
    "label": "Token URL",
    "description": "Replaces the tool's OAuth token endpoint (a sandbox serves its own); normally empty.",
    "schema": {"type": ["string", "null"]},
}


def oauth_form(
    *, host_label: str, host_placeholder: str, extra_fields: dict[str, FormField] | None = None
) -> ConnectionForm:
    """The form of an OAuth 2.0 app's connection: the API's URL, the app's client id and secret, the
    consent's refresh token and a timeout; ``extra_fields`` adds (or replaces) the tool's own keys."""
    return ConnectionForm(
        hidden=("schema", "port"),
        relabeling={"host": host_label, "login": "Client ID", "password": "Client secret"},
        placeholders={"host": host_placeholder},
        extra_fields={"refresh_token": REFRESH_TOKEN, "timeout": TIMEOUT, **(extra_fields or {})},
    )
