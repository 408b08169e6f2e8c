"""Read-only reports over the invoicing database for the CLI and the UI (pandas group-bys)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from invoice_sync.store.models import IntegrationRow, InvoiceRow, LedgerRow, RunRow


def status_frame(engine: Engine) -> pd.DataFrame:
    """Per integration, right now: registered invoices synced, unsynced, failed, deferred and drafts."""
    with Session(engine) as session:
        integrations = pd.DataFrame(
            session.execute(select(IntegrationRow.id, IntegrationRow.name, IntegrationRow.tool)).all(),
            columns=["integration_id", "integration", "tool"],
        )
        invoices = pd.DataFrame(
            session.execute(
                select(
                    InvoiceRow.integration_id, InvoiceRow.status, InvoiceRow.registration_number.is_not(None)
                )
            ).all(),
            columns=["integration_id", "status", "synced"],
        )
        ledger = pd.DataFrame(
            session.execute(select(LedgerRow.integration_id, LedgerRow.state)).all(),
            columns=["integration_id", "state"],
        )
    if integrations.empty:
        return integrations
    registered = invoices[invoices["status"] != "draft"]
    out = integrations.set_index("integration_id")
    out["synced"] = registered[registered["synced"]].groupby("integration_id").size()
    out["unsynced"] = registered[~registered["synced"]].groupby("integration_id").size()
    out["drafts"] = invoices[invoices["status"] == "draft"].groupby("integration_id").size()
    states = ledger.groupby(["integration_id", "state"]).size().unstack(fill_value=0)
    for state, column in (("rejected", "failed"), ("deferred", "deferred"), ("unknown", "unknown")):
        out[column] = states[state] if state in states else 0
    return (
        out.fillna(0)
        .astype({c: int for c in ("synced", "unsynced", "drafts", "failed", "deferred", "unknown")})
        .reset_index()
    )


def last_run(engine: Engine) -> dict[str, Any] | None:
    with Session(engine) as session:
        row = session.scalars(select(RunRow).order_by(RunRow.finished_at.desc()).limit(1)).first()
        if row is None:
            return None
        return {
            "dag_id": row.dag_id,
            "run_id": row.run_id,
            "run_type": row.run_type,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "counts": row.counts,
        }
