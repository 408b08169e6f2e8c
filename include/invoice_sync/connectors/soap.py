"""SOAP 1.1 over HTTP for the tools that speak it (Yuki, Twinfield), built and read with lxml.

XML is never assembled from strings: a customer called ``Smith & <Sons> "Ltd"`` or one with an emoji
must arrive exactly as typed, and only a real XML library guarantees the escaping. Both tools answer
HTTP 200 with per-item results inside, and report transport and authorisation problems as a SOAP
``Fault`` (HTTP 500), which :class:`SoapHook` turns into a :class:`SoapFault` for the tool's hook to
classify: only the tool knows which fault text means "session expired" and which "quota spent".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from lxml import etree

from invoice_sync.connectors.hooks import AccountingHook, url_path
from invoice_sync.domain.errors import TransientError

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)

Element = etree._Element


class SoapFault(Exception):
    """A SOAP ``Fault`` answer: the tool refused the whole call; nothing in it was processed."""

    def __init__(self, code: str, text: str, *, status: int) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.status = status


def qname(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def element(namespace: str | None, name: str, text: Any = None, **attributes: str) -> Element:
    """A new element; ``text`` is converted with ``str`` (None leaves it empty)."""
    tag = qname(namespace, name) if namespace else name
    nsmap = {None: namespace} if namespace else None
    node = etree.Element(tag, attributes, nsmap)  # type: ignore[arg-type]  # lxml-stubs forbid None, the default-namespace prefix
    if text is not None:
        node.text = str(text)
    return node


def child(parent: Element, name: str, text: Any = None, **attributes: str) -> Element:
    """Append ``<name>`` in the parent's namespace (the default namespace is inherited, as in XML)."""
    namespace = etree.QName(parent).namespace
    node = etree.SubElement(parent, qname(namespace, name) if namespace else name, attributes)
    if text is not None:
        node.text = str(text)
    return node


def envelope(body: Element, header: Element | None = None) -> bytes:
    """A SOAP 1.1 envelope around ``body`` (and ``header``), UTF-8 encoded with a declaration."""
    root = etree.Element(qname(SOAP_ENV, "Envelope"), nsmap={"soap": SOAP_ENV})
    if header is not None:
        etree.SubElement(root, qname(SOAP_ENV, "Header")).append(header)
    etree.SubElement(root, qname(SOAP_ENV, "Body")).append(body)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def parse(data: bytes | str) -> Element:
    """Parse XML safely (no entities, no network); raises ``etree.XMLSyntaxError`` when garbled."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return etree.fromstring(data, parser=_PARSER)


def local(node: Element) -> str:
    """An element's name without its namespace."""
    return etree.QName(node).localname


def find(node: Element, *path: str) -> Element | None:
    """The first descendant path of local names (``find(x, "Invoice", "Message")``), any namespace."""
    current: Element | None = node
    for name in path:
        if current is None:
            return None
        current = next((c for c in current if isinstance(c.tag, str) and local(c) == name), None)
    return current


def find_all(node: Element, name: str) -> list[Element]:
    """The children of ``node`` called ``name`` in any namespace."""
    return [c for c in node if isinstance(c.tag, str) and local(c) == name]


def text(node: Element | None, *path: str, default: str = "") -> str:
    """The stripped text at ``path`` below ``node`` (``default`` when missing or empty)."""
    target = find(node, *path) if node is not None and path else node
    if target is None or target.text is None:
        return default
    return target.text.strip()


def body_of(document: Element) -> Element:
    """The operation element inside a SOAP envelope's ``Body``; raises ``SoapFault`` for a Fault."""
    body = find(document, "Body")
    content = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if content is None:
        raise ValueError("the SOAP answer has no Body content")
    if local(content) == "Fault":
        raise SoapFault(text(content, "faultcode"), text(content, "faultstring"), status=500)
    return content


class SoapHook(AccountingHook):
    """An :class:`AccountingHook` that posts SOAP 1.1 envelopes and returns the answer's body element.

    Subclasses supply the authentication, the rate budget and the classification of :class:`SoapFault`.
    """

    def post_envelope(
        self,
        path_or_url: str,
        action: str,
        body: Element,
        *,
        header: Element | None = None,
        safe: bool,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[requests.Response, Element | None]:
        """POST one envelope; return the HTTP answer and the Body's content, or None for a non-SOAP answer.

        :raises SoapFault: the tool answered with a Fault (the caller decides what it means).
        :raises TransientError: the request was never sent, or (``safe``) the answer was lost.
        :raises OutcomeUnknownError: a write whose answer was lost or unreadable.
        """
        url = path_or_url if "://" in path_or_url else self._url(path_or_url)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{action}"',
            **(extra_headers or {}),
        }
        response = self._transmit("POST", url, safe=safe, data=envelope(body, header), headers=headers)
        if response.status_code == 429 or not response.content.strip():
            return response, None
        try:
            document = parse(response.content)
        except etree.XMLSyntaxError as exc:
            if response.status_code >= 500 or response.ok:
                detail = f"{self.context}: unreadable answer from {url_path(url)} ({action})"
                if safe:
                    raise TransientError(detail) from exc
                raise self._unknown(detail) from exc
            return response, None
        try:
            return response, body_of(document)
        except SoapFault as fault:
            fault.status = response.status_code
            raise
        except ValueError as exc:
            detail = f"{self.context}: {url_path(url)} ({action}) answered without a SOAP body"
            if safe:
                raise TransientError(detail) from exc
            raise self._unknown(detail) from exc
