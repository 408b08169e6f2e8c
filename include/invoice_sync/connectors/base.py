"""What every connector does the same way (:class:`HookConnector`): the push loop that turns invoices into
calls and answers into outcomes. The contract itself, the token vault and the token set are ports of the
domain (:mod:`invoice_sync.domain.ports`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from invoice_sync.connectors.amounts import document_label
from invoice_sync.domain.errors import ConfigError, DataError, OutcomeUnknownError, SyncError
from invoice_sync.domain.models import (
    Booked,
    Booking,
    ErrorClass,
    Integration,
    Invoice,
    Outcome,
    Problem,
    Rejected,
    Unknown,
)
from invoice_sync.domain.ports import BudgetLeft

if TYPE_CHECKING:
    from invoice_sync.connectors.hooks import AccountingHook

HookT = TypeVar("HookT", bound="AccountingHook")
PayloadT = TypeVar("PayloadT")
"""What the tool's mapping makes of one invoice (a JSON body, an XML element)."""
AnswerT = TypeVar("AnswerT")
"""What the tool's create call answers (a JSON body, an XML element, a list of elements)."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The tool refused the invoice because it already holds its number.

    Booked by an earlier attempt of ours whose answer was lost, or by someone else: only a lookup tells,
    so the push loop settles it (:meth:`HookConnector.settle_duplicates`) before it yields the call's
    outcomes.
    """

    message: str
    """The refusal in the tool's words (with the hook's context where the tool's reader adds it)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """The tool did not process the invoice in this call, and said so: it stopped after other invoices'
    faults (Yuki), or refused the whole request for another invoice's sake (Xero). Nothing was booked,
    so the push loop sends it again in the next call."""


SKIPPED = Skipped()

Reading = Booked | Rejected | Unknown | Duplicate | Skipped
"""What a tool's answer says about one invoice it was sent."""


class HookConnector(Generic[HookT, PayloadT, AnswerT]):
    """What every connector does the same way: it books one integration through one hook.

    :meth:`push` is the one loop every tool books through: it refuses what validation already refuses,
    groups the rest into calls of :attr:`invoices_per_call`, sends each call, turns transport errors into
    outcomes the same way for every tool, settles duplicate numbers by lookup, and yields each call's
    outcomes before the next call leaves (the engine records them in between). A subclass names
    the ``tool`` and its mapping's pure ``check``, and implements what its API differs in: the lookups and
    customers of the contract, and for the push :meth:`payload`, :meth:`send` and :meth:`read`.

    :param integration: the integration whose invoices it books.
    :param hook: the client for that integration's connection and administration.
    """

    tool: str
    invoices_per_call: int = 1
    """The most invoices one create call carries; a batching tool's connector names its batch size."""
    sends_per_call: int = 1
    """How often one call's invoices may be sent while the tool answers some of them :data:`SKIPPED`."""
    call_refusals: tuple[type[SyncError], ...] = (DataError, ConfigError)
    """Typed errors of the create call that refuse the invoices it carried (each becomes ``Rejected``
    with the error's class and text). Any other typed error stops the push and is raised: the invoices not
    yielded yet were not sent. A tool whose whole-call refusals concern the administration rather than the
    invoices (Yuki) names fewer."""

    def __init__(self, integration: Integration, hook: HookT) -> None:
        self.integration = integration
        self.settings = integration.settings
        self.hook = hook
        hook.expects_sandbox = integration.settings.demo

    @property
    def request_timeout_s(self) -> float:
        """The longest one request to the tool may take (the connection's ``timeout`` extra).

        The engine waits this long past an orphaned holder's lease before it looks its invoices up, so a
        request that holder still had in flight has landed by then. Reads the connection; no network I/O.
        """
        return self.hook.request_timeout_s

    @property
    def budget_left(self) -> BudgetLeft:
        """What the hook's rate budget may still spend (see :meth:`AccountingHook.budget_left`)."""
        return self.hook.budget_left()

    def check_connection(self) -> None:
        """The hook's declarative check of its connection (see :meth:`AccountingHook.check_connection`)."""
        self.hook.check_connection()

    def keep_alive_while_waiting(self, renew: Callable[[], None], every_s: float) -> None:
        """Every wait is the hook's (see :meth:`AccountingHook.keep_alive_while_waiting`)."""
        self.hook.keep_alive_while_waiting(renew, every_s)

    def validate(self, invoice: Invoice) -> list[Problem]:
        """The tool's own problems with ``invoice``, found without a call (its mapping's ``validate``)."""
        raise NotImplementedError

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """The contract's lookup by our own invoice numbers; each tool implements it."""
        raise NotImplementedError

    # -- the push loop ------------------------------------------------------------------------------------

    def push(self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]) -> Iterator[Outcome]:
        """:meth:`push_calls` one outcome at a time (see :meth:`invoice_sync.domain.ports.Connector.push`)."""
        for outcomes in self.push_calls(invoices, customer_ids):
            yield from outcomes

    def push_calls(
        self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]
    ) -> Iterator[list[Outcome]]:
        """Send ``invoices`` in calls of :attr:`invoices_per_call`, yielding each call's outcomes together
        before the next call leaves (see :meth:`invoice_sync.domain.ports.Connector.push_calls`).

        Every answer is read per invoice: HTTP 200 alone proves nothing. A lost answer (timeout, 5xx after
        sending) leaves every invoice of that call ``Unknown``; a refusal of the whole call
        (:attr:`call_refusals`) rejects them; other typed errors are raised.
        """
        for call in self.calls(invoices, customer_ids):
            if isinstance(call, Rejected):
                yield [call]
            else:
                yield from self._book(call)

    def calls(
        self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]
    ) -> Iterator[Rejected | list[tuple[Invoice, PayloadT]]]:
        """``invoices`` the way the connector sends them, in order: each refused one (see
        :meth:`customer_or_refusal`) as its ``Rejected``, the others with their :meth:`payload` in groups
        of :attr:`invoices_per_call`, each group as soon as it is full, so its outcomes are recorded
        before the next group is even built."""
        group: list[tuple[Invoice, PayloadT]] = []
        for invoice in invoices:
            customer = self.customer_or_refusal(invoice, customer_ids)
            if isinstance(customer, Rejected):
                yield customer
                continue
            group.append((invoice, self.payload(invoice, customer)))
            if len(group) == self.invoices_per_call:
                yield group
                group = []
        if group:
            yield group

    def _book(self, call: list[tuple[Invoice, PayloadT]]) -> Iterator[list[Outcome]]:
        """Each send's outcomes in the call's order, duplicates once looked up; then what the tool skipped,
        sent again up to :attr:`sends_per_call` times in all."""
        pending = call
        for _ in range(self.sends_per_call):
            readings = self._send(pending)
            duplicates = [
                (invoice, reading)
                for (invoice, _), reading in zip(pending, readings, strict=True)
                if isinstance(reading, Duplicate)
            ]
            settled = {outcome.invoice_id: outcome for outcome in self._settle(duplicates)}
            skipped = []
            outcomes: list[Outcome] = []
            for (invoice, payload), reading in zip(pending, readings, strict=True):
                if isinstance(reading, Skipped):
                    skipped.append((invoice, payload))
                else:
                    outcomes.append(settled[invoice.id] if isinstance(reading, Duplicate) else reading)
            if outcomes:
                yield outcomes
            if not skipped:
                return
            pending = skipped
        # never expected: every tool processes some invoices of each call
        yield [
            Rejected(
                invoice.id,
                ErrorClass.TRANSIENT,
                f"{self.hook.context}: {self.hook.tool_name} did not process {document_label(invoice)} in "
                f"{self.sends_per_call} calls in a row",
            )
            for invoice, _ in pending
        ]

    def _send(self, call: list[tuple[Invoice, PayloadT]]) -> list[Reading]:
        """One create call, read per invoice; a lost answer or a whole-call refusal reads alike for all."""
        try:
            answer = self.send(call)
        except OutcomeUnknownError as error:
            return [Unknown(invoice.id, error.message) for invoice, _ in call]
        except self.call_refusals as error:  # refused as a whole, before processing
            return [Rejected(invoice.id, error.error_class, error.message) for invoice, _ in call]
        return self.read(call, answer)

    def _settle(self, duplicates: Sequence[tuple[Invoice, Duplicate]]) -> list[Outcome]:
        """:meth:`settle_duplicates`, or ``Unknown`` when the lookup fails: the call's other outcomes must
        still be yielded, and the engine looks these up again later."""
        if not duplicates:
            return []
        try:
            return self.settle_duplicates(duplicates)
        except SyncError as error:
            holds = f"{self.hook.tool_name} already holds these numbers"
            note = f"{self.hook.context}: {holds}, but the lookup failed: "
            return [Unknown(invoice.id, note + error.message) for invoice, _ in duplicates]

    # -- what a tool's API differs in -----------------------------------------------------------------------

    def payload(self, invoice: Invoice, customer_id: str) -> PayloadT:
        """What the tool's mapping makes of ``invoice`` for the customer the tool knows as ``customer_id``."""
        raise NotImplementedError

    def send(self, call: list[tuple[Invoice, PayloadT]]) -> AnswerT:
        """The tool's create call for these invoices; raises the hook's typed errors."""
        raise NotImplementedError

    def read(self, call: list[tuple[Invoice, PayloadT]], answer: AnswerT) -> list[Reading]:
        """What ``answer`` says about each invoice of ``call``, in the call's order.

        Only what the answer proves counts: an invoice it does not name, or names without saying what
        was booked, is ``Unknown``, never guessed.
        """
        raise NotImplementedError

    def settle_duplicates(self, duplicates: Sequence[tuple[Invoice, Duplicate]]) -> list[Outcome]:
        """The tool already holds these numbers: booked by an earlier attempt of ours, or by someone else.

        Booked when :meth:`find_duplicates` finds the record (its id is the proof); otherwise the invoice
        was not booked a second time and is refused (:meth:`duplicate_refusal`), so it is not resent
        unchanged run after run.
        """
        found = self.find_duplicates([invoice for invoice, _ in duplicates])
        outcomes: list[Outcome] = []
        for invoice, duplicate in duplicates:
            booking = found.get(invoice.id)
            if booking is None:
                outcomes.append(self.duplicate_refusal(invoice, duplicate))
            else:
                outcomes.append(Booked(invoice.id, booking.registration_number, booking.external_id))
        return outcomes

    def find_duplicates(self, invoices: Sequence[Invoice]) -> Mapping[int, Booking]:
        """What the tool holds for these invoices' numbers, by invoice id; the contract's
        :meth:`find_booked` by default."""
        found = self.find_booked([invoice.number or "" for invoice in invoices])
        return {invoice.id: found[invoice.number] for invoice in invoices if invoice.number in found}

    def duplicate_refusal(self, invoice: Invoice, duplicate: Duplicate) -> Rejected:
        """A duplicate the lookup did not find: a data problem, in the tool's words."""
        return Rejected(invoice.id, ErrorClass.DATA, duplicate.message)

    # -- refusals without a call ----------------------------------------------------------------------------

    def customer_or_refusal(self, invoice: Invoice, customer_ids: Mapping[int, str]) -> str | Rejected:
        """The tool's id of the invoice's customer when the invoice may be sent; otherwise why not: its
        customer has no record in the tool (the link failed, and said why), or the tool would refuse the
        invoice for a reason found without a call."""
        customer_id = customer_ids.get(invoice.customer.id) if invoice.customer else None
        if customer_id is None:
            message = f"{document_label(invoice)} has no customer linked in {self.hook.tool_name}"
            return Rejected(invoice.id, ErrorClass.DATA, message)
        problems = self.validate(invoice)
        if problems:
            return Rejected(invoice.id, problems[0].error_class, "; ".join(p.message for p in problems))
        return customer_id
