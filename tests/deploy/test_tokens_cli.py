"""``invoice-sync tokens rotate`` as an operator runs it while rotating Airflow's Fernet key: the keys come
from Airflow's configuration (airflow.cfg's ``fernet_key``, ``fernet_key_cmd``, ``fernet_key_secret``),
which Airflow reads once at import, so each case is a process of its own with an Airflow home of its own.

The tokens are written and read here with Fernet itself, as the table holds them, so the test depends on
nothing but the command and the stored format (``fernet:`` + a Fernet token, or a legacy value in clear).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import TokenRow

CLI = Path(sys.executable).with_name("invoice-sync")
KEY_BACKEND = """
from airflow.secrets import BaseSecretsBackend


class KeyBackend(BaseSecretsBackend):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def get_config(self, key):
        return self.config.get(key)
"""


def _key() -> str:
    return Fernet.generate_key().decode()


def _seal(key: str, value: str) -> str:
    return "fernet:" + Fernet(key.encode()).encrypt(value.encode()).decode()


def _open(key: str, value: str | None) -> str:
    assert value is not None and value.startswith("fernet:"), value
    return Fernet(key.encode()).decrypt(value.removeprefix("fernet:").encode()).decode()


def _database(url: str, rows: dict[str, tuple[str, str]]) -> Engine:
    """The invoicing database with ``rows`` (conn_id -> access, refresh, as stored) in ``sync_tokens``."""
    engine = make_engine(url)
    prepare(engine)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        for conn_id, (access, refresh) in rows.items():
            session.add(
                TokenRow(
                    conn_id=conn_id,
                    access_token=access,
                    refresh_token=refresh,
                    expires_at=now + timedelta(minutes=10),
                    lock_version=0,
                    updated_at=now,
                )
            )
    return engine


def _stored(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    with Session(engine) as session:
        return {
            row.conn_id: (row.access_token, row.refresh_token) for row in session.scalars(select(TokenRow))
        }


def _rotate(tmp_path: Path, url: str, airflow_cfg: str, *, pythonpath: Path | None = None):
    """``invoice-sync tokens rotate`` with an Airflow home holding only ``airflow_cfg``, and no Fernet key
    in the environment (the configuration file is what is tested)."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    (home / "airflow.cfg").write_text(airflow_cfg)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__SECRETS__"))
        and name != "AIRFLOW_CONFIG"
    }
    env |= {"AIRFLOW_HOME": str(home), "INVOICE_SYNC_DB_URL": url}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(CLI), "tokens", "rotate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_rotate_reseals_every_token_under_the_new_key_of_airflow_cfg(db_url: str, tmp_path: Path) -> None:
    """airflow.cfg holds ``new,old``: tokens sealed under the old key, under the new one and stored in clear
    (a Yuki session with an empty refresh token among them) all open under the new key alone afterwards;
    tokens no configured key opens are named, left as they were, and the command exits 1."""
    new, old, gone = _key(), _key(), _key()
    engine = _database(
        db_url,
        {
            "exact_demo": (_seal(old, "exact-access"), _seal(old, "exact-refresh")),
            "xero_demo": (_seal(new, "xero-access"), _seal(new, "xero-refresh")),
            "yuki_demo": ("yuki-session", ""),
            "lost_demo": (_seal(gone, "lost-access"), _seal(gone, "lost-refresh")),
        },
    )
    before = _stored(engine)

    result = _rotate(tmp_path, db_url, f"[core]\nfernet_key = {new},{old}\n")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "resealed the stored tokens of 3 connection(s) under the newest key" in result.stdout
    assert "connection 'lost_demo'" in result.stderr and "(new,old)" in result.stderr
    after = _stored(engine)
    assert after.pop("lost_demo") == before["lost_demo"]
    opened = {conn_id: tuple(_open(new, value) for value in after[conn_id]) for conn_id in after}
    assert opened.pop("exact_demo") == ("exact-access", "exact-refresh")
    assert opened.pop("xero_demo") == ("xero-access", "xero-refresh")
    assert opened.pop("yuki_demo") == ("yuki-session", "")
    engine.dispose()


def test_rotate_takes_the_key_from_fernet_key_cmd(sqlite_url: str, tmp_path: Path) -> None:
    key = _key()
    (tmp_path / "fernet.key").write_text(key + "\n")
    engine = _database(sqlite_url, {"exact_demo": ("exact-access", "exact-refresh")})  # in clear

    result = _rotate(tmp_path, sqlite_url, f"[core]\nfernet_key_cmd = cat {tmp_path / 'fernet.key'}\n")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "resealed the stored tokens of 1 connection(s)" in result.stdout
    access, refresh = _stored(engine)["exact_demo"]
    assert (_open(key, access), _open(key, refresh)) == ("exact-access", "exact-refresh")


def test_rotate_takes_the_key_from_fernet_key_secret(sqlite_url: str, tmp_path: Path) -> None:
    """``fernet_key_secret`` names a value of the secrets backend ([secrets] backend), which Airflow asks
    through its ``get_config``."""
    new, old = _key(), _key()
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "key_backend.py").write_text(KEY_BACKEND)
    engine = _database(sqlite_url, {"exact_demo": (_seal(old, "exact-access"), _seal(old, "exact-refresh"))})
    cfg = (
        "[core]\nfernet_key_secret = invoice-sync-fernet-key\n"
        "[secrets]\nbackend = key_backend.KeyBackend\n"
        f'backend_kwargs = {{"config": {{"invoice-sync-fernet-key": "{new},{old}"}}}}\n'
    )

    result = _rotate(tmp_path, sqlite_url, cfg, pythonpath=modules)

    assert result.returncode == 0, result.stdout + result.stderr
    access, refresh = _stored(engine)["exact_demo"]
    assert (_open(new, access), _open(new, refresh)) == ("exact-access", "exact-refresh")
    with pytest.raises(InvalidToken):
        _open(old, access)


def test_rotate_without_any_key_says_what_to_set(sqlite_url: str, tmp_path: Path) -> None:
    engine = _database(sqlite_url, {"exact_demo": ("exact-access", "exact-refresh")})

    result = _rotate(tmp_path, sqlite_url, "[core]\nfernet_key =\n")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "no key to seal the stored OAuth tokens with: set Airflow's [core] fernet_key" in result.stderr
    assert "AIRFLOW__CORE__FERNET_KEY_CMD" in result.stderr and "Fernet.generate_key()" in result.stderr
    assert _stored(engine)["exact_demo"] == ("exact-access", "exact-refresh")
