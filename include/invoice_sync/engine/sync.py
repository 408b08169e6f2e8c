"""Sync one integration, exactly once.

The order of steps is what makes a double booking impossible:

1. take the integration's claim (a lease; see :mod:`invoice_sync.store.claims`);
2. resolve every earlier attempt whose outcome is unknown by looking it up in the tool, never by resending;
3. page through the unsynced, registered invoices; per page: validate (no I/O), link customers, look the
   invoices that were attempted before up by our own number, mark the rest ``claimed`` (durably, fenced),
   push, and record each outcome before the next request leaves;
4. look up whatever came back ``unknown``.

A daily quota running out defers the rest to the next run; an authorisation or configuration failure marks
the rest with that reason and stops; a transient failure stops and leaves ``claimed`` rows that the next
attempt looks up first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from invoice_sync.domain import rules
from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError
from invoice_sync.domain.models import Booked, ErrorClass, Integration, Invoice, Rejected, Unknown
from invoice_sync.domain.ports import Connector, CustomerLinkFailure
from invoice_sync.engine.report import IntegrationReport
from invoice_sync.store.claims import Claim
from invoice_sync.store.models import LedgerState
from invoice_sync.store.repository import Candidate, SyncStore, UnreadableInvoice

log = logging.getLogger(__name__)

RETRYABLE_CLASSES = {ErrorClass.TRANSIENT, ErrorClass.AUTH, ErrorClass.QUOTA}


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How a run treats one integration.

    ``retry_rejected``: resend invoices the tool rejected even if neither the invoice nor the integration
    changed since (a person pressed "sync" after fixing something in the tool itself). Nightly runs leave
    it off so an unfixable invoice does not burn the tool's error budget every night.
    """

    dry_run: bool = False
    invoice_numbers: tuple[str, ...] = ()
    retry_failed_only: bool = False
    retry_rejected: bool = False
    batch_size: int = 50


class IntegrationSync:
    def __init__(
        self,
        store: SyncStore,
        connector: Connector | None,
        integration: Integration,
        *,
        run_id: str,
        holder: str,
        options: SyncOptions = SyncOptions(),
    ) -> None:
        self.store = store
        self._connector = connector
        self.integration = integration
        self.run_id = run_id
        self.holder = holder
        self.options = options
        self.report = IntegrationReport(integration.id, integration.tool)
        self._settled: set[int] = set()
        """Invoices this run skipped or recorded an outcome for; the others of a page are still open."""
        self._attempted: set[int] = set()
        """Invoices of the current page with a ledger row: an earlier run tried them (re-pushes)."""
        self._label = f"{integration.name} ({integration.tool}, integration {integration.id})"

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            raise TypeError(f"{self._label} has no connector: it can only be refused")
        return self._connector

    def refuse(self, error: AuthError | ConfigError) -> IntegrationReport:
        """Refuse every invoice this run would sync with ``error``, and push nothing.

        For an integration that cannot be synced at all (its row in the app cannot be read, its settings
        do not fit the tool, its connection lacks a field): the reason then reaches the run summary, the
        notification and the Invoice sync page beside each invoice, like any other refusal, instead of
        living only in a task log. No connector is needed (it may be what could not be built).
        """
        claim = self.store.acquire(self.integration.id, self.holder)
        try:
            self._stop_rest(claim, 0, LedgerState.REJECTED, error)
        finally:
            self.store.release(claim)
        return self.report

    def run(self) -> IntegrationReport:
        claim = self.store.acquire(self.integration.id, self.holder)
        started = time.monotonic()
        # A rate-limit wait can outlast the lease; waiting renews it (and stops if it was lost).
        self.connector.keep_alive_while_waiting(lambda: self._renew(claim), _renewal_step_s(claim))
        try:
            self._run(claim)
        finally:
            self.store.release(claim)
            # Also when the run stopped early: the table then shows how far it got.
            log.info("%s: run summary\n%s", self._label, run_table(self.report, time.monotonic() - started))
        return self.report

    # -- steps --------------------------------------------------------------------------------

    def _run(self, claim: Claim) -> None:
        total = self.store.count_candidates(self.integration.id, numbers=self.options.invoice_numbers)
        started, done, after = time.monotonic(), 0, 0
        in_progress: list[int] = []  # the wanted invoices of the page being synced
        try:
            # Inside the try: a quota or authorisation failure while looking up earlier attempts must
            # defer or mark the rest like any other.
            if not self.options.dry_run:
                self._resolve_unknown(claim)
            log.info("%s: %d unsynced registered invoices to consider", self._label, total)
            while True:
                page = self.store.candidates(
                    self.integration.id,
                    after_id=after,
                    limit=self._page_size(),
                    numbers=self.options.invoice_numbers,
                )
                if not page:
                    break
                after = page[-1].invoice_id
                wanted = self._wanted_of(page)
                self._attempted = {c.invoice_id for c in page if c.ledger is not None}
                if wanted:
                    in_progress = wanted
                    self._sync_page(claim, wanted)
                    in_progress = []
                done += len(page)
                self._progress(done, total, started)
        except QuotaExceededError as exc:
            self._stop_rest(claim, after, LedgerState.DEFERRED, exc, self._open(in_progress))
            log.warning("%s: %s; the rest waits for the next run", self._label, exc.message)
        except (AuthError, ConfigError) as exc:
            self._stop_rest(claim, after, LedgerState.REJECTED, exc, self._open(in_progress))
            raise

    def _page_size(self) -> int:
        """``batch_size`` rounded down to whole create calls of the connector, so no call leaves
        part-filled only because a page ended: with QuickBooks' 30 a call, pages of 50 would cost two
        calls each (30 + 20) where pages of 30 cost one. A page smaller than one call stays as asked."""
        per_call = min(max(self.connector.invoices_per_call, 1), self.options.batch_size)
        return self.options.batch_size // per_call * per_call

    def _open(self, invoice_ids: Sequence[int]) -> list[int]:
        """Those of ``invoice_ids`` this run has neither skipped nor recorded an outcome for."""
        return [invoice_id for invoice_id in invoice_ids if invoice_id not in self._settled]

    def _resolve_unknown(self, claim: Claim) -> None:
        """Earlier attempts that may or may not have been booked: ask the tool, never resend blindly.

        After taking the integration over from a holder whose lease ran out (an orphaned task process),
        first wait until requests that holder may still have in flight have landed (see
        :meth:`_await_in_flight`): looking up too early would miss a booking still being committed.
        """
        pending = self.store.ledger_needing_lookup(self.integration.id)
        if not pending:
            return
        if claim.predecessor_lease_end is not None:
            self._await_in_flight(claim)
        by_number = {number: invoice_id for invoice_id, number in pending.items() if number}
        found = self.connector.find_booked(sorted(by_number))
        for number, booking in found.items():
            invoice_id = by_number[number]
            self.store.record(
                claim, Booked(invoice_id, booking.registration_number, booking.external_id), self.run_id
            )
            self.report.resolved_by_lookup += 1
        log.info(
            "%s: %d earlier attempts with unknown outcome, %d found booked in the tool",
            self._label,
            len(pending),
            len(found),
        )

    def _await_in_flight(self, claim: Claim) -> None:
        """Wait until the orphaned holder's lease end plus the connector's request timeout, renewing ours.

        The orphan checked its lease before each POST, so every POST it sent left before its lease ended;
        the request timeout bounds how long such a POST can take (the connector's ``request_timeout_s``).
        """
        assert claim.predecessor_lease_end is not None
        timeout_s = float(self.connector.request_timeout_s)
        until = claim.predecessor_lease_end.timestamp() + timeout_s
        left = until - time.time()
        if left <= 0:
            return
        log.info(
            "%s: taken over from a holder whose lease ran out; waiting %.1f s for its requests in flight",
            self._label,
            left,
        )
        while (left := until - time.time()) > 0:
            time.sleep(min(left, _renewal_step_s(claim)))
            self._renew(claim)

    def _renew(self, claim: Claim) -> None:
        """Renew our lease; raises :class:`LeaseLostError` if the claim was taken from us meanwhile."""
        with self.store.fenced(claim):
            pass

    def _wanted_of(self, page: Sequence[Candidate]) -> list[int]:
        """The invoices of ``page`` to sync now.

        A credit note refused because its invoice was not booked yet is wanted again as soon as that
        invoice is on its way in the same page: the page books the invoice first and the credit note
        after it, instead of leaving the credit note for the run after next.
        """
        wanted = {c.invoice_id for c in page if self._wanted(c)}
        for candidate in page:
            if candidate.invoice_id in wanted or candidate.ledger is None:
                continue
            if candidate.ledger.state != LedgerState.REJECTED:
                continue
            if candidate.credited_invoice_id in wanted:
                wanted.add(candidate.invoice_id)
            else:
                self.report.still_rejected += 1
        return [c.invoice_id for c in page if c.invoice_id in wanted]

    def _wanted(self, candidate: Candidate) -> bool:
        ledger = candidate.ledger
        if ledger is None:
            return not self.options.retry_failed_only
        if ledger.state in (LedgerState.BOOKED, LedgerState.WRITTEN_BACK):
            return False  # booked; the write-back step copies the number
        if ledger.state != LedgerState.REJECTED:
            return True  # unknown (looked up above), claimed, deferred
        if ledger.error_class in RETRYABLE_CLASSES or self.options.retry_rejected:
            return True
        # Retry when the cause may be gone: the invoice or the integration's settings changed, or (a
        # credit note held back for its invoice) that invoice has been booked since.
        return (
            (candidate.updated_at is not None and candidate.updated_at > ledger.updated_at)
            or (self.integration.updated_at is not None and self.integration.updated_at > ledger.updated_at)
            or (candidate.credited_synced_at is not None and candidate.credited_synced_at > ledger.updated_at)
            or (candidate.credited_booked_at is not None and candidate.credited_booked_at > ledger.updated_at)
        )

    def _sync_page(self, claim: Claim, invoice_ids: Sequence[int]) -> None:
        """Validate a page (our rules, the tool's, and those that need other invoices), then book it.

        A credit note whose invoice is on the same page and valid waits for it: it is booked after
        that invoice, and refused (naming it) if the tool did not book it.
        """
        ready: list[Invoice] = []
        held: list[Invoice] = []  # credit notes of invoices in ``ready``
        invoices = self.store.load_invoices(invoice_ids)
        readable = [inv for inv in invoices if isinstance(inv, Invoice)]
        same_number = self.store.invoices_sharing_numbers(
            self.integration.id, [inv.number for inv in readable if inv.number]
        )
        credited = self.store.related_invoices(
            self.integration.id, [inv.credited_invoice_id for inv in readable if inv.credited_invoice_id]
        )
        refused: set[int] = set()
        for invoice in invoices:
            if isinstance(invoice, UnreadableInvoice):
                refused.add(invoice.id)
                self._reject(claim, invoice.id, ErrorClass.DATA, invoice.message)
                continue
            reason = rules.skip_reason(invoice, self.integration)
            if reason is not None:
                self.report.skipped[reason] += 1
                self._settled.add(invoice.id)
                continue
            problems = rules.problems(invoice) + self.connector.validate(invoice)
            duplicate = rules.duplicate_number_problem(invoice, same_number.get(invoice.number or "", []))
            waits = invoice.credited_invoice_id in {inv.id for inv in ready}
            if duplicate is not None:
                problems.append(duplicate)
            if not waits and invoice.credited_invoice_id is not None:
                if invoice.credited_invoice_id in refused:  # refused just now: read why
                    credited |= self.store.related_invoices(
                        self.integration.id, [invoice.credited_invoice_id]
                    )
                credit = rules.credited_invoice_problem(
                    invoice, credited.get(invoice.credited_invoice_id), self.integration
                )
                if credit is not None:
                    problems.append(credit)
            if problems:
                refused.add(invoice.id)
                self._reject(
                    claim, invoice.id, problems[0].error_class, "; ".join(p.message for p in problems)
                )
            elif waits:
                held.append(invoice)
            else:
                ready.append(invoice)
        if not ready and not held:
            return
        if self.options.dry_run:
            self.report.would_push += len(ready) + len(held)
            return
        if held:  # on their way like the rest of the page: a crash now leaves them to be looked up
            self.store.mark(claim, [inv.id for inv in held], LedgerState.CLAIMED, self.run_id)
        self._book_page(claim, ready)
        if held:
            self._book_page(claim, self._credited_now_booked(claim, held))

    def _book_page(self, claim: Claim, invoices: list[Invoice]) -> None:
        if not invoices:
            return
        ready, links = self._link_customers(claim, invoices)
        ready = self._skip_already_booked(claim, ready)
        if ready:
            self._push(claim, ready, links)

    def _credited_now_booked(self, claim: Claim, credit_notes: list[Invoice]) -> list[Invoice]:
        """Those of ``credit_notes`` whose invoice this page booked; the others are refused, naming it."""
        credited = self.store.related_invoices(
            self.integration.id, [inv.credited_invoice_id for inv in credit_notes if inv.credited_invoice_id]
        )
        kept = []
        for credit_note in credit_notes:
            problem = rules.credited_invoice_problem(
                credit_note, credited.get(credit_note.credited_invoice_id or 0), self.integration
            )
            if problem is None:
                kept.append(credit_note)
            else:
                self._reject(claim, credit_note.id, problem.error_class, problem.message)
        return kept

    def _link_customers(self, claim: Claim, invoices: list[Invoice]) -> tuple[list[Invoice], dict[int, str]]:
        """Make sure every customer exists in the tool, once; reuse the links stored by earlier runs."""
        customers = {inv.customer.id: inv.customer for inv in invoices if inv.customer is not None}
        links = self.store.customer_links(self.integration.id, customers)
        missing = [customer for customer_id, customer in customers.items() if customer_id not in links]
        failures: dict[int, CustomerLinkFailure] = {}
        if missing:
            created: dict[int, str] = {}
            for customer_id, result in self.connector.ensure_customers(missing).items():
                if isinstance(result, CustomerLinkFailure):
                    failures[customer_id] = result
                else:
                    created[customer_id] = result
            self.store.save_customer_links(claim, created, self.run_id)
            self.report.customers_created += len(created)
            links.update(created)
        kept = []
        for invoice in invoices:
            assert invoice.customer is not None  # rules.problems rejects invoices without one
            failure = failures.get(invoice.customer.id)
            if failure is not None:
                message = (
                    f"Customer {invoice.customer.name} could not be created in the tool: {failure.message}"
                )
                self._reject(claim, invoice.id, ErrorClass(failure.error_class), message)
            else:
                kept.append(invoice)
        return kept, links

    def _skip_already_booked(self, claim: Claim, invoices: list[Invoice]) -> list[Invoice]:
        """Before a re-push, ask the tool for our own numbers: an entry made by a lost attempt is ours.

        Only invoices with a ledger row are asked for. One that was never attempted cannot have been
        booked by us (the ``claimed`` mark is durable before any request leaves), and asking anyway costs
        a lookup per invoice, which tools with a per-reference lookup (Yuki, Twinfield) pay in calls.
        """
        numbers = [inv.number for inv in invoices if inv.number and inv.id in self._attempted]
        found = self.connector.find_booked(numbers) if numbers else {}
        kept = []
        for invoice in invoices:
            booking = found.get(invoice.number or "")
            if booking is None:
                kept.append(invoice)
            else:
                self.store.record(
                    claim, Booked(invoice.id, booking.registration_number, booking.external_id), self.run_id
                )
                self._settled.add(invoice.id)
                self.report.resolved_by_lookup += 1
        return kept

    def _push(self, claim: Claim, invoices: list[Invoice], links: dict[int, str]) -> None:
        """Mark ``invoices`` claimed, then send them call by call, recording each call's outcomes (in one
        transaction) before the next call.

        Fencing: the lease is checked (and renewed) in the same transaction as the ``claimed`` mark right
        before the first POST, and as each call's record right before the next POST (``push_calls`` is a
        generator: the next request leaves only when the loop asks for the next call's outcomes). So a
        holder that lost its lease stops before its next POST, and every POST leaves while its lease is valid
        or just after. A successor waits for the lease's end plus the request timeout before looking
        anything up (:meth:`_await_in_flight`).

        The connector's own waits (rate budget, 429, back-off) renew and so check the lease again
        (:meth:`Connector.keep_alive_while_waiting`). What remains is a theoretical window: between the
        last check and the POST leaving, a token refresh may take up to a request timeout and the process
        may be paused (swapped out, SIGSTOP, a VM freeze); if that outlasts the lease and the successor's
        wait, the POST arrives after the successor looked the invoice up and found nothing, and the tool
        books it twice. Closing it needs the tool to refuse a stale write (a conditional write or
        idempotency key), which Exact does not offer. Creating a customer is not exposed to it: accounts
        are matched by their code, and Exact refuses a second account with the same code.
        """
        self.store.mark(
            claim, [inv.id for inv in invoices], LedgerState.CLAIMED, self.run_id, count_attempt=True
        )
        unknown: dict[str, int] = {}
        numbers = {inv.id: inv.number for inv in invoices}
        sent: set[int] = set()
        try:
            for outcomes in self.connector.push_calls(invoices, links):
                sent.update(outcome.invoice_id for outcome in outcomes)
                self.store.record_all(claim, outcomes, self.run_id)
                for outcome in outcomes:
                    self._settled.add(outcome.invoice_id)
                    if isinstance(outcome, Booked):
                        self.report.booked += 1
                    elif isinstance(outcome, Rejected):
                        self.report.rejected[str(outcome.error_class)] += 1
                    elif isinstance(outcome, Unknown):
                        unknown[numbers.get(outcome.invoice_id) or ""] = outcome.invoice_id
        except QuotaExceededError as exc:
            unsent = [inv.id for inv in invoices if inv.id not in sent]
            self.store.mark(
                claim,
                unsent,
                LedgerState.DEFERRED,
                self.run_id,
                error_class="quota",
                error_message=exc.message,
            )
            self._settled.update(unsent)
            self.report.deferred += len(unsent)
            raise
        finally:
            if unknown:
                self._settle_unknown(claim, unknown)

    def _settle_unknown(self, claim: Claim, unknown: dict[str, int]) -> None:
        try:
            found = self.connector.find_booked(sorted(unknown))
        except Exception:  # the next run looks them up again; nothing is lost
            log.warning(
                "%s: could not look up %d unknown outcomes now", self._label, len(unknown), exc_info=True
            )
            found = {}
        for number, invoice_id in unknown.items():
            booking = found.get(number)
            if booking is None:
                self.report.unknown += 1
                continue
            self.store.record(
                claim, Booked(invoice_id, booking.registration_number, booking.external_id), self.run_id
            )
            self.report.booked += 1

    def _reject(self, claim: Claim, invoice_id: int, error_class: ErrorClass, message: str) -> None:
        self.report.rejected[str(error_class)] += 1
        if not self.options.dry_run:
            self.store.record(claim, Rejected(invoice_id, error_class, message), self.run_id)
        self._settled.add(invoice_id)

    def _stop_rest(
        self, claim: Claim, after_id: int, state: str, exc: Exception, in_progress: Sequence[int] = ()
    ) -> None:
        """Mark every remaining wanted invoice with why this run stopped, so nobody has to guess.

        ``in_progress``: the still-open invoices of the page the failure interrupted; then every wanted
        candidate after ``after_id``.
        """
        message = getattr(exc, "message", str(exc))
        error_class = str(getattr(exc, "error_class", ErrorClass.TRANSIENT))
        if in_progress and not self.options.dry_run:
            self.store.mark(
                claim, in_progress, state, self.run_id, error_class=error_class, error_message=message
            )
        cursor = after_id
        stopped = len(in_progress)
        while True:
            page = self.store.candidates(
                self.integration.id, after_id=cursor, limit=500, numbers=self.options.invoice_numbers
            )
            if not page:
                break
            cursor = page[-1].invoice_id
            ids = [c.invoice_id for c in page if self._wanted(c)]
            if ids and not self.options.dry_run:
                self.store.mark(
                    claim, ids, state, self.run_id, error_class=error_class, error_message=message
                )
            stopped += len(ids)
        if state == LedgerState.DEFERRED:
            self.report.deferred += stopped
        else:
            self.report.rejected[error_class] += stopped

    def _progress(self, done: int, total: int, started: float) -> None:
        """One task-log line per page: how far the run is, what the tool's budget has left (a run that
        will hit the daily limit shows it coming), and the time left at the pace so far."""
        elapsed = time.monotonic() - started
        left = (elapsed / done) * (total - done) if done and total > done else 0.0
        log.info(
            "%s: %d/%d invoices done (booked %d, rejected %d, deferred %d), budget: %s, about %s left",
            self._label,
            min(done, total),
            total,
            self.report.booked,
            sum(self.report.rejected.values()),
            self.report.deferred,
            self.connector.budget_left.describe(),
            duration(left),
        )


def _renewal_step_s(claim: Claim) -> float:
    """How often a waiting run renews its lease: three times per lease, so one slow renewal is no loss."""
    return max(claim.lease.total_seconds() / 3, 0.05)


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"1 h 20 min"``: a time left the way a person reads a log."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def run_table(report: IntegrationReport, elapsed_s: float) -> str:
    """The end-of-run table of one integration, from the counts the run kept (no query: it is logged even
    when the database is what failed). The summarize task's table, from the ledger, covers the whole run."""
    rows: list[tuple[str, object]] = [
        ("booked", report.booked),
        ("found booked by lookup", report.resolved_by_lookup),
        ("customers created", report.customers_created),
        *((f"rejected ({error_class})", n) for error_class, n in sorted(report.rejected.items())),
        ("outcome unknown", report.unknown),
        ("deferred to the next run", report.deferred),
        *((f"skipped ({reason.replace('_', ' ')})", n) for reason, n in sorted(report.skipped.items())),
        ("still rejected, not resent", report.still_rejected),
        *((("would be sent (dry run)", report.would_push),) if report.would_push else ()),
        ("duration", duration(elapsed_s)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value:>8}" for name, value in rows)
