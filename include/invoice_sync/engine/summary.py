"""The run summary and the manual-sync notification, computed from the ledger with pandas.

Counts come from the database, never from XCom, so the summary is true even when a task died halfway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from invoice_sync.domain.hints import fix_hint
from invoice_sync.store.models import LedgerState
from invoice_sync.store.repository import SyncStore

SYNCED_STATES = (LedgerState.BOOKED, LedgerState.WRITTEN_BACK)

LISTED_AT_MOST = 50
"""Errors (and, apart, changed invoices) a notification names one by one; the rest are counted ("and K
more"). A run that fails a whole backlog (a revoked token, thousands of invoices) must not write a bell
entry or a webhook payload of megabytes: chat webhooks refuse large messages (Slack at 40,000 characters)
and nobody reads past the first screen. The counts stay exact, and the Invoice sync page lists every one."""

CAPPED_LISTS = ("errors", "changed_after_sync")


@dataclass(frozen=True)
class RunSummary:
    table: pd.DataFrame
    errors: list[dict[str, Any]]
    changed_after_sync: list[dict[str, Any]]

    @property
    def invoices_synced(self) -> int:
        return int(self.table["synced"].sum()) if not self.table.empty else 0

    @property
    def changed_count(self) -> int:
        """Synced invoices edited since, all of them; :attr:`changed_after_sync` lists the first of each
        integration only (:data:`LISTED_AT_MOST`)."""
        return int(self.table["changed_after_sync"].sum()) if not self.table.empty else 0

    @property
    def customers_created(self) -> int:
        return int(self.table["customers_created"].sum()) if not self.table.empty else 0

    def as_text(self) -> str:
        if self.table.empty:
            return "No integrations were selected."
        return self.table.to_string(index=False)

    def counts(self) -> dict[str, Any]:
        return {
            "invoices_synced": self.invoices_synced,
            "customers_created": self.customers_created,
            "errors": len(self.errors),
            "integrations": self.table.to_dict(orient="records"),
        }


def summarize(store: SyncStore, sync_run_id: str, integration_ids: list[int]) -> RunSummary:
    integrations = {i.id: i for i in store.integrations(integration_ids)}
    ledger = store.ledger_frame(sync_run_id, integration_ids)
    customers = store.customers_created(sync_run_id)
    rows = []
    errors: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for integration_id, integration in integrations.items():
        mine = ledger[ledger["integration_id"] == integration_id]
        states = mine["state"].value_counts()
        rejected = mine[mine["state"] == LedgerState.REJECTED]
        by_class = rejected["error_class"].value_counts()
        skipped = store.skip_counts(integration_id)
        synced = int(sum(states.get(s, 0) for s in SYNCED_STATES))
        # skip counts are read after the write-back: what this run synced is not "already synced"
        already = max(0, int(skipped.get("already_synced", 0)) - int(states.get(LedgerState.WRITTEN_BACK, 0)))
        row: dict[str, Any] = {
            "integration": integration.name,
            "tool": integration.tool,
            "synced": synced,
            "customers_created": int(customers.get(integration_id, 0)),
            "skipped_draft": int(skipped.get("draft", 0)),
            "skipped_already_synced": already,
            "skipped_before_cutover": int(skipped.get("before_cutover", 0)),
            "changed_after_sync": int(skipped.get("changed_after_sync", 0)),
            "failed_data": int(by_class.get("data", 0)),
            "failed_config": int(by_class.get("config", 0)),
            "failed_auth": int(by_class.get("auth", 0)),
            "failed_transient": int(by_class.get("transient", 0)) + int(states.get(LedgerState.UNKNOWN, 0)),
            "deferred": int(states.get(LedgerState.DEFERRED, 0)),
            "still_failing": max(0, store.count_rejected(integration_id) - len(rejected)),
        }
        rows.append(row)
        for record in rejected.sort_values("number").itertuples():
            errors.append(
                {
                    "integration": integration.name,
                    "invoice": record.number,
                    "error_class": record.error_class,
                    "message": record.error_message,
                    "hint": fix_hint(_text(record.error_class), _text(record.error_message)),
                }
            )
        # Edits pile up over the years: read only what a notification lists; the table has the count.
        for item in store.changed_after_sync(integration_id, limit=LISTED_AT_MOST):
            changed.append({"integration": integration.name, **item})
    return RunSummary(pd.DataFrame(rows), errors, changed)


def notification(summary: RunSummary, *, dry_run: bool = False) -> tuple[str, dict[str, Any]]:
    """Title and JSON body of the bell notification for a manual sync, every error listed: the notify task
    adds its own and then cuts the lists with :func:`capped`."""
    invoices, customers, failed = summary.invoices_synced, summary.customers_created, len(summary.errors)
    deferred = int(summary.table["deferred"].sum()) if not summary.table.empty else 0
    prefix = "Dry run: " if dry_run else ""
    title = (
        f"{prefix}Sync finished: {invoices} invoice{'s' if invoices != 1 else ''} and "
        f"{customers} customer{'s' if customers != 1 else ''} synced"
    )
    if failed:
        title += f", {failed} error{'s' if failed != 1 else ''}"
    if deferred:
        title += f", {deferred} deferred to the next run"
    changed = summary.changed_after_sync
    if summary.changed_count:
        title += f", {summary.changed_count} changed after sync (not sent)"
    body = {
        "invoices_synced": invoices,
        "customers_synced": customers,
        "deferred": deferred,
        "errors": [
            {
                "integration": e["integration"],
                "invoice": e["invoice"],
                "error_class": e["error_class"],
                "text": _error_text(e["invoice"], e["message"]),
                "hint": e["hint"],
            }
            for e in summary.errors
        ],
        "changed_after_sync": [
            {
                **item,
                "text": (
                    f"Invoice {item['number']} was changed after it was synced (registration number "
                    f"{item['registration_number']}); the change was not sent."
                ),
                "hint": "Make the same correction in the accounting tool, or issue a credit note in the app.",
            }
            for item in changed
        ],
        "changed_after_sync_count": summary.changed_count,
        "integrations": summary.table.to_dict(orient="records") if not summary.table.empty else [],
    }
    return title, body


def capped(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its lists of errors and changed invoices cut to :data:`LISTED_AT_MOST` entries each.

    Each list keeps its exact length in ``<list>_count`` (or the count the body already gives, where the
    list was read in part: the changed invoices); a cut one says how many it left out in ``<list>_more``
    ("and 450 more"). Applied once, to the finished body (the notify task adds errors of its own to what
    :func:`notification` lists).
    """
    result = dict(body)
    for key in CAPPED_LISTS:
        items = list(body.get(key) or [])
        count = max(len(items), int(body.get(f"{key}_count") or 0))
        result[key] = items[:LISTED_AT_MOST]
        result[f"{key}_count"] = count
        if count > len(result[key]):
            result[f"{key}_more"] = f"and {count - len(result[key])} more"
    return result


def _error_text(number: str | None, message: str | None) -> str:
    """``Invoice <number>: <message>``, unless the message already names the invoice (our own checks do)."""
    message = message or ""
    if number and number in message:
        return message
    return f"Invoice {number}: {message}"


def _text(value: object) -> str | None:
    """A ledger text column's value as text: pandas gives None, NaN or a string for a nullable column."""
    return value if isinstance(value, str) else None
