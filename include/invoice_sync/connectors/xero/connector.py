"""The Xero connector: one integration (one Xero organisation) behind the engine's ``Connector`` contract.

Exactly-once rests on two things Xero offers. Our invoice number is the record's ``InvoiceNumber`` (or
``CreditNoteNumber``), which Xero keeps unique ("Invoice # must be unique."), and which the engine looks
up (:meth:`XeroConnector.find_booked`) before any new attempt. And every create carries an
``Idempotency-Key`` derived from its content (:func:`.hook.idempotency_key`): an identical resend within
Xero's replay window gets the first answer back instead of a second booking. Whatever the connector
cannot be sure of is reported as :class:`~invoice_sync.domain.models.Unknown`, never guessed.

Batch size: :data:`BATCH_SIZE` elements per create. Xero caps a request at 3.5 MB and no number of
elements, but recommends batching elements "in bundles of up to 50" so a large insert still answers in
time (developer.xero.com, API limits). Batching is what keeps a sync inside 60 calls a minute and 5,000 a
day per organisation: 100 invoices for new customers cost about 5 calls (one contact lookup, one contact
create, two invoice creates, the token), not 200. Going past Xero's recommendation would risk timeouts,
and a lost answer makes the whole call's invoices unknown (each then needs its lookup, batched too).

Statuses: an invoice or credit note of ours in Xero counts as booked when it is ``AUTHORISED`` or
``PAID``, and also when ``VOIDED``: we booked it once and someone voided it in Xero; pushing it again
would book it twice in the app's eyes, so its registration number is written back and the void stays a
matter for the bookkeeper. ``DELETED`` is gone (Xero deletes only drafts), and ``DRAFT``/``SUBMITTED``
were not made by us (we create ``AUTHORISED``): both are not booked, and a push refused with "must be
unique" because of such a draft says so in its message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from invoice_sync.connectors.base import SKIPPED, Duplicate, HookConnector, Reading
from invoice_sync.connectors.xero import mapping
from invoice_sync.connectors.xero.errors import (
    DUPLICATE_NUMBER,
    IDEMPOTENCY_MISMATCH,
    NAME_TAKEN,
    XeroValidationError,
    has_errors,
    message_class,
    validation_messages,
    warning_messages,
)
from invoice_sync.connectors.xero.hook import XeroHook
from invoice_sync.connectors.xero.settings import XeroSettings
from invoice_sync.domain.errors import OutcomeUnknownError, SyncError
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

log = logging.getLogger(__name__)

TOOL = "xero"
BATCH_SIZE = 50
"""Invoices (or credit notes, or contacts) per create call; see the module notes."""
LOOKUP_BATCH_SIZE = 50
"""Numbers per lookup call: a batch's worth, so one lost answer is settled with one call per kind."""
LOOKUP_QUERY_CHARS = 1500
"""Longest filter text per lookup: Xero's gateway refuses long URLs (``IDs=`` stops at about 52 GUIDs)."""
BOOKED_STATUSES = frozenset({"AUTHORISED", "PAID", "VOIDED"})
"""Statuses of a record of ours that count as booked (see the module notes)."""
UNAPPROVED_STATUSES = frozenset({"DRAFT", "SUBMITTED"})
ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"


@dataclass(frozen=True, slots=True)
class Kind:
    """What differs between Xero's invoices and credit notes: route, body key, type, number and id."""

    label: str
    resource: str
    type: str
    number: str
    id: str


INVOICES = Kind("Invoice", "Invoices", mapping.INVOICE_TYPE, "InvoiceNumber", "InvoiceID")
CREDIT_NOTES = Kind(
    "Credit note", "CreditNotes", mapping.CREDIT_NOTE_TYPE, "CreditNoteNumber", "CreditNoteID"
)


@dataclass(frozen=True, slots=True)
class Record:
    """One invoice or credit note Xero holds for one of our numbers."""

    number: str
    external_id: str
    status: str
    updated_ms: int

    @property
    def booked(self) -> bool:
        return self.status in BOOKED_STATUSES


Answer = list[dict[str, Any]] | XeroValidationError
"""Xero's answer to a create: one element per element sent, or its refusal of the whole request."""


class XeroConnector(HookConnector[XeroHook, dict[str, Any], Answer]):
    """Books one integration's invoices and credit notes in its Xero organisation.

    :param integration: the integration; its :class:`.XeroSettings` name the organisation.
    :param hook: the client for that organisation (see :func:`build_connector`).
    """

    tool = TOOL
    invoices_per_call = BATCH_SIZE
    sends_per_call = 2
    """A whole-request refusal names the elements it refuses; the others are sent once more."""

    settings: XeroSettings
    """The integration's settings as Xero reads them (:func:`build_connector` makes sure they are)."""

    def validate(self, invoice: Invoice) -> list[Problem]:
        """Xero-specific problems found without a call (see :func:`.mapping.validate`)."""
        return mapping.validate(invoice, self.settings)

    # -- lookups ---------------------------------------------------------------------------------------

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """What Xero holds for our numbers, as invoices (``ACCREC``) or credit notes (``ACCRECCREDIT``).

        Batched: one ``GET /Invoices?InvoiceNumbers=`` and one ``GET /CreditNotes?where=`` per
        :data:`LOOKUP_BATCH_SIZE` numbers. Only booked statuses count (module notes). When Xero holds
        several booked records for one number (an invoice and a credit note keyed by hand, say), the
        oldest by Xero's ``UpdatedDateUTC`` wins, then the lowest id, so repeated lookups agree.
        """
        numbers = list(dict.fromkeys(ref for ref in references if ref))
        found: dict[str, Booking] = {}
        candidates: dict[str, list[Record]] = {}
        for kind in (INVOICES, CREDIT_NOTES):
            for number, records in self._records(kind, numbers).items():
                candidates.setdefault(number, []).extend(r for r in records if r.booked)
        for number, records in candidates.items():
            if records:
                oldest = min(records, key=lambda r: (r.updated_ms, r.external_id))
                found[number] = Booking(number, oldest.number, oldest.external_id)
        return found

    def _records(self, kind: Kind, numbers: Sequence[str]) -> dict[str, list[Record]]:
        """Xero's records of ``kind`` per number among ``numbers`` (every status)."""
        wanted = set(numbers)
        records: dict[str, list[Record]] = {}
        for params in _lookup_params(kind, numbers):
            for row in self.hook.get_all(kind.resource, kind.resource, params):
                number = str(row.get(kind.number) or "")
                if row.get("Type") != kind.type or number not in wanted:
                    continue  # bills (ACCPAY) and supplier credits share the number field
                record = Record(
                    number=number,
                    external_id=str(row.get(kind.id) or ""),
                    status=str(row.get("Status") or "").upper(),
                    updated_ms=_epoch_ms(row.get("UpdatedDateUTC")),
                )
                records.setdefault(number, []).append(record)
        return records

    # -- customers -------------------------------------------------------------------------------------

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]:
        """Each customer's Xero ``ContactID``: found by ``ContactNumber`` (our customer id), else created.

        Batched: one ``GET /Contacts?where=ContactNumber==...`` and at most one ``PUT /Contacts`` per
        :data:`BATCH_SIZE` customers. A contact an earlier, interrupted run created is found, not created
        again. Name clashes (Xero keeps names unique among active contacts) are settled by
        :meth:`_settle_name_clashes`. A customer Xero refuses gets a
        :class:`~invoice_sync.connectors.base.CustomerLinkFailure` with Xero's words; the others go on.
        """
        unique = list({customer.id: customer for customer in customers}.values())
        links: dict[int, str | CustomerLinkFailure] = {}
        for start in range(0, len(unique), BATCH_SIZE):
            batch = unique[start : start + BATCH_SIZE]
            sendable = []
            for customer in batch:
                problems = mapping.contact_problems(customer)
                if problems:
                    links[customer.id] = CustomerLinkFailure(str(ErrorClass.DATA), "; ".join(problems))
                else:
                    sendable.append(customer)
            found = self._contacts_by_number([mapping.contact_number(c.id) for c in sendable])
            missing = []
            for customer in sendable:
                contact = found.get(mapping.contact_number(customer.id))
                if contact is None:
                    missing.append(customer)
                else:
                    links[customer.id] = self._link(customer, contact)
            if missing:
                links.update(self._create_contacts(missing))
        return links

    def _contacts_by_number(self, numbers: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The contact per ``ContactNumber``: active before archived, then the lowest ``ContactID``."""
        by_number: dict[str, list[dict[str, Any]]] = {}
        for clauses in _chunks(numbers, lambda n: _clause("ContactNumber", n)):
            params = {"where": " OR ".join(clauses), "includeArchived": "true"}
            for row in self.hook.get_all("Contacts", "Contacts", params):
                by_number.setdefault(str(row.get("ContactNumber") or ""), []).append(row)
        wanted = set(numbers)  # Xero's where compares text ignoring case; our numbers match exactly
        return {
            number: min(rows, key=lambda row: (row.get("ContactStatus") != ACTIVE, str(row.get("ContactID"))))
            for number, rows in by_number.items()
            if number in wanted
        }

    def _link(self, customer: Customer, contact: Mapping[str, Any]) -> str | CustomerLinkFailure:
        if str(contact.get("ContactStatus") or ACTIVE).upper() == ARCHIVED:
            return CustomerLinkFailure(
                str(ErrorClass.DATA),
                f"{self.hook.context}: the contact of customer {customer.name} (contact code "
                f"{mapping.contact_number(customer.id)}) is archived in Xero; restore it in Xero",
            )
        return str(contact["ContactID"])

    def _create_contacts(
        self, customers: Sequence[Customer], *, retry: bool = True
    ) -> dict[int, str | CustomerLinkFailure]:
        """``PUT /Contacts`` for ``customers``; each answer read by its ``ContactNumber``.

        :param retry: after a whole-request refusal, send the contacts it did not name once more.
        """
        where = self.hook.context
        numbers = [mapping.contact_number(c.id) for c in customers]
        links: dict[int, str | CustomerLinkFailure] = {}
        refused_whole = False
        answers: Sequence[Mapping[str, Any]]
        try:
            answers = self.hook.create("Contacts", "Contacts", [mapping.contact(c) for c in customers])
        except OutcomeUnknownError as error:
            # Xero may have created them: whatever a lookup finds is linked, the rest waits for the next
            # run (which looks them up first), so no contact is ever created twice.
            try:
                found = self._contacts_by_number(numbers)
            except SyncError:
                found = {}
            for customer in customers:
                contact = found.get(mapping.contact_number(customer.id))
                links[customer.id] = (
                    self._link(customer, contact)
                    if contact
                    else CustomerLinkFailure(str(ErrorClass.TRANSIENT), error.message)
                )
            return links
        except XeroValidationError as error:  # refused as a whole: nothing was created
            answers = [element for element in error.elements if has_errors(element)]
            if not retry or not _match(answers, "ContactNumber", numbers):
                return {c.id: CustomerLinkFailure(str(error.error_class), error.message) for c in customers}
            refused_whole = True
        by_number = _match(answers, "ContactNumber", numbers)
        clashes: list[tuple[Customer, str]] = []
        unanswered = []
        for customer in customers:
            answer = by_number.get(mapping.contact_number(customer.id))
            if answer is None:
                unanswered.append(customer)
                continue
            messages = validation_messages(answer)
            if not has_errors(answer) and answer.get("ContactID"):
                links[customer.id] = str(answer["ContactID"])
            elif any(NAME_TAKEN.search(message) for message in messages):
                clashes.append((customer, "; ".join(messages)))
            else:
                text = "; ".join(messages) or "Xero refused the contact without a message"
                links[customer.id] = CustomerLinkFailure(str(message_class(text)), f"{where}: {text}")
        links.update(self._settle_name_clashes(clashes))
        if unanswered and refused_whole:
            links.update(self._create_contacts(unanswered, retry=False))
        else:
            for customer in unanswered:
                links[customer.id] = CustomerLinkFailure(
                    str(ErrorClass.TRANSIENT),
                    f"{where}: Xero's answer said nothing about contact {customer.id}",
                )
        return links

    def _settle_name_clashes(
        self, clashes: Sequence[tuple[Customer, str]]
    ) -> dict[int, str | CustomerLinkFailure]:
        """Customers whose name an active Xero contact already has.

        Decision: that contact is *this* customer when it carries our ``ContactNumber`` (another run made
        it), or no ``ContactNumber`` at all (keyed by hand in Xero before the integration existed): it is
        linked instead of creating a second contact for the customer, and an unnumbered one is given our
        number (``POST /Contacts``) so the next run finds it by number. A contact carrying another number
        belongs to another customer of ours (or another app): two customers with one name cannot both
        exist in Xero, so the customer is refused with a message to make the names differ.
        """
        if not clashes:
            return {}
        where = self.hook.context
        links: dict[int, str | CustomerLinkFailure] = {}
        names = [customer.name.strip() for customer, _ in clashes]
        try:
            contacts = self._contacts_by_name(names)
        except SyncError as error:
            return {c.id: CustomerLinkFailure(str(ErrorClass.TRANSIENT), error.message) for c, _ in clashes}
        to_claim: list[dict[str, str]] = []
        for customer, message in clashes:
            number = mapping.contact_number(customer.id)
            holder = contacts.get(customer.name.strip().casefold())
            held_by = str(holder.get("ContactNumber") or "") if holder else ""
            if holder is not None and held_by in ("", number):
                links[customer.id] = str(holder["ContactID"])
                if not held_by:
                    to_claim.append({"ContactID": str(holder["ContactID"]), "ContactNumber": number})
            elif holder is not None:
                links[customer.id] = CustomerLinkFailure(
                    str(ErrorClass.DATA),
                    f"{where}: {message} (the Xero contact {customer.name} has contact code {held_by}, "
                    f"another customer's; make the names of customers #{customer.id} and #{held_by} "
                    "differ in the app)",
                )
            else:
                links[customer.id] = CustomerLinkFailure(str(ErrorClass.DATA), f"{where}: {message}")
        if to_claim:
            try:
                self.hook.update("Contacts", "Contacts", to_claim)
            except SyncError as error:  # linked anyway; the next run matches it by name again
                log.warning("%s: could not give matched contacts our numbers: %s", where, error.message)
        return links

    def _contacts_by_name(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The active contact per name (case-insensitive; Xero's uniqueness rule ignores case too)."""
        found: dict[str, dict[str, Any]] = {}
        for clauses in _chunks(names, lambda n: _clause("Name", n)):
            for row in self.hook.get_all("Contacts", "Contacts", {"where": " OR ".join(clauses)}):
                if str(row.get("ContactStatus") or ACTIVE).upper() == ACTIVE:
                    found.setdefault(str(row.get("Name") or "").strip().casefold(), row)
        return found

    # -- booking ---------------------------------------------------------------------------------------

    def push_calls(
        self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]
    ) -> Iterator[list[Outcome]]:
        """The base's push for the invoices as ``ACCREC`` invoices, then for the credit notes as
        ``ACCRECCREDIT`` credit notes (the invoice a credit note credits goes first): one route per kind,
        so a call carries one kind.

        Quota (a spent day), authorisation and throttling that outlasts the waits stop the push before the
        next call and are raised; the invoices not yielded yet were not sent.
        """
        for credit_notes in (False, True):
            of_kind = [invoice for invoice in invoices if mapping.is_credit_note(invoice) is credit_notes]
            yield from super().push_calls(of_kind, customer_ids)

    def payload(self, invoice: Invoice, customer_id: str) -> dict[str, Any]:
        return mapping.document(invoice, self.settings, customer_id)

    def send(self, call: list[tuple[Invoice, dict[str, Any]]]) -> Answer:
        """One create call; a whole-request refusal is an answer too, since it names the elements it
        refused (without ``summarizeErrors=false`` taking effect, Xero creates nothing then)."""
        kind = _kind(call[0][0])
        try:
            return self.hook.create(kind.resource, kind.resource, [document for _, document in call])
        except XeroValidationError as error:
            return error

    def read(self, call: list[tuple[Invoice, dict[str, Any]]], answer: Answer) -> list[Reading]:
        """Each invoice from Xero's answer for its number. After a whole-request refusal, the invoices it
        does not name were not processed and go again; when it names none (an idempotency key clash,
        say), all are refused alike."""
        kind = _kind(call[0][0])
        numbers = [invoice.number or "" for invoice, _ in call]
        if isinstance(answer, XeroValidationError):
            answered = _match([e for e in answer.elements if has_errors(e)], kind.number, numbers)
            if not answered:
                error_class = (
                    ErrorClass.TRANSIENT if IDEMPOTENCY_MISMATCH.search(answer.message) else ErrorClass.DATA
                )
                return [Rejected(invoice.id, error_class, answer.message) for invoice, _ in call]
            return [
                self._reading(kind, invoice, answered[number]) if number in answered else SKIPPED
                for (invoice, _), number in zip(call, numbers, strict=True)
            ]
        answers = _match(answer, kind.number, numbers)
        return [
            self._reading(kind, invoice, answers.get(number))
            for (invoice, _), number in zip(call, numbers, strict=True)
        ]

    def _reading(self, kind: Kind, invoice: Invoice, answer: Mapping[str, Any] | None) -> Reading:
        where = self.hook.context
        if answer is None:
            return Unknown(
                invoice.id, f"{where}: Xero's answer said nothing about {kind.label.lower()} {invoice.number}"
            )
        messages = validation_messages(answer)
        if not has_errors(answer):
            return self._created(kind, invoice, answer)
        if any(DUPLICATE_NUMBER.search(message) for message in messages):
            return Duplicate("; ".join(messages))
        text = "; ".join(messages) or "Xero refused it without a message"
        return Rejected(invoice.id, message_class(text), f"{where}: {text}")

    def _created(self, kind: Kind, invoice: Invoice, answer: Mapping[str, Any]) -> Outcome:
        where = self.hook.context
        for warning in warning_messages(answer):
            log.warning("%s: %s %s booked with a warning: %s", where, kind.label, invoice.number, warning)
        external_id = str(answer.get(kind.id) or "")
        status = str(answer.get("Status") or mapping.BOOKED_STATUS).upper()
        if not external_id:
            return Unknown(invoice.id, f"{where}: Xero's answer for {invoice.number} carried no {kind.id}")
        if status not in BOOKED_STATUSES:
            return Rejected(
                invoice.id,
                ErrorClass.CONFIG,
                f"{where}: Xero kept {kind.label.lower()} {invoice.number} as {status} instead of approving "
                "it; approve it in Xero (check the organisation's approval settings)",
            )
        return Booked(invoice.id, str(answer.get(kind.number) or invoice.number), external_id)

    def settle_duplicates(self, duplicates: Sequence[tuple[Invoice, Duplicate]]) -> list[Outcome]:
        """Xero already holds these numbers: booked when a booked record of the call's kind has it (the
        oldest wins); refused otherwise, saying so when a draft that is not ours holds the number."""
        where = self.hook.context
        kind = _kind(duplicates[0][0])  # one call carries one kind (see push)
        records = self._records(kind, [invoice.number or "" for invoice, _ in duplicates])
        outcomes: list[Outcome] = []
        for invoice, duplicate in duplicates:
            number = invoice.number or ""
            held = records.get(number, [])
            booked = [record for record in held if record.booked]
            unapproved = [record for record in held if record.status in UNAPPROVED_STATUSES]
            if booked:
                oldest = min(booked, key=lambda r: (r.updated_ms, r.external_id))
                outcomes.append(Booked(invoice.id, oldest.number, oldest.external_id))
            elif unapproved:
                outcomes.append(
                    Rejected(
                        invoice.id,
                        ErrorClass.DATA,
                        f"{where}: {duplicate.message} (Xero holds {kind.label.lower()} {number} as "
                        f"{unapproved[0].status}, not made by this integration: approve or delete it in "
                        "Xero)",
                    )
                )
            else:
                outcomes.append(Rejected(invoice.id, ErrorClass.DATA, f"{where}: {duplicate.message}"))
        return outcomes


# -- helpers ---------------------------------------------------------------------------------------------


def _kind(invoice: Invoice) -> Kind:
    return CREDIT_NOTES if mapping.is_credit_note(invoice) else INVOICES


def _match(
    answers: Sequence[Mapping[str, Any]], field: str, numbers: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """Xero's answered elements by the number they echo in ``field``, keeping only ours.

    Xero answers in request order, but an element is taken for an invoice only when it names the
    invoice's number: an answer that cannot be matched leaves that invoice unknown, never guessed.
    """
    wanted = set(numbers)
    matched: dict[str, Mapping[str, Any]] = {}
    for answer in answers:
        number = str(answer.get(field) or "")
        if number in wanted:
            matched.setdefault(number, answer)
    return matched


def _clause(field: str, value: str) -> str:
    """One ``where`` comparison; quotes and backslashes in the value are escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{field}=="{escaped}"'


def _chunks(values: Iterable[str], render: Callable[[str], str]) -> Iterator[list[str]]:
    """``render(value)`` for the values, grouped so a lookup's filter stays within
    :data:`LOOKUP_BATCH_SIZE` values and :data:`LOOKUP_QUERY_CHARS` characters."""
    chunk: list[str] = []
    size = 0
    for value in values:
        text = render(value)
        if chunk and (len(chunk) == LOOKUP_BATCH_SIZE or size + len(text) > LOOKUP_QUERY_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 4
    if chunk:
        yield chunk


def _lookup_params(kind: Kind, numbers: Sequence[str]) -> Iterator[dict[str, str]]:
    """Query parameters that find ``numbers`` of ``kind``: ``InvoiceNumbers=a,b`` for invoices (a number
    holding a comma goes through ``where`` instead), a ``where`` of ORed comparisons for credit notes."""
    listed = [n for n in numbers if "," not in n] if kind is INVOICES else []
    for chunk in _chunks(listed, lambda n: n):
        yield {"InvoiceNumbers": ",".join(chunk)}
    rest = [n for n in numbers if kind is not INVOICES or "," in n]
    for clauses in _chunks(rest, lambda n: _clause(kind.number, n)):
        yield {"where": " OR ".join(clauses)}


_DATE = re.compile(r"/Date\((-?\d+)")


def _epoch_ms(value: Any) -> int:
    """Milliseconds of Xero's ``/Date(1551916800000+0000)/``; 0 when absent or unreadable."""
    match = _DATE.search(str(value or ""))
    return int(match.group(1)) if match else 0


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> XeroConnector:
    """The connector for ``integration``, with a client for its connection and organisation.

    :param hook_options: further keyword arguments of :class:`.XeroHook` (budget, sleep, ...).
    :raises ConfigError: the integration's Xero settings cannot be read (no organisation, say); read here
        unless the operator already did.
    """
    settings = XeroSettings.of(integration)
    hook = XeroHook(
        xero_conn_id=integration.conn_id,
        vault=vault,
        tenant_id=settings.tenant_id,
        tenant=settings.tenant,
        **hook_options,
    )
    return XeroConnector(settings.applied_to(integration), hook)
