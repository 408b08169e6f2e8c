"""The Twinfield connector: one integration (one office) behind the engine's ``Connector`` contract.

Twinfield has no idempotency key, so exactly-once rests on our invoice number in the transaction's
``invoicenumber``: the engine calls :meth:`TwinfieldConnector.find_booked` before any new attempt, and
every outcome the connector cannot be sure of is reported as :class:`~invoice_sync.domain.models.Unknown`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from invoice_sync.connectors.base import HookConnector, Reading
from invoice_sync.connectors.soap import Element, find_all, local, text
from invoice_sync.connectors.twinfield import mapping
from invoice_sync.connectors.twinfield.errors import message_class
from invoice_sync.connectors.twinfield.hook import TwinfieldHook
from invoice_sync.connectors.twinfield.settings import TwinfieldSettings
from invoice_sync.domain.errors import ConfigError
from invoice_sync.domain.models import (
    Booked,
    Booking,
    Customer,
    ErrorClass,
    Integration,
    Invoice,
    Problem,
    Rejected,
    Unknown,
)
from invoice_sync.domain.ports import CustomerLinkFailure, TokenVault

TOOL = "twinfield"
BATCH_SIZE = 25
"""Transactions per ProcessXml call.

A write costs 3 credits whatever its size, so batching is what keeps a sync cheap (100 invoices: 4 calls,
12 credits, instead of 300). Larger batches would save little more and cost more when an answer is lost:
every transaction of that call becomes ``Unknown`` and needs a browse each (1 credit), the request takes
longer against the connection's timeout, and fewer outcomes are recorded before the next call leaves.
25 is also the most php-twinfield sends in one request, a size Twinfield is known to handle."""
CUSTOMER_BATCH_SIZE = 100
"""Dimensions per ProcessXml upsert: a page's new customers normally go in one call."""


class TwinfieldConnector(HookConnector[TwinfieldHook, Element, Element]):
    """Books one integration's invoices as Twinfield sales transactions in its office.

    :param integration: the integration; its :class:`.TwinfieldSettings` name the Twinfield office.
    :param hook: the client for that office (see :func:`build_connector`).
    """

    tool = TOOL
    invoices_per_call = BATCH_SIZE

    settings: TwinfieldSettings
    """The integration's settings as Twinfield reads them (:func:`build_connector` makes sure they are)."""

    def validate(self, invoice: Invoice) -> list[Problem]:
        """Twinfield-specific problems found without a call (see :func:`.mapping.validate`)."""
        return mapping.validate(invoice, self.settings)

    # -- lookups ----------------------------------------------------------------------------------------

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """Transactions of this office and its daybooks whose ``invoicenumber`` is one of ``references``.

        One browse (code 100, 1 credit) per reference: a browse filters on one value per field. A row
        counts only when it carries our office and our invoice number itself: the filter is Twinfield's to
        apply, and a browse that ignored it would otherwise "find" someone else's transaction and record
        an unbooked invoice as booked with its number, a booking lost for good (reference, corrections of
        2026-12-04). When Twinfield holds several transactions for a reference (booked by hand as well,
        say), the lowest number wins, so repeated lookups agree.
        """
        daybooks = set(mapping.daybooks(self.settings))
        office = self.settings.office
        found: dict[str, Booking] = {}
        for reference in dict.fromkeys(references):
            answer = self.hook.process_xml(mapping.browse_request(office, reference), read=True)
            if answer.get("result") == "0":
                raise ConfigError(
                    f"{self.hook.context}: the lookup of {reference} was refused: {_messages(answer)}"
                )
            numbers = []
            foreign = 0
            for row in find_all(answer, "tr"):
                cells = {cell.get("field"): text(cell) for cell in find_all(row, "td")}
                if (
                    cells.get("fin.trs.line.invnumber") != reference
                    or cells.get("fin.trs.head.office") != office
                ):
                    foreign += 1
                    continue
                if daybooks and cells.get("fin.trs.head.code") not in daybooks:
                    continue
                cell = cells.get("fin.trs.head.number", "")
                if cell.isdigit():
                    numbers.append((int(cell), cells.get("fin.trs.head.code", "")))
            if foreign:
                self.hook.log.warning(
                    "%s: the lookup of %s answered %d row(s) of other invoice numbers or offices; ignored",
                    self.hook.context,
                    reference,
                    foreign,
                )
            if numbers:
                number, daybook = min(numbers)
                found[reference] = Booking(reference, str(number), self._external_id(daybook, str(number)))
        return found

    def _external_id(self, daybook: str, number: str) -> str:
        return f"{self.settings.office}/{daybook}/{number}"

    # -- customers --------------------------------------------------------------------------------------

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]:
        """The debtor code of each customer, upserting every one of them in one ProcessXml call.

        The code is our customer id plus the configured offset, so an upsert by code is idempotent: a
        customer created by an earlier, interrupted run is updated, never created twice, and a lost answer
        is simply sent again (the hook retries it). A customer Twinfield refuses becomes a
        :class:`~invoice_sync.connectors.base.CustomerLinkFailure` with Twinfield's text; the others go on.
        """
        unique = list({customer.id: customer for customer in customers}.values())
        links: dict[int, str | CustomerLinkFailure] = {}
        for start in range(0, len(unique), CUSTOMER_BATCH_SIZE):
            batch = unique[start : start + CUSTOMER_BATCH_SIZE]
            request = mapping.dimensions_request(batch, self.settings)
            answer = self.hook.process_xml(request, read=False, repeatable=True)
            results = _items(answer, "dimension")
            for index, customer in enumerate(batch):
                code = mapping.customer_code(customer.id, self.settings)
                result = results[index] if index < len(results) else None
                if result is None or text(result, "code") != code:
                    links[customer.id] = CustomerLinkFailure(
                        str(ErrorClass.TRANSIENT), f"{self.hook.context}: no answer for debtor {code}"
                    )
                elif result.get("result") == "1":
                    links[customer.id] = code
                else:
                    message = _messages(result)
                    links[customer.id] = CustomerLinkFailure(
                        str(message_class(message)), f"{self.hook.context}: debtor {code}: {message}"
                    )
        return links

    # -- booking ----------------------------------------------------------------------------------------

    def payload(self, invoice: Invoice, customer_id: str) -> Element:
        return mapping.transaction_element(invoice, self.settings, customer_id)

    def send(self, call: list[tuple[Invoice, Element]]) -> Element:
        """One ProcessXml call with :data:`BATCH_SIZE` transactions at most; a write costs 3 credits
        whatever its size. A fault we do not recognise leaves the call's outcome unknown (the hook)."""
        request = mapping.transactions_request([transaction for _, transaction in call])
        return self.hook.process_xml(request, read=False)

    def read(self, call: list[tuple[Invoice, Element]], answer: Element) -> list[Reading]:
        """Twinfield judges each transaction on its own, answering in request order: ``result="1"`` is
        booked with its number, ``result="0"`` is refused with the texts of the offending elements."""
        results = _items(answer, "transaction")
        return [self._reading(invoice, results, index) for index, (invoice, _) in enumerate(call)]

    def _reading(self, invoice: Invoice, results: list[Element], index: int) -> Reading:
        result = results[index] if index < len(results) else None
        if result is None or text(result, "header", "invoicenumber") != (invoice.number or ""):
            return Unknown(
                invoice.id, f"{self.hook.context}: Twinfield's answer did not say what became of it"
            )
        if result.get("result") == "1":
            number = text(result, "header", "number")
            daybook = text(result, "header", "code")
            if not number:
                return Unknown(invoice.id, f"{self.hook.context}: the answer carried no transaction number")
            return Booked(invoice.id, number, self._external_id(daybook, number))
        message = _messages(result) or "refused without a message"
        return Rejected(invoice.id, message_class(message), f"{self.hook.context}: {message}")


def _items(answer: Element, name: str) -> list[Element]:
    """The per-item answers of a ``dimensions``/``transactions`` call (or the single item itself)."""
    if local(answer) == name:
        return [answer]
    return find_all(answer, name)


def _messages(node: Element) -> str:
    """Every error text in ``node`` and below, in document order, without repeats."""
    messages = [
        element.get("msg", "")
        for element in node.iter()
        if isinstance(element.tag, str) and element.get("msgtype") == "error" and element.get("msg")
    ]
    if not messages and node.get("msg"):
        messages = [node.get("msg", "")]
    return "; ".join(dict.fromkeys(messages))


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> TwinfieldConnector:
    """The connector for ``integration``, with a client for its connection and office.

    :param hook_options: further keyword arguments of :class:`.TwinfieldHook` (budget, sleep, ...).
    :raises ConfigError: the integration's Twinfield settings cannot be read (no office, say); read here
        unless the operator already did.
    """
    settings = TwinfieldSettings.of(integration)
    hook = TwinfieldHook(
        twinfield_conn_id=integration.conn_id, vault=vault, office=settings.office, **hook_options
    )
    return TwinfieldConnector(settings.applied_to(integration), hook)
