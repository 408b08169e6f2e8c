"""The run summary and the bell notification agree with what the database holds after real runs."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from invoice_sync.engine import summary
from invoice_sync.store import claims

BOTH_DATABASES = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def counts(store, sql: str, **params) -> dict[int, int]:
    """``{integration_id: n}`` from a query that selects those two columns (written independently of
    the store's own reporting queries, so the test does not check the code against itself)."""
    with store.engine.connect() as conn:
        return {int(i): int(n) for i, n in conn.execute(text(sql), params)}


@BOTH_DATABASES
def test_summary_and_notification_match_the_database(run, demo, store):
    for integration_id in (1, 2, 3):
        run(integration_id, run_id="manual-1")
        claim = claims.acquire(store.engine, integration_id, "write-back")
        store.write_back(claim)
        claims.release(store.engine, claim)
    # an edit of an invoice synced long ago: reported, not pushed
    later = (
        "synced_at + INTERVAL '1 day'"
        if store.engine.dialect.name == "postgresql"
        else "datetime(synced_at, '+1 day')"
    )
    with store.engine.begin() as conn:
        edited = conn.execute(
            text(
                "SELECT number FROM invoices WHERE integration_id = 1 AND registration_number IS NOT NULL "
                "AND id NOT IN (SELECT invoice_id FROM sync_ledger) ORDER BY id"
            )
        ).scalar()
        conn.execute(text(f"UPDATE invoices SET updated_at = {later} WHERE number = :n"), {"n": edited})

    result = summary.summarize(store, "manual-1", [1, 2, 3])
    table = result.table.set_index("integration")
    names = {i.id: i.name for i in store.integrations()}

    synced = counts(
        store,
        "SELECT integration_id, count(*) FROM sync_ledger WHERE run_id = :run "
        "AND state IN ('booked', 'written_back') GROUP BY integration_id",
        run="manual-1",
    )
    customers = counts(
        store,
        "SELECT integration_id, count(*) FROM sync_customer_links WHERE run_id = :run "
        "GROUP BY integration_id",
        run="manual-1",
    )
    drafts = counts(
        store, "SELECT integration_id, count(*) FROM invoices WHERE status = 'draft' GROUP BY integration_id"
    )
    seeded_synced = counts(
        store,
        "SELECT i.integration_id, count(*) FROM invoices i LEFT JOIN sync_ledger l ON l.invoice_id = i.id "
        "WHERE i.registration_number IS NOT NULL AND l.id IS NULL GROUP BY i.integration_id",
    )
    with store.engine.connect() as conn:
        query = text(
            "SELECT i.number, l.error_class FROM sync_ledger l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE l.run_id = 'manual-1' AND l.state = 'rejected'"
        )
        rejected = {(number, error_class) for number, error_class in conn.execute(query)}
    assert sum(drafts.values()) > 0  # the demo has drafts (not necessarily in every integration)
    for integration_id, name in names.items():
        row = table.loc[name]
        assert row["synced"] == synced.get(integration_id, 0)
        assert row["customers_created"] == customers.get(integration_id, 0)
        assert row["skipped_draft"] == drafts.get(integration_id, 0)
        changed = 1 if integration_id == 1 else 0
        assert row["changed_after_sync"] == changed
        assert row["skipped_already_synced"] == seeded_synced.get(integration_id, 0) - changed
        assert row["deferred"] == 0 and row["failed_auth"] == 0 and row["still_failing"] == 0
    assert table.loc[names[1], "skipped_before_cutover"] == len(demo.before_cutover)
    assert int(table["failed_data"].sum()) == sum(1 for _, c in rejected if c == "data")
    assert int(table["failed_config"].sum()) == sum(1 for _, c in rejected if c == "config")
    assert {(e["invoice"], e["error_class"]) for e in result.errors} == rejected
    assert {e["invoice"] for e in result.errors} == set(demo.expected_rejections)
    assert all(e["hint"] for e in result.errors)
    assert [c["number"] for c in result.changed_after_sync] == [edited]

    title, body = summary.notification(result)
    invoices, people = sum(synced.values()), sum(customers.values())
    assert (
        title == f"Sync finished: {invoices} invoices and {people} customers synced, {len(rejected)} errors, "
        "1 changed after sync (not sent)"
    )
    assert body["invoices_synced"] == invoices and body["customers_synced"] == people
    assert body["deferred"] == 0
    assert len(body["errors"]) == len(rejected)
    for error in body["errors"]:
        fragment = demo.expected_rejections[error["invoice"]][1]
        assert fragment in error["text"]
        assert error["text"].count(error["invoice"]) == 1, error["text"]  # named once, not twice
    assert body["changed_after_sync"][0]["number"] == edited
    assert [i["integration"] for i in body["integrations"]] == list(names.values())
    assert result.counts()["errors"] == len(rejected)


def test_notification_reports_deferred_invoices(run, demo, store):
    run.handle.exact.configure(daily_limit=6)
    run(3, run_id="manual-2", batch_size=4)
    deferred = counts(
        store,
        "SELECT integration_id, count(*) FROM sync_ledger WHERE run_id = 'manual-2' AND state = 'deferred' "
        "GROUP BY integration_id",
    )[3]
    result = summary.summarize(store, "manual-2", [3])
    assert int(result.table["deferred"].sum()) == deferred > 0
    assert result.errors == []  # deferred is not failed
    title, body = summary.notification(result, dry_run=False)
    assert title.endswith(f", {deferred} deferred to the next run")
    assert body["deferred"] == deferred


def test_dry_run_notification_says_so(run, demo, store):
    run(3, run_id="dry", dry_run=True)
    title, body = summary.notification(summary.summarize(store, "dry", [3]), dry_run=True)
    assert title == "Dry run: Sync finished: 0 invoices and 0 customers synced"
    assert body["invoices_synced"] == 0 and body["errors"] == []


def test_a_pile_of_edits_after_sync_is_counted_whole_and_read_a_page_at_most(run, demo, store, monkeypatch):
    """Edits of synced invoices pile up over the years and are reported every run: the summary reads at
    most LISTED_AT_MOST per integration (made 2 here) and counts the rest, which the notification says."""
    monkeypatch.setattr(summary, "LISTED_AT_MOST", 2)
    with store.engine.begin() as conn:
        edited = conn.execute(
            text(
                "UPDATE invoices SET updated_at = :later WHERE integration_id = 1 "
                "AND registration_number IS NOT NULL"
            ),
            {"later": "2099-01-01 00:00:00"},
        ).rowcount
    assert edited > 2

    result = summary.summarize(store, "manual-3", [1])

    assert len(result.changed_after_sync) == 2 and result.changed_count == edited
    title, body = summary.notification(result)
    assert f"{edited} changed after sync (not sent)" in title
    body = summary.capped(body)
    assert len(body["changed_after_sync"]) == 2 and body["changed_after_sync_count"] == edited
    assert body["changed_after_sync_more"] == f"and {edited - 2} more"
