"""The ports: what the engine and the store need from the outside, declared where no I/O lives.

The engine books through a :class:`Connector` and the store keeps rotating OAuth tokens behind a
:class:`TokenVault`; both are declared here, in the domain, so that neither the engine nor the store imports
anything from ``invoice_sync.connectors`` (data flows store -> engine -> connector, never back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from invoice_sync.domain.models import Booking, Customer, Integration, Invoice, Outcome, Problem


@dataclass(frozen=True, slots=True)
class TokenSet:
    """An OAuth access token with the refresh token that replaces it."""

    access_token: str
    refresh_token: str
    expires_at: datetime

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        return f"TokenSet(expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True, slots=True)
class BudgetLeft:
    """What a tool's rate budget may still spend, as far as the client knows, for progress lines.

    ``None`` means "not known": the tool has not said yet (a header-announced window before the first
    answer, or right after it reopened), or it announces no such window at all.
    """

    short: int | None
    """Left in the short window (a minute for every tool so far)."""
    long: int | None
    """Left in the long window (a day)."""
    unit: str = "calls"
    """What the budget counts: ``"calls"``, or ``"credits"`` for a tool that prices calls differently."""

    def describe(self) -> str:
        """``"37 calls left this minute, 4,812 today"``; the windows the client does not know are left out."""
        parts = []
        if self.short is not None:
            parts.append(f"{self.short:,} {self.unit} left this minute")
        if self.long is not None:
            parts.append(f"{self.long:,} today" if parts else f"{self.long:,} {self.unit} left today")
        return ", ".join(parts) if parts else "not announced yet"


@dataclass(frozen=True, slots=True)
class SharedWindow:
    """One vendor window that every process of this installation spends together.

    :param key: the vendor's scope, e.g. ``twinfield:client:<client id>:minute``.
    :param limit: units (calls, credits) per window.
    :param period_s: length of the window in seconds (shorter for a time-scaled sandbox).
    :param daily: a long window: when it is spent the rest of the run waits for the next one
        (:class:`~invoice_sync.domain.errors.QuotaExceededError`), it is not waited out.
    """

    key: str
    limit: int
    period_s: float
    daily: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to a claim: granted (spend after ``wait_s``), or refused because the earliest window
    with room opens only in ``wait_s`` seconds, longer than the caller may wait."""

    granted: bool
    wait_s: float


class BudgetStore(Protocol):
    """Where the windows several processes share are counted (Redis or the invoicing database)."""

    def reserve(self, window: SharedWindow, cost: int, *, max_wait_s: float) -> Reservation:
        """Reserve ``cost`` units in the earliest window with room, in arrival order."""
        ...


class TokenVault(Protocol):
    """Durable, process-safe storage of one connection's rotating tokens.

    ``refresh`` runs ``refresher`` while holding a lock on the connection's row, so two workers never
    spend the same refresh token. The refresher receives the tokens stored *now* (another process may
    have rotated them meanwhile) and returns either those, still valid, or new ones to persist.
    """

    def load(self, conn_id: str) -> TokenSet | None: ...

    def refresh(self, conn_id: str, refresher: Callable[[TokenSet | None], TokenSet]) -> TokenSet: ...


@dataclass(frozen=True, slots=True)
class CustomerLinkFailure:
    """A customer the tool would not create or match; its invoices are rejected with this reason."""

    error_class: str
    message: str


class Connector(Protocol):
    """What the engine needs from an accounting tool.

    ``validate`` does no I/O; the others are batched as far as the tool's API allows and raise the typed
    errors of :mod:`invoice_sync.domain.errors` for failures that concern the whole call.
    """

    tool: str
    invoices_per_call: int
    """The most invoices one create call carries (1 for a tool without batches)."""

    @property
    def request_timeout_s(self) -> float:
        """The longest one request to the tool can take; a run taking over an expired claim waits this
        long past the old lease, so a request the old holder sent has finished before the lookup."""
        ...

    @property
    def budget_left(self) -> BudgetLeft:
        """What the tool's rate budget may still spend; no I/O (for the task log's progress lines)."""
        ...

    def check_connection(self) -> None:
        """Raise :class:`~invoice_sync.domain.errors.ConfigError` naming every field of the Airflow
        connection that is not filled in; no network I/O, so a task can call it before anything else."""
        ...

    def keep_alive_while_waiting(self, renew: Callable[[], None], every_s: float) -> None:
        """Call ``renew`` at least every ``every_s`` seconds while the connector waits (rate limits,
        back-off), letting its error end the wait; the engine renews its claim's lease this way."""
        ...

    def validate(self, invoice: Invoice) -> list[Problem]: ...

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]: ...

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]: ...

    def push(self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]) -> Iterator[Outcome]:
        """Send ``invoices`` and yield one outcome per invoice as soon as it is known.

        Yielding (rather than returning a list) lets the engine record each outcome before the next
        request goes out, so a crash of the task mid-batch loses nothing (a crash of the machine may lose
        the latest outcomes, whose invoices are then still ``claimed`` and looked up by the next run). A
        failure of one invoice's request is an outcome (``Rejected`` or ``Unknown``); a failure that stops
        the whole batch before a request is sent (quota spent, authorisation withdrawn) is raised, and the
        invoices not yet yielded were not sent.
        """
        ...

    def push_calls(
        self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]
    ) -> Iterator[list[Outcome]]:
        """:meth:`push`, with the outcomes of one call to the tool yielded together.

        The next call leaves only when the next list is asked for, so the engine records each call's
        outcomes in one transaction before it: a batching tool's 25 to 50 invoices cost one write instead
        of one each, with the same guarantee (nothing is sent while an earlier answer is unrecorded).
        """
        ...


class ConnectorFactory(Protocol):
    def __call__(self, integration: Integration, vault: TokenVault, **hook_options: Any) -> Connector: ...
