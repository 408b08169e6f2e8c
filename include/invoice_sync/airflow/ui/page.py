"""What the Invoice sync page shows, assembled from the store: no HTTP, no Airflow, so it is testable alone.

The page answers "which invoices are not synced, and what do I do about it" per integration. The ledger
keeps only the *last* outcome per invoice, which is exactly what a person needs: the error that blocks the
invoice now, with a hint where to fix it (:func:`invoice_sync.domain.hints.fix_hint`).

A deployment may have thousands of integrations and an integration thousands of unsynced invoices, so
every list is one page (LIMIT/OFFSET in SQL) with its total (COUNT in SQL): what one request reads and
renders follows the page sizes, never the backlog. The integrations are paged by ``page``; each list of
each integration by a page number of its own (``not_synced_page``, ``deferred_page``, ``changed_page``),
and the list's links also narrow the page to that integration, so paging one long list does not drag the
other integrations' lists along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from invoice_sync.connectors.registry import DESCRIPTORS
from invoice_sync.connectors.settings import with_tool_settings
from invoice_sync.domain.hints import fix_hint
from invoice_sync.domain.models import Integration
from invoice_sync.store.models import LedgerState
from invoice_sync.store.repository import (
    CHANGED_AFTER_SYNC,
    NEW,
    Notification,
    SyncStore,
    UnsyncedInvoice,
)

T = TypeVar("T")
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

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
"""Integrations a page: ``per_page``, at most this many (each brings up to three lists)."""
DEFAULT_ROWS = 50
MAX_ROWS = 200
"""Invoices a list shows at a time: ``rows``, at most this many."""
INTEGRATION_CHOICES = 100
"""Up to this many integrations the integration filter is a list of their names; beyond, a field for the
id (a list of thousands of names would be the unbounded list this page avoids)."""
_TEXT = ("tool", "state")
_PAGES = ("page", "not_synced_page", "deferred_page", "changed_page")
_MAX_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Filters:
    """The page's query string, validated: a value out of range or unknown is refused (ValueError naming
    the parameter; the route answers 400) rather than silently ignored or honoured without bound."""

    integration: int | None = None
    tool: str | None = None
    state: str | None = None
    page: int = 1
    """Of the integrations, ``per_page`` to a page."""
    per_page: int = DEFAULT_PER_PAGE
    rows: int = DEFAULT_ROWS
    """Invoices per list and page."""
    not_synced_page: int = 1
    deferred_page: int = 1
    changed_page: int = 1

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATE_LABELS:
            raise ValueError(f"unknown state {self.state!r}; choose one of {', '.join(STATE_LABELS)}")
        for name in _PAGES:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}; pages count from 1")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page is {self.per_page}; choose 1 to {MAX_PER_PAGE} integrations a page")
        if not 1 <= self.rows <= MAX_ROWS:
            raise ValueError(f"rows is {self.rows}; choose 1 to {MAX_ROWS} invoices a list")

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """The filters from a query string's values; an empty or missing value is the default, other keys
        are ignored. A number must be written as digits only (no sign, point or exponent)."""
        values: dict[str, Any] = {}
        for name in (f.name for f in fields(cls)):
            text = query.get(name) or ""
            if text:
                values[name] = text if name in _TEXT else _whole_number(name, text)
        return cls(**values)

    def query(self) -> str:
        """The filters as a query string (defaults left out), to come back to the same view after an
        action."""
        default = Filters()
        values = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) not in (None, "", getattr(default, f.name))
        }
        return urlencode(values)

    def link(self, **changes: Any) -> str:
        """A relative link to this view with ``changes``, say another page of one list."""
        return "?" + replace(self, **changes).query()


def _whole_number(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS):
        raise ValueError(f"{name} is {text[:20]!r}; write a whole number of at most {_MAX_DIGITS} digits")
    return int(text)


@dataclass(frozen=True, slots=True)
class Pager:
    """Which rows of a list one page shows, of how many in all."""

    page: int
    size: int
    total: int

    @classmethod
    def of(cls, asked: int, size: int, total: int) -> Pager:
        """Page ``asked``, or the last page when the list is shorter: a stale link still shows rows."""
        return cls(min(asked, _pages(total, size)), size, total)

    @property
    def pages(self) -> int:
        return _pages(self.total, self.size)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def first(self) -> int:
        """The number of the first row shown, counting from 1 (0 for an empty list)."""
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.last < self.total


def _pages(total: int, size: int) -> int:
    """How many pages ``total`` rows fill, ``size`` to a page; an empty list has one (empty) page."""
    return max(1, -(-total // size))


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page of a list and where it is in the whole."""

    rows: list[T]
    pager: Pager


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
    not_synced: Listing[UnsyncedView] | None
    """None where the state filter hides the list."""
    deferred: Listing[UnsyncedView] | None
    changed_after_sync: Listing[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class PageView:
    filters: Filters
    integrations: Listing[IntegrationView]
    integration_choices: list[Integration] | None
    """The integration filter's choices; None when there are more than :data:`INTEGRATION_CHOICES`."""
    tools: list[tuple[str, str]]
    """The tool filter's choices, ``(name, label)`` in the registry's order: the registered tools that
    have integrations (a tool nobody uses would filter to an empty page)."""
    notification: Notification | None


def build_page(store: SyncStore, filters: Filters) -> PageView:
    """Everything the page renders: one page of the integrations the filters keep, one page of each of
    their lists, every total counted in SQL."""
    ids = [filters.integration] if filters.integration is not None else None
    pager = Pager.of(filters.page, filters.per_page, store.count_integrations(ids, tool=filters.tool))
    chosen = [
        with_tool_settings(integration)  # says a bad setting
        for integration in store.integrations(ids, tool=filters.tool, limit=pager.size, offset=pager.offset)
    ]
    show = {  # the lists the state filter keeps
        "not_synced": filters.state not in (LedgerState.DEFERRED, CHANGED_AFTER_SYNC),
        "deferred": filters.state in (None, LedgerState.DEFERRED),
        "changed": filters.state in (None, CHANGED_AFTER_SYNC),
    }
    counts = store.state_counts([integration.id for integration in chosen])
    views = [
        _integration_view(store, integration, counts.get(integration.id, {}), filters, show)
        for integration in chosen
    ]
    with_tools = store.integration_tools()
    return PageView(
        filters=filters,
        integrations=Listing(views, pager),
        integration_choices=(
            store.integrations(limit=INTEGRATION_CHOICES)
            if store.count_integrations() <= INTEGRATION_CHOICES
            else None
        ),
        tools=[(d.name, d.label) for d in DESCRIPTORS if d.name in with_tools],
        notification=store.latest_notification(filters.integration),
    )


def _integration_view(
    store: SyncStore,
    integration: Integration,
    counts: dict[str, int],
    filters: Filters,
    show: dict[str, bool],
) -> IntegrationView:
    """One integration's counts and a page of each list the state filter keeps. The lists' totals are
    the counts (the same rows, counted once in :meth:`SyncStore.state_counts`)."""
    deferred_total = counts.get(LedgerState.DEFERRED, 0)
    not_synced = deferred = changed = None
    if show["not_synced"]:
        state = filters.state
        total = counts.get(state, 0) if state else counts.get("unsynced", 0) - deferred_total
        pager = Pager.of(filters.not_synced_page, filters.rows, total)
        rows = store.unsynced_invoices(
            integration.id,
            state=state,
            other_than=None if state else LedgerState.DEFERRED,
            limit=pager.size,
            offset=pager.offset,
        )
        not_synced = Listing([_unsynced_view(integration, row) for row in rows], pager)
    if show["deferred"]:
        pager = Pager.of(filters.deferred_page, filters.rows, deferred_total)
        rows = store.unsynced_invoices(
            integration.id, state=LedgerState.DEFERRED, limit=pager.size, offset=pager.offset
        )
        deferred = Listing([_unsynced_view(integration, row) for row in rows], pager)
    if show["changed"]:
        pager = Pager.of(filters.changed_page, filters.rows, counts.get(CHANGED_AFTER_SYNC, 0))
        changed = Listing(
            store.changed_after_sync(integration.id, limit=pager.size, offset=pager.offset), pager
        )
    return IntegrationView(
        integration=integration,
        counts={
            "synced": counts.get("synced", 0),
            "unsynced": counts.get("unsynced", 0),
            "failed": counts.get(LedgerState.REJECTED, 0),
            "deferred": deferred_total,
            "unknown": counts.get(LedgerState.UNKNOWN, 0),
            "changed_after_sync": counts.get(CHANGED_AFTER_SYNC, 0),
            "drafts": counts.get("drafts", 0),
        },
        not_synced=not_synced,
        deferred=deferred,
        changed_after_sync=changed,
    )


def _unsynced_view(integration: Integration, invoice: UnsyncedInvoice) -> UnsyncedView:
    cutover = integration.sync_from
    before = cutover is not None and invoice.invoice_date is not None and invoice.invoice_date < cutover
    return UnsyncedView(invoice, _hint(invoice), before)


def _hint(invoice: UnsyncedInvoice) -> str | None:
    """A fix hint only where there is something to fix: an error, not a pending or deferred invoice."""
    if invoice.state not in (LedgerState.REJECTED, LedgerState.UNKNOWN) or not invoice.error_message:
        return None
    return fix_hint(invoice.error_class, invoice.error_message)
