"""A faithful simulator of Yuki's SOAP web services (sales invoices, outstanding items, contacts).

Reference: ``shared/reference/yuki.md``. What the connector depends on is reproduced: SOAP 1.1 ASMX
services at ``/ws/<Service>.asmx`` with the operation named twice (``SOAPAction`` header and body element),
``Authenticate`` with a web-service access key giving a 24-hour session, the parameter spellings
(``sessionId``/``administrationId`` on ``ProcessSalesInvoices``, ``sessionID``/``administrationID``
elsewhere), the key's service rights, the per-domain daily call counter, and ``ProcessSalesInvoices``
with its two stages: the whole ``xmlDoc`` is checked against the schema first, then invoices are
handled one at a time (contacts matched by ``ContactCode`` or name + address, else created; a faulty
invoice leaves nothing behind; processing stops after six faulty invoices).

Choices where the reference says "unconfirmed" (each is what the connector is tested against):

- Schema failure: answered with HTTP 200 and a ``SalesInvoicesImportResponse`` that holds no ``Invoice``
  results, all totals 0 and one root-level ``Message`` with the validation text; nothing is processed.
- The ``xmlDoc`` is validated with lxml against ``yuki_sales_invoices.xsd``, the project's
  ``SalesInvoices.xsd`` written from three independent clients (sources and the unconfirmed choices in the
  file): a misplaced element refuses the whole call, as an XSD ``sequence`` does. The wording of the
  failure is lxml's; Yuki's own is unconfirmed.
- ``Reference`` may be left out: the invoice is then numbered by the sandbox, as Yuki does (its numbering
  scheme is unconfirmed: here the administration's count of invoices plus one). A contact that no
  ``ContactCode`` or name + address matches needs a ``FullName`` to be created (refused per invoice).
- A line with ``SalesPrice`` 0 is billed at the catalogue price of the product its description matches
  (reference, 2026-12-04: "Yuki would bill the catalogue price"; bvolders/yuki-cli refuses such a line);
  its ``LineAmount``/``LineVATAmount`` are then not taken (unconfirmed), since they contradict that price.
- Answers: the root of a result (``SalesInvoicesImportResponse``, ``OutstandingItems``, ...) is in its
  namespace, its children in none (``xmlns=""``), as DatrixFinances XMLService.cs reads them
  (``XName.Get("TimeStamp", "")``, ``Elements("Administration")``): a client must match on local names.
- Skipped invoices (after the sixth faulty one) get no ``Invoice`` result; only ``TotalSkipped`` counts them.
- A reference already used by an invoice of the administration (booked or draft) is refused with
  "... already exists ... (duplicate invoice number)".
- Booked invoices are visible to ``CheckOutstandingItemAdmin`` at once; an item that is fully paid
  (:meth:`YukiSandbox.mark_paid`) drops out of it, as its name says ("outstanding"; unconfirmed, and the
  harder case for a client: a lookup that finds nothing is no proof that nothing was booked). The
  reference of a paid invoice stays used: a second invoice with it is refused as a duplicate.
- A refused call (bad key, unknown session, quota) does not count toward the daily limit; a quota refusal
  and an injected 429 count as ``rate_limited``. There is no per-minute limit.

:class:`YukiSandbox` holds the state behind one re-entrant lock; :func:`create_app` exposes it over HTTP,
with the common control API under ``/_sandbox``.
"""

from __future__ import annotations

import copy
import functools
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree

from invoice_sync.connectors.yuki import DESCRIPTOR
from invoice_sync_dev.sandbox import yuki_fixtures as fx
from invoice_sync_dev.sandbox.faults import CannedResponse, Scope, first_part
from invoice_sync_dev.sandbox.simulator import (
    CONTROL_PREFIX,
    Simulator,
    SimulatorConfig,
    create_simulator_app,
    json_ready,
)
from invoice_sync_dev.sandbox.tools import (
    BenchKnobs,
    BenchLimits,
    BenchSlot,
    Booking,
    ChaosTargets,
    LimitRun,
    Refusal,
    SandboxTool,
    Target,
)
from invoice_sync_dev.sandbox.yuki_fixtures import AccessKeyFixture, AdministrationFixture, YukiFixtures

MOUNT = "/yuki"
"""Where the sandbox server serves this simulator (see :data:`SANDBOX`)."""

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
YUKI_NS = "http://www.theyukicompany.com/"
SALES_INVOICES_NS = "urn:xmlns:http://www.theyukicompany.com:salesinvoices"
SALES_RESPONSE_NS = "urn:xmlns:http://www.theyukicompany.com:salesinvoicesresponse"
SESSION_LIFETIME = timedelta(hours=24)
MAX_FAULTY_INVOICES = 6
CONTACT_PAGE_SIZE = 100
_CENT = Decimal("0.01")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)

SCHEMA_FILE = "yuki_sales_invoices.xsd"
"""The project's ``SalesInvoices.xsd``, written from public evidence (sources in the file itself)."""


# ------------------------------------------------------------------ schema


class SchemaError(Exception):
    """The ``xmlDoc`` does not satisfy the schema; the whole call is refused with this text."""


@functools.cache
def sales_invoices_schema() -> etree.XMLSchema:
    """The ``SalesInvoices`` schema every incoming ``xmlDoc`` is checked against (loaded once)."""
    source = resources.files("invoice_sync_dev.sandbox").joinpath(SCHEMA_FILE).read_bytes()
    return etree.XMLSchema(etree.fromstring(source, parser=_PARSER))


def _local(node: Any) -> str:
    return etree.QName(node).localname


def _elements(node: Any) -> list[Any]:
    return [c for c in node if isinstance(c.tag, str)]


def partial_sales_invoices(body: bytes) -> bytes | None:
    """The SOAP request with only the first part of its ``SalesInvoices`` (None: not two or more)."""
    try:
        envelope = etree.fromstring(body, parser=_PARSER)
    except etree.XMLSyntaxError:
        return None
    holder = next((node for node in envelope.iter() if _local(node) == "SalesInvoices"), None)
    invoices = _elements(holder) if holder is not None else []
    kept = first_part(invoices)
    if holder is None or kept is None:
        return None
    for dropped in invoices[len(kept) :]:
        holder.remove(dropped)
    return bytes(etree.tostring(envelope, encoding="utf-8", xml_declaration=True))


def _schema_problem(document: Any) -> str | None:
    """The first schema error of ``document`` (namespace braces dropped for a readable text), or None."""
    schema = sales_invoices_schema()
    if schema.validate(document):
        return None
    error = schema.error_log.filter_from_errors()[0]  # type: ignore[attr-defined]  # lxml-stubs declare _ErrorLog with no methods
    return str(error.message).replace(f"{{{SALES_INVOICES_NS}}}", "")


def validate_sales_invoices(root: Any) -> None:
    """Raise :class:`SchemaError` when ``root`` is not a valid ``SalesInvoices`` document.

    The first error names the invoice it is in (``SalesInvoice 2 (Reference 'X')``), so that a bookkeeper
    finds it in a batch: each invoice is checked on its own to find it. Yuki's own wording of a schema
    failure is unconfirmed (reference section 8 says only "one validation message for the whole call");
    the detail is lxml's, the way .NET's validator names the element and what it expected.
    """
    if root is None:
        raise SchemaError(f"The xmlDoc must hold a 'SalesInvoices' element in namespace {SALES_INVOICES_NS}")
    problem = _schema_problem(etree.ElementTree(copy.deepcopy(root)))
    if problem is None:
        return
    if _local(root) == "SalesInvoices":
        for index, invoice in enumerate(_elements(root), start=1):
            single = etree.Element(root.tag, nsmap=root.nsmap)
            single.append(copy.deepcopy(invoice))
            own = _schema_problem(etree.ElementTree(single))
            if own is not None:
                reference = _text(invoice, "Reference")
                raise SchemaError(f"SalesInvoice {index} (Reference '{reference}'): {own}")
    raise SchemaError(problem)


# ------------------------------------------------------------------ values


def _xs_date(value: str) -> date:
    """An ``xs:date`` the schema accepted; a time-zone suffix (``2026-03-02Z``) is allowed and ignored."""
    return date.fromisoformat(value[:10])


def _decimal(value: str | None) -> Decimal | None:
    try:
        number = Decimal((value or "").strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _boolean(value: str) -> bool:
    return value.strip() in ("true", "1")


def _percentage_key(value: Decimal) -> str:
    """``21.00`` -> ``"21"``: how a VAT percentage is compared with the tax codes."""
    return format(value.normalize(), "f") if value else "0"


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _text(node: Any, *path: str) -> str:
    current = node
    for name in path:
        current = (
            next((c for c in _elements(current) if _local(c) == name), None) if current is not None else None
        )
    return (current.text or "").strip() if current is not None else ""


def _find(node: Any, name: str) -> Any:
    return next((c for c in _elements(node) if _local(c) == name), None)


to_wire = json_ready
"""JSON form of internal values for the control API: amounts as strings, instants as ISO text."""


# ------------------------------------------------------------------ SOAP


class YukiFault(Exception):
    """A SOAP Fault answer (HTTP 500): ``faultcode`` and the text Yuki puts in ``faultstring``."""

    def __init__(self, text: str, code: str = "soap:Server", *, rate_limited: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.rate_limited = rate_limited


def fault_body(text: str, code: str = "soap:Server") -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body"), f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = code
    etree.SubElement(fault, "faultstring").text = text
    etree.SubElement(fault, "detail")
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _answer(operation: str, result: Any) -> bytes:
    """``<OperationResponse><OperationResult>result</OperationResult></OperationResponse>`` in an envelope.

    ``result`` is text, an element (appended), or None (an empty result).
    """
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    response = etree.SubElement(body, f"{{{YUKI_NS}}}{operation}Response", nsmap={None: YUKI_NS})  # type: ignore[dict-item]  # lxml-stubs reject the None key lxml uses for the default namespace
    holder = etree.SubElement(response, f"{{{YUKI_NS}}}{operation}Result")
    if isinstance(result, str):
        holder.text = result
    elif result is not None:
        holder.append(with_unqualified_children(result))
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def with_unqualified_children(root: Any) -> Any:
    """``root`` (in its namespace, without attributes) rebuilt so its children are written with ``xmlns=""``.

    libxml2 writes no ``xmlns=""`` for an element without namespace under a default-namespace parent, so
    its children would read back in the root's namespace. Written with the declaration and parsed again,
    they keep it, as in Yuki's answers (see the module docstring).
    """
    name = _local(root)
    children = []
    for node in _elements(root):
        written = etree.tostring(_plain(node), encoding="unicode")
        children.append(written.replace(f"<{_local(node)}", f'<{_local(node)} xmlns=""', 1))
    namespace = etree.QName(root).namespace or ""
    return etree.fromstring(f'<{name} xmlns="{namespace}">{"".join(children)}</{name}>')


def _plain(node: Any) -> Any:
    """A copy of ``node`` and its descendants outside any namespace scope (nothing declared in scope)."""
    copied = etree.Element(_local(node), dict(node.attrib))
    copied.text = node.text
    copied.extend(_plain(c) for c in _elements(node))
    return copied


def _yuki(parent: Any, name: str, text: Any = None, **attributes: str) -> Any:
    """A child of a result, in no namespace (``xmlns=""`` under the result's namespaced root), as Yuki
    answers (DatrixFinances XMLService.cs reads ``TimeStamp``, ``Invoice``, ``Item`` with an empty
    namespace)."""
    node = etree.SubElement(parent, name, attributes)
    if text is not None:
        node.text = str(text).lower() if isinstance(text, bool) else str(text)
    return node


def _root(namespace: str, name: str) -> Any:
    return etree.Element(f"{{{namespace}}}{name}", nsmap={None: namespace})  # type: ignore[dict-item]  # lxml-stubs reject the None key lxml uses for the default namespace


def soap_operation(headers: Mapping[str, str], body: bytes) -> str:
    """The operation a request names: its ``SOAPAction`` header, else its body element (for fault rules)."""
    action = headers.get("soapaction", "").strip().strip('"')
    if action:
        return action.rsplit("/", 1)[-1]
    try:
        envelope = etree.fromstring(body, parser=_PARSER)
    except etree.XMLSyntaxError:
        return ""
    soap_body = _find(envelope, "Body")
    content = _elements(soap_body)[0] if soap_body is not None and _elements(soap_body) else None
    return _local(content) if content is not None else ""


# ------------------------------------------------------------------ state


@dataclass(slots=True)
class YukiConfig(SimulatorConfig):
    """The switches tests flip through ``POST /_sandbox/config``; defaults are Yuki's real values."""

    daily_limit: int = fx.DAILY_LIMIT
    limits_enabled: bool = True
    response_as_text: bool = False
    """Answer ``ProcessSalesInvoicesResult`` as escaped XML text instead of child elements."""


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who makes an admitted call: the key (its rights) and its domain."""

    key: AccessKeyFixture
    domain_id: str


class _InvoiceRefused(Exception):
    """One invoice failed; its side effects are not committed."""


_SERVICE_OPERATIONS: dict[str, frozenset[str]] = {
    fx.SALES: frozenset({"ProcessSalesInvoices"}),
    fx.ACCOUNTING: frozenset({"CheckOutstandingItem", "CheckOutstandingItemAdmin"}),
    fx.ACCOUNTING_INFO: frozenset(),
    fx.CONTACT: frozenset({"SearchContacts"}),
}
_COMMON_OPERATIONS = frozenset({"Authenticate", "Administrations", "AdministrationID"})


class YukiSandbox(Simulator[YukiFixtures, YukiConfig]):
    """The simulated Yuki domain: access keys, sessions, administrations, contacts, invoices, items."""

    config_class = YukiConfig

    # ----------------------------------------------------------------- state

    def _default_fixtures(self) -> YukiFixtures:
        return fx.default_fixtures()

    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        saved = saved or {}
        self._sessions: dict[str, dict[str, Any]] = dict(saved.get("sessions", {}))
        self._contacts: dict[str, dict[str, dict[str, Any]]] = {
            domain: dict(rows) for domain, rows in saved.get("contacts", {}).items()
        }
        self._invoices: dict[str, list[dict[str, Any]]] = {
            admin: list(rows) for admin, rows in saved.get("invoices", {}).items()
        }
        # Used references per administration: the duplicate check must not scan every invoice booked.
        self._references: dict[str, set[str]] = {
            admin: {row["reference"] for row in rows} for admin, rows in self._invoices.items()
        }
        self._items: dict[str, list[dict[str, Any]]] = {
            admin: list(rows) for admin, rows in saved.get("items", {}).items()
        }
        self._products: dict[str, dict[str, dict[str, Any]]] = {
            admin: dict(rows) for admin, rows in saved.get("products", {}).items()
        }
        self._day_counts: dict[str, dict[str, Any]] = dict(saved.get("day_counts", {}))

    def _reset_counters(self) -> None:
        self._calls: Counter[str] = Counter()
        self._rate_limited = 0
        self._sessions_issued = 0
        self._create_posts: Counter[str] = Counter()

    def _persistable(self) -> dict[str, Any]:
        """Sessions, contacts, invoices, items, products and daily call counters (copied)."""
        data = {
            "sessions": self._sessions,
            "contacts": self._contacts,
            "invoices": self._invoices,
            "items": self._items,
            "products": self._products,
            "day_counts": self._day_counts,
        }
        return copy.deepcopy(data)

    # --------------------------------------------------------------- sessions

    def authenticate(self, access_key: str) -> str:
        """``Authenticate``: a new session id for a valid access key, valid 24 hours (sandbox time)."""
        with self.lock:
            key = self.fixtures.key(access_key.strip())
            if key is None:
                raise YukiFault("Authentication failed: invalid access key.", "soap:Client")
            self._count_call(key.domain_id)
            session = str(uuid.UUID(bytes=secrets.token_bytes(16)))
            now = self.clock.now()
            self._sessions[session] = {
                "key": key.key,
                "domain_id": key.domain_id,
                "issued_at": now,
                "expires_at": now + SESSION_LIFETIME,
            }
            self._sessions_issued += 1
            self._prune_sessions(now)
            self._changed()
            return session

    def _prune_sessions(self, now: datetime) -> None:
        stale = [s for s, row in self._sessions.items() if row["expires_at"] < now - timedelta(days=1)]
        for session in stale:
            del self._sessions[session]

    def expire_tokens(self) -> int:
        """Every session expires now (the next call with one gets the session fault); returns how many."""
        with self.lock:
            now = self.clock.now()
            live = [row for row in self._sessions.values() if row["expires_at"] > now]
            for row in live:
                row["expires_at"] = now
            self._changed()
            return len(live)

    def admit(self, session_id: str, service: str | None = None) -> _Caller:
        """Check a session (and the key's right to ``service``) and count the call for its domain."""
        with self.lock:
            row = self._sessions.get(session_id.strip())
            if row is None or row["expires_at"] <= self.clock.now():
                raise YukiFault(
                    "Invalid sessionID: the session has expired or does not exist.", "soap:Client"
                )
            key = self.fixtures.key(row["key"])
            if key is None:  # the key was deleted after the session was opened
                raise YukiFault(
                    "Invalid access key: the key of this session no longer exists.", "soap:Client"
                )
            self._count_call(row["domain_id"])
            if service is not None and service not in key.services:
                raise YukiFault(
                    f"The web service '{service}' is not allowed for this access key "
                    "(tick the service in the key's rights under Settings > Web services)."
                )
            return _Caller(key, row["domain_id"])

    def _count_call(self, domain_id: str) -> None:
        today = self.clock.now().date().isoformat()
        counter = self._day_counts.setdefault(domain_id, {"day": today, "count": 0})
        if counter["day"] != today:
            counter["day"], counter["count"] = today, 0
        if self.config.limits_enabled and counter["count"] >= self.config.daily_limit:
            self._rate_limited += 1
            raise YukiFault(
                f"Daily call limit exceeded: this domain has used its {self.config.daily_limit} "
                "web service calls for today.",
                rate_limited=True,
            )
        counter["count"] += 1

    def calls_today(self, domain_id: str = fx.DOMAIN_ID) -> int:
        """How many calls the domain made this sandbox day (what its daily limit counts)."""
        with self.lock:
            counter = self._day_counts.get(domain_id)
            today = self.clock.now().date().isoformat()
            return int(counter["count"]) if counter and counter["day"] == today else 0

    def _administration(self, caller: _Caller, administration_id: str) -> AdministrationFixture:
        wanted = administration_id.strip().lower()
        administration = self.fixtures.administrations.get(wanted)
        if administration is None or wanted not in caller.key.administrations:
            raise YukiFault(
                f"Unknown administration ID '{administration_id}', or this access key has no access to it."
            )
        return administration

    # ----------------------------------------------------------- operations

    def administrations(self, caller: _Caller) -> list[AdministrationFixture]:
        return [self.fixtures.administrations[a] for a in caller.key.administrations]

    def administration_id(self, caller: _Caller, name: str) -> str:
        for administration in self.administrations(caller):
            if administration.name.strip().lower() == name.strip().lower():
                return administration.id
        raise YukiFault(f"Unknown administration name '{name}', or this access key has no access to it.")

    def process_sales_invoices(self, caller: _Caller, administration_id: str, document: Any) -> Any:
        """``ProcessSalesInvoices``: the ``SalesInvoicesImportResponse`` element for ``document``."""
        with self.lock:
            administration = self._administration(caller, administration_id)
            if not administration.sales_bundle:
                raise YukiFault(
                    "This functionality is not available: the administration has no invoicing bundle "
                    "or 'Yuki Sales Webservice' feature."
                )
            response = _root(SALES_RESPONSE_NS, "SalesInvoicesImportResponse")
            _yuki(response, "TimeStamp", self.clock.now().replace(microsecond=0, tzinfo=None).isoformat())
            _yuki(response, "AdministrationId", administration.id)
            totals = [_yuki(response, name, 0) for name in ("TotalSucceeded", "TotalFailed", "TotalSkipped")]
            try:
                validate_sales_invoices(document)
            except SchemaError as exc:
                _yuki(
                    response,
                    "Message",
                    f"The XML document is not valid according to SalesInvoices.xsd: {exc}",
                )
                return response
            succeeded = failed = skipped = 0
            for invoice in _elements(document):
                if failed >= MAX_FAULTY_INVOICES:
                    skipped += 1
                    continue
                reference = _text(invoice, "Reference") or self._next_reference(administration.id)
                self._create_posts[reference] += 1
                result = _yuki(response, "Invoice")
                process = _boolean(_text(invoice, "Process"))
                contact_name = _text(invoice, "Contact", "FullName")
                try:
                    booked = self._process_invoice(caller, administration, invoice, reference, process)
                    message, ok, email_sent = "", True, booked["email_sent"]
                    contact_name = booked["contact_name"]
                    succeeded += 1
                except _InvoiceRefused as exc:
                    message, ok, process, email_sent = str(exc), False, False, False
                    failed += 1
                _yuki(result, "Succeeded", ok)
                _yuki(result, "Processed", ok and process)
                _yuki(result, "EmailSent", email_sent)
                _yuki(result, "Reference", reference)
                _yuki(result, "Subject", _text(invoice, "Subject"))
                _yuki(result, "Contact", contact_name)
                _yuki(result, "Message", message)
            for node, value in zip(totals, (succeeded, failed, skipped), strict=True):
                node.text = str(value)
            if succeeded:
                self._changed()
            return response

    def _next_reference(self, administration_id: str) -> str:
        """The number Yuki gives an invoice sent without ``Reference`` (scheme unconfirmed)."""
        return str(len(self._invoices.get(administration_id, [])) + 1)

    def _process_invoice(
        self,
        caller: _Caller,
        administration: AdministrationFixture,
        invoice: Any,
        reference: str,
        process: bool,
    ) -> dict[str, Any]:
        """Check and book one invoice; nothing is stored unless every check passes."""
        invoices = self._invoices.setdefault(administration.id, [])
        references = self._references.setdefault(administration.id, set())
        if reference in references:
            raise _InvoiceRefused(
                f"A sales invoice with reference '{reference}' already exists in administration "
                f"{administration.name} (duplicate invoice number)."
            )
        contact, new_contact = self._match_contact(caller.domain_id, _find(invoice, "Contact"))
        lines = [self._line(administration, line) for line in _elements(_find(invoice, "InvoiceLines"))]
        email = _boolean(_text(invoice, "EmailToCustomer"))
        if (
            email
            and process
            and not (contact.get("email") or _text(invoice, "ContactPerson", "EmailAddress"))
        ):
            raise _InvoiceRefused("The invoice cannot be e-mailed: the contact has no e-mail address.")
        # Every check passed: commit the contact, the products, the invoice and its outstanding item.
        if new_contact:
            self._contacts.setdefault(caller.domain_id, {})[contact["id"]] = contact
        products = self._products.setdefault(administration.id, {})
        for line in lines:
            products[line["product"]["description"]] = line["product"]
        now = self.clock.now()
        invoice_date = _xs_date(_text(invoice, "Date"))
        due = _text(invoice, "DueDate")
        total_excl = sum((line["amount"] for line in lines), Decimal("0"))
        total_vat = sum((line["vat_amount"] for line in lines), Decimal("0"))
        row: dict[str, Any] = {
            "reference": reference,
            "subject": _text(invoice, "Subject"),
            "administration_id": administration.id,
            "document_id": str(uuid.uuid4()),
            "item_id": str(uuid.uuid4()) if process else None,
            "processed": process,
            "email_sent": email and process,
            "date": invoice_date.isoformat(),
            "due_date": due or None,
            "currency": _text(invoice, "Currency") or "EUR",
            "contact_id": contact["id"],
            "contact_code": contact["code"],
            "contact_name": contact["name"],
            "lines": lines,
            "total_excl_vat": total_excl,
            "total_vat": total_vat,
            "total_incl_vat": total_excl + total_vat,
            "created_at": now,
        }
        invoices.append(row)
        references.add(reference)
        if process:
            self._items.setdefault(administration.id, []).append(
                {
                    "id": row["item_id"],
                    "reference": reference,
                    "description": row["subject"] or f"Sales invoice {reference}",
                    "date": row["date"],
                    "due_date": row["due_date"] or row["date"],
                    "original_amount": row["total_incl_vat"],
                    "open_amount": row["total_incl_vat"],
                    "contact": contact["name"],
                    "document_id": row["document_id"],
                }
            )
        return row

    def _match_contact(self, domain_id: str, element: Any) -> tuple[dict[str, Any], bool]:
        """The domain's contact for an invoice's ``Contact`` block: by ``ContactCode``, else by name and
        address, else a new one (returned uncommitted). An existing contact is not changed (unconfirmed)."""
        contacts = self._contacts.setdefault(domain_id, {})
        code = _text(element, "ContactCode")
        name = (element.findtext(f"{{{SALES_INVOICES_NS}}}FullName") or "").strip()
        address = (_text(element, "AddressLine_1"), _text(element, "Zipcode"))
        for contact in contacts.values():
            if code and contact["code"] == code:
                return contact, False
        if not code:
            for contact in contacts.values():
                if contact["name"] == name and (contact["address_line1"], contact["zipcode"]) == address:
                    return contact, False
        if not name:  # the schema lets FullName out (a known ContactCode is enough); a new contact needs it
            raise _InvoiceRefused(
                f"Contact '{code}' does not exist, and a new contact cannot be created without a FullName."
            )
        now = self.clock.now()
        contact = {
            "id": str(uuid.uuid4()),
            "code": code or self._next_contact_code(contacts.values()),
            "name": name,
            "type": _text(element, "ContactType") or "Company",
            "address_line1": address[0],
            "address_line2": _text(element, "AddressLine_2"),
            "zipcode": address[1],
            "city": _text(element, "City"),
            "country_code": _text(element, "CountryCode"),
            "vat_number": _text(element, "VATNumber"),
            "email": _text(element, "EmailAddress"),
            "active": True,
            "created_at": now,
            "modified_at": now,
        }
        return contact, True

    @staticmethod
    def _next_contact_code(contacts: Any) -> str:
        """Yuki's numbering of a contact created without a code (unconfirmed): highest number + 1."""
        numbers = [int(c["code"]) for c in contacts if str(c["code"]).isdigit()]
        return str(max(numbers, default=0) + 1)

    def _line(self, administration: AdministrationFixture, element: Any) -> dict[str, Any]:
        """One invoice line with its amounts; refuses what Yuki's per-invoice checks refuse."""
        product = _find(element, "Product")
        percentage = _decimal(_text(product, "VATPercentage")) or Decimal("0")
        vat_type = str(int(_text(product, "VATType")))
        percentage_key = _percentage_key(percentage)
        if (percentage_key, vat_type) not in administration.tax_codes:
            raise _InvoiceRefused(f"No tax code for VATPercentage {percentage_key} & VATType {vat_type}")
        gl_account = _text(product, "GLAccountCode") or administration.default_gl_account
        if gl_account not in administration.gl_accounts:
            raise _InvoiceRefused(
                f"GLAccountCode '{gl_account}' does not exist in administration {administration.name}."
            )
        price = _decimal(_text(product, "SalesPrice")) or Decimal("0")
        if price != price.quantize(_CENT):
            raise _InvoiceRefused(f"The sales price {price} has too many decimals (at most 2 are allowed).")
        quantity = _decimal(_text(element, "ProductQuantity")) or Decimal("0")
        vat_included = _boolean(_text(product, "VATIncluded"))
        given_amount = _decimal(_text(element, "LineAmount"))
        given_vat = _decimal(_text(element, "LineVATAmount"))
        catalogue = self._products.get(administration.id, {}).get(_text(product, "Description"))
        if not price and catalogue is not None:  # Yuki bills the catalogue price (see the module docstring)
            price, given_amount, given_vat = catalogue["sales_price"], None, None
        if given_amount is not None:
            amount = given_amount
        elif vat_included:
            amount = _cents(quantity * price / (1 + percentage / 100))
        else:
            amount = _cents(quantity * price)
        if given_vat is not None:
            vat_amount = given_vat
        elif vat_included and given_amount is None:
            vat_amount = _cents(quantity * price) - amount
        else:
            vat_amount = _cents(amount * percentage / 100)
        return {
            "description": _text(element, "Description"),
            "quantity": quantity,
            "sales_price": price,
            "vat_percentage": percentage_key,
            "vat_type": vat_type,
            "gl_account": gl_account,
            "amount": amount,
            "vat_amount": vat_amount,
            "product": {
                "description": _text(product, "Description"),
                "reference": _text(product, "Reference"),
                "sales_price": price,
                "vat_percentage": percentage_key,
                "vat_type": vat_type,
                "gl_account": gl_account,
            },
        }

    def outstanding_items(
        self, caller: _Caller, reference: str, administration_id: str | None
    ) -> list[dict[str, Any]]:
        """``CheckOutstandingItem(Admin)``: the items whose reference is ``reference``, oldest first."""
        with self.lock:
            if administration_id is not None:
                administrations = [self._administration(caller, administration_id).id]
            else:
                administrations = list(caller.key.administrations)
            return [
                item
                for admin in administrations
                for item in self._items.get(admin, [])
                if item["reference"] == reference.strip() and item["open_amount"] != 0
            ]

    def search_contacts(
        self, caller: _Caller, domain_id: str, option: str, value: str, active: str, page: int
    ) -> list[dict[str, Any]]:
        """``SearchContacts``: one page of 100 contacts of the domain, sorted by name."""
        with self.lock:
            if domain_id.strip().lower() != caller.domain_id:
                raise YukiFault(f"Unknown domain ID '{domain_id}', or this access key has no access to it.")
            wanted = value.strip().lower()
            fields_by_option = {
                "All": ("name", "code", "vat_number", "email"),
                "Name": ("name",),
                "Code": ("code",),
                "VATNumber": ("vat_number",),
                "Email": ("email",),
                "ID": ("id",),
            }
            if option not in fields_by_option and option != "CoCNumber":
                raise YukiFault(f"Unknown searchOption '{option}'.", "soap:Client")
            searched = fields_by_option.get(option, ())
            rows = [
                c
                for c in self._contacts.get(caller.domain_id, {}).values()
                if (not wanted or any(wanted in str(c.get(f) or "").lower() for f in searched))
                and (active in ("Both", "") or (active == "Active") == c["active"])
            ]
            rows.sort(key=lambda c: (c["name"].lower(), c["code"]))
            start = (max(page, 1) - 1) * CONTACT_PAGE_SIZE
            return rows[start : start + CONTACT_PAGE_SIZE]

    # ------------------------------------------------------------ Python API

    def add_outstanding_item(
        self, reference: str, amount: Decimal, *, administration_id: str = fx.ADMINISTRATION_ID
    ) -> str:
        """An item booked by hand in Yuki (a memorial entry, say) that carries ``reference``; its id."""
        with self.lock:
            item_id = str(uuid.uuid4())
            today = self.clock.now().date().isoformat()
            self._items.setdefault(administration_id, []).append(
                {"id": item_id, "reference": reference, "description": "Manual entry", "date": today,
                 "due_date": today, "original_amount": amount, "open_amount": amount, "contact": "",
                 "document_id": str(uuid.uuid4())}
            )  # fmt: skip
            self._changed()
            return item_id

    def mark_paid(self, reference: str, *, administration_id: str = fx.ADMINISTRATION_ID) -> int:
        """The customer paid: the items of ``reference`` have nothing open any more (and, unconfirmed,
        ``CheckOutstandingItem(Admin)`` no longer lists them). Returns how many items were settled."""
        with self.lock:
            settled = [i for i in self._items.get(administration_id, []) if i["reference"] == reference]
            for item in settled:
                item["open_amount"] = Decimal("0")
            self._changed()
            return len(settled)

    def booked(self, administration_id: str | None = None) -> list[dict[str, Any]]:
        """Every booked (``Process=true``) sales invoice, oldest first, with the common contract's keys."""
        with self.lock:
            return [
                {**row, "registration_number": row["reference"], "customer_code": row["contact_code"],
                 "customer_name": row["contact_name"]}
                for admin, rows in self._invoices.items()
                if administration_id is None or admin == administration_id
                for row in rows
                if row["processed"]
            ]  # fmt: skip

    def drafts(self) -> list[dict[str, Any]]:
        """Sales invoices imported with ``Process=false``."""
        with self.lock:
            return [row for rows in self._invoices.values() for row in rows if not row["processed"]]

    def create_posts(self) -> dict[str, int]:
        """How many times an invoice with each reference was processed (booked or refused).

        Invoices of a call refused as a whole (schema, faults) and skipped invoices are not counted.
        """
        with self.lock:
            return dict(self._create_posts)

    def customers(self, domain_id: str | None = None) -> list[dict[str, Any]]:
        """Every contact (``code``, ``name``, address, ``vat_number``, ``type``, ``id``)."""
        with self.lock:
            return [
                dict(contact)
                for domain, contacts in self._contacts.items()
                if domain_id is None or domain == domain_id
                for contact in contacts.values()
            ]

    def stats_snapshot(self) -> dict[str, Any]:
        """Calls per operation, sessions issued, quota refusals and 429s, faults hit, HTTP statistics."""
        with self.lock:
            return {
                "calls": dict(self._calls),
                "total": sum(self._calls.values()),
                "token_refreshes": self._sessions_issued,
                "rate_limited": self._rate_limited,
                "faults": self.faults.hits(),
                "http": self.stats.snapshot(),
            }

    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        return error_response(status, message)

    def _fault_describe(self) -> Callable[[Scope, bytes], str]:
        """Fault rules match ``/ws/<Service>.asmx#<Operation>``: one path serves many operations."""
        return lambda scope, body: "#" + soap_operation(_headers(scope), body)

    def _fault_partial(self) -> Callable[[bytes], bytes | None]:
        """A ``ProcessSalesInvoices`` call carries up to 25 invoices: the first part of them is processed."""
        return partial_sales_invoices

    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """An injected 429 (Yuki's per-minute behaviour is unconfirmed): a plain-text gateway answer."""
        with self.lock:
            self._rate_limited += 1
        return CannedResponse(429, b"Too many requests", (("Retry-After", "60"),), "text/plain")

    # ------------------------------------------------------------ dispatch

    def handle(self, service: str, soap_action: str | None, body: bytes) -> tuple[int, bytes]:
        """Answer one SOAP request to ``/ws/<service>.asmx``: (HTTP status, envelope)."""
        try:
            return 200, self._dispatch(service, soap_action, body)
        except YukiFault as fault:
            return 500, fault_body(fault.text, fault.code)

    def _dispatch(self, service: str, soap_action: str | None, body: bytes) -> bytes:
        action = (soap_action or "").strip().strip('"')
        known = _COMMON_OPERATIONS | _SERVICE_OPERATIONS[service]
        operation = action[len(YUKI_NS) :] if action.startswith(YUKI_NS) else None
        if operation not in known:
            raise YukiFault(
                f"Server did not recognize the value of HTTP Header SOAPAction: {action}.", "soap:Client"
            )
        try:
            envelope = etree.fromstring(body, parser=_PARSER)
        except etree.XMLSyntaxError as exc:
            raise YukiFault(
                f"Server was unable to read request. ---> There is an error in XML document ({exc}).",
                "soap:Client",
            ) from None
        soap_body = _find(envelope, "Body") if _local(envelope) == "Envelope" else None
        content = _elements(soap_body)[0] if soap_body is not None and _elements(soap_body) else None
        if content is None or etree.QName(content).namespace != YUKI_NS or _local(content) != operation:
            found = _local(content) if content is not None else "nothing"
            raise YukiFault(
                f"Unable to handle request. The action '{action}' does not match the body element '{found}'.",
                "soap:Client",
            )
        with self.lock:
            self._calls[operation] += 1
        return _OPERATIONS[operation](self, service, content)


def _param(content: Any, name: str) -> str:
    """A parameter of the operation element (names are case-sensitive, as in ASMX)."""
    node = content.find(f"{{{YUKI_NS}}}{name}")
    return (node.text or "").strip() if node is not None else ""


def _op_authenticate(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    return _answer("Authenticate", sandbox.authenticate(_param(content, "accessKey")))


def _op_administrations(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionID"))
    holder = _root(YUKI_NS, "Administrations")
    for administration in sandbox.administrations(caller):
        node = _yuki(holder, "Administration", ID=administration.id)
        _yuki(node, "Name", administration.name)
        _yuki(node, "Country", administration.country)
        _yuki(node, "VATNumber", administration.vat_number)
        _yuki(node, "DomainID", administration.domain_id)
        _yuki(node, "Active", administration.active)
    return _answer("Administrations", holder)


def _op_administration_id(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionID"))
    return _answer(
        "AdministrationID", sandbox.administration_id(caller, _param(content, "administrationName"))
    )


def _op_process_sales_invoices(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionId"), fx.SALES)
    holder = content.find(f"{{{YUKI_NS}}}xmlDoc")
    document = _elements(holder)[0] if holder is not None and _elements(holder) else None
    response = sandbox.process_sales_invoices(caller, _param(content, "administrationId"), document)
    if sandbox.config.response_as_text:
        return _answer(
            "ProcessSalesInvoices", etree.tostring(with_unqualified_children(response), encoding="unicode")
        )
    return _answer("ProcessSalesInvoices", response)


def _items_answer(operation: str, items: Sequence[Mapping[str, Any]]) -> bytes:
    holder = _root(YUKI_NS, "OutstandingItems")
    for item in items:
        node = _yuki(holder, "Item", ID=item["id"])
        _yuki(node, "Reference", item["reference"])
        _yuki(node, "Description", item["description"])
        _yuki(node, "Contact", item["contact"])
        _yuki(node, "Date", item["date"])
        _yuki(node, "DueDate", item["due_date"])
        _yuki(node, "OriginalAmount", item["original_amount"])
        _yuki(node, "OpenAmount", item["open_amount"])
        _yuki(node, "DocumentID", item["document_id"])
    return _answer(operation, holder)


def _op_check_outstanding_item_admin(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionID"), fx.ACCOUNTING)
    items = sandbox.outstanding_items(
        caller, _param(content, "Reference"), _param(content, "administrationID")
    )
    return _items_answer("CheckOutstandingItemAdmin", items)


def _op_check_outstanding_item(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionID"), fx.ACCOUNTING)
    return _items_answer(
        "CheckOutstandingItem", sandbox.outstanding_items(caller, _param(content, "Reference"), None)
    )


_CONTACT_FIELDS = (
    ("Code", "code"),
    ("FullName", "name"),
    ("Type", "type"),
    ("AddressLine_1", "address_line1"),
    ("Zipcode", "zipcode"),
    ("City", "city"),
    ("Country", "country_code"),
    ("VATNumber", "vat_number"),
    ("EmailAddress", "email"),
)


def _op_search_contacts(sandbox: YukiSandbox, service: str, content: Any) -> bytes:
    caller = sandbox.admit(_param(content, "sessionID"), fx.CONTACT)
    page = _param(content, "pageNumber")
    rows = sandbox.search_contacts(
        caller,
        _param(content, "domainID"),
        _param(content, "searchOption") or "All",
        _param(content, "searchValue"),
        _param(content, "active") or "Both",
        int(page) if page.isdigit() else 1,
    )
    holder = _root(YUKI_NS, "Contacts")
    for row in rows:
        node = _yuki(holder, "Contact", ID=row["id"])
        for name, key in _CONTACT_FIELDS:
            _yuki(node, name, row[key])
        _yuki(node, "Active", row["active"])
    return _answer("SearchContacts", holder)


_OPERATIONS: dict[str, Callable[[YukiSandbox, str, Any], bytes]] = {
    "Authenticate": _op_authenticate,
    "Administrations": _op_administrations,
    "AdministrationID": _op_administration_id,
    "ProcessSalesInvoices": _op_process_sales_invoices,
    "CheckOutstandingItemAdmin": _op_check_outstanding_item_admin,
    "CheckOutstandingItem": _op_check_outstanding_item,
    "SearchContacts": _op_search_contacts,
}


def error_response(status: int, message: str) -> CannedResponse:
    """An injected error: a SOAP Fault for 500 (what ASMX answers), a plain page for anything else
    (a 502 or 504 comes from a gateway in front of Yuki, not from the service)."""
    if status == 500:
        return CannedResponse(
            500,
            fault_body(f"Server was unable to process request. ---> {message}"),
            (),
            "text/xml; charset=utf-8",
        )
    page = (
        f"<html><head><title>{status} {message}</title></head><body><h1>{status} {message}</h1></body></html>"
    )
    return CannedResponse(status, page.encode(), (), "text/html")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}


# ------------------------------------------------------------------ HTTP


def _service_name(name: str) -> str | None:
    return next((s for s in fx.SERVICES if s.lower() == name.lower()), None)


def _add_soap_routes(app: FastAPI, sandbox: YukiSandbox) -> None:
    @app.post("/ws/{service}.asmx")
    async def soap(request: Request, service: str) -> Response:
        known = _service_name(service)
        if known is None:
            return Response(b"<html><body><h1>404 Not Found</h1></body></html>", 404, media_type="text/html")
        status, body = sandbox.handle(known, request.headers.get("soapaction"), await request.body())
        return Response(body, status, media_type="text/xml; charset=utf-8")


def _add_control_routes(app: FastAPI, sandbox: YukiSandbox) -> None:
    """Yuki's own control routes, next to the common ones of :func:`~.simulator.add_control_routes`."""
    prefix = CONTROL_PREFIX

    @app.get(f"{prefix}/bookings")
    def bookings() -> Response:
        return JSONResponse(to_wire(sandbox.booked()))

    @app.get(f"{prefix}/customers")
    def customers() -> Response:
        return JSONResponse(to_wire(sandbox.customers()))


def create_app(sandbox: YukiSandbox) -> FastAPI:
    """Yuki's web services of ``sandbox`` as an ASGI app (mounted at ``/yuki`` by the server)."""
    return create_simulator_app("Yuki sandbox", sandbox, _add_soap_routes, _add_control_routes)


def demo_connection(sandbox_url: str) -> dict[str, Any]:
    """The demo connection: ``host`` is the base URL of the web services, ``password`` the demo domain's
    access key; ``daily_limit`` is the domain's allowance of calls per day (1,000 without Yuki's extra
    features)."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "password": fx.ACCESS_KEY,
        "extra": {"timeout": 30, "daily_limit": fx.DAILY_LIMIT},
    }


def bookings(sandbox: YukiSandbox) -> list[Booking]:
    """The processed sales invoices of every administration (Yuki numbers them by our reference)."""
    return [
        Booking(
            DESCRIPTOR.name,
            str(item["reference"]),
            str(item["registration_number"]),
            None,
            Decimal(str(item["total_incl_vat"])),
            Decimal(str(item["total_vat"])),
            item,
        )
        for item in sandbox.booked()
    ]


def bench_slot(slot: int) -> BenchSlot:
    """Bench tenant ``slot``: a domain (administration and access key) of its own, since Yuki counts calls
    per domain and every integration of a domain shares its day."""
    return BenchSlot({"administration_id": fx.bench_administration_id(slot)}, f"bench_yuki_{slot:02d}")


def bench_connection(sandbox_url: str, slot: int, limits: BenchLimits) -> dict[str, Any]:
    """The connection of bench domain ``slot``, with the day's allowance (Yuki announces none)."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "password": fx.bench_access_key(slot),
        "extra": {"timeout": 30, "daily_limit": fx.DAILY_LIMIT if limits.limit is None else limits.limit},
    }


def bench_figures(stats: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``limit_yuki`` line says beside its figures."""
    return {"note": "no per-minute limit is documented; the window is the domain's day"}


SANDBOX = SandboxTool(
    descriptor=DESCRIPTOR,
    mount=MOUNT,
    simulator=YukiSandbox,
    create_app=create_app,
    connection=demo_connection,
    bookings=bookings,
    chaos=ChaosTargets(
        book=Target("POST", r"/ws/Sales\.asmx#ProcessSalesInvoices$"),
        lookup=Target("POST", r"/ws/Accounting\.asmx#CheckOutstandingItemAdmin$"),
        reads=(Target("POST", r"#(CheckOutstandingItemAdmin|CheckOutstandingItem|SearchContacts)$"),),
        api=Target("POST", r"#(?!Authenticate$)"),  # not the session: see ChaosTargets.api
        batch=True,  # contacts come with the invoices, in the same call
    ),
    bench=BenchKnobs(
        limit_switch="daily_limit",
        # 25 invoices a call: a day of 1,000 calls would take 25,000 invoices; 100 calls take 2,500. The
        # backlog exceeds the day, so the run spends the whole day and defers the rest.
        limit_run=LimitRun(invoices=3000, time_scale=1, limit=100, real_limit=1000, window="day"),
        quick_limit_run=LimitRun(invoices=300, time_scale=1, limit=10, real_limit=1000, window="day"),
        connection=bench_connection,
        limit_figures=bench_figures,
        template_integration=4,
        max_calls_per_invoice=0.05,  # batches of 25 plus the session's Authenticate
        slots=fx.BENCH_TENANTS,
        slot=bench_slot,
        overhead=1,  # 25 invoices a call and no customer calls: the figure is our overhead, not HTTP
        accepted=(("21", "6", "0"), ("7000", "7010")),  # not 12 % or GL 8020: the demo's refusals
        limits_off={"limits_enabled": False, "daily_limit": 10_000_000},
        unpaced={"daily_limit": 10_000_000},  # Yuki sends no headers: the connector counts its day itself
    ),
    refusals=(
        Refusal("12", "7000", "config", "No tax code for VATPercentage 12 & VATType 9"),
        Refusal("9", "7000", "config", "Tax rate 'BE-9' (9%) is not mapped"),
    ),
)
"""This simulator as the sandbox server, the demo and the harnesses find it (by the tool's name)."""
