"""The Invoice sync page on a large backlog: every list a page at a time, with its true total, so the
api-server's work per request follows the page size, not the number of integrations or invoices
(issue 14, item 7).

The world is built straight into the tables (no sync): hundreds of integrations, and one integration with
thousands of unsynced invoices (never tried, rejected, deferred, interleaved by id) and of invoices changed
after sync. It is served by the same Airflow app as ``test_invoice_sync_page``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from page_world import Api
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from invoice_sync.airflow.ui.page import (
    DEFAULT_PER_PAGE,
    DEFAULT_ROWS,
    MAX_PER_PAGE,
    MAX_ROWS,
    Filters,
)
from invoice_sync.store.db import make_engine, shared_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import IntegrationRow, InvoiceRow, LedgerRow, LedgerState
from invoice_sync.store.repository import SyncStore

PAGE = "/invoice-sync/"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
INTEGRATIONS = 300
BIG = 1
"""The integration with the backlog; the others have two never-tried invoices each."""
UNSYNCED = 2300
CHANGED = 1200
LIST_NAMES = ("not_synced", "deferred", "changed")


def _state(invoice_id: int) -> str | None:
    """The big integration's unsynced invoices, interleaved: deferred, rejected or never tried."""
    if invoice_id % 7 == 0:
        return LedgerState.DEFERRED
    if invoice_id % 5 == 0:
        return LedgerState.REJECTED
    return None


@dataclass
class Backlog:
    url: str
    store: SyncStore

    def numbers(self, list_name: str, state: str | None = None) -> list[str]:
        """The big integration's invoice numbers in one list, in the page's order, counted the slow way:
        every row loaded."""
        with Session(self.store.engine) as session:
            rows = session.execute(
                select(InvoiceRow, LedgerRow.state)
                .outerjoin(LedgerRow, LedgerRow.invoice_id == InvoiceRow.id)
                .where(InvoiceRow.integration_id == BIG)
                .order_by(InvoiceRow.id)
            ).all()
        numbers = []
        for invoice, ledger_state in rows:
            if list_name == "changed":
                keep = invoice.registration_number is not None and invoice.updated_at > invoice.synced_at
            elif invoice.registration_number is not None or invoice.status == "draft":
                keep = False
            elif list_name == "deferred":
                keep = ledger_state == LedgerState.DEFERRED
            elif state == "new":
                keep = ledger_state is None
            elif state is not None:
                keep = ledger_state == state
            else:
                keep = ledger_state != LedgerState.DEFERRED
            if keep:
                numbers.append(str(invoice.number))
        return numbers


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backlog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backlog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('backlog') / 'invoicing.db'}"
    else:
        make_database: Callable[[str], str] = request.getfixturevalue("pg_databases")
        url = make_database("invoice_sync_page_backlog")
    engine = make_engine(url)
    prepare(engine)
    _build(engine)
    try:
        yield Backlog(url, SyncStore(engine))
    finally:
        shared_engine(url).dispose()  # the page's own engine, before the database goes
        engine.dispose()


def _build(engine: Any) -> None:
    integrations = [
        {
            "id": i,
            "name": f"Tenant {i:03d}",
            "tool": "exact_online",
            "conn_id": "exact_demo",
            "auto_sync": True,
            "settings": {"division": 123456},
            "updated_at": T0,
        }
        for i in range(1, INTEGRATIONS + 1)
    ]
    invoices: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []

    def invoice(integration_id: int, **fields: Any) -> int:
        invoice_id = len(invoices) + 1
        invoices.append(
            {
                "id": invoice_id,
                "integration_id": integration_id,
                "kind": "invoice",
                "number": f"2026/{invoice_id:05d}",
                "status": "registered",
                "invoice_date": date(2026, 3, 1),
                "currency": "EUR",
                "total_excl_vat": Decimal("100.00"),
                "total_vat": Decimal("21.00"),
                "total_incl_vat": Decimal("121.00"),
                "registered_at": T0,
                "updated_at": T0,
                "registration_number": None,
                "synced_at": None,
                **fields,
            }
        )
        return invoice_id

    for _ in range(UNSYNCED):
        invoice_id = invoice(BIG)
        state = _state(invoice_id)
        if state is not None:
            ledger.append(
                {
                    "integration_id": BIG,
                    "invoice_id": invoice_id,
                    "state": state,
                    "attempts": 1,
                    "error_class": "data" if state == LedgerState.REJECTED else "quota",
                    "error_message": f"refused #{invoice_id}" if state == LedgerState.REJECTED else None,
                    "created_at": T0,
                    "updated_at": T0,
                }
            )
    synced = {"registration_number": "25700001", "synced_at": T0}
    for _ in range(CHANGED):
        invoice(BIG, **synced, updated_at=T0 + timedelta(days=1))
    for _ in range(100):
        invoice(BIG, **synced)
    for _ in range(10):
        invoice(BIG, status="draft")
    for integration_id in range(2, INTEGRATIONS + 1):
        invoice(integration_id)
        invoice(integration_id)
    with Session(engine) as session, session.begin():
        session.execute(insert(IntegrationRow), integrations)
        session.execute(insert(InvoiceRow), invoices)
        session.execute(insert(LedgerRow), ledger)


@pytest.fixture
def page(api: Api, backlog: Backlog, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """GET the page on the backlog's database, as the admin."""
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", backlog.url)

    def get(**params: Any) -> Any:
        return api.client.get(PAGE, params=params, headers=api.admin)

    return get


def test_a_large_backlog_is_shown_a_page_at_a_time_with_its_true_totals(page: Any, backlog: Backlog) -> None:
    response = page()
    assert response.status_code == 200, response.text[:500]
    html = response.text
    sections = _sections(html)
    assert len(sections) == DEFAULT_PER_PAGE, f"{len(sections)} integrations on one page"
    assert list(sections) == list(range(1, DEFAULT_PER_PAGE + 1))
    assert f"Integrations 1–{DEFAULT_PER_PAGE} of {INTEGRATIONS}" in _text(html)

    big = sections[BIG]
    totals = {name: len(backlog.numbers(name)) for name in LIST_NAMES}
    assert min(totals.values()) > MAX_ROWS, totals  # every list is longer than any page
    for name in LIST_NAMES:
        rows = _rows(big, name)
        assert rows == backlog.numbers(name)[:DEFAULT_ROWS], name
        assert f"showing 1–{DEFAULT_ROWS} of {totals[name]:,}" in _caption(big, name), name

    # The counts at a glance agree with the lists' totals.
    counts = _counts(big)
    assert counts["not synced"] == totals["not_synced"] + totals["deferred"]
    assert counts["deferred"] == totals["deferred"]
    assert counts["changed after sync"] == totals["changed"]
    assert counts["failed"] == len(backlog.numbers("not_synced", LedgerState.REJECTED))
    assert counts["synced"] == CHANGED + 100 and counts["drafts"] == 10

    # A small integration: its whole list, "showing 1–2 of 2".
    small = sections[2]
    assert len(_rows(small, "not_synced")) == 2 and "showing 1–2 of 2" in _caption(small, "not_synced")


def test_paging_one_list_narrows_to_its_integration_and_keeps_the_filters(
    page: Any, backlog: Backlog
) -> None:
    html = page(tool="exact_online", state="rejected", rows=40).text
    rejected = backlog.numbers("not_synced", LedgerState.REJECTED)
    big = _sections(html)[BIG]
    assert _rows(big, "not_synced") == rejected[:40]
    assert _link(big, "not_synced", "prev") is None
    following = _link(big, "not_synced", "next")
    assert following == {
        "integration": "1",
        "tool": "exact_online",
        "state": "rejected",
        "rows": "40",
        "not_synced_page": "2",
    }

    second = page(**following).text
    sections = _sections(second)
    assert list(sections) == [BIG]
    assert _rows(sections[BIG], "not_synced") == rejected[40:80]
    assert f"showing 41–80 of {len(rejected):,}" in _caption(sections[BIG], "not_synced")
    first = {key: value for key, value in following.items() if key != "not_synced_page"}
    assert _link(sections[BIG], "not_synced", "prev") == first

    # Each list pages on its own; a page past the end shows the last one.
    changed = backlog.numbers("changed")
    beyond = _sections(page(integration=BIG, changed_page=10_000, not_synced_page=2).text)[BIG]
    last_page = -(-len(changed) // DEFAULT_ROWS)
    assert _rows(beyond, "changed") == changed[(last_page - 1) * DEFAULT_ROWS :]
    assert _link(beyond, "changed", "next") is None
    assert _rows(beyond, "not_synced") == backlog.numbers("not_synced")[DEFAULT_ROWS : 2 * DEFAULT_ROWS]
    assert _rows(beyond, "deferred") == backlog.numbers("deferred")[:DEFAULT_ROWS]

    # The buttons' forms bring the person back to the same view, page and all.
    backs = {unescape(back) for back in re.findall(r'name="back" value="([^"]*)"', second)}
    assert backs == {Filters.parse(following).query()}


def test_the_integrations_are_paged(page: Any) -> None:
    html = page(page=15).text
    assert list(_sections(html)) == list(range(281, 301))
    assert f"Integrations 281–300 of {INTEGRATIONS}" in _text(html)
    assert _page_link(html, "next") is None and _page_link(html, "prev") == {"page": "14"}

    widest = _sections(page(per_page=MAX_PER_PAGE, tool="exact_online").text)
    assert list(widest) == list(range(1, MAX_PER_PAGE + 1))
    second = page(per_page=MAX_PER_PAGE, tool="exact_online", page=2).text
    assert _page_link(second, "prev") == {"per_page": str(MAX_PER_PAGE), "tool": "exact_online"}

    assert "No integration matches these filters." in page(tool="yuki").text


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("page", "0"),
        ("page", "-1"),
        ("page", "two"),
        ("page", "1.5"),
        ("page", "9" * 40),
        ("per_page", str(MAX_PER_PAGE + 1)),
        ("per_page", "0"),
        ("rows", str(MAX_ROWS + 1)),
        ("rows", "all"),
        ("not_synced_page", "0"),
        ("deferred_page", "x"),
        ("changed_page", "-3"),
        ("integration", "one"),
    ],
)
def test_a_bad_paging_parameter_is_refused_naming_it(page: Any, param: str, value: str) -> None:
    response = page(**{param: value})
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert param in response.json()["detail"]


def test_filters_round_trip_through_their_query_string() -> None:
    filters = Filters.parse(
        {"integration": "7", "state": "rejected", "page": "3", "rows": "20", "deferred_page": "2", "x": "1"}
    )
    assert filters == Filters(integration=7, state="rejected", page=3, rows=20, deferred_page=2)
    assert Filters.parse(dict(_query_values(filters.query()))) == filters
    assert Filters.parse({"page": "", "rows": ""}) == Filters()
    assert Filters().query() == ""


def _query_values(query: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(query).items()}


# -- reading the page -------------------------------------------------------------------------------------


def _sections(html: str) -> dict[int, str]:
    """Each integration's section, by id, in the page's order."""
    found = re.findall(
        r'<section class="integration" aria-labelledby="int-(\d+)">(.*?)</section>', html, re.S
    )
    return {int(integration_id): body for integration_id, body in found}


def _table(section: str, name: str) -> str:
    found = re.search(rf'<table data-list="{name}">(.*?)</table>', section, re.S)
    assert found, f"no {name} table"
    return found.group(1)


def _rows(section: str, name: str) -> list[str]:
    return re.findall(r'<th scope="row">([^<\s]+)', _table(section, name))


def _caption(section: str, name: str) -> str:
    found = re.search(r"<caption>(.*?)</caption>", _table(section, name), re.S)
    assert found
    return _text(found.group(1))


def _counts(section: str) -> dict[str, int]:
    return {
        label.strip(): int(n.replace(",", ""))
        for n, label in re.findall(r"<strong>([\d,]+)</strong>([^<(]+)", section)
    }


def _link(section: str, name: str, rel: str) -> dict[str, str] | None:
    nav = re.search(rf'<nav class="pager" data-list="{name}"[^>]*>(.*?)</nav>', section, re.S)
    return _href(nav.group(1), rel) if nav else None  # a list of one page has no pager


def _page_link(html: str, rel: str) -> dict[str, str] | None:
    nav = re.search(r'<nav class="pager" data-list="integrations"[^>]*>(.*?)</nav>', html, re.S)
    assert nav, "no pager for the integrations"
    return _href(nav.group(1), rel)


def _href(html: str, rel: str) -> dict[str, str] | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]*)"', html)
    if found is None:
        return None
    return _query_values(urlsplit(unescape(found.group(1))).query)


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
