"""A small but real OData query engine for the simulators: ``$filter``, ``$select``, ``$top``, ``$orderby``
and ``$skiptoken`` paging over lists of entity dicts.

Connectors deduplicate by filtering (``YourRef eq '2026/0042' or YourRef eq '2026/0043'``), so the
simulator must evaluate filters the way the tool does, including parentheses, doubled quotes in string
literals and typed literals (``guid'…'``, ``datetime'…'``), and must reject a field the entity does not
have instead of silently matching nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]


class ODataError(ValueError):
    """A query the tool would answer with 400; the message is what the client gets to read."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<typed>(?:guid|datetime|datetimeoffset)'(?:[^']|'')*') |
        (?P<string>'(?:[^']|'')*') |
        (?P<number>-?\d+(?:\.\d+)?)[mMdDlL]? |
        (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_KEYWORDS = {"and", "or", "not", *_COMPARISONS}
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # lparen, rparen, literal, field, keyword
    text: str
    value: Any = None


def parse_datetime(text: str) -> datetime:
    """ISO 8601 (``2026-03-02``, ``2026-03-02T00:00:00Z``) or ``/Date(ms)/``; naive means UTC."""
    match = re.fullmatch(r"/Date\((-?\d+)\)/", text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def normalize(value: Any) -> Any:
    """Bring an entity value or a literal into one comparable form (GUIDs lower-case, numbers Decimal)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _typed_literal(text: str) -> Any:
    prefix, _, quoted = text.partition("'")
    inner = quoted[:-1].replace("''", "'")
    try:
        if prefix == "guid":
            return str(uuid.UUID(inner))
        return parse_datetime(inner)
    except ValueError as exc:
        raise ODataError(f"Invalid literal: {text}") from exc


def _tokenize(text: str, fields: Collection[str]) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise ODataError(f"Syntax error at position {position} in '{text}'.")
        position = match.end()
        tokens.append(_classify(match, fields))
    return tokens


def _classify(match: re.Match[str], fields: Collection[str]) -> _Token:
    kind = match.lastgroup or ""
    text = match.group(kind)
    if kind in ("lparen", "rparen"):
        return _Token(kind, text)
    if kind == "typed":
        return _Token("literal", text, _typed_literal(text))
    if kind == "string":
        return _Token("literal", text, text[1:-1].replace("''", "'"))
    if kind == "number":
        return _Token("literal", text, Decimal(text))
    if text in _CONSTANTS:
        return _Token("literal", text, _CONSTANTS[text])
    if text in _KEYWORDS:
        return _Token("keyword", text)
    if text not in fields:
        raise ODataError(f"Could not find a property named '{text}'.")
    return _Token("field", text)


class _Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*."""

    def __init__(self, tokens: Sequence[_Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._index != len(self._tokens):
            raise ODataError(f"Unexpected '{self._tokens[self._index].text}' in $filter.")
        return predicate

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise ODataError("Unexpected end of $filter expression.")
        self._index += 1
        return token

    def _accept_keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "keyword" and token.text == word:
            self._index += 1
            return True
        return False

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._accept_keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._accept_keyword("and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def _unary(self) -> Predicate:
        if self._accept_keyword("not"):
            inner = self._unary()
            return lambda row: not inner(row)
        token = self._peek()
        if token is not None and token.kind == "lparen":
            self._take()
            inner = self._or()
            if self._take().kind != "rparen":
                raise ODataError("Expected ')' in $filter.")
            return inner
        return self._comparison()

    def _operand(self) -> Callable[[Row], Any]:
        token = self._take()
        if token.kind == "field":
            name = token.text
            return lambda row: normalize(row.get(name))
        if token.kind == "literal":
            value = normalize(token.value)
            return lambda _row: value
        raise ODataError(f"Unexpected '{token.text}' in $filter.")

    def _comparison(self) -> Predicate:
        left = self._operand()
        operator = self._take()
        if operator.kind != "keyword" or operator.text not in _COMPARISONS:
            raise ODataError(f"Expected a comparison operator, got '{operator.text}'.")
        right = self._operand()
        compare = _COMPARISONS[operator.text]

        def predicate(row: Row) -> bool:
            a, b = left(row), right(row)
            if operator.text not in ("eq", "ne") and (a is None or b is None):
                return False
            try:
                return bool(compare(a, b))
            except TypeError:
                return operator.text == "ne"

        return predicate


def parse_filter(text: str, fields: Collection[str]) -> Predicate:
    """Compile a ``$filter`` expression into a predicate over entity dicts."""
    tokens = _tokenize(text, fields)
    if not tokens:
        raise ODataError("Empty $filter expression.")
    return _Parser(tokens).parse()


@dataclass(slots=True)
class QueryOptions:
    """The parsed system query options of one list request."""

    predicate: Predicate | None = None
    select: list[str] | None = None
    top: int | None = None
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    skiptoken: str | None = None


def _parse_names(text: str, fields: Collection[str]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in fields:
            raise ODataError(f"Could not find a property named '{name}'.")
    return names


def _parse_orderby(text: str, fields: Collection[str]) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for clause in filter(None, (c.strip() for c in text.split(","))):
        name, _, direction = clause.partition(" ")
        if direction.strip().lower() not in ("", "asc", "desc"):
            raise ODataError(f"Invalid $orderby direction in '{clause}'.")
        order.append((_parse_names(name, fields)[0], direction.strip().lower() == "desc"))
    return order


def _parse_top(text: str) -> int:
    try:
        top = int(text)
    except ValueError as exc:
        raise ODataError(f"Invalid value for $top: '{text}'.") from exc
    if top < 0:
        raise ODataError(f"Invalid value for $top: '{text}'.")
    return top


def _parse_skiptoken(text: str) -> str:
    value = _typed_literal(text) if text.startswith("guid'") else text
    return str(value)


def parse_query(params: Mapping[str, str], fields: Collection[str]) -> QueryOptions:
    """Parse ``$filter``, ``$select``, ``$top``, ``$orderby`` and ``$skiptoken`` from a query string."""
    options = QueryOptions()
    if params.get("$filter"):
        options.predicate = parse_filter(params["$filter"], fields)
    if params.get("$select"):
        options.select = _parse_names(params["$select"], fields)
    if params.get("$top"):
        options.top = _parse_top(params["$top"])
    if params.get("$orderby"):
        options.orderby = _parse_orderby(params["$orderby"], fields)
    if params.get("$skiptoken"):
        options.skiptoken = _parse_skiptoken(params["$skiptoken"])
    return options


def _sort(rows: list[Row], orderby: Sequence[tuple[str, bool]]) -> list[Row]:
    for name, descending in reversed(orderby):  # stable sorts, least significant key first
        rows = sorted(
            rows,
            key=lambda r, n=name: (r.get(n) is not None, normalize(r.get(n))),  # type: ignore[misc]  # mypy cannot infer a lambda with a bound default
            reverse=descending,
        )
    return rows


def select_page(
    rows: Sequence[Row], options: QueryOptions, *, key: str, page_size: int
) -> tuple[list[Row], str | None]:
    """One page of the filtered, ordered rows, and the key to continue after (None on the last page)."""
    matching = [r for r in rows if options.predicate is None or options.predicate(r)]
    matching = _sort(matching, options.orderby)
    if options.top is not None:
        matching = matching[: options.top]
    start = 0
    if options.skiptoken is not None:
        keys = [str(r.get(key)) for r in matching]
        start = keys.index(options.skiptoken) + 1 if options.skiptoken in keys else len(matching)
    page = matching[start : start + page_size]
    more = start + page_size < len(matching)
    return page, (str(page[-1][key]) if more and page else None)


def project(row: Row, select: Sequence[str] | None) -> dict[str, Any]:
    """Keep only the ``$select``-ed properties (all when there is no ``$select``)."""
    return dict(row) if not select else {name: row.get(name) for name in select}
