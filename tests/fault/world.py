"""The world a fault test runs in: one tool's sandbox, a seeded invoicing database, short timings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import runner
from harness import Seeded, ToolHarness
from invariants import assert_exactly_once, write_back

from invoice_sync.store.repository import SyncStore

LEASE_S = 1.5
"""Claim lease of the runs a test kills, stops or races (production: minutes)."""
RUN_LEASE_S = 5.0
"""Claim lease of the other runs: longer than the longest pause between two fenced writes of a run under
faults (a lookup retried with back-off takes three seconds), yet short enough to take over quickly."""
TIMEOUT_S = 1.0
"""HTTP timeout of the connection (production: 30 s)."""
INVOICES = 36
"""Demo invoices to seed: about ten valid ones per integration."""


@dataclass
class World:
    """One tool's sandbox, a seeded invoicing database, and the connection pointing at the sandbox."""

    harness: ToolHarness
    store: SyncStore
    db_url: str
    seeded: Seeded
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    timeout_s: float = TIMEOUT_S
    runs: int = field(default=0)

    def connect(self, *, timeout_s: float | None = None) -> None:
        """(Re)point the Airflow connection at the sandbox, in this process and for its children."""
        if timeout_s is not None:
            self.timeout_s = timeout_s
        for name, value in self.harness.connection_env(timeout_s=self.timeout_s).items():
            self.monkeypatch.setenv(name, value)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def primary(self) -> int:
        return self.seeded.primary

    def sync(
        self,
        integration_ids: list[int] | None = None,
        *,
        holder: str | None = None,
        lease_s: float = RUN_LEASE_S,
        batch_size: int = 5,
        wait_for_claim_s: float = 0.0,
    ) -> dict[str, Any]:
        """One run in this process; returns the runner's per-integration results."""
        self.runs += 1
        run_id = f"run-{self.runs}"
        return runner.sync(
            self.db_url,
            integration_ids or [self.primary],
            run_id=run_id,
            holder=holder or f"{run_id}#try1",
            lease_s=lease_s,
            batch_size=batch_size,
            wait_for_claim_s=wait_for_claim_s,
        )

    def runner_args(self, integration_ids: list[int] | None = None, **options: Any) -> tuple[list[str], Path]:
        """Arguments for a runner process, and where it writes its result."""
        self.runs += 1
        run_id = options.pop("run_id", f"run-{self.runs}")
        result = self.tmp_path / f"{run_id}-{options.get('holder', 'try1')}.json".replace("/", "_")
        options.setdefault("holder", f"{run_id}#try1")
        options.setdefault("lease_s", LEASE_S)
        options.setdefault("batch_size", 5)
        args = runner.arguments(
            self.db_url, integration_ids or [self.primary], run_id=run_id, result=result, **options
        )
        return args, result

    def warm_up(self) -> None:
        """Initialise Airflow's settings in this process (seconds, once), so forked runners inherit it."""
        from invoice_sync.connectors.registry import connector_for
        from invoice_sync.store.tokens import SqlTokenVault

        connector = connector_for(self.store.integration(self.primary), SqlTokenVault(self.store.engine))
        getattr(connector, "request_timeout_s", None)

    def converge(self, integration_ids: list[int] | None = None) -> dict[str, Any]:
        """The "at most one more run": a clean run (waiting for a claim a dead run still holds), then
        the write-back, then every invariant."""
        ids = integration_ids or [self.primary]
        self.harness.set_faults([])
        results = self.sync(ids, wait_for_claim_s=RUN_LEASE_S + 10)
        assert {r["status"] for r in results.values()} == {"ok"}, results
        self.check(ids)
        return results

    def check(self, integration_ids: list[int] | None = None) -> None:
        ids = integration_ids or [self.primary]
        write_back(self.store, ids)
        assert_exactly_once(self.harness, self.store, self.seeded, ids)


def statuses(results: dict[str, Any]) -> set[str]:
    return {r["status"] for r in results.values()}
