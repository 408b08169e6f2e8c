"""The Exact Online connector: one integration (one division) behind the engine's ``Connector`` contract.

Exact has no idempotency key, so exactly-once rests on our invoice number in ``YourRef``: the engine
calls :meth:`ExactOnlineConnector.find_booked` before any new attempt, and every outcome the connector
cannot be sure of is reported as :class:`~invoice_sync.domain.models.Unknown` rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from invoice_sync.connectors.base import HookConnector, Reading
from invoice_sync.connectors.exact_online import mapping
from invoice_sync.connectors.exact_online.errors import ALREADY_EXISTS
from invoice_sync.connectors.exact_online.hook import ExactOnlineHook
from invoice_sync.connectors.exact_online.settings import ExactOnlineSettings
from invoice_sync.domain.errors import ConfigError, DataError, OutcomeUnknownError
from invoice_sync.domain.models import (
    Booked,
    Booking,
    Customer,
    ErrorClass,
    Integration,
    Invoice,
    Problem,
    Unknown,
)
from invoice_sync.domain.ports import CustomerLinkFailure, TokenVault

TOOL = "exact_online"
ENTRIES = "salesentry/SalesEntries"
ACCOUNTS = "crm/Accounts"


class ExactOnlineConnector(HookConnector[ExactOnlineHook, dict[str, Any], dict[str, Any]]):
    """Books one integration's invoices as Exact Online sales entries in its division, one per call.

    Exact's refusals become ``Rejected`` (an "Already exists" too: the engine looks the invoice up
    before any new attempt), a lost answer becomes ``Unknown``.

    :param integration: the integration; its :class:`.ExactOnlineSettings` name the Exact division.
    :param hook: the client for that division (see :func:`build_connector`).
    """

    tool = TOOL

    settings: ExactOnlineSettings
    """The integration's settings as Exact reads them (:func:`build_connector` makes sure they are)."""

    def validate(self, invoice: Invoice) -> list[Problem]:
        """Exact-specific problems found without a call (see :func:`.mapping.validate`)."""
        return mapping.validate(invoice, self.settings)

    def find_booked(self, references: Sequence[str]) -> dict[str, Booking]:
        """Entries of this integration's journals whose ``YourRef`` is one of ``references``.

        Looked up 40 references per call. When Exact holds several entries for one reference (booked
        by hand as well, say), the lowest booking number wins, so repeated lookups agree.
        """
        journals = mapping.journals(self.settings)
        found: dict[str, Booking] = {}
        for batch in mapping.batches(sorted(set(references))):
            query = mapping.any_of("YourRef", batch)
            if journals:
                query += " and " + mapping.any_of("Journal", journals)
            rows = self.hook.get_all(
                ENTRIES, {"$filter": query, "$select": "EntryID,EntryNumber,YourRef,Journal"}
            )
            for row in rows:
                reference = row.get("YourRef")
                if (
                    not isinstance(reference, str)
                    or reference not in batch
                    or (journals and str(row.get("Journal")) not in journals)
                ):
                    continue
                booking = Booking(reference, str(row["EntryNumber"]), str(row["EntryID"]))
                known = found.get(reference)
                if known is None or int(booking.registration_number) < int(known.registration_number):
                    found[reference] = booking
        return found

    def ensure_customers(self, customers: Sequence[Customer]) -> dict[int, str | CustomerLinkFailure]:
        """Exact account ``ID`` of each customer, creating the accounts Exact does not have yet.

        Accounts are matched by ``Code`` (our customer id, padded to 18 characters), so a customer
        created in an earlier, interrupted run is found instead of created twice. A customer Exact
        refuses becomes a :class:`~invoice_sync.connectors.base.CustomerLinkFailure`; the others go on.
        """
        unique = {customer.id: customer for customer in customers}
        links: dict[int, str | CustomerLinkFailure] = {}
        by_code, by_vat_number = self._lookup_accounts(list(unique.values()))
        for customer_id, customer in unique.items():
            code = mapping.account_code(customer_id)
            held = by_vat_number.get(mapping.compact_vat_number(customer.vat_number))
            if code in by_code:
                links[customer_id] = by_code[code]
            elif held is not None and customer.vat_number:
                links[customer_id] = self._duplicate_relation(customer, held)
            else:
                links[customer_id] = self._create_account(customer)
        return links

    def _lookup_accounts(
        self, customers: Sequence[Customer]
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """Accounts Exact has for these customers' codes, and for their VAT numbers, in one filter.

        Returns ``{padded code: account ID}`` and ``{compact VAT number: account row}``. A new customer
        whose VAT number Exact already holds under another code is the same company keyed in by hand
        (Exact does not refuse a second relation with one VAT number), so it must not be created again.
        Numbers compare without spaces, dots and dashes: a hand-made relation may be spelled otherwise.
        """
        by_code: dict[str, str] = {}
        by_vat_number: dict[str, dict[str, Any]] = {}
        pending = [list(batch) for batch in mapping.batches(customers)]
        while pending:
            batch = pending.pop(0)
            codes = [mapping.account_code(customer.id) for customer in batch]
            spellings = sorted(
                {customer.vat_number.strip() for customer in batch if customer.vat_number}
                | {
                    mapping.compact_vat_number(customer.vat_number)
                    for customer in batch
                    if customer.vat_number
                }
                - {""}
            )
            query = mapping.any_of("Code", codes)
            if spellings:
                query += " or " + mapping.any_of("VATNumber", spellings)
            if len(batch) > 1 and len(quote(query)) > mapping.FILTER_MAX_ENCODED:
                pending[:0] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
                continue
            rows = self.hook.get_all(ACCOUNTS, {"$filter": query, "$select": "ID,Code,Name,VATNumber"})
            for row in rows:
                code = str(row.get("Code", "")).rjust(mapping.CODE_WIDTH)
                if code in codes:
                    by_code[code] = str(row["ID"])
                number = mapping.compact_vat_number(str(row.get("VATNumber") or ""))
                if number and number in spellings:
                    by_vat_number.setdefault(number, row)
        return by_code, by_vat_number

    def _duplicate_relation(self, customer: Customer, held: Mapping[str, Any]) -> CustomerLinkFailure:
        code = str(held.get("Code", "")).strip()
        return CustomerLinkFailure(
            str(ErrorClass.DATA),
            f"{self.hook.context}: Exact already has account {code} ({held.get('Name')}) with VAT number "
            f"{held.get('VATNumber')}; customer {customer.name} (#{customer.id}) was not created, to avoid "
            "a second relation for one company: if it is the same company, change that account's code "
            f"in Exact to {customer.id} so the sync links it; otherwise correct the VAT number in the app",
        )

    def payload(self, invoice: Invoice, customer_id: str) -> dict[str, Any]:
        return mapping.sales_entry_payload(invoice, self.settings, customer_id)

    def send(self, call: list[tuple[Invoice, dict[str, Any]]]) -> dict[str, Any]:
        """One sales entry per call: Exact's REST API has no batch create."""
        ((_, payload),) = call
        return self.hook.post(ENTRIES, payload)

    def read(self, call: list[tuple[Invoice, dict[str, Any]]], answer: dict[str, Any]) -> list[Reading]:
        """The created entry's number and id; an answer without them says nothing certain."""
        ((invoice, _),) = call
        if answer.get("EntryNumber") is None or not answer.get("EntryID"):
            message = f"{self.hook.context}: the answer did not say which entry was booked"
            return [Unknown(invoice.id, message)]
        return [Booked(invoice.id, str(answer["EntryNumber"]), str(answer["EntryID"]))]

    def _accounts_by_code(self, codes: Sequence[str]) -> dict[str, str]:
        """``{padded code: account ID}`` of the accounts Exact has for ``codes``."""
        found: dict[str, str] = {}
        for batch in mapping.batches(codes):
            query = {"$filter": mapping.any_of("Code", batch), "$select": "ID,Code"}
            rows = self.hook.get_all(ACCOUNTS, query)
            for row in rows:
                code = str(row.get("Code", "")).rjust(mapping.CODE_WIDTH)
                if code in batch:
                    found[code] = str(row["ID"])
        return found

    def _create_account(self, customer: Customer) -> str | CustomerLinkFailure:
        try:
            return str(self.hook.post(ACCOUNTS, mapping.account_payload(customer))["ID"])
        except (DataError, ConfigError, OutcomeUnknownError) as error:
            # A lost answer, or a clash with an account created meanwhile: the code tells which.
            if isinstance(error, OutcomeUnknownError) or ALREADY_EXISTS.search(error.message):
                code = mapping.account_code(customer.id)
                again = self._accounts_by_code([code])
                if code in again:
                    return again[code]
            return CustomerLinkFailure(str(error.error_class), error.message)
        except (KeyError, TypeError):
            return CustomerLinkFailure(str(ErrorClass.TRANSIENT), "Exact's answer had no account ID")


def build_connector(integration: Integration, vault: TokenVault, **hook_options: Any) -> ExactOnlineConnector:
    """The connector for ``integration``, with a client for its connection and division.

    :param hook_options: further keyword arguments of :class:`.ExactOnlineHook` (budget, sleep, ...).
    :raises ConfigError: the integration's Exact settings cannot be read (no division, say); read here
        unless the operator already did.
    """
    settings = ExactOnlineSettings.of(integration)
    hook = ExactOnlineHook(
        exact_online_conn_id=integration.conn_id, vault=vault, division=settings.division, **hook_options
    )
    return ExactOnlineConnector(settings.applied_to(integration), hook)
