"""The subset of QuickBooks Online's query language the simulator answers.

Connectors look up what QuickBooks already holds (``select * from Invoice where DocNumber in ('a','b')``)
before creating, and python-quickbooks builds its ``filter``/``all``/``count`` calls from the same
language, so the simulator parses it rather than matching fixed strings::

    select * [, Field...] | select count(*)
    from Entity
    [where Field = literal | Field in (literal, ...) | Field like 'pat%' [and ...]]
    [order by | orderby Field [asc|desc] [, ...]]
    [startposition n] [maxresults m]

Keywords are case-insensitive; a quote inside a string literal is written ``\\'`` (what python-quickbooks
sends) or ``''``. Literals are strings, numbers and ``true``/``false``. String comparisons ignore case,
like QuickBooks' name matching. Errors carry Intuit's codes: 4000 (the text does not parse) and 4001 (it
parses but names something that cannot be queried).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_RESULTS_CAP = 1000
"""QuickBooks answers at most 1,000 rows per query; a larger ``maxresults`` is capped (unconfirmed)."""
DEFAULT_MAX_RESULTS = 100

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<symbol>\(\*\)|[*(),=])
    )""",
    re.VERBOSE,
)


class QueryError(Exception):
    """A query QuickBooks would refuse: ``code`` 4000 (parse error) or 4001 (validation error)."""

    def __init__(self, code: str, message: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.message = message
        self.detail = detail


def _parse_error(detail: str) -> QueryError:
    return QueryError("4000", "Error parsing query", f"QueryParserError: {detail}")


def _validation_error(detail: str) -> QueryError:
    return QueryError("4001", "Invalid query", f"QueryValidationError: {detail}")


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    operator: str  # "=" | "in" | "like"
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Query:
    entity: str
    count: bool
    conditions: tuple[Condition, ...]
    order_by: tuple[tuple[str, bool], ...]  # (field, descending)
    start_position: int
    max_results: int


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    position: int

    @property
    def keyword(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _parse_error(f'Encountered "{text[position:].strip()[:20]}" at column {position + 1}.')
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    return tokens


def _literal(token: _Token) -> Any:
    if token.kind == "string":
        inner = token.text[1:-1]
        return re.sub(r"\\(.)|''", lambda m: m.group(1) or "'", inner)
    if token.kind == "number":
        return Decimal(token.text)
    if token.keyword in ("true", "false"):
        return token.keyword == "true"
    raise _parse_error(f'Encountered "{token.text}" at column {token.position}. Was expecting a literal.')


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _parse_error("Encountered end of query. Was expecting more input.")
        self.index += 1
        return token

    def expect(self, *keywords: str) -> _Token:
        token = self.take()
        if token.keyword not in keywords and token.text not in keywords:
            raise _parse_error(
                f'Encountered "{token.text}" at column {token.position}. Was expecting "{keywords[0]}".'
            )
        return token

    def at(self, *keywords: str) -> bool:
        token = self.peek()
        return token is not None and (token.keyword in keywords or token.text in keywords)

    def name(self) -> str:
        token = self.take()
        if token.kind != "word":
            raise _parse_error(
                f'Encountered "{token.text}" at column {token.position}. Was expecting a name.'
            )
        return token.text

    def integer(self) -> int:
        token = self.take()
        if token.kind != "number" or not token.text.lstrip("-").isdigit():
            raise _parse_error(
                f'Encountered "{token.text}" at column {token.position}. Was expecting an integer.'
            )
        return int(token.text)


def parse(text: str) -> Query:
    """The query in ``text``; raises :class:`QueryError` for what QuickBooks would refuse."""
    parser = _Parser(text)
    parser.expect("select")
    count = parser.at("count")
    if count:
        parser.take()
        parser.expect("(*)")
    else:
        parser.expect("*")
        while parser.at(","):
            parser.take()
            parser.name()  # extra columns (python-quickbooks asks for Sku): every field is answered anyway
    parser.expect("from")
    entity = parser.name()
    conditions: list[Condition] = []
    if parser.at("where"):
        parser.take()
        conditions.append(_condition(parser))
        while parser.at("and"):
            parser.take()
            conditions.append(_condition(parser))
    order_by: list[tuple[str, bool]] = []
    if parser.at("orderby", "order"):
        if parser.take().keyword == "order":
            parser.expect("by")
        order_by.append(_ordering(parser))
        while parser.at(","):
            parser.take()
            order_by.append(_ordering(parser))
    start, maximum = 1, DEFAULT_MAX_RESULTS
    while parser.at("startposition", "maxresults"):
        if parser.take().keyword == "startposition":
            start = max(1, parser.integer())
        else:
            maximum = min(MAX_RESULTS_CAP, max(0, parser.integer()))
    token = parser.peek()
    if token is not None:
        raise _parse_error(f'Encountered "{token.text}" at column {token.position}.')
    return Query(entity, count, tuple(conditions), tuple(order_by), start, maximum)


def _condition(parser: _Parser) -> Condition:
    field = parser.name()
    operator = parser.take()
    if operator.text == "=":
        return Condition(field, "=", (_literal(parser.take()),))
    if operator.keyword == "like":
        value = _literal(parser.take())
        if not isinstance(value, str):
            raise _validation_error(f"LIKE needs a string pattern for property '{field}'")
        return Condition(field, "like", (value,))
    if operator.keyword == "in":
        parser.expect("(")
        values = [_literal(parser.take())]
        while parser.at(","):
            parser.take()
            values.append(_literal(parser.take()))
        parser.expect(")")
        return Condition(field, "in", tuple(values))
    raise _parse_error(
        f'Encountered "{operator.text}" at column {operator.position}. '
        'Was expecting one of "=", "in", "like".'
    )


def _ordering(parser: _Parser) -> tuple[str, bool]:
    field = parser.name()
    descending = False
    if parser.at("asc", "desc"):
        descending = parser.take().keyword == "desc"
    return field, descending


# ------------------------------------------------------------------ evaluation


def _scalar(value: Any) -> Any:
    """A field's comparable value: a reference (``CustomerRef``) compares by its ``value``."""
    if isinstance(value, Mapping):
        return value.get("value")
    return value


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _equal(actual: Any, wanted: Any) -> bool:
    actual = _scalar(actual)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(wanted).lower()
    if isinstance(wanted, Decimal):
        number = _number(actual)
        return number is not None and number == wanted
    return actual is not None and str(actual).casefold() == str(wanted).casefold()


def _like(actual: Any, pattern: str) -> bool:
    actual = _scalar(actual)
    if actual is None:
        return False
    regex = "".join(".*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, str(actual), re.IGNORECASE | re.DOTALL) is not None


def _matches(row: Mapping[str, Any], condition: Condition, field: str) -> bool:
    actual = row.get(field)
    if condition.operator == "like":
        return _like(actual, condition.values[0])
    return any(_equal(actual, wanted) for wanted in condition.values)


def _sort_key(value: Any) -> tuple[int, Any]:
    value = _scalar(value)
    if value is None:
        return (2, "")
    number = _number(value)
    if number is not None:
        return (0, number)
    return (1, str(value).casefold())


@dataclass(frozen=True, slots=True)
class QueryResult:
    entity: str
    rows: list[dict[str, Any]]
    total: int


def execute(
    query: Query,
    entities: Mapping[str, Sequence[str]],
    rows_of: Callable[[str], Iterable[Mapping[str, Any]]],
    *,
    active_by_default: frozenset[str] = frozenset(),
) -> QueryResult:
    """Run ``query`` over the rows ``rows_of(entity)`` gives (in Id order).

    ``entities`` names each queryable entity (any case in the query) and its queryable fields. For the
    entities in ``active_by_default`` (customers, items, tax codes), inactive rows only show up when the
    query names ``Active``, as in QuickBooks.
    """
    entity = next((e for e in entities if e.lower() == query.entity.lower()), None)
    if entity is None:
        raise _validation_error(f"{query.entity} is not a queryable entity")
    fields = {f.lower(): f for f in entities[entity]}

    def field_name(name: str) -> str:
        known = fields.get(name.lower())
        if known is None:
            raise _validation_error(f"property '{name}' is not queryable")
        return known

    conditions = [(c, field_name(c.field)) for c in query.conditions]
    order = [(field_name(f), descending) for f, descending in query.order_by]
    rows = [dict(r) for r in rows_of(entity)]
    if entity in active_by_default and not any(name == "Active" for _, name in conditions):
        rows = [r for r in rows if r.get("Active", True)]
    rows = [r for r in rows if all(_matches(r, c, name) for c, name in conditions)]
    for name, descending in reversed(order):
        rows.sort(key=lambda r, name=name: _sort_key(r.get(name)), reverse=descending)  # type: ignore[misc]  # mypy cannot infer a lambda with a bound default
    total = len(rows)
    if query.count:
        return QueryResult(entity, [], total)
    page = rows[query.start_position - 1 : query.start_position - 1 + query.max_results]
    return QueryResult(entity, page, total)
