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

from collections.abc import Sequence
from typing import Any

from invoice_sync.connectors.base import SKIPPED, Duplicate, HookConnector, Reading
from invoice_sync.connectors.soap import Element, find, find_all, text
from invoice_sync.connectors.yuki import mapping
from invoice_sync.connectors.yuki.errors import DUPLICATE, invoice_error_class
from invoice_sync.connectors.yuki.hook import YukiHook
from invoice_sync.connectors.yuki.settings import YukiSettings
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

TOOL = "yuki"
BATCH_SIZE = 25
MAX_FAULTY_PER_CALL = 6
"""Yuki stops processing a call after this many faulty invoices and skips the rest."""
MAX_ROUNDS = BATCH_SIZE // MAX_FAULTY_PER_CALL + 2
"""Calls one batch may take: each call processes at least six invoices, so skipped ones always progress."""


class YukiConnector(HookConnector[YukiHook, Element, Element]):
    """Books one integration's invoices as Yuki sales invoices in its administration.

    :param integration: the integration; its :class:`.YukiSettings` name the administration.
    :param hook: the client for that administration (see :func:`build_connector`).
    """

    tool = TOOL
    invoices_per_call = BATCH_SIZE
    sends_per_call = MAX_ROUNDS
    call_refusals = ()
    """None: Yuki's whole-call faults concern the administration, the key or the subscription, never one
    call's invoices (:func:`.errors.classify_fault`), so they stop the push and are raised."""

    settings: YukiSettings
    """The integration's settings as Yuki reads them (:func:`build_connector` makes sure they are)."""

    def validate(self, invoice: Invoice) -> list[Problem]:
        """Yuki-specific problems found without a call (see :func:`.mapping.validate`)."""
        return mapping.validate(invoice, self.settings)

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
        "e.g. duplicate invoice number"), whatever the lookup said; see :meth:`duplicate_refusal`.
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

    def payload(self, invoice: Invoice, customer_id: str) -> Element:
        # Yuki matches or creates the contact from the invoice's own ContactCode, the customer id we link.
        return mapping.sales_invoice(invoice, self.settings)

    def send(self, call: list[tuple[Invoice, Element]]) -> Element:
        """One ``ProcessSalesInvoices`` call; quota, authorisation and configuration faults refuse it
        before anything is processed and are raised (the hook)."""
        return self.hook.process_sales_invoices(mapping.sales_invoices([element for _, element in call]))

    def read(self, call: list[tuple[Invoice, Element]], answer: Element) -> list[Reading]:
        """Every ``Invoice`` result is read by its ``Reference``; HTTP 200 alone proves nothing.

        Yuki processes invoices in order, so the ones it skipped after the sixth fault are the last ones
        without a result, as many as ``TotalSkipped`` says: they are sent again. Anything else without a
        result is a mystery, and only a lookup can tell.
        """
        results = {text(node, "Reference"): node for node in find_all(answer, "Invoice")}
        message = text(answer, "Message")
        if not results and message:  # the document failed Yuki's schema check: nothing was processed
            return [Rejected(inv.id, ErrorClass.DATA, f"{self.hook.context}: {message}") for inv, _ in call]
        invoices = [invoice for invoice, _ in call]
        missing = [invoice for invoice in invoices if (invoice.number or "") not in results]
        skipped = (
            bool(missing)
            and len(missing) == _count(answer, "TotalSkipped")
            and missing == invoices[len(invoices) - len(missing) :]
        )
        readings: list[Reading] = []
        for invoice in invoices:
            node = results.get(invoice.number or "")
            if node is not None:
                readings.append(self._reading(invoice, node))
            elif skipped:
                readings.append(SKIPPED)
            else:
                note = f"{self.hook.context}: Yuki's answer has no result for {invoice.number}"
                readings.append(Unknown(invoice.id, note))
        return readings

    def _reading(self, invoice: Invoice, node: Element) -> Reading:
        """The reading of one ``Invoice`` result."""
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
            return Duplicate(message)
        text_ = message or "Yuki refused the invoice without a message"
        return Rejected(invoice.id, invoice_error_class(text_), f"{where}: {text_}")

    def duplicate_refusal(self, invoice: Invoice, duplicate: Duplicate) -> Rejected:
        """Yuki holds the reference, yet the lookup does not find the item: the invoice may be ours and
        paid meanwhile, or another entry that uses the number. Either way it was not booked a second time,
        and only a bookkeeper can tell which, so the refusal says both (and, being a data problem, it is
        not resent unchanged run after run)."""
        return Rejected(
            invoice.id,
            ErrorClass.DATA,
            f"{self.hook.context}: {duplicate.message} It was not booked again. Yuki lists no outstanding "
            f"item for {invoice.number}: if this invoice was booked earlier and paid since, nothing "
            "is left to do; otherwise the number is used by another entry in Yuki",
        )


def _true(node: Element, name: str) -> bool:
    return text(node, name).lower() in ("true", "1")


def _count(response: Element, name: str) -> int:
    value = text(find(response, name))
    return int(value) if value.isdigit() else 0


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> YukiConnector:
    """The connector for ``integration``, with a client for its connection and administration.

    :param hook_options: further keyword arguments of :class:`.YukiHook` (budget, sleep, ...).
    :raises ConfigError: the integration's Yuki settings cannot be read (no administration, say); read
        here unless the operator already did.
    """
    settings = YukiSettings.of(integration)
    hook = YukiHook(
        yuki_conn_id=integration.conn_id,
        vault=vault,
        administration_id=settings.administration_id,
        administration=settings.administration,
        **hook_options,
    )
    return YukiConnector(settings.applied_to(integration), hook)
