"""The deployment's own secrets, checked before ``airflow-init`` starts: ``invoice-sync secrets check``.

Compose only refuses a secret that is missing. A copied ``.env.example`` (every value a ``change-me-...``
placeholder) or a short hand-typed value would start a deployment whose Fernet key, JWT secret and database
passwords anyone who has read the repository knows or can guess. So ``airflow-init`` runs this check first:
it exits non-zero, naming each bad variable and how to generate a good value, and every other service
waits for ``airflow-init`` to complete successfully, so nothing starts.

The values are read from the environment under their ``.env`` names (docker-compose.yaml passes them to
``airflow-init`` as they are). A message never repeats a value.
"""

from __future__ import annotations

import binascii
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

KEY_MIN_LENGTH = 32
PASSWORD_MIN_LENGTH = 12
MIN_DISTINCT_CHARACTERS = 6
"""``aaaaaaaaaaaa`` and ``121212121212`` are long enough, and still no secret."""
FERNET_KEY_COMMAND = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)
PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|placeholder", re.IGNORECASE)
"""What ``.env.example``'s values look like (``change-me-jwt-secret``): never a real secret."""
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
"""A database password ends up in a database URL, unquoted."""


@dataclass(frozen=True)
class Secret:
    name: str
    """Its variable in ``.env``."""
    purpose: str
    generate: str
    """A command that prints a good value."""
    min_length: int
    fernet: bool = False
    in_url: bool = False


SECRETS = (
    Secret(
        "FERNET_KEY",
        "encrypts connection passwords and variables in Airflow's metadata database, and the OAuth "
        "tokens in sync_tokens",
        FERNET_KEY_COMMAND,
        KEY_MIN_LENGTH,
        fernet=True,
    ),
    Secret("JWT_SECRET", "signs the tokens of Airflow's API", "openssl rand -hex 32", KEY_MIN_LENGTH),
    Secret("API_SECRET_KEY", "the api-server's secret key", "openssl rand -hex 32", KEY_MIN_LENGTH),
    Secret(
        "AIRFLOW_DB_PASSWORD",
        "the Airflow metadata database's password",
        "openssl rand -hex 16",
        PASSWORD_MIN_LENGTH,
        in_url=True,
    ),
    Secret(
        "INVOICING_DB_PASSWORD",
        "the invoicing database's password",
        "openssl rand -hex 16",
        PASSWORD_MIN_LENGTH,
        in_url=True,
    ),
    Secret(
        "AIRFLOW_ADMIN_PASSWORD",
        "the Airflow UI admin's password",
        "openssl rand -hex 16",
        PASSWORD_MIN_LENGTH,
    ),
)


def problem(secret: Secret, value: str | None) -> str | None:
    """Why ``value`` will not do for ``secret``, or ``None`` when it will."""
    if not value:
        return "is not set"
    if PLACEHOLDER.search(value):
        return "is still the placeholder of .env.example"
    # Airflow takes Fernet keys as `new,old` while it re-encrypts under a new one: each must do.
    for part in value.split(",") if secret.fernet else [value]:
        if secret.fernet and not _is_fernet_key(part):
            return "is not a Fernet key (32 url-safe base64-encoded bytes)"
        if len(part) < secret.min_length:
            return f"is {len(part)} characters long; it needs at least {secret.min_length}"
        if len(set(part)) < MIN_DISTINCT_CHARACTERS:
            return "repeats too few characters to be a secret"
    if secret.in_url and not URL_SAFE.match(value):
        return "goes into a database URL: use letters, digits and - . _ ~ only"
    return None


def _is_fernet_key(key: str) -> bool:
    """What Airflow's ``get_fernet`` accepts for each part of ``AIRFLOW__CORE__FERNET_KEY``."""
    from cryptography.fernet import Fernet

    try:
        Fernet(key.encode())
    except (binascii.Error, ValueError):
        return False
    return True


def problems(env: Mapping[str, str]) -> list[str]:
    """A line per secret that will not do, saying how to generate a good one."""
    lines = []
    for secret in SECRETS:
        if (why := problem(secret, env.get(secret.name))) is not None:
            lines.append(f"{secret.name} ({secret.purpose}) {why}; generate one with: {secret.generate}")
    return lines


def check(env: Mapping[str, str] | None = None) -> int:
    """0 when every deployment secret will do; else 1, after a line per bad one on stderr."""
    found = problems(os.environ if env is None else env)
    if not found:
        print(f"deployment secrets: {len(SECRETS)} checked, none is a placeholder or too short")
        return 0
    print("invoice-sync: refusing to start the deployment; set these in .env:", file=sys.stderr)
    for line in found:
        print(f"  {line}", file=sys.stderr)
    return 1
