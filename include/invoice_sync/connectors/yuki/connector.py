"""The Yuki connector: one integration (one administration) behind the engine's ``Connector`` contract.

Yuki has no idempotency key and no booking number of its own, so exactly-once rests on our invoice number
in ``Reference``: Yuki refuses a reference it already holds, the engine calls
:meth:`YukiConnector.find_booked` before any new attempt, and every outcome the connector cannot be sure
of is reported as :class:`~invoice_sync.domain.models.Unknown` rather than guessed.

Batch size: :data:`BATCH_SIZE` invoices per ``ProcessSalesInvoices`` call. The domain's 1,000 calls a day
are shared by every integration of the domain, so batching is what makes a sync affordable (one call per
invoice would spend the day on a thousand invoices). Yuki stops a call after six faulty invoices, but
:func:`.mapping.validate` refuses whatever we can see before sending, so faults are rare and the invoices
Yuki skipped are simply sent again in a following call. What limits the size is the price of a lost
answer: every invoice of that call becomes unknown and costs one ``CheckOutstandingItemAdmin`` to settle,
and a larger document takes longer to process within the request timeout. At 25 a 100-invoice sync costs
about 6 calls (one session, four batches, one administration lookup when the name is configured), and a
lost answer at most 25 lookups; going to 50 would save 0.02 calls per invoice and double that worst case.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from invoice_sync.connectors.base import HookConnector
from invoice_sync.connectors.soap import Element, find, find_all, text
from invoice_sync.connectors.yuki import mapping
from invoice_sync.connectors.yuki.errors import DUPLICATE, invoice_error_class
from invoice_sync.connectors.yuki.hook import YukiHook
from invoice_sync.domain.errors import ConfigError, OutcomeUnknownError, SyncError
from invoice_sync.domain.models import (
    Booked,
    Booking,
    Customer,
    ErrorClass,
    Integration,
    Invoice,
    Outcome,
    Rejected,
    Unknown,
)
from invoice_sync.domain.ports import CustomerLinkFailure, TokenVault

TOOL = "yuki"
BATCH_SIZE = 25
MAX_FAULTY_PER_CALL = 6
"""Yuki stops processing a call after this many faulty invoices and skips the rest."""
MAX_ROUNDS = BATCH_SIZE // MAX_FAULTY_PER_CALL + 2
"""Calls one batch may take: each call processes at least six invoices, so skipped ones always progress."""


class YukiConnector(HookConnector[YukiHook]):
    """Books one integration's invoices as Yuki sales invoices in its administration.

    :param integration: the integration; ``settings.extra`` names the administration.
    :param hook: the client for that administration (see :func:`build_connector`).
    """

    tool = TOOL
    invoices_per_call = BATCH_SIZE

    check = staticmethod(mapping.validate)
    """Yuki-specific problems found without a call (see :func:`.mapping.validate`)."""

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """Yuki's items for our references, one ``CheckOutstandingItemAdmin`` per reference.

        Yuki has no batched lookup by reference. When it holds several items for one reference (an entry
        made by hand as well, say), the first Yuki lists wins, so repeated lookups agree.

        A reference missing from the answer is no proof that Yuki holds no such invoice: the call lists
        *outstanding* items, and a paid invoice may have dropped out (reference section 6 and its
        2026-12-04 correction). No public Yuki call finds a sales invoice by its reference whatever its
        payment state: the Sales service offers only ``ProcessSalesInvoices``,
        ``ProcessRecognizedSalesInvoices``, ``SalesInvoiceSchemaPath`` and ``GetSalesItems``
        (the classmap of maartendeblock/yuki-api-client's Sales client; dedene/yuki-cli
        ``internal/api/sales.go``), and the ``OutstandingDebtorItems*`` calls list outstanding items too
        (dedene/yuki-cli ``docs/proofs/2026-06-24-docs-parity.md``). So the guard against a second
        booking is Yuki's own: it refuses a reference it already holds (FunkyTime/Yuki ``src/Yuki.php``:
        "e.g. duplicate invoice number"), whatever the lookup said; see :meth:`_settle_duplicates`.
        """
        found: dict[str, Booking] = {}
        for reference in dict.fromkeys(references):
            items = [
                item for item in self.hook.outstanding_items(reference) if item["reference"] == reference
            ]
            if items:
                found[reference] = Booking(reference, reference, items[0]["id"])
        return found

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]:
        """Each customer's Yuki ``ContactCode`` (our customer id), without a call.

        Yuki matches or creates the contact from the invoice's own ``Contact`` block by that code, within the
        same call that books the invoice; creating contacts first would cost calls from the domain's daily
        allowance and add nothing. Only a customer Yuki could not receive is refused here.
        """
        links: dict[int, str | CustomerLinkFailure] = {}
        for customer in customers:
            code = mapping.contact_code(customer.id)
            if not customer.name.strip() or len(code) > mapping.MAX_LENGTHS["ContactCode"]:
                links[customer.id] = CustomerLinkFailure(
                    str(ErrorClass.DATA),
                    f"Customer #{customer.id} cannot be sent to Yuki: it needs a name and a code of at most "
                    f"{mapping.MAX_LENGTHS['ContactCode']} characters",
                )
            else:
                links[customer.id] = code
        return links

    def push(self, invoices: Sequence[Invoice], customer_ids: Mapping[int, str]) -> Iterator[Outcome]:
        """Send the invoices in batches of :data:`BATCH_SIZE`, yielding each call's outcomes before the next.

        Every ``Invoice`` result is read by its ``Reference``; HTTP 200 alone proves nothing. Quota,
        authorisation and configuration faults refuse a call before anything is processed and are raised.
        """
        # Yuki matches or creates the contact from each invoice's ContactCode: no payload of our own yet.
        for call in self.calls(invoices, customer_ids, lambda invoice, _: invoice):
            if isinstance(call, Rejected):
                yield call
            else:
                yield from self._push_batch([invoice for invoice, _ in call])

    def _push_batch(self, batch: list[Invoice]) -> Iterator[Outcome]:
        pending = batch
        for _ in range(MAX_ROUNDS):
            if not pending:
                return
            outcomes, pending = self._send(pending)
            yield from outcomes
        for invoice in pending:  # never expected: every call processes at least six invoices
            yield Rejected(
                invoice.id,
                ErrorClass.TRANSIENT,
                f"{self.hook.context}: Yuki skipped invoice {invoice.number} in {MAX_ROUNDS} calls in a row",
            )

    def _send(self, invoices: list[Invoice]) -> tuple[list[Outcome], list[Invoice]]:
        """One ``ProcessSalesInvoices`` call: the outcomes it settled, and the invoices Yuki skipped."""
        document = mapping.sales_invoices([mapping.sales_invoice(inv, self.settings) for inv in invoices])
        try:
            response = self.hook.process_sales_invoices(document)
        except OutcomeUnknownError as error:
            return [Unknown(invoice.id, error.message) for invoice in invoices], []
        results = {text(node, "Reference"): node for node in find_all(response, "Invoice")}
        if not results:
            message = text(response, "Message")
            if message:  # the document failed Yuki's schema check: nothing was processed
                where = self.hook.context
                return [Rejected(inv.id, ErrorClass.DATA, f"{where}: {message}") for inv in invoices], []
        skipped_count = _count(response, "TotalSkipped")
        outcomes: list[Outcome] = []
        duplicates: dict[str, tuple[Invoice, str]] = {}
        missing: list[Invoice] = []
        for invoice in invoices:
            node = results.get(invoice.number or "")
            if node is None:
                missing.append(invoice)
                continue
            outcome = self._outcome(invoice, node)
            if outcome is None:
                duplicates[invoice.number or ""] = (invoice, text(node, "Message"))
            else:
                outcomes.append(outcome)
        outcomes += self._settle_duplicates(duplicates)
        # Yuki processes invoices in order, so the ones it skipped after the sixth fault are the last ones
        # without a result. Anything else without a result is a mystery, and only a lookup can tell.
        if missing and len(missing) == skipped_count and missing == invoices[len(invoices) - len(missing) :]:
            return outcomes, missing
        for invoice in missing:
            outcomes.append(
                Unknown(invoice.id, f"{self.hook.context}: Yuki's answer has no result for {invoice.number}")
            )
        return outcomes, []

    def _outcome(self, invoice: Invoice, node: Element) -> Outcome | None:
        """The outcome of one ``Invoice`` result; None for a duplicate-reference refusal (look it up)."""
        message = text(node, "Message")
        where = self.hook.context
        if _true(node, "Succeeded") and _true(node, "Processed"):
            return Booked(invoice.id, invoice.number or "", "")
        if _true(node, "Succeeded"):
            return Rejected(
                invoice.id,
                ErrorClass.CONFIG,
                f"{where}: Yuki kept invoice {invoice.number} as a draft instead of booking it; "
                "check the administration's Sales settings and book it in Yuki",
            )
        if DUPLICATE.search(message):
            return None
        text_ = message or "Yuki refused the invoice without a message"
        return Rejected(invoice.id, invoice_error_class(text_), f"{where}: {text_}")

    def _settle_duplicates(self, duplicates: Mapping[str, tuple[Invoice, str]]) -> list[Outcome]:
        """Yuki already holds these references: booked by an earlier attempt of ours, or by someone else.

        Booked only when the lookup then finds the item (its GUID is the proof). When it does not, the
        invoice may be ours and paid meanwhile, or another entry that uses the number: either way it was
        not booked a second time, and only a bookkeeper can tell which, so it is refused as a data problem
        that says so (not resent unchanged, so it costs no calls run after run).
        """
        if not duplicates:
            return []
        try:
            found = self.find_booked(list(duplicates))
        except SyncError as error:
            # The call's other outcomes must still be yielded; the engine looks these up again later.
            note = f"{self.hook.context}: Yuki already holds these references, but the lookup failed: "
            return [Unknown(inv.id, note + error.message) for inv, _ in duplicates.values()]
        outcomes: list[Outcome] = []
        for reference, (invoice, message) in duplicates.items():
            booking = found.get(reference)
            if booking is not None:
                outcomes.append(Booked(invoice.id, booking.registration_number, booking.external_id))
            else:
                outcomes.append(
                    Rejected(
                        invoice.id,
                        ErrorClass.DATA,
                        f"{self.hook.context}: {message} It was not booked again. Yuki lists no outstanding "
                        f"item for {reference}: if this invoice was booked earlier and paid since, nothing "
                        "is left to do; otherwise the number is used by another entry in Yuki",
                    )
                )
        return outcomes


def _true(node: Element, name: str) -> bool:
    return text(node, name).lower() in ("true", "1")


def _count(response: Element, name: str) -> int:
    value = text(find(response, name))
    return int(value) if value.isdigit() else 0


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> YukiConnector:
    """The connector for ``integration``, with a client for its connection and administration.

    :param hook_options: further keyword arguments of :class:`.YukiHook` (budget, sleep, ...).
    :raises ConfigError: the integration names no Yuki administration.
    """
    extra = integration.settings.extra
    administration_id = extra.get("administration_id")
    administration = extra.get("administration")
    if not administration_id and not administration:
        raise ConfigError(
            f"Integration {integration.name}: no Yuki administration is set "
            "(setting administration_id, or administration with its name)"
        )
    hook = YukiHook(
        yuki_conn_id=integration.conn_id,
        vault=vault,
        administration_id=str(administration_id).strip().lower() if administration_id else None,
        administration=str(administration) if administration else None,
        **hook_options,
    )
    return YukiConnector(integration, hook)
