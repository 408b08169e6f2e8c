"""What every connector does the same way (:class:`HookConnector`); the contract itself, the token vault
and the token set are ports of the domain (:mod:`invoice_sync.domain.ports`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from invoice_sync.connectors.amounts import document_label
from invoice_sync.domain.models import (
    ErrorClass,
    Integration,
    IntegrationSettings,
    Invoice,
    Problem,
    Rejected,
)
from invoice_sync.domain.ports import BudgetLeft

if TYPE_CHECKING:
    from invoice_sync.connectors.hooks import AccountingHook

HookT = TypeVar("HookT", bound="AccountingHook")
PayloadT = TypeVar("PayloadT")


class HookConnector(Generic[HookT]):
    """What every connector does the same way: it books one integration through one hook.

    Subclasses name the ``tool`` and the pure ``validate`` of their mapping module, and implement the
    calls the API differs in (lookups, customers, push).

    :param integration: the integration whose invoices it books.
    :param hook: the client for that integration's connection and administration.
    """

    tool: str
    invoices_per_call: int = 1
    """The most invoices one create call carries; a batching tool's connector names its batch size."""

    def __init__(self, integration: Integration, hook: HookT) -> None:
        self.integration = integration
        self.settings = integration.settings
        self.hook = hook

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
        """The tool's own problems with ``invoice``, found without a call."""
        return self.check(invoice, self.settings)

    def calls(
        self,
        invoices: Sequence[Invoice],
        customer_ids: Mapping[int, str],
        payload: Callable[[Invoice, str], PayloadT],
    ) -> Iterator[Rejected | list[tuple[Invoice, PayloadT]]]:
        """``invoices`` the way the connector sends them, in order: each refused one (see
        :meth:`customer_or_refusal`) as its ``Rejected``, the others with their ``payload(invoice, tool's
        customer id)`` in groups of :attr:`invoices_per_call`, each group as soon as it is full, so its
        outcomes are recorded before the next group is even built."""
        group: list[tuple[Invoice, PayloadT]] = []
        for invoice in invoices:
            customer = self.customer_or_refusal(invoice, customer_ids)
            if isinstance(customer, Rejected):
                yield customer
                continue
            group.append((invoice, payload(invoice, customer)))
            if len(group) == self.invoices_per_call:
                yield group
                group = []
        if group:
            yield group

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

    @staticmethod
    def check(invoice: Invoice, settings: IntegrationSettings) -> list[Problem]:
        """The mapping module's ``validate``; each connector names its own."""
        raise NotImplementedError
