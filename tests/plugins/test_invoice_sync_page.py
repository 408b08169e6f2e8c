"""The Invoice sync page as Airflow serves it: refused without a login, useful with one, and its buttons
start real runs of ``invoice_sync_manual`` through the REST API with the right ``conf``."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from page_world import Api, Seeded

from invoice_sync.connectors.registry import descriptor_of

PAGE = "/invoice-sync/"
TOKEN_FIELD = "form_token"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
ROUTES = [
    ("GET", PAGE),
    ("POST", "/invoice-sync/integrations/1/sync"),
    ("POST", "/invoice-sync/integrations/1/retry-failed"),
]


def test_every_route_of_the_page_refuses_anonymous_requests(api: Api) -> None:
    from starlette.routing import Mount

    mounted = next(r for r in api.client.app.routes if isinstance(r, Mount) and r.path == "/invoice-sync")
    paths = {route.path for route in mounted.app.routes}  # type: ignore[attr-defined]  # a Mount's app has routes
    assert paths == {
        "/",
        "/integrations/{integration_id}/sync",
        "/integrations/{integration_id}/retry-failed",
    }
    for method, url in ROUTES:
        response = api.client.request(method, url, follow_redirects=False)
        assert response.status_code in (401, 403), (method, url, response.status_code)
        assert "Invoice sync" not in response.text
    # a forged token is refused too
    forged = api.client.get(PAGE, headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.status_code in (401, 403)


def test_a_browser_without_a_session_is_sent_to_the_login_page(api: Api) -> None:
    response = api.client.get(PAGE, headers={"Accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).path.endswith("/auth/login")


def test_the_page_lists_unsynced_invoices_with_error_and_hint(api: Api, seeded: Seeded) -> None:
    response = api.client.get(PAGE, headers=api.admin)
    assert response.status_code == 200, response.text[:500]
    html = response.text
    assert "Signed in as <strong>admin</strong>" in html
    rejected = [row for i in (1, 2, 3) for row in seeded.store.unsynced_invoices(i, state="rejected")]
    assert rejected, "the sync should have left rejections"
    from invoice_sync.domain.hints import fix_hint

    for row in rejected:
        assert f">{row.number}" in html
        assert _escaped(row.error_message or "") in html
        assert _escaped(fix_hint(row.error_class, row.error_message)) in html
    # the deferred invoice, the invoice changed after sync and the bell
    assert seeded.deferred_number in html and seeded.changed_number in html
    assert "Sync finished: 12 invoices and 3 customers synced, 1 error" in html
    assert "The bell&#39;s hint." in html
    # counts at a glance, per integration
    assert re.search(r"<strong>\d+</strong> synced", html)
    # an invoice before the cut-over is never synced, and the page says so rather than "not tried yet"
    assert seeded.seeded.before_cutover and "dated before the cut-over date: never synced" in html


def test_filters_by_integration_tool_and_state(api: Api, seeded: Seeded) -> None:
    only_one = api.client.get(PAGE, params={"integration": 2}, headers=api.admin).text
    assert 'id="int-2"' in only_one and 'id="int-1"' not in only_one and 'id="int-3"' not in only_one

    other_tool = api.client.get(PAGE, params={"tool": "yuki"}, headers=api.admin).text
    assert "No integration matches these filters." in other_tool
    # The tool filter's choices come from the registry: the tool's name as value, its label as text, and
    # only tools that have integrations (this world seeds Exact Online's).
    exact = descriptor_of("exact_online")
    assert f'<option value="{exact.name}" >{exact.label}</option>' in only_one
    assert 'value="yuki"' not in only_one

    deferred = api.client.get(PAGE, params={"state": "deferred"}, headers=api.admin).text
    assert seeded.deferred_number in deferred
    assert "<caption>Not synced" not in deferred

    rejected = api.client.get(PAGE, params={"integration": 1, "state": "rejected"}, headers=api.admin).text
    numbers = {row.number for row in seeded.store.unsynced_invoices(1, state="rejected")}
    others = {row.number for row in seeded.store.unsynced_invoices(1, state="new")}
    assert all(f">{n}" in rejected for n in numbers)
    assert not any(f'<th scope="row">{n}' in rejected for n in others)

    bad = api.client.get(PAGE, params={"state": "nonsense"}, headers=api.admin)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("action", "expected_conf"),
    [
        ("sync", {"integrations": [1]}),
        ("retry-failed", {"integrations": [1], "retry_failed_only": True}),
    ],
)
def test_buttons_start_the_manual_dag_through_the_rest_api(
    api: Api, action: str, expected_conf: dict[str, object]
) -> None:
    response = api.client.post(
        f"/invoice-sync/integrations/1/{action}",
        data={"back": "tool=exact_online&evil=1&rows=10&not_synced_page=3", TOKEN_FIELD: _form_token(api)},
        headers={**api.admin, **SAME_ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert "error" not in query, query
    assert query["tool"] == ["exact_online"] and "evil" not in query
    assert query["rows"] == ["10"] and query["not_synced_page"] == ["3"]  # back on the same page
    run_id = query["started"][0]

    run = api.client.get(f"/api/v2/dags/invoice_sync_manual/dagRuns/{run_id}", headers=api.admin)
    assert run.status_code == 200, run.text
    assert run.json()["conf"] == expected_conf
    assert run.json()["triggering_user_name"] == "admin"

    back = api.client.get(PAGE, params={"started": run_id, "paused": "1"}, headers=api.admin).text
    assert f"Sync started: run {run_id}." in back


def test_a_viewer_sees_the_page_but_cannot_start_a_run(api: Api) -> None:
    assert api.client.get(PAGE, headers=api.viewer).status_code == 200
    before = _manual_runs(api)
    response = api.client.post(  # from the page itself, with the viewer's own token: refused for the role
        "/invoice-sync/integrations/1/sync",
        data={TOKEN_FIELD: _form_token(api, api.viewer)},
        headers={**api.viewer, **SAME_ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "anti-forgery" not in response.text and "origin" not in response.text
    assert _manual_runs(api) == before


PAGE_HOST = "https://airflow.example.com"
"""The page as a company serves it, so a sibling subdomain (``evil.example.com``) is same-site."""
EVIL = "https://evil.example.com"


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        pytest.param(
            {"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.test"}, "own", id="cross-site"
        ),
        pytest.param({"Sec-Fetch-Site": "same-site", "Origin": EVIL}, "own", id="sibling-subdomain"),
        pytest.param({"Sec-Fetch-Site": "none"}, "own", id="typed-url"),
        pytest.param({}, "own", id="no-origin-at-all"),
        pytest.param({"Origin": EVIL}, "own", id="other-origin"),
        pytest.param({"Origin": "null"}, "own", id="opaque-origin"),
        pytest.param({"Referer": f"{EVIL}/invoice-sync/"}, "own", id="other-referer"),
        pytest.param({"Origin": "http://airflow.example.com"}, "own", id="same-host-other-scheme"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, None, id="no-token"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, "forged", id="wrong-token"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, "viewer", id="another-users-token"),
    ],
)
@pytest.mark.parametrize("action", ["sync", "retry-failed"])
def test_a_cross_site_form_post_is_refused(
    api: Api, action: str, headers: dict[str, str], token: str | None
) -> None:
    """Only the page's own forms start runs: a post from another site, a sibling subdomain, or anywhere the
    browser cannot vouch for, and a post without the session's anti-forgery token, are refused (403) and
    Airflow has no new run afterwards."""
    tokens = {"own": _form_token(api), "viewer": _form_token(api, api.viewer), "forged": "0" * 64}
    data = {"back": ""} if token is None else {"back": "", TOKEN_FIELD: tokens[token]}
    before = _manual_runs(api)
    response = api.client.post(
        f"{PAGE_HOST}/invoice-sync/integrations/1/{action}",
        data=data,
        headers={**api.admin, **headers},
        follow_redirects=False,
    )
    assert response.status_code == 403, (response.status_code, response.headers.get("location"))
    assert _manual_runs(api) == before, "a refused post started a run"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-origin", "Origin": PAGE_HOST}, id="fetch-metadata"),
        pytest.param({"Origin": PAGE_HOST}, id="origin-only"),
        pytest.param({"Referer": f"{PAGE_HOST}/invoice-sync/?tool=exact_online"}, id="referer-only"),
    ],
)
def test_a_same_origin_form_post_with_the_token_starts_the_run(api: Api, headers: dict[str, str]) -> None:
    """The page's own form, from a browser that sends fetch metadata, or an older one that sends only
    ``Origin`` or ``Referer``."""
    before = _manual_runs(api)
    response = api.client.post(
        f"{PAGE_HOST}/invoice-sync/integrations/1/sync",
        data={"back": "", TOKEN_FIELD: _form_token(api)},
        headers={**api.admin, **headers},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]
    assert "started" in parse_qs(urlsplit(response.headers["location"]).query)
    assert _manual_runs(api) == before + 1


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("GET", PAGE, "admin"),
        ("GET", PAGE, None),
        ("GET", "/invoice-sync/nowhere", "admin"),
        ("POST", "/invoice-sync/integrations/1/sync", "admin"),
    ],
)
def test_every_response_of_the_page_forbids_foreign_frames_and_form_targets(
    api: Api, method: str, url: str, headers: str | None
) -> None:
    """Shown in Airflow's own iframe (same origin) only, and its forms post to itself only."""
    response = api.client.request(method, url, headers=api.admin if headers else {}, follow_redirects=False)
    policy = response.headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives.get("frame-ancestors") == ["'self'"], (response.status_code, policy)
    assert directives.get("form-action") == ["'self'"], (response.status_code, policy)


def _form_token(api: Api, headers: dict[str, str] | None = None) -> str:
    """The anti-forgery token the page puts in its forms for this user."""
    html = api.client.get(PAGE, headers=headers or api.admin).text
    found = set(re.findall(rf'name="{TOKEN_FIELD}" value="([^"]*)"', html))
    assert len(found) == 1 and all(found), f"the page's forms carry no single {TOKEN_FIELD}: {found}"
    return found.pop()


def _manual_runs(api: Api) -> int:
    """How many runs of the manual DAG Airflow has, through its REST API."""
    runs = api.client.get("/api/v2/dags/invoice_sync_manual/dagRuns?limit=1", headers=api.admin)
    assert runs.status_code == 200, runs.text
    return int(runs.json()["total_entries"])


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_the_counts_at_a_glance_match_the_invoices(seeded: Seeded) -> None:
    """Synced / not synced / drafts per integration, counted row by row the slow way."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from invoice_sync.store.models import InvoiceRow

    expected: dict[int, dict[str, int]] = {}
    with Session(seeded.store.engine) as session:
        for row in session.scalars(select(InvoiceRow)):
            bucket = (
                "drafts"
                if row.status == "draft"
                else "synced"
                if row.registration_number is not None
                else "unsynced"
            )
            per_integration = expected.setdefault(row.integration_id, {})
            per_integration[bucket] = per_integration.get(bucket, 0) + 1
    counts = seeded.store.state_counts()
    for integration_id, buckets in expected.items():
        got = {name: counts[integration_id].get(name, 0) for name in ("drafts", "synced", "unsynced")}
        assert got == {name: buckets.get(name, 0) for name in got}, integration_id


BROKEN_SETTINGS = {  # integration id -> (settings as the app stored them, what the page must say)
    901: ({"division": "abc", "journal": "70"}, "division is 'abc'; it must be the division number"),
    902: (["journal", "70"], "the settings are ['journal', '70'], not a JSON object"),
    903: ('{"division": 12', """the settings are '{"division": 12', which is not JSON"""),
}
NOT_JSON = 903
"""Written as raw text: SQLite keeps a JSON column as text, which the app may fill with anything."""


def test_one_integrations_malformed_settings_do_not_break_the_page(api: Api, seeded: Seeded) -> None:
    """A mistyped setting is that integration's configuration error, named on the page above its (empty)
    lists; the page still renders every other integration (issue 14, item 3)."""
    from sqlalchemy import delete, insert, text
    from sqlalchemy.orm import Session

    from invoice_sync.store.claims import utcnow
    from invoice_sync.store.models import IntegrationRow

    rows = [
        {
            "id": integration_id,
            "name": f"Broken settings {integration_id}",
            "tool": "exact_online",
            "conn_id": "exact_demo",
            "auto_sync": False,
            "settings": None if integration_id == NOT_JSON else settings,
            "updated_at": utcnow(),
        }
        for integration_id, (settings, _) in BROKEN_SETTINGS.items()
    ]
    with Session(seeded.store.engine) as session, session.begin():
        session.execute(insert(IntegrationRow), rows)
        session.execute(
            text("UPDATE integrations SET settings = :raw WHERE id = :id"),
            {"raw": BROKEN_SETTINGS[NOT_JSON][0], "id": NOT_JSON},
        )
    try:
        response = api.client.get(PAGE, headers=api.admin)
        assert response.status_code == 200, response.text[:500]
        html = response.text
        for integration_id in (1, 2, 3, *BROKEN_SETTINGS):
            assert f'id="int-{integration_id}"' in html, integration_id
        for integration_id, (_, fragment) in BROKEN_SETTINGS.items():
            assert (
                f"Cannot be synced: integrations.settings of integration #{integration_id} cannot be read: "
                f"{_escaped(fragment)}"
            ) in html
        one = api.client.get(PAGE, params={"integration": 901}, headers=api.admin)
        assert one.status_code == 200 and "division is &#39;abc&#39;" in one.text
    finally:
        with Session(seeded.store.engine) as session, session.begin():
            session.execute(delete(IntegrationRow).where(IntegrationRow.id.in_(list(BROKEN_SETTINGS))))
