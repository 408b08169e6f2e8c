"""A faithful simulator of Twinfield: OAuth2 login host, token validation and the ProcessXml SOAP service.

Reference: ``shared/reference/twinfield.md``. What the connector depends on is reproduced:

- Login host (``/auth/authentication/connect/...``): the token endpoint with HTTP Basic client
  authentication (``refresh_token`` and ``authorization_code`` grants), access tokens living one hour on
  the sandbox clock, refresh tokens that are reusable and never rotated (Twinfield's live 25 years), OAuth
  error bodies (401 ``invalid_client``, 400 ``invalid_grant``), and ``accesstokenvalidation`` answering
  ``twf.clusterUrl`` (this server's own ``/twinfield/cluster``, derived from the request) and
  ``twf.organisationCode``.
- Cluster (``/cluster/webservices/processxml.asmx``): SOAP 1.1 ``ProcessXmlString`` with the
  ``Header{AccessToken, CompanyCode}``; faults for an invalid token ("Access denied. Token invalid
  (code 354)") and a missing ``CompanyCode`` (except ``<list><type>offices</type></list>``); HTTP 200 with
  ``result``/``msgtype``/``msg`` attributes on the elements for everything ProcessXml judges itself.
- ProcessXml: DEB dimension upserts (code format, name, addresses, banks), sales transactions (office,
  daybook, dates, dimensions, VAT codes, unsigned amounts with ``debitcredit``, the VAT lines Twinfield
  makes itself from each detail line's ``vatcode`` and ``vatvalue``, ``autobalancevat``, balance to the
  cent, numbers last + 1 per office and daybook), ``read`` of a transaction or a dimension, browse
  ``columns code="100"`` and ``list`` of offices.
- Credits per client id per sandbox minute (1 for ``list``/``read``/``columns``, 3 for anything else),
  over budget HTTP 429 with ``Retry-After`` in real seconds, nothing processed.

Choices where the reference says "unconfirmed" (each marked where it is made): the minute of the credit
budget opens with a client's first counted request (the reference does not say how Twinfield measures it);
a repeated ``invoicenumber`` is booked again (nothing confirms Twinfield refuses it, and the worst case
lets tests see any double booking); the exact wording of texts the reference does not quote; a signed
amount is refused; VAT lines for nil VAT; how a browse filter without ``ask`` is applied (see
:meth:`TwinfieldSandbox._browse`). One fault is Twinfield's own (``browse_ignores_filters`` in
:class:`TwinfieldConfig`): a browse answering lines its filters exclude.

:class:`TwinfieldSandbox` holds the state behind one re-entrant lock; :func:`create_app` exposes it over
HTTP with a control API under ``/_sandbox``.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree

from invoice_sync.connectors.twinfield import DESCRIPTOR
from invoice_sync_dev.sandbox import twinfield_fixtures
from invoice_sync_dev.sandbox.clock import SandboxClock
from invoice_sync_dev.sandbox.faults import CannedResponse, Scope, first_part, route_path
from invoice_sync_dev.sandbox.simulator import (
    CONTROL_PREFIX,
    Simulator,
    SimulatorConfig,
    add_books_routes,
    add_consent_route,
    create_simulator_app,
)
from invoice_sync_dev.sandbox.simulator import OAuthError as OAuthError  # raised by the token endpoint
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
    WindowsFromBudget,
)
from invoice_sync_dev.sandbox.twinfield_fixtures import OfficeFixture, TwinfieldFixtures, default_fixtures

MOUNT = "/twinfield"
"""Where the sandbox server serves this simulator (see :data:`SANDBOX`)."""

TWF_NS = "http://www.twinfield.com/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PROCESS_XML_ACTION = "http://www.twinfield.com/ProcessXmlString"
TOKEN_PATH = "/auth/authentication/connect/token"
VALIDATION_PATH = "/auth/authentication/connect/accesstokenvalidation"
CLUSTER_PREFIX = "/cluster"
PROCESS_XML_PATH = "/cluster/webservices/processxml.asmx"

ACCESS_TOKEN_LIFETIME_S = 3600
AUTH_CODE_LIFETIME_S = 300
CREDIT_WINDOW = timedelta(minutes=1)
READ_ROOTS = frozenset({"list", "read", "columns", "accountcode", "accountcodes"})
"""ProcessXml roots that cost one credit; every other request costs three (reference section 7)."""
READ_ACTION_PREFIXES = ("Get", "Query", "Search", "Load")
SCOPES = ("openid", "twf.user", "twf.organisation", "twf.organisationUser", "offline_access")

TOKEN_INVALID = "Access denied. Token invalid (code 354)"
COMPANY_MISSING = "Toegang geweigerd. Company ontbreekt in request header."
OPERATION_SCOPE_KEY = "twinfield.operation"
"""Where the ProcessXml handler leaves ``#ProcessXmlString/<root>`` for the call statistics."""

_CENT = Decimal("0.01")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)
_ADDRESS_FIELDS = (
    "name", "contact", "country", "city", "postcode", "telephone", "telefax", "email",
    "field1", "field2", "field3", "field4", "field5", "field6",
)  # fmt: skip
_BANK_FIELDS = ("ascription", "accountnumber", "bankname", "biccode", "iban")
_FINANCIAL_FIELDS = ("duedays", "payavailable", "paycode", "vatcode", "ebilling", "ebillmail")
ASCRIPTION_MAX = 40
AUTOBALANCE_MAX = Decimal("0.01")
"""The largest difference ``autobalancevat="true"`` settles (developers.twinfield.com, "VAT Calculation")."""


class SoapFaultError(Exception):
    """A call refused as a whole with a SOAP Fault (HTTP 500): nothing in it was processed."""

    def __init__(self, text: str, code: str = "soap:Server") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class CreditsExhausted(Exception):
    """The client's credits for this minute are spent: HTTP 429, nothing processed."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class TwinfieldConfig(SimulatorConfig):
    """The switches tests flip through ``POST /_sandbox/config``; defaults are Twinfield's real values."""

    credits_per_minute: int = 1000
    limits_enabled: bool = True
    browse_ignores_filters: bool = False
    """A fault no generic rule can express: browses answer every transaction line of the office, whatever
    their filters ask (a server that dropped the filter). Lookups must check each row themselves."""


@dataclass(slots=True)
class _Books:
    """The persistent state: what a restart with a state file must keep (plain, JSON-able data)."""

    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    dimensions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Office -> DEB code -> customer."""
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``office/daybook/number`` -> booking, in booking order."""
    last_numbers: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _CreditWindow:
    opened_at: datetime
    used: int = 0


@dataclass(frozen=True, slots=True)
class SoapAnswer:
    status: int
    body: bytes
    headers: dict[str, str]
    operation: str = ""


# ------------------------------------------------------------------------------------------- XML helpers


def _parse(data: bytes | str) -> etree._Element:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return etree.fromstring(data, parser=_PARSER)


def _local(node: etree._Element) -> str:
    return etree.QName(node).localname


def _child(node: etree._Element | None, name: str) -> etree._Element | None:
    if node is None:
        return None
    return next((c for c in node if isinstance(c.tag, str) and _local(c) == name), None)


def _children(node: etree._Element | None, name: str) -> list[etree._Element]:
    if node is None:
        return []
    return [c for c in node if isinstance(c.tag, str) and _local(c) == name]


def _body_children(envelope: etree._Element) -> list[etree._Element]:
    body = _child(envelope, "Body")
    return list(body) if body is not None else []


def _text(node: etree._Element | None, name: str | None = None) -> str:
    target = _child(node, name) if name is not None else node
    return (target.text or "").strip() if target is not None else ""


def _fail(node: etree._Element, message: str) -> None:
    """Mark ``node`` as the offending element, the way ProcessXml does."""
    node.set("result", "0")
    node.set("msgtype", "error")
    node.set("msg", message)


def _warn(node: etree._Element, message: str) -> None:
    node.set("msgtype", "warning")
    node.set("msg", message)


def _sub(parent: etree._Element, tag: str, value: Any = None, **attributes: str) -> etree._Element:
    node = etree.SubElement(parent, tag, attributes)
    if value is not None:
        node.text = str(value)
    return node


def _money(value: Decimal) -> str:
    return format(value.quantize(_CENT, rounding=ROUND_HALF_UP), "f")


def soap_envelope(content: etree._Element) -> bytes:
    """A SOAP 1.1 answer around ``content`` (the .NET ASMX shape, namespaces included)."""
    nsmap = {
        "soap": SOAP_ENV,
        "xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsd": "http://www.w3.org/2001/XMLSchema",
    }
    root = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=nsmap)
    etree.SubElement(root, f"{{{SOAP_ENV}}}Body").append(content)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def soap_fault(text: str, code: str = "soap:Server") -> bytes:
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault")
    _sub(fault, "faultcode", code)
    _sub(fault, "faultstring", text)
    _sub(fault, "detail")
    return soap_envelope(fault)


def _process_xml_result(result: etree._Element) -> bytes:
    response = etree.Element(f"{{{TWF_NS}}}ProcessXmlStringResponse", nsmap={None: TWF_NS})  # type: ignore[dict-item]  # lxml-stubs reject the None key lxml uses for the default namespace
    # The result travels as text inside the SOAP answer: lxml escapes it, as Twinfield's .NET stack does.
    node = etree.SubElement(response, f"{{{TWF_NS}}}ProcessXmlStringResult")
    node.text = etree.tostring(result, encoding="unicode")
    return soap_envelope(response)


def describe_request(scope: Scope, body: bytes) -> str:
    """``#ProcessXmlString/<root of the xmlRequest>`` for fault rules and statistics ("" elsewhere)."""
    if not route_path(scope).endswith("processxml.asmx"):
        return ""
    try:
        envelope = _parse(body)
        content = next(c for c in _body_children(envelope) if isinstance(c.tag, str))
        operation = _local(content)
        request = _parse(_text(content, "xmlRequest"))
    except (etree.XMLSyntaxError, StopIteration, TypeError, ValueError):
        return "#ProcessXmlString/?"
    return f"#{operation}/{_local(request)}"


def partial_transactions(body: bytes) -> bytes | None:
    """The ``ProcessXmlString`` request with only the first part of the ``<transaction>`` elements of its
    ``xmlRequest`` (None: not a batch of two or more)."""
    try:
        envelope = _parse(body)
        content = next(c for c in _body_children(envelope) if isinstance(c.tag, str))
        holder = _child(content, "xmlRequest")
        request = _parse(_text(holder))
    except (etree.XMLSyntaxError, StopIteration, TypeError, ValueError):
        return None
    items = [c for c in request if isinstance(c.tag, str)]
    kept = first_part(items) if holder is not None and _local(request) == "transactions" else None
    if holder is None or kept is None:
        return None
    for dropped in items[len(kept) :]:
        request.remove(dropped)
    holder.text = etree.tostring(request, encoding="unicode")
    return bytes(etree.tostring(envelope, encoding="utf-8", xml_declaration=True))


def _yyyymmdd(value: str) -> date | None:
    if not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


def _amount(value: str) -> Decimal | None:
    """A ProcessXml amount: a decimal with at most two places (never a float)."""
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.quantize(_CENT):
        return None
    return amount


def _now_epoch(clock: SandboxClock, moment: datetime) -> int:
    return clock.to_real_epoch_ms(moment) // 1000


# ------------------------------------------------------------------------------------------- simulator


class TwinfieldSandbox(Simulator[TwinfieldFixtures, TwinfieldConfig]):
    """The simulated Twinfield: one app client, organisations with offices, their books, tokens, credits."""

    config_class = TwinfieldConfig

    # ------------------------------------------------------------------------------------------ state

    def _default_fixtures(self) -> TwinfieldFixtures:
        return default_fixtures()

    def _fresh_books(self) -> _Books:
        books = _Books()
        for client in self.fixtures.clients:
            books.refresh_tokens[client.bootstrap_refresh_token] = {
                "client_id": client.client_id,
                "organisation": client.organisation,
                "revoked": False,
            }
        for office in self.fixtures.offices.values():
            books.dimensions[office.code] = {}
            books.last_numbers[office.code] = {
                code: office.first_transaction_number - 1 for code in office.daybooks
            }
        return books

    def _reset_counters(self) -> None:
        self._windows: dict[str, _CreditWindow] = {}
        self._credits_used: Counter[str] = Counter()
        self._rate_limited = 0
        self._token_refreshes = 0
        self._create_posts: Counter[str] = Counter()

    @staticmethod
    def _load(saved: Mapping[str, Any]) -> _Books:
        names = {f.name for f in fields(_Books)}
        return _Books(**{name: copy.deepcopy(dict(saved[name])) for name in names if name in saved})

    def _restore(self, saved: Mapping[str, Any] | None) -> None:
        self._books = self._load(saved) if saved else self._fresh_books()

    def _persistable(self) -> dict[str, Any]:
        """Books, tokens and number counters (copied)."""
        return copy.deepcopy(asdict(self._books))

    # ------------------------------------------------------------------------------------------- OAuth

    def token(self, authorization: str | None, form: Mapping[str, str]) -> dict[str, Any]:
        """``POST /auth/authentication/connect/token``: a refresh token or a code for an access token.

        The client authenticates with HTTP Basic (``client_id:client_secret``); the form fields are
        accepted as well. Refresh tokens are not rotated: the answer carries none, the old one stays valid.
        """
        client_id, client_secret = _basic_credentials(authorization)
        client_id = client_id or form.get("client_id", "")
        client_secret = client_secret or form.get("client_secret", "")
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None or client.client_secret != client_secret:
                raise OAuthError(401, "invalid_client")
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                record = self._books.refresh_tokens.get(form.get("refresh_token", ""))
                if record is None or record["client_id"] != client_id or record["revoked"]:
                    raise OAuthError(400, "invalid_grant")
                organisation = record["organisation"]
                refresh_token = None
            elif grant_type == "authorization_code":
                code = self._books.auth_codes.pop(form.get("code", ""), None)
                if code is None or code["client_id"] != client_id or code["expires_at"] <= self.clock.now():
                    raise OAuthError(400, "invalid_grant")
                organisation = code["organisation"]
                refresh_token = self._new_refresh_token(client_id, organisation)
            else:
                raise OAuthError(400, "unsupported_grant_type")
            return self._issue(client_id, organisation, refresh_token)

    def _new_refresh_token(self, client_id: str, organisation: str) -> str:
        token = secrets.token_urlsafe(32)
        self._books.refresh_tokens[token] = {
            "client_id": client_id,
            "organisation": organisation,
            "revoked": False,
        }
        return token

    def _issue(self, client_id: str, organisation: str, refresh_token: str | None) -> dict[str, Any]:
        now = self.clock.now()
        access = secrets.token_urlsafe(32)
        self._books.access_tokens[access] = {
            "client_id": client_id,
            "organisation": organisation,
            "issued_at": now,
            "expires_at": now + timedelta(seconds=ACCESS_TOKEN_LIFETIME_S),
        }
        self._token_refreshes += 1
        horizon = now - timedelta(days=1)
        for token in [t for t, a in self._books.access_tokens.items() if a["expires_at"] < horizon]:
            del self._books.access_tokens[token]
        self._changed()
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": max(1, round(self.clock.sandbox_seconds_to_real(ACCESS_TOKEN_LIFETIME_S))),
            "scope": " ".join(SCOPES),
        }
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        return answer

    def consent(self, client_id: str, organisation: str | None = None) -> dict[str, str]:
        """A user (re)consents: a fresh refresh token and a single-use authorization code."""
        with self.lock:
            client = self.fixtures.client(client_id)
            if client is None:
                raise ValueError(f"unknown client_id {client_id!r}")
            organisation = organisation or client.organisation
            refresh = self._new_refresh_token(client_id, organisation)
            code = secrets.token_urlsafe(24)
            expires_at = self.clock.now() + timedelta(seconds=AUTH_CODE_LIFETIME_S)
            self._books.auth_codes[code] = {
                "client_id": client_id,
                "organisation": organisation,
                "expires_at": expires_at,
            }
            self._changed()
            return {"refresh_token": refresh, "code": code}

    def revoke(self, refresh_token: str | None = None) -> int:
        """The user withdraws access: that refresh token (or every one) is refused from now on."""
        with self.lock:
            records = [
                record
                for token, record in self._books.refresh_tokens.items()
                if refresh_token is None or token == refresh_token
            ]
            for record in records:
                record["revoked"] = True
            self._changed()
            return len(records)

    def validate_token(self, token: str, base_url: str) -> dict[str, Any]:
        """``GET accesstokenvalidation``: who the token belongs to and, above all, its cluster URL.

        :raises OAuthError: unknown or expired token (HTTP 400).
        """
        with self.lock:
            access = self._live_access(token)
            if access is None:
                raise OAuthError(400, "invalid_token", "The access token is invalid or has expired")
            return {
                "iss": base_url.rstrip("/"),
                "aud": "twf.organisation",
                "client_id": access["client_id"],
                "sub": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{access['client_id']}.user.sandbox")),
                "exp": _now_epoch(self.clock, access["expires_at"]),
                "nbf": _now_epoch(self.clock, access["issued_at"]),
                "auth_time": _now_epoch(self.clock, access["issued_at"]),
                "scope": list(SCOPES),
                "twf.organisationCode": access["organisation"],
                "twf.organisationId": str(uuid.uuid5(uuid.NAMESPACE_DNS, access["organisation"])),
                "twf.organisationUserCode": "SANDBOX",
                "twf.clusterUrl": base_url.rstrip("/") + CLUSTER_PREFIX,
            }

    def _live_access(self, token: str) -> dict[str, Any] | None:
        access = self._books.access_tokens.get(token)
        if access is None or access["expires_at"] <= self.clock.now():
            return None
        return access

    def expire_tokens(self) -> int:
        """Every access token expires now; returns how many were live."""
        with self.lock:
            now = self.clock.now()
            live = [a for a in self._books.access_tokens.values() if a["expires_at"] > now]
            for access in live:
                access["expires_at"] = now
            self._changed()
            return len(live)

    # ------------------------------------------------------------------------------------------ credits

    def _charge(self, client_id: str, cost: int) -> None:
        """Take ``cost`` credits from the client's minute, or refuse the call with a 429.

        When Twinfield's minute starts is unconfirmed; here it opens with the client's first counted
        request after the previous one ended (the way a client counting for itself sees it).
        """
        now = self.clock.now()
        window = self._windows.get(client_id)
        if window is None or now >= window.opened_at + CREDIT_WINDOW:
            window = self._windows[client_id] = _CreditWindow(now)
        if self.config.limits_enabled and window.used + cost > self.config.credits_per_minute:
            self._rate_limited += 1
            raise CreditsExhausted(self._retry_after(window, now))
        window.used += cost
        self._credits_used[client_id] += cost

    def _retry_after(self, window: _CreditWindow | None, now: datetime) -> int:
        """Whole real seconds until the window reopens (HTTP's ``Retry-After`` has no fractions)."""
        left = (window.opened_at + CREDIT_WINDOW - now).total_seconds() if window else 60.0
        return max(1, math.ceil(self.clock.sandbox_seconds_to_real(max(left, 0.0))))

    def _fault_error_response(self, status: int, message: str) -> CannedResponse:
        return _error_response(status, message)

    def _fault_describe(self) -> Callable[[Scope, bytes], str]:
        """Fault rules match ``processxml.asmx#ProcessXmlString/<root>``: one path serves every request."""
        return describe_request

    def _fault_partial(self) -> Callable[[bytes], bytes | None]:
        """A ``<transactions>`` request carries up to 25 invoices: the first part of them is processed."""
        return partial_transactions

    def _rate_limit_fault_response(self, scope: Scope) -> CannedResponse:
        """An injected 429 that looks like the real one, with the caller's own window in Retry-After."""
        with self.lock:
            self._rate_limited += 1
            window = next(iter(self._windows.values()), None) if len(self._windows) == 1 else None
            retry_after = self._retry_after(window, self.clock.now())
        return _too_many_requests(retry_after)

    # ------------------------------------------------------------------------------------- SOAP service

    def process_soap(self, body: bytes, soap_action: str | None) -> SoapAnswer:
        """One POST to ``processxml.asmx``: authenticate, charge credits, check the office, process."""
        try:
            envelope = _parse(body)
            content = next(c for c in _body_children(envelope) if isinstance(c.tag, str))
        except (etree.XMLSyntaxError, StopIteration):
            return _fault_answer("Server was unable to read request. ---> There is an error in XML document.")
        action = (soap_action or "").strip().strip('"')
        operation = _local(content)
        if action != PROCESS_XML_ACTION or operation != "ProcessXmlString":
            return _fault_answer(f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")
        header = _child(_child(envelope, "Header"), "Header")
        token, company = _text(header, "AccessToken"), _text(header, "CompanyCode")
        try:
            request: etree._Element | None = _parse(_text(content, "xmlRequest"))
        except etree.XMLSyntaxError:
            request = None
        root = _local(request) if request is not None else "?"
        label = f"#ProcessXmlString/{root}"
        with self.lock:
            access = self._live_access(token)
            if access is None:
                return _fault_answer(TOKEN_INVALID, label)
            try:
                self._charge(access["client_id"], 1 if root in READ_ROOTS else 3)
            except CreditsExhausted as exhausted:
                canned = _too_many_requests(exhausted.retry_after_s)
                return SoapAnswer(429, canned.body, dict(canned.headers), label)
            if request is None:
                return _fault_answer("Data at the root level is invalid. Line 1, position 1.", label)
            offices = {office.code for office in self.fixtures.offices_of(access["organisation"])}
            offices_list = root == "list" and _text(request, "type") == "offices"
            if not offices_list and not company:
                return _fault_answer(COMPANY_MISSING, label)
            if not offices_list and company not in offices:
                return _fault_answer(f"Toegang geweigerd. Geen toegang tot administratie {company}.", label)
            result = self._process(request, access["organisation"], company)
        return SoapAnswer(
            200, _process_xml_result(result), {"Content-Type": "text/xml; charset=utf-8"}, label
        )

    def _process(self, request: etree._Element, organisation: str, company: str) -> etree._Element:
        """The ProcessXml answer to one request document (called under the lock)."""
        root = _local(request)
        if root in ("dimensions", "transactions"):
            item = root[:-1]
            answer = copy.deepcopy(request)
            for index, element in enumerate(list(answer)):
                if isinstance(element.tag, str) and _local(element) == item:
                    answer[index] = self._item(element, organisation)
                elif isinstance(element.tag, str):
                    _fail(element, f"Element {_local(element)} is not allowed in {root}.")
            ok = all(c.get("result") == "1" for c in answer if isinstance(c.tag, str))
            answer.set("result", "1" if ok else "0")
            return answer
        if root in ("dimension", "transaction"):
            return self._item(request, organisation)
        if root == "read":
            return self._read(request, organisation)
        if root == "columns":
            return self._browse(request, organisation, company)
        if root == "list":
            return self._list(request, organisation)
        answer = copy.deepcopy(request)
        _fail(answer, f"Element {root} is not supported.")
        return answer

    def _item(self, element: etree._Element, organisation: str) -> etree._Element:
        if _local(element) == "dimension":
            answer = self._dimension(element, organisation)
        else:
            answer = self._transaction(element, organisation)
        if answer.get("result") == "1":
            self._changed()
        return answer

    def _office(self, node: etree._Element, organisation: str) -> OfficeFixture | None:
        """The office an element names; marks its ``office`` element when it is not accessible."""
        office_node = _child(node, "office")
        code = _text(office_node)
        office = self.fixtures.offices.get(code)
        if office is None or office.organisation != organisation:
            # Wording unconfirmed; the reference only says "office not in the organisation -> error".
            _fail(
                office_node if office_node is not None else node,
                f"Administratie {code} bestaat niet of u heeft geen toegang.",
            )
            return None
        return office

    # ---------------------------------------------------------------------------------------- dimensions

    def _dimension(self, element: etree._Element, organisation: str) -> etree._Element:
        """Upsert one dimension (only ``DEB`` here): created when its code is new, else updated."""
        answer = copy.deepcopy(element)
        office = self._office(answer, organisation)
        if office is None:
            answer.set("result", "0")
            return answer
        kind_node = _child(answer, "type")
        if _text(kind_node) != "DEB":
            _fail(
                kind_node if kind_node is not None else answer,
                f"Dimension type {_text(kind_node)} is not supported by the sandbox.",
            )
            answer.set("result", "0")
            return answer
        customers = self._books.dimensions[office.code]
        code_node = _child(answer, "code")
        code = _text(code_node)
        if answer.get("status") == "deleted":
            if customers.pop(code, None) is None:
                _fail(code_node if code_node is not None else answer, f"Dimension {code} does not exist.")
                answer.set("result", "0")
            else:
                answer.set("result", "1")
            return answer
        errors = 0
        if not code:
            code = self._first_free_code(office)
            code_node = code_node if code_node is not None else _sub(answer, "code")
            code_node.text = code
        elif not re.fullmatch(office.customer_code_format, code):
            _fail(
                code_node if code_node is not None else answer,
                f"The code does not conform to the format {office.customer_code_format}",
            )
            errors += 1
        existing = customers.get(code)
        name_node = _child(answer, "name")
        name = name_node.text if name_node is not None and name_node.text else None
        if not (name or "").strip() and existing is None:
            _fail(name_node if name_node is not None else answer, "Naam is verplicht.")
            errors += 1
        addresses, errors = self._addresses(answer, errors)
        banks, errors = self._banks(answer, errors)
        if errors:
            answer.set("result", "0")
            return answer
        now = self.clock.now()
        record = existing or {"office": office.code, "type": "DEB", "code": code, "created": now}
        record["name"] = name if name and name.strip() else record["name"]
        record["shortname"] = _text(answer, "shortname") or record.get("shortname", "")
        if addresses is not None:
            record["addresses"] = addresses
        if banks is not None:
            record["banks"] = banks
        financials = _child(answer, "financials")
        record["financials"] = {
            **record.get("financials", {}),
            **{f: _text(financials, f) for f in _FINANCIAL_FIELDS if _child(financials, f) is not None},
        }
        record.setdefault("addresses", [])
        record.setdefault("banks", [])
        record["modified"] = now
        customers[code] = record
        answer.set("result", "1")
        answer.set("status", "active")
        return answer

    def _first_free_code(self, office: OfficeFixture) -> str:
        """Twinfield gives a dimension without a code the first free one of the office's format."""
        taken = self._books.dimensions[office.code]
        for number in range(1, 10**7):
            code = str(number)
            if code not in taken and re.fullmatch(office.customer_code_format, code):
                return code
        raise RuntimeError(f"office {office.code} has no free customer code")

    @staticmethod
    def _addresses(answer: etree._Element, errors: int) -> tuple[list[dict[str, Any]] | None, int]:
        container = _child(answer, "addresses")
        if container is None:
            return None, errors
        addresses = []
        for node in _children(container, "address"):
            address: dict[str, Any] = {
                "type": node.get("type", "invoice"),
                "default": node.get("default", "false") == "true",
            }
            address |= {
                name: (child.text or "")
                for name in _ADDRESS_FIELDS
                if (child := _child(node, name)) is not None
            }
            country = _child(node, "country")
            if country is not None and not re.fullmatch(r"[A-Z]{2}", _text(country)):
                _fail(country, f"Land {_text(country)} bestaat niet.")  # wording unconfirmed
                errors += 1
            addresses.append(address)
        return addresses, errors

    @staticmethod
    def _banks(answer: etree._Element, errors: int) -> tuple[list[dict[str, Any]] | None, int]:
        container = _child(answer, "banks")
        if container is None:
            return None, errors
        banks = []
        for node in _children(container, "bank"):
            bank: dict[str, Any] = {"default": node.get("default", "false") == "true"}
            bank |= {
                name: (child.text or "") for name in _BANK_FIELDS if (child := _child(node, name)) is not None
            }
            ascription = _child(node, "ascription")
            if ascription is not None and len(ascription.text or "") > ASCRIPTION_MAX:
                _fail(
                    ascription, f"De tenaamstelling mag maximaal {ASCRIPTION_MAX} tekens bevatten."
                )  # unconfirmed
                errors += 1
            banks.append(bank)
        return banks, errors

    # -------------------------------------------------------------------------------------- transactions

    def _transaction(self, element: etree._Element, organisation: str) -> etree._Element:
        """Judge and book one sales transaction; the answer marks what was wrong, or carries the number."""
        answer = copy.deepcopy(element)
        answer.set("result", "0")
        header = _child(answer, "header")
        if header is None:
            _fail(answer, "De header ontbreekt.")
            return answer
        invoice_number = _text(header, "invoicenumber")
        self._create_posts[invoice_number] += 1
        office = self._office(header, organisation)
        if office is None:
            return answer
        check = _TransactionCheck(self, office, answer, header)
        check.run()
        if check.errors:
            answer.set("result", "0")
            return answer
        balance = check.balance()
        if balance:
            missing = "credit" if balance > 0 else "debet"
            _fail(answer, f"De boeking is niet in balans. Er ontbreekt {_money(abs(balance))} {missing}.")
            return answer
        self._book(office, answer, header, check)
        return answer

    def _book(
        self, office: OfficeFixture, answer: etree._Element, header: etree._Element, check: _TransactionCheck
    ) -> None:
        daybook = _text(header, "code")
        numbers = self._books.last_numbers[office.code]
        number = numbers[daybook] + 1
        numbers[daybook] = number
        number_node = _child(header, "number")
        if number_node is None:
            number_node = etree.Element("number")
            code_node = _child(header, "code")
            assert code_node is not None
            code_node.addnext(number_node)
        number_node.text = str(number)
        if _child(header, "period") is None:
            _sub(header, "period", check.period)
        destiny = answer.get("destiny", "temporary")
        answer.set("result", "1")
        answer.set("location", destiny)
        check.enrich_answer()
        customer_code = check.total.dim2
        customer = self._books.dimensions[office.code].get(customer_code, {})
        vat_signed = sum((line.signed for line in check.vat_lines()), Decimal("0"))
        self._books.transactions[f"{office.code}/{daybook}/{number}"] = {
            "office": office.code,
            "code": daybook,
            "number": number,
            "registration_number": str(number),
            "reference": _text(header, "invoicenumber"),
            "destiny": destiny,
            "date": check.entry_date.isoformat() if check.entry_date else None,
            "period": check.period,
            "currency": check.currency,
            "due_date": _text(header, "duedate") or None,
            "customer_code": customer_code,
            "customer_name": customer.get("name", ""),
            "total_incl_vat": check.total.signed,
            "total_vat": -vat_signed,
            "vat_by_code": {code: -amount for code, amount in check.vat_by_code().items()},
            "lines": [line.record() for line in check.all_lines()],
            "created": self.clock.now(),
        }

    # ------------------------------------------------------------------------------------------- reads

    def _read(self, request: etree._Element, organisation: str) -> etree._Element:
        kind = _text(request, "type")
        answer = copy.deepcopy(request)
        office = self._office(answer, organisation)
        if office is None:
            answer.set("result", "0")
            return answer
        if kind == "transaction":
            key = f"{office.code}/{_text(request, 'code')}/{_text(request, 'number')}"
            booking = self._books.transactions.get(key)
            if booking is None:
                _fail(answer, f"Boeking {_text(request, 'code')} {_text(request, 'number')} bestaat niet.")
                return answer
            return _transaction_xml(booking)
        if kind in ("dimensions", "dimension"):
            customer = self._books.dimensions[office.code].get(_text(request, "code"))
            if _text(request, "dimtype") != "DEB" or customer is None:
                _fail(answer, f"Dimension {_text(request, 'code')} does not exist.")
                return answer
            return _dimension_xml(customer)
        _fail(answer, f"Read type {kind} is not supported by the sandbox.")
        return answer

    def _browse(self, request: etree._Element, organisation: str, company: str) -> etree._Element:
        """Browse ``columns code="100"`` (transaction lines): filters ``equal``/``between``, visible columns.

        Columns are read as php-twinfield ``src/Request/BrowseData.php`` writes them (``field``, ``label``,
        ``visible``, ``ask``, ``operator``, ``from``, ``to``); a column with an operator filters, whatever its
        ``ask`` (what Twinfield does with a filter whose ``ask`` is false is unconfirmed). The answer has
        the shape of php-twinfield ``tests/IntegrationTests/resources/browseDataGetResponse.xml``:
        ``<browse result="1" first last total><th><td label type>field</td>…</th><tr><td field type>value
        </td>…<key><office/><code/><number/><line/></key></tr>…</browse>``, one ``tr`` per total line (the
        line that carries ``invnumber``). With :attr:`TwinfieldConfig.browse_ignores_filters` on, every
        filter is dropped and the office's every line comes back.
        """
        answer = copy.deepcopy(request)
        if request.get("code") != "100":
            _fail(answer, f"Browse code {request.get('code')} is not supported by the sandbox.")
            return answer
        filters: list[tuple[str, str, str, str]] = []
        visible: list[tuple[str, str]] = []
        for column in _children(answer, "column"):
            name = _text(column, "field")
            operator = _text(column, "operator") or "none"
            if name not in BROWSE_FIELDS:
                _fail(column, f"Kolom {name} bestaat niet.")
                answer.set("result", "0")
                return answer
            if operator not in ("none", "equal", "between"):
                _fail(column, f"Operator {operator} is not supported by the sandbox.")
                answer.set("result", "0")
                return answer
            if operator != "none":
                filters.append((name, operator, _text(column, "from"), _text(column, "to")))
            if (_text(column, "visible") or "true").lower() == "true":
                visible.append((name, _text(column, "label") or name))
        offices = [value for name, op, value, _ in filters if name == "fin.trs.head.office" and op == "equal"]
        allowed = {office.code for office in self.fixtures.offices_of(organisation)}
        if any(office not in allowed for office in offices):
            _fail(answer, f"Administratie {offices[0]} bestaat niet of u heeft geen toegang.")
            return answer
        if self.config.browse_ignores_filters:
            filters = [("fin.trs.head.office", "equal", company, "")]
        elif not offices:
            filters.append(("fin.trs.head.office", "equal", company, ""))
        rows = [row for row in self._browse_rows() if all(_matches(row, f) for f in filters)]
        browse = etree.Element("browse", result="1", first="1", last=str(len(rows)), total=str(len(rows)))
        head = _sub(browse, "th")
        for name, label in visible:
            _sub(head, "td", name, label=label, hideforuser="false", type=BROWSE_FIELDS[name])
        for row in rows:
            tr = _sub(browse, "tr")
            for name, _ in visible:
                _sub(tr, "td", row[name], field=name, hideforuser="false", type=BROWSE_FIELDS[name])
            key = _sub(tr, "key")
            for part in ("office", "code", "number", "line"):
                _sub(key, part, row[f"key.{part}"])
        return browse

    def _browse_rows(self) -> list[dict[str, str]]:
        rows = []
        for booking in self._books.transactions.values():
            for index, line in enumerate(booking["lines"], start=1):
                if line["type"] != "total":
                    continue
                signed = line["signed"]
                rows.append(
                    {
                        "key.office": booking["office"],
                        "key.code": booking["code"],
                        "key.number": str(booking["number"]),
                        "key.line": str(index),
                        "fin.trs.head.office": booking["office"],
                        "fin.trs.head.code": booking["code"],
                        "fin.trs.head.number": str(booking["number"]),
                        "fin.trs.head.yearperiod": booking["period"],
                        "fin.trs.head.status": booking["destiny"],
                        "fin.trs.head.date": (booking["date"] or "").replace("-", ""),
                        "fin.trs.line.invnumber": booking["reference"],
                        "fin.trs.line.dim1": line["dim1"],
                        "fin.trs.line.dim2": line["dim2"],
                        "fin.trs.line.matchstatus": "available",
                        "fin.trs.line.valuesigned": _money(signed),
                        "fin.trs.line.openbasevaluesigned": _money(signed),
                    }
                )
        return rows

    def _list(self, request: etree._Element, organisation: str) -> etree._Element:
        if _text(request, "type") != "offices":
            answer = copy.deepcopy(request)
            _fail(answer, f"List type {_text(request, 'type')} is not supported by the sandbox.")
            return answer
        offices = etree.Element("offices", result="1")
        for office in self.fixtures.offices_of(organisation):
            _sub(offices, "office", office.code, name=office.name, shortname=office.name[:20])
        return offices

    # ------------------------------------------------------------------------------------ Python API

    def booked(self, office: str | None = None) -> list[dict[str, Any]]:
        """Every booked transaction in booking order.

        Keys: ``reference`` (the invoicenumber), ``registration_number`` (the transaction number as text),
        ``office``, ``code`` (daybook), ``number``, ``destiny``, ``customer_code``, ``customer_name``,
        ``total_incl_vat`` and ``total_vat`` (Decimal, signed from the debtor's side: an invoice is
        positive, a credit note negative), ``vat_by_code`` and ``lines``.
        """
        with self.lock:
            return [
                copy.deepcopy(booking)
                for booking in self._books.transactions.values()
                if office is None or booking["office"] == office
            ]

    def create_posts(self) -> dict[str, int]:
        """How many times ProcessXml judged a transaction with each invoicenumber (booked or refused).

        Requests an injected fault answered without processing are not counted: tests use it to prove an
        unknown outcome was settled by a lookup, never by sending the invoice again.
        """
        with self.lock:
            return dict(self._create_posts)

    def customers(self, office: str | None = None) -> list[dict[str, Any]]:
        """Every DEB dimension (keys ``office``, ``code``, ``name``, ``addresses``, ``banks``, ...)."""
        with self.lock:
            return [
                copy.deepcopy(customer)
                for code, section in self._books.dimensions.items()
                if office is None or code == office
                for customer in section.values()
            ]

    def stats_snapshot(self) -> dict[str, Any]:
        """Calls per route and ProcessXml root, 429s, access tokens issued, credits used and faults hit."""
        with self.lock:
            return self.stats.snapshot() | {
                "rate_limited": self._rate_limited,
                "token_refreshes": self._token_refreshes,
                "credits_used": dict(self._credits_used),
                "faults": self.faults.hits(),
            }


# -------------------------------------------------------------------------------- transaction checking


@dataclass(slots=True)
class _Line:
    kind: str
    side: str
    value: Decimal
    node: etree._Element
    dim1: str = ""
    dim2: str = ""
    vatcode: str = ""
    vatvalue: Decimal | None = None
    """On a detail line: its VAT on its own side (as sent, or as Twinfield computed it)."""
    description: str = ""
    generated: bool = False
    vatturnover: Decimal | None = None
    """On a VAT line Twinfield made: the amount its VAT was computed on."""

    @property
    def signed(self) -> Decimal:
        """Debit positive, credit negative."""
        return self.value if self.side == "debit" else -self.value

    @property
    def signed_vat(self) -> Decimal:
        """A detail line's VAT, signed like :attr:`signed` (debit positive)."""
        vat = self.vatvalue or Decimal("0")
        return vat if self.side == "debit" else -vat

    def record(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "dim1": self.dim1,
            "dim2": self.dim2,
            "debitcredit": self.side,
            "value": self.value,
            "signed": self.signed,
            "vatcode": self.vatcode,
            "vatvalue": self.vatvalue,
            "vatturnover": self.vatturnover,
            "description": self.description,
        }


class _TransactionCheck:
    """Everything ProcessXml checks in one sales transaction, marking each offending element."""

    def __init__(
        self, sandbox: TwinfieldSandbox, office: OfficeFixture, answer: etree._Element, header: etree._Element
    ) -> None:
        self.sandbox = sandbox
        self.office = office
        self.answer = answer
        self.header = header
        self.errors = 0
        self.lines: list[_Line] = []
        self.generated: list[_Line] = []
        self.entry_date: date | None = None
        self.period = ""
        self.currency = office.currency
        self.autobalance_vat = answer.get("autobalancevat") == "true"

    def fail(self, node: etree._Element | None, message: str) -> None:
        _fail(node if node is not None else self.answer, message)
        self.errors += 1

    @property
    def total(self) -> _Line:
        return next(line for line in self.lines if line.kind == "total")

    def run(self) -> None:
        self._check_header()
        self._check_lines()

    def _check_header(self) -> None:
        header, office = self.header, self.office
        destiny = self.answer.get("destiny", "temporary")
        if destiny not in ("temporary", "final"):
            self.fail(self.answer, f"Destiny {destiny} is not valid.")
        code_node = _child(header, "code")
        daybook = _text(code_node)
        kind = office.daybooks.get(daybook)
        if kind is None:
            self.fail(code_node if code_node is not None else header, f"Dagboek {daybook} bestaat niet.")
        elif kind != "sales":
            self.fail(code_node, f"Dagboek {daybook} is geen verkoopdagboek.")
        currency_node = _child(header, "currency")
        if currency_node is not None:
            self.currency = _text(currency_node)
            if not re.fullmatch(r"[A-Z]{3}", self.currency):
                self.fail(currency_node, f"Valuta {self.currency} bestaat niet.")
        date_node = _child(header, "date")
        self.entry_date = _yyyymmdd(_text(date_node))
        if self.entry_date is None:
            self.fail(
                date_node if date_node is not None else header, f"Datum {_text(date_node)} is ongeldig."
            )
        period_node = _child(header, "period")
        if period_node is not None:
            match = re.fullmatch(r"(\d{4})/(\d{2})", _text(period_node))
            if match is None or not 1 <= int(match.group(2)) <= 12:
                self.fail(period_node, f"Periode {_text(period_node)} is ongeldig.")
            else:
                self.period = _text(period_node)
        if self.entry_date is not None:
            date_period = f"{self.entry_date.year}/{self.entry_date.month:02d}"
            if not self.period:
                self.period = date_period
            elif self.period != date_period and date_node is not None:
                _warn(date_node, "De datum valt buiten de periode.")  # a warning: booked anyway
        invoice_node = _child(header, "invoicenumber")
        if not _text(invoice_node):
            self.fail(invoice_node if invoice_node is not None else header, "Factuurnummer is verplicht.")
        due_node = _child(header, "duedate")
        if due_node is not None and _text(due_node) and _yyyymmdd(_text(due_node)) is None:
            self.fail(due_node, f"Vervaldatum {_text(due_node)} is ongeldig.")
        number_node = _child(header, "number")
        if number_node is not None and _text(number_node):
            self.fail(number_node, "Changing an existing transaction is not supported by the sandbox.")

    def _check_lines(self) -> None:
        container = _child(self.answer, "lines")
        nodes = _children(container, "line")
        if len(nodes) < 2:
            self.fail(container, "Een boeking moet minimaal twee regels hebben.")
            return
        for node in nodes:
            line = self._line(node)
            if line is not None:
                self.lines.append(line)
        if self.errors:
            return
        if sum(1 for line in self.lines if line.kind == "total") != 1:
            self.fail(container, "Een verkoopboeking heeft precies één totaalregel.")
        if not any(line.kind == "detail" for line in self.lines):
            self.fail(container, "Een verkoopboeking heeft minimaal één detailregel.")

    def _line(self, node: etree._Element) -> _Line | None:
        kind = node.get("type", "")
        if kind not in ("total", "detail", "vat"):
            self.fail(node, f"Regeltype {kind} is ongeldig.")
            return None
        errors = self.errors
        side_node = _child(node, "debitcredit")
        side = _text(side_node)
        if side not in ("debit", "credit"):
            self.fail(side_node if side_node is not None else node, f"Debet/credit {side} is ongeldig.")
        value_node = _child(node, "value")
        # Amounts carry no sign: the side is debitcredit's (php-twinfield ValueFields.php: "Twinfield uses
        # debitcredit fields instead of signs"; issue #57: VAT values "always positive"). How Twinfield
        # answers a signed amount is unconfirmed; refusing it keeps a connector from relying on it.
        value = _amount(_text(value_node))
        if value is None or value < 0:
            value = None
            self.fail(
                value_node if value_node is not None else node, f"Bedrag {_text(value_node)} is ongeldig."
            )
        dim1_node = _child(node, "dim1")
        dim1 = _text(dim1_node)
        vatcode = _text(node, "vatcode")
        vatvalue_node = _child(node, "vatvalue")
        vatvalue = _amount(_text(vatvalue_node)) if vatvalue_node is not None else None
        if vatvalue_node is not None and (vatvalue is None or vatvalue < 0):
            self.fail(vatvalue_node, f"Btw-bedrag {_text(vatvalue_node)} is ongeldig.")
        if kind == "vat":
            if not vatcode:
                self.fail(node, "Een btw-regel heeft een btw-code nodig.")
            elif not dim1 and self.office.vat_code(vatcode) is not None:
                dim1 = self.office.vat_code(vatcode).account  # type: ignore[union-attr]  # checked not None just above
        if kind != "vat" or dim1_node is not None:
            self._check_level1(dim1_node, dim1, node)
        if kind == "total":
            self._check_total(node, dim1)
        if vatcode:
            self._check_vat_code(_child(node, "vatcode"), vatcode)
        if self.errors > errors or value is None:
            return None
        description = _child(node, "description")
        return _Line(
            kind, side, value, node, dim1=dim1, dim2=_text(node, "dim2"), vatcode=vatcode, vatvalue=vatvalue,
            description=(description.text or "") if description is not None else "",
        )  # fmt: skip

    def _check_level1(self, dim1_node: etree._Element | None, dim1: str, node: etree._Element) -> None:
        if dim1 not in self.office.gl_accounts:
            self.fail(
                dim1_node if dim1_node is not None else node,
                f"Dimension {dim1} with financial level 1 not found",
            )

    def _check_total(self, node: etree._Element, dim1: str) -> None:
        dim1_node = _child(node, "dim1")
        if dim1 in self.office.gl_accounts and dim1 != self.office.debtors_account:
            self.fail(dim1_node, f"Dimensie {dim1} is geen debiteurenrekening.")
        dim2_node = _child(node, "dim2")
        dim2 = _text(dim2_node)
        if dim2 not in self.sandbox._books.dimensions[self.office.code]:
            self.fail(
                dim2_node if dim2_node is not None else node,
                f"Dimension {dim2} with financial level 2 not found",
            )

    def _check_vat_code(self, node: etree._Element | None, code: str) -> None:
        vat = self.office.vat_code(code)
        if vat is None or not vat.active:
            self.fail(node, f"btw-code({code}): VAT {code} does not exist or is not (yet) active")

    # -- VAT and balance

    def _computed_vat(self) -> None:
        """The VAT lines Twinfield makes itself, one per VAT code of the detail lines, as its answers show.

        A detail line's VAT is its ``vatvalue`` when the request gave one ("uses the VAT value as passed"),
        else Twinfield's own per-line computation: the rate of the line's value, rounded half up, with each
        rounding difference carried into the next line (developers.twinfield.com, Getting started, "VAT
        Calculation"; the carry runs per VAT code here, which the page's one-rate example cannot show). The
        VAT lines carry ``dim1`` = the VAT code's account, ``vatturnover`` and ``baseline`` (php-twinfield
        ``tests/IntegrationTests/resources/salesTransactionGetResponse.xml``). A code whose VAT is nil still
        gets its line, so its turnover lands on its own code (two 0 % regimes stay apart); that Twinfield
        writes such a line is unconfirmed. ``type="vat"`` lines in the request are booked as sent, on top:
        VAT twice, which the balance check then refuses, as Twinfield does.
        """
        if self.generated:
            return
        details = [line for line in self.lines if line.kind == "detail" and line.vatcode]
        carry: dict[str, Decimal] = {}
        for line in details:
            if line.vatvalue is not None:
                continue
            rate = self.office.vat_code(line.vatcode).rate  # type: ignore[union-attr]  # codes validated before VAT
            exact = line.signed * rate / 100 + carry.get(line.vatcode, Decimal("0"))
            signed_vat = exact.quantize(_CENT, rounding=ROUND_HALF_UP)
            carry[line.vatcode] = exact - signed_vat
            line.vatvalue = signed_vat if line.side == "debit" else -signed_vat
        if self.autobalance_vat:
            self._autobalance(details)
        vat: dict[str, Decimal] = {}
        turnover: dict[str, Decimal] = {}
        for line in details:
            vat[line.vatcode] = vat.get(line.vatcode, Decimal("0")) + line.signed_vat
            turnover[line.vatcode] = turnover.get(line.vatcode, Decimal("0")) + line.signed
        for code, amount in vat.items():
            side = "debit" if (amount or turnover[code]) > 0 else "credit"
            account = self.office.vat_code(code).account  # type: ignore[union-attr]  # codes validated before VAT
            self.generated.append(
                _Line(
                    "vat", side, abs(amount), etree.Element("line"), dim1=account, vatcode=code,
                    generated=True, vatturnover=abs(turnover[code]),
                )
            )  # fmt: skip

    def _autobalance(self, details: list[_Line]) -> None:
        """``autobalancevat="true"``: a difference of up to a cent goes to the VAT of the detail line with
        the highest value (developers.twinfield.com, "VAT Calculation", solution 1; php-twinfield's
        ``AutoBalanceVatField`` says up to two cents: the vendor's own page is followed)."""
        sent = sum((line.signed for line in self.lines), Decimal("0"))
        difference = sent + sum((line.signed_vat for line in details), Decimal("0"))
        taxed = [line for line in details if line.vatvalue]
        if not difference or abs(difference) > AUTOBALANCE_MAX or not taxed:
            return
        highest = max(taxed, key=lambda line: line.value)
        adjusted = highest.signed_vat - difference
        highest.vatvalue = adjusted if highest.side == "debit" else -adjusted

    def vat_lines(self) -> list[_Line]:
        self._computed_vat()
        return [line for line in self.lines if line.kind == "vat"] + self.generated

    def all_lines(self) -> list[_Line]:
        self._computed_vat()
        return [*self.lines, *self.generated]

    def vat_by_code(self) -> dict[str, Decimal]:
        found: dict[str, Decimal] = {}
        for line in self.vat_lines():
            found[line.vatcode] = found.get(line.vatcode, Decimal("0")) + line.signed
        return found

    def balance(self) -> Decimal:
        """Debit minus credit over every line, VAT included; a booking must come to zero."""
        return sum((line.signed for line in self.all_lines()), Decimal("0"))

    def enrich_answer(self) -> None:
        """Add what Twinfield's answer adds: VAT per detail line and the VAT lines it made itself."""
        container = _child(self.answer, "lines")
        assert container is not None
        for line in self.lines:
            if line.kind == "detail" and line.vatvalue is not None:
                node = _child(line.node, "vatvalue")
                node = node if node is not None else _sub(line.node, "vatvalue")
                node.text = _money(line.vatvalue)  # autobalancevat may have moved a cent
            if line.kind == "total":
                vat = sum((vat_line.signed for vat_line in self.vat_lines()), Decimal("0"))
                _sub(line.node, "vattotal", _money(abs(vat)))
                _sub(line.node, "matchstatus", "available")
        next_id = len(self.lines) + 1
        for line in self.generated:
            node = _sub(container, "line", id=str(next_id), type="vat")
            next_id += 1
            _sub(node, "dim1", line.dim1)
            _sub(node, "value", _money(line.value))
            _sub(node, "vatcode", line.vatcode)
            _sub(node, "debitcredit", line.side)
            _sub(node, "vatturnover", _money(line.vatturnover or Decimal("0")))
            _sub(node, "vatbaseturnover", _money(line.vatturnover or Decimal("0")))
            _sub(node, "baseline", "1")  # the VAT code's rate line; every fixture code has one rate


BROWSE_FIELDS = {
    "fin.trs.head.office": "String", "fin.trs.head.code": "String", "fin.trs.head.number": "Decimal",
    "fin.trs.head.yearperiod": "String", "fin.trs.head.status": "String", "fin.trs.head.date": "Date",
    "fin.trs.line.invnumber": "String", "fin.trs.line.dim1": "String", "fin.trs.line.dim2": "String",
    "fin.trs.line.matchstatus": "String", "fin.trs.line.valuesigned": "Value",
    "fin.trs.line.openbasevaluesigned": "Value",
}  # fmt: skip
"""The browse fields of code 100 the sandbox knows, with the ``type`` its answer gives each (the types of
the fields php-twinfield's ``browseDataGetResponse.xml`` shows; the others are unconfirmed)."""


def _matches(row: Mapping[str, str], condition: tuple[str, str, str, str]) -> bool:
    name, operator, low, high = condition
    value = row[name]
    if operator == "equal":
        return value == low
    if value.isdigit() and low.isdigit() and high.isdigit():
        return int(low) <= int(value) <= int(high)
    return low <= value <= high


def _transaction_xml(booking: Mapping[str, Any]) -> etree._Element:
    """A stored booking as ``read`` answers it."""
    transaction = etree.Element(
        "transaction", result="1", location=booking["destiny"], destiny=booking["destiny"]
    )
    header = _sub(transaction, "header")
    _sub(header, "office", booking["office"])
    _sub(header, "code", booking["code"])
    _sub(header, "number", booking["number"])
    _sub(header, "period", booking["period"])
    _sub(header, "currency", booking["currency"])
    _sub(header, "date", (booking["date"] or "").replace("-", ""))
    _sub(header, "invoicenumber", booking["reference"])
    if booking.get("due_date"):
        _sub(header, "duedate", booking["due_date"])
    lines = _sub(transaction, "lines")
    for index, line in enumerate(booking["lines"], start=1):
        node = _sub(lines, "line", type=line["type"], id=str(index))
        _sub(node, "dim1", line["dim1"])
        if line["dim2"]:
            _sub(node, "dim2", line["dim2"])
        _sub(node, "debitcredit", line["debitcredit"])
        _sub(node, "value", _money(line["value"]))
        if line["vatcode"]:
            _sub(node, "vatcode", line["vatcode"])
        if line["vatvalue"] is not None:
            _sub(node, "vatvalue", _money(line["vatvalue"]))
        if line.get("vatturnover") is not None:
            _sub(node, "vatturnover", _money(line["vatturnover"]))
        if line["description"]:
            _sub(node, "description", line["description"])
    return transaction


def _dimension_xml(customer: Mapping[str, Any]) -> etree._Element:
    """A stored customer as ``read`` answers it."""
    dimension = etree.Element("dimension", result="1", status="active")
    for name in ("office", "type", "code", "name", "shortname"):
        _sub(dimension, name, customer.get(name, ""))
    financials = _sub(dimension, "financials")
    for name, value in customer.get("financials", {}).items():
        _sub(financials, name, value)
    addresses = _sub(dimension, "addresses")
    for address in customer.get("addresses", []):
        node = _sub(addresses, "address", type=address["type"], default=str(address["default"]).lower())
        for name in _ADDRESS_FIELDS:
            if name in address:
                _sub(node, name, address[name])
    banks = _sub(dimension, "banks")
    for bank in customer.get("banks", []):
        node = _sub(banks, "bank", default=str(bank["default"]).lower())
        for name in _BANK_FIELDS:
            if name in bank:
                _sub(node, name, bank[name])
    return dimension


# --------------------------------------------------------------------------------------------- HTTP


def _basic_credentials(authorization: str | None) -> tuple[str, str]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def _error_response(status: int, message: str) -> CannedResponse:
    """How an injected failure looks: a SOAP Fault for 500 (as .NET answers), an HTML page otherwise."""
    if status == 500:
        return CannedResponse(500, soap_fault(message), content_type="text/xml; charset=utf-8")
    page = etree.Element("html")
    body = _sub(page, "body")
    _sub(body, "h1", f"{status}")
    _sub(body, "p", message)
    return CannedResponse(status, etree.tostring(page, method="html"), content_type="text/html")


def _too_many_requests(retry_after_s: int) -> CannedResponse:
    return CannedResponse(
        429, b"Too Many Requests", (("Retry-After", str(retry_after_s)),), content_type="text/plain"
    )


def _fault_answer(text: str, operation: str = "") -> SoapAnswer:
    return SoapAnswer(500, soap_fault(text), {"Content-Type": "text/xml; charset=utf-8"}, operation)


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


def _add_login_routes(app: FastAPI, sandbox: TwinfieldSandbox) -> None:
    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {key: values[-1] for key, values in parse_qs(body).items()}
        try:
            return _json(sandbox.token(request.headers.get("authorization"), form))
        except OAuthError as exc:
            return _json(exc.body, exc.status)

    @app.get(VALIDATION_PATH)
    def validation(request: Request, token: str = "") -> Response:
        base_url = str(request.base_url).rstrip("/") + request.scope.get("root_path", "")
        try:
            return _json(sandbox.validate_token(token, base_url))
        except OAuthError as exc:
            return _json(exc.body, exc.status)


def _add_cluster_routes(app: FastAPI, sandbox: TwinfieldSandbox) -> None:
    @app.post(PROCESS_XML_PATH)
    async def process_xml(request: Request) -> Response:
        answer = sandbox.process_soap(await request.body(), request.headers.get("soapaction"))
        request.scope[OPERATION_SCOPE_KEY] = answer.operation
        return Response(answer.body, answer.status, headers=answer.headers)


def _add_control_routes(app: FastAPI, sandbox: TwinfieldSandbox) -> None:
    """Twinfield's own control routes, next to the common ones of :func:`~.simulator.add_control_routes`."""
    add_books_routes(app, sandbox, tenant_param="office")
    add_consent_route(app, sandbox.consent, "organisation")

    @app.post(f"{CONTROL_PREFIX}/revoke")
    async def revoke(request: Request) -> dict[str, int]:
        body = json.loads(await request.body() or b"{}")
        return {"revoked": sandbox.revoke(body.get("refresh_token"))}


def create_app(sandbox: TwinfieldSandbox) -> FastAPI:
    """Twinfield's login host and cluster of ``sandbox`` as one ASGI app (mounted at ``/twinfield``)."""
    return create_simulator_app(
        "Twinfield sandbox",
        sandbox,
        _add_login_routes,
        _add_cluster_routes,
        _add_control_routes,
        operation_key=OPERATION_SCOPE_KEY,
    )


def demo_connection(sandbox_url: str, *, refresh_token: str | None = None) -> dict[str, Any]:
    """The demo connection: ``host`` is the login host (the sandbox's mount plays both it and the cluster,
    whose URL the token validation answers); login/password are the app's client id and secret."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "login": twinfield_fixtures.CLIENT_ID,
        "password": twinfield_fixtures.CLIENT_SECRET,
        "extra": {
            "refresh_token": refresh_token or twinfield_fixtures.BOOTSTRAP_REFRESH_TOKEN,
            "timeout": 30,
        },
    }


def bookings(sandbox: TwinfieldSandbox) -> list[Booking]:
    """The booked sales transactions of every office; the external id is office/code/number."""
    return [
        Booking(
            DESCRIPTOR.name,
            str(item["reference"]),
            str(item["registration_number"]),
            f"{item['office']}/{item['code']}/{item['registration_number']}",
            Decimal(str(item["total_incl_vat"])),
            Decimal(str(item["total_vat"])),
            item,
        )
        for item in sandbox.booked()
    ]


BENCH_CONN_ID = "bench_twinfield"
"""The bench's one Twinfield connection: an integrator has one client id for all its customers."""


def bench_slot(slot: int) -> BenchSlot:
    """Bench tenant ``slot``: an office of its own, under the bench app's one client id (whose credits
    the tenants share)."""
    return BenchSlot({"office": twinfield_fixtures.BENCH_OFFICES[slot - 1]}, BENCH_CONN_ID)


def bench_connection(sandbox_url: str, slot: int, limits: BenchLimits) -> dict[str, Any]:
    """The bench app's connection (every slot's), with the credits a minute (Twinfield announces none):
    the real 1,000 unless the run lowered them."""
    return {
        "conn_type": DESCRIPTOR.conn_type,
        "host": sandbox_url.rstrip("/") + MOUNT,
        "login": twinfield_fixtures.BENCH_CLIENT_ID,
        "password": twinfield_fixtures.BENCH_CLIENT_SECRET,
        "extra": {
            "refresh_token": twinfield_fixtures.BENCH_REFRESH_TOKEN,
            "timeout": 30,
            "credits_per_minute": 1000 if limits.limit is None else limits.limit,
            "minute_s": limits.minute_s,
        },
    }


def bench_windows(hook: Any, minute_s: float) -> WindowsFromBudget:
    """Twinfield sends no headers: the windows are the ones our credit budget counts in."""
    budget = hook.budget
    return WindowsFromBudget(budget, lambda: budget.short.resets_at)


def bench_figures(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The credits the bench app's client id spent, beside a ``limit_twinfield`` line's calls."""
    return {"credits": int(stats.get("credits_used", {}).get(twinfield_fixtures.BENCH_CLIENT_ID, 0))}


SANDBOX = SandboxTool(
    descriptor=DESCRIPTOR,
    mount=MOUNT,
    simulator=TwinfieldSandbox,
    create_app=create_app,
    connection=demo_connection,
    bookings=bookings,
    chaos=ChaosTargets(
        book=Target("POST", r"processxml\.asmx#ProcessXmlString/transactions$"),
        lookup=Target("POST", r"processxml\.asmx#ProcessXmlString/columns$"),  # a browse per reference
        reads=(Target("POST", r"processxml\.asmx#ProcessXmlString/(columns|list)$"),),
        api=Target("POST", r"processxml\.asmx#"),
        customers=Target("POST", r"processxml\.asmx#ProcessXmlString/dimensions$"),
        batch=True,
    ),
    bench=BenchKnobs(
        limit_switch="credits_per_minute",
        # 25 invoices per 3-credit write: at 1,000 credits a minute ten minutes would need 80,000 invoices,
        # so the simulator (and the connection) allow 15 credits a minute: five writes, 125 invoices.
        limit_run=LimitRun(invoices=1400, time_scale=30, limit=15, real_limit=1000),
        quick_limit_run=LimitRun(invoices=100, time_scale=60, limit=6, real_limit=1000),
        connection=bench_connection,
        limited_route="processxml",  # ProcessXml calls, not the token endpoint
        windows=bench_windows,
        limit_figures=bench_figures,
        template_integration=5,
        max_calls_per_invoice=0.06,  # batches of 25 plus one customer upsert for the whole backlog
        slots=len(twinfield_fixtures.BENCH_OFFICES),
        slot=bench_slot,
        accepted=(("21", "9", "0"), ("8000", "8010")),
        limits_off={"limits_enabled": False, "credits_per_minute": 1_000_000},
    ),
    refusals=(
        Refusal("6", "8000", "config", f"btw-code({twinfield_fixtures.INACTIVE_VAT_CODE})"),
        Refusal("21", "8020", "config", "Dimension 8999"),
    ),
)
"""This simulator as the sandbox server, the demo and the harnesses find it (by the tool's name)."""
