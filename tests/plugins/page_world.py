"""What the page tests' fixtures hand to the tests (a module of its own: ``conftest`` is not importable
by name when several test folders have one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.sandbox.demo import SeedResult


@dataclass
class Seeded:
    store: SyncStore
    seeded: SeedResult
    deferred_number: str
    changed_number: str


@dataclass
class Api:
    """The Airflow app under test and tokens for its users."""

    client: Any
    admin: dict[str, str]
    viewer: dict[str, str]
