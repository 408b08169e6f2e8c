"""What the Invoice sync page shows, assembled from the store: no HTTP, no Airflow, so it is testable alone.

The page answers "which invoices are not synced, and what do I do about it" per integration. The ledger
keeps only the *last* outcome per invoice, which is exactly what a person needs: the error that blocks the
invoice now, with a hint where to fix it (:func:`invoice_sync.domain.hints.fix_hint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from invoice_sync.connectors.registry import DESCRIPTORS
from invoice_sync.connectors.settings import with_tool_settings
from invoice_sync.domain.hints import fix_hint
from invoice_sync.domain.models import Integration
from invoice_sync.store.models import LedgerState
from invoice_sync.store.repository import Notification, SyncStore, UnsyncedInvoice

NEW = "new"
CHANGED_AFTER_SYNC = "changed_after_sync"
STATE_LABELS: dict[str, str] = {
    NEW: "not tried yet",
    LedgerState.CLAIMED: "being sent (outcome not known yet)",
    LedgerState.BOOKED: "booked, number not written back yet",
    LedgerState.REJECTED: "rejected by the tool or our checks",
    LedgerState.UNKNOWN: "sent, no answer (looked up next run)",
    LedgerState.DEFERRED: "deferred (tool's daily limit)",
    CHANGED_AFTER_SYNC: "changed after sync",
}
"""The state filter's choices, in words a bookkeeper reads; the keys are the values in the URL."""

DEFAULT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Filters:
    """The page's query string, validated: unknown states are refused rather than silently ignored."""

    integration: int | None = None
    tool: str | None = None
    state: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATE_LABELS:
            raise ValueError(f"unknown state {self.state!r}; choose one of {', '.join(STATE_LABELS)}")

    def query(self) -> str:
        """The filters as a query string, to come back to the same view after an action."""
        values = {"integration": self.integration, "tool": self.tool, "state": self.state}
        return urlencode({key: value for key, value in values.items() if value not in (None, "")})


BEFORE_CUTOVER_LABEL = "dated before the cut-over date: never synced (booked before the integration)"


@dataclass(frozen=True, slots=True)
class UnsyncedView:
    invoice: UnsyncedInvoice
    hint: str | None
    before_cutover: bool = False
    """Dated before the integration's ``sync_from``: the sync skips it for good, so "not tried yet"
    would promise a sync that never comes."""

    @property
    def state(self) -> str:
        return self.invoice.state or NEW

    @property
    def state_label(self) -> str:
        if self.before_cutover and self.invoice.state is None:
            return BEFORE_CUTOVER_LABEL
        return STATE_LABELS.get(self.state, self.state)


@dataclass(frozen=True, slots=True)
class IntegrationView:
    integration: Integration
    counts: dict[str, int]
    not_synced: list[UnsyncedView]
    deferred: list[UnsyncedView]
    changed_after_sync: list[dict[str, Any]]
    truncated: bool
    """True when more unsynced invoices exist than the page lists."""


@dataclass(frozen=True, slots=True)
class PageView:
    filters: Filters
    integrations: list[IntegrationView]
    all_integrations: list[Integration]
    tools: list[tuple[str, str]]
    """The tool filter's choices, ``(name, label)`` in the registry's order: the registered tools that
    have integrations (a tool nobody uses would filter to an empty page)."""
    notification: Notification | None
    show: dict[str, bool] = field(default_factory=dict)
    """Which of the three tables the state filter keeps: ``not_synced``, ``deferred``, ``changed``."""


def build_page(store: SyncStore, filters: Filters, *, limit: int = DEFAULT_LIMIT) -> PageView:
    """Everything the page renders, for the integrations the filters keep."""
    every = [with_tool_settings(integration) for integration in store.integrations()]  # says a bad setting
    chosen = [
        integration
        for integration in every
        if (filters.integration is None or integration.id == filters.integration)
        and (not filters.tool or integration.tool == filters.tool)
    ]
    show = {
        "not_synced": filters.state not in (LedgerState.DEFERRED, CHANGED_AFTER_SYNC),
        "deferred": filters.state in (None, LedgerState.DEFERRED),
        "changed": filters.state in (None, CHANGED_AFTER_SYNC),
    }
    counts = store.state_counts()
    views = [_integration_view(store, integration, counts, filters, show, limit) for integration in chosen]
    return PageView(
        filters=filters,
        integrations=views,
        all_integrations=every,
        tools=[(d.name, d.label) for d in DESCRIPTORS if any(i.tool == d.name for i in every)],
        notification=store.latest_notification(filters.integration),
        show=show,
    )


def _integration_view(
    store: SyncStore,
    integration: Integration,
    counts: dict[int, dict[str, int]],
    filters: Filters,
    show: dict[str, bool],
    limit: int,
) -> IntegrationView:
    raw = counts.get(integration.id, {})
    changed = store.changed_after_sync(integration.id)
    unsynced: list[UnsyncedInvoice] = []
    if show["not_synced"] or show["deferred"]:
        state = filters.state if filters.state != CHANGED_AFTER_SYNC else None
        unsynced = store.unsynced_invoices(integration.id, state=state, limit=limit)
    cutover = integration.sync_from
    rows = [
        UnsyncedView(
            invoice,
            _hint(invoice),
            cutover is not None and invoice.invoice_date is not None and invoice.invoice_date < cutover,
        )
        for invoice in unsynced
    ]
    return IntegrationView(
        integration=integration,
        counts={
            "synced": raw.get("synced", 0),
            "unsynced": raw.get("unsynced", 0),
            "failed": raw.get(LedgerState.REJECTED, 0),
            "deferred": raw.get(LedgerState.DEFERRED, 0),
            "unknown": raw.get(LedgerState.UNKNOWN, 0),
            "changed_after_sync": len(changed),
            "drafts": raw.get("drafts", 0),
        },
        not_synced=[row for row in rows if row.state != LedgerState.DEFERRED] if show["not_synced"] else [],
        deferred=[row for row in rows if row.state == LedgerState.DEFERRED] if show["deferred"] else [],
        changed_after_sync=changed if show["changed"] else [],
        truncated=len(unsynced) >= limit,
    )


def _hint(invoice: UnsyncedInvoice) -> str | None:
    """A fix hint only where there is something to fix: an error, not a pending or deferred invoice."""
    if invoice.state not in (LedgerState.REJECTED, LedgerState.UNKNOWN) or not invoice.error_message:
        return None
    return fix_hint(invoice.error_class, invoice.error_message)
