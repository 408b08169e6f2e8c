"""The QuickBooks Online connector: one integration (one company) behind the engine's ``Connector`` contract.

Exactly-once rests on two guards. Every write carries a ``requestid`` derived from its content, so a
resend of a request whose answer was lost is answered from QuickBooks' memory; and our number is the
transaction's ``DocNumber``, which QuickBooks keeps unique (6140) and finds again by query, so the engine's
lookup before any new attempt (:meth:`QuickBooksConnector.find_booked`) sees what an earlier attempt booked,
and a refusal "number already used" is settled by that lookup. Whatever the connector cannot be sure of
is reported as :class:`~invoice_sync.domain.models.Unknown` rather than guessed.

Batching: invoices and credit memos are created through the batch endpoint, :data:`~.hook.BATCH_MAX` (30)
per call, each answered on its own (entity or ``Fault``); customers are matched with one query per page
(``DisplayName in (...)``) and the missing ones created in batches; lookups put the ``Invoice`` and the
``CreditMemo`` query of up to 100 numbers each into one batch call. A 100-invoice sync with new customers
thus costs about eight calls (token, preferences, customer query, customer batch, four invoice batches)
where one call per record would cost over a hundred; the batch endpoint's own limit (40 calls a minute)
then allows some 1,200 invoices a minute. A batch is also the unit a lost answer makes unknown, and 30
lookups to settle is the worst case.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from invoice_sync.connectors.amounts import document_label
from invoice_sync.connectors.base import Duplicate, HookConnector, Reading
from invoice_sync.connectors.quickbooks import mapping
from invoice_sync.connectors.quickbooks.errors import (
    DUPLICATE_DOC_NUMBER,
    DUPLICATE_NAME,
    Fault,
    error_class,
    fault_error,
    faults_of,
    message,
)
from invoice_sync.connectors.quickbooks.hook import BATCH_MAX, QuickBooksHook
from invoice_sync.connectors.quickbooks.settings import QuickBooksSettings
from invoice_sync.domain.errors import ConfigError, DataError, OutcomeUnknownError, TransientError
from invoice_sync.domain.models import (
    Booked,
    Booking,
    Customer,
    ErrorClass,
    Integration,
    Invoice,
    Outcome,
    Problem,
    Rejected,
    Unknown,
)
from invoice_sync.domain.ports import CustomerLinkFailure, TokenVault

TOOL = "quickbooks"
QUERIES_PER_BATCH = BATCH_MAX
"""Lookup queries in one batch call (two per 100 numbers: invoices and credit memos)."""

_Held = dict[str, dict[str, tuple[tuple[datetime, int], Booking]]]
"""Entity -> DocNumber -> (age key, booking) of the oldest record QuickBooks holds for that number."""


class QuickBooksConnector(HookConnector[QuickBooksHook, dict[str, Any], list[dict[str, Any]]]):
    """Books one integration's invoices as QuickBooks Online invoices and credit memos in its company.

    :param integration: the integration; its :class:`.QuickBooksSettings` name the company.
    :param hook: the client for that company (see :func:`build_connector`).
    """

    tool = TOOL
    invoices_per_call = BATCH_MAX

    settings: QuickBooksSettings
    """The integration's settings as QuickBooks reads them (:func:`build_connector` makes sure they are)."""

    def validate(self, invoice: Invoice) -> list[Problem]:
        """QuickBooks-specific problems found without a call (see :func:`.mapping.validate`)."""
        return mapping.validate(invoice, self.settings)

    def __init__(self, integration: Integration, hook: QuickBooksHook) -> None:
        super().__init__(integration, hook)
        self._numbering_checked = False

    def _require_custom_numbers(self) -> None:
        """Read the company's ``Preferences`` once per connector (one run), before its first write.

        With custom transaction numbers off QuickBooks numbers our invoices itself and stores a number we
        send even when it is taken (see :func:`.mapping.custom_numbers_problem`), so neither the lookup
        nor the duplicate guard holds: the run stops with a configuration error before anything is
        created, and the engine marks the rest of the integration's invoices with it.

        :raises ConfigError: custom transaction numbers are off in the company.
        """
        if self._numbering_checked:
            return
        problem = mapping.custom_numbers_problem(self.hook.preferences(), where=self.hook.context)
        if problem is not None:
            raise ConfigError(problem)
        self._numbering_checked = True

    # -- lookups ----------------------------------------------------------------------------------------

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """Invoices and credit memos whose ``DocNumber`` is one of ``references``.

        The engine passes bare numbers, so both entities are asked, in one batch call per 1,500 numbers.
        When QuickBooks holds several records for one number (an invoice and a credit memo, or one keyed
        in by hand before the preference for unique numbers was on), the oldest wins, so repeated lookups
        agree.
        """
        found: dict[str, tuple[tuple[datetime, int], Booking]] = {}
        held = self._held(references, (mapping.INVOICE, mapping.CREDIT_MEMO))
        for by_number in held.values():
            for number, (age, booking) in by_number.items():
                if number not in found or age < found[number][0]:
                    found[number] = (age, booking)
        return {number: booking for number, (_, booking) in found.items()}

    def _held(self, numbers: Sequence[str], entities: Sequence[str]) -> _Held:
        """What QuickBooks holds for ``numbers`` per entity; queries go in batches of
        :data:`QUERIES_PER_BATCH`."""
        queries = [
            (entity, chunk)
            for chunk in mapping.chunks(number for number in numbers if number)
            for entity in entities
        ]
        held: _Held = {entity: {} for entity in entities}
        for start in range(0, len(queries), QUERIES_PER_BATCH):
            group = queries[start : start + QUERIES_PER_BATCH]
            items = [
                {"bId": str(index), "Query": mapping.any_of_query(entity, "DocNumber", chunk)}
                for index, (entity, chunk) in enumerate(group, start=1)
            ]
            answers = _by_bid(self.hook.batch(items, write=False))
            for index, (entity, chunk) in enumerate(group, start=1):
                answer = answers.get(str(index))
                if answer is None:
                    raise TransientError(f"{self.hook.context}: the lookup's answer misses a query")
                faults = faults_of(answer)
                if faults:
                    raise fault_error(faults, context=self.hook.context, status=None)
                wanted = set(chunk)
                for row in (answer.get("QueryResponse") or {}).get(entity) or []:
                    number = str(row.get("DocNumber") or "")
                    if number not in wanted or not row.get("Id"):
                        continue
                    age = _age(row)
                    known = held[entity].get(number)
                    if known is None or age < known[0]:
                        held[entity][number] = (age, Booking(number, number, str(row["Id"])))
        return held

    # -- customers --------------------------------------------------------------------------------------

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]:
        """The QuickBooks customer ``Id`` of each customer, matched by :func:`.mapping.display_name`
        (one query per 100 names), the missing ones created in batches of 30.

        A customer that an earlier, interrupted run created is found by the query, not created again. A
        name QuickBooks refuses as taken (6240, between our query and our create) is looked up again and
        linked when it is our customer's; otherwise the customer link fails with QuickBooks' text. The
        first write of a run checks the company's numbering first (:meth:`_require_custom_numbers`).
        """
        self._require_custom_numbers()
        unique = {customer.id: customer for customer in customers}
        links: dict[int, str | CustomerLinkFailure] = {}
        wanted: dict[int, Customer] = {}
        for customer_id, customer in unique.items():
            problems = mapping.customer_problems(customer)
            if not customer.name.strip():
                problems.insert(0, f"customer #{customer_id} has no name")
            if problems:
                links[customer_id] = CustomerLinkFailure(
                    str(ErrorClass.DATA), f"{self.hook.context}: " + "; ".join(problems)
                )
            else:
                wanted[customer_id] = customer
        held = self._customers_named(mapping.display_name(c) for c in wanted.values())
        missing = []
        for customer_id, customer in wanted.items():
            found = held.get(mapping.display_name(customer).casefold())
            if found is not None:
                links[customer_id] = found
            else:
                missing.append(customer)
        for start in range(0, len(missing), BATCH_MAX):
            links.update(self._create_customers(missing[start : start + BATCH_MAX]))
        return links

    def _customers_named(self, names: Iterable[str]) -> dict[str, str]:
        """``{casefolded DisplayName: Id}`` of the active customers QuickBooks has with these names."""
        found: dict[str, str] = {}
        for chunk in mapping.chunks(names):
            answer = self.hook.query(mapping.any_of_query(mapping.CUSTOMER, "DisplayName", chunk))
            wanted = {name.casefold() for name in chunk}
            rows = sorted(answer.get(mapping.CUSTOMER) or [], key=_age)
            for row in rows:
                name = str(row.get("DisplayName") or "").casefold()
                if name in wanted and row.get("Id") and name not in found:
                    found[name] = str(row["Id"])
        return found

    def _create_customers(self, batch: list[Customer]) -> dict[int, str | CustomerLinkFailure]:
        items = [
            {"bId": str(index), "operation": "create", mapping.CUSTOMER: mapping.customer_payload(customer)}
            for index, customer in enumerate(batch, start=1)
        ]
        try:
            answers = _by_bid(self.hook.batch(items, write=True))
        except OutcomeUnknownError:
            answers = {}  # whatever was created is found by the query below
        except (DataError, ConfigError) as error:
            return {c.id: CustomerLinkFailure(str(error.error_class), error.message) for c in batch}
        links: dict[int, str | CustomerLinkFailure] = {}
        unsettled: dict[int, Fault | None] = {}
        for index, customer in enumerate(batch, start=1):
            answer = answers.get(str(index), {})
            created = answer.get(mapping.CUSTOMER)
            faults = faults_of(answer)
            if isinstance(created, dict) and created.get("Id") and not faults:
                links[customer.id] = str(created["Id"])
            elif faults and faults[0].code != DUPLICATE_NAME:
                links[customer.id] = CustomerLinkFailure(
                    str(error_class(faults[0]) or ErrorClass.TRANSIENT),
                    f"{message(faults[0], context=self.hook.context)} (customer #{customer.id})",
                )
            else:  # the name is taken, or we do not know whether it was created: ask again
                unsettled[customer.id] = faults[0] if faults else None
        if unsettled:
            by_id = {customer.id: customer for customer in batch}
            names = {cid: mapping.display_name(by_id[cid]) for cid in unsettled}
            held = self._customers_named(names.values())
            for customer_id, fault in unsettled.items():
                found = held.get(names[customer_id].casefold())
                links[customer_id] = found if found is not None else self._unlinked(names[customer_id], fault)
        return links

    def _unlinked(self, name: str, fault: Fault | None) -> CustomerLinkFailure:
        if fault is None:
            return CustomerLinkFailure(
                str(ErrorClass.TRANSIENT),
                f"{self.hook.context}: no answer for customer {name}, and QuickBooks does not have it; "
                "the next run tries again",
            )
        return CustomerLinkFailure(
            str(ErrorClass.DATA),
            f"{message(fault, context=self.hook.context)} (QuickBooks uses the name {name} for a vendor, an "
            "employee or an inactive customer: rename that one, or make the customer active again if it is "
            "this one)",
        )

    # -- booking ----------------------------------------------------------------------------------------

    def push_calls(
        self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]
    ) -> Iterator[list[Outcome]]:
        """The base's push, once the company's numbering is known to be ours (custom transaction
        numbers off stops the push before the first call: raised as a ``ConfigError``)."""
        self._require_custom_numbers()
        yield from super().push_calls(invoices, customer_ids)

    def payload(self, invoice: Invoice, customer_id: str) -> dict[str, Any]:
        return mapping.transaction_payload(invoice, self.settings, customer_id)

    def send(self, call: list[tuple[Invoice, dict[str, Any]]]) -> list[dict[str, Any]]:
        """One batch call creating the invoices and credit memos, :data:`~.hook.BATCH_MAX` at most."""
        items = [
            {"bId": str(index), "operation": "create", mapping.entity_of(invoice): payload}
            for index, (invoice, payload) in enumerate(call, start=1)
        ]
        return self.hook.batch(items, write=True)

    def read(self, call: list[tuple[Invoice, dict[str, Any]]], answer: list[dict[str, Any]]) -> list[Reading]:
        """Each batch item is answered on its own, by its ``bId``: the entity (booked with its
        ``DocNumber`` and ``Id``) or a ``Fault`` (refused with its code's class and QuickBooks' text)."""
        answers = _by_bid(answer)
        return [self._reading(invoice, answers.get(str(index))) for index, (invoice, _) in enumerate(call, 1)]

    def _reading(self, invoice: Invoice, answer: Mapping[str, Any] | None) -> Reading:
        where = self.hook.context
        if answer is None:
            return Unknown(invoice.id, f"{where}: the batch answer has no item for {document_label(invoice)}")
        faults = faults_of(answer)
        if faults:
            first = next((f for f in faults if f.code == DUPLICATE_DOC_NUMBER), faults[0])
            if first.code == DUPLICATE_DOC_NUMBER:
                return Duplicate(message(first, context=where))
            cls = error_class(first)
            text = message(first, context=where)
            return Unknown(invoice.id, text) if cls is None else Rejected(invoice.id, cls, text)
        entity = answer.get(mapping.entity_of(invoice))
        if not isinstance(entity, dict) or not entity.get("Id") or entity.get("DocNumber") != invoice.number:
            return Unknown(
                invoice.id, f"{where}: the answer for {document_label(invoice)} does not say what was booked"
            )
        return Booked(invoice.id, str(entity["DocNumber"]), str(entity["Id"]))

    def find_duplicates(self, invoices: Sequence[Invoice]) -> dict[int, Booking]:
        """The oldest record of each invoice's own entity: QuickBooks keeps numbers unique per entity, so
        a credit memo holding an invoice's number is not what refused it."""
        entities = sorted({mapping.entity_of(invoice) for invoice in invoices})
        held = self._held([invoice.number or "" for invoice in invoices], entities)
        found: dict[int, Booking] = {}
        for invoice in invoices:
            record = held[mapping.entity_of(invoice)].get(invoice.number or "")
            if record is not None:
                found[invoice.id] = record[1]
        return found


def _by_bid(answers: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(answer.get("bId")): answer for answer in answers}


def _age(row: Mapping[str, Any]) -> tuple[datetime, int]:
    """Sort key of a record, oldest first: its creation time, then its Id."""
    created = (row.get("MetaData") or {}).get("CreateTime")
    try:
        moment = datetime.fromisoformat(str(created))
    except ValueError:
        moment = datetime.max
    if moment.tzinfo is None:  # comparable with QuickBooks' stamps, which carry an offset
        moment = moment.replace(tzinfo=UTC)
    record_id = str(row.get("Id") or "")
    return moment, int(record_id) if record_id.isdigit() else 0


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> QuickBooksConnector:
    """The connector for ``integration``, with a client for its connection and company.

    :param hook_options: further keyword arguments of :class:`.QuickBooksHook` (budget, sleep, ...).
    :raises ConfigError: the integration's QuickBooks settings cannot be read (no realm id, say); read
        here unless the operator already did.
    """
    settings = QuickBooksSettings.of(integration)
    hook = QuickBooksHook(
        quickbooks_conn_id=integration.conn_id, vault=vault, realm_id=settings.realm_id, **hook_options
    )
    return QuickBooksConnector(settings.applied_to(integration), hook)
