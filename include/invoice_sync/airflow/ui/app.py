"""Routes of the Invoice sync page, and how they are protected.

Airflow does not authenticate plugin apps: a mounted route answers anyone unless it asks for a user
itself. So the app depends on Airflow's own security dependencies
(``airflow.api_fastapi.core_api.security``): ``get_user`` for every route (an app-wide dependency, so a
route added later cannot forget it), ``requires_access_dag`` for what the user may do with the manual DAG
(read it to see the page, create its runs to press a button). They accept the ``_token`` cookie the UI
sets at login or a Bearer token, and answer 401/403 otherwise. A browser that is not logged in is sent to
the auth manager's login page instead of seeing a bare 401. OpenAPI docs are off: they would be routes
without those dependencies.

Cross-site requests (:mod:`invoice_sync.airflow.ui.forgery`): every request that is not a GET must come
from the page's own form, in the person's own browser (its origin and the form's anti-forgery token), an
app-wide dependency too; every response says, in its Content-Security-Policy, that the page may be framed
and may post forms on its own origin only.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from invoice_sync.airflow.ui.forgery import (
    CONTENT_SECURITY_POLICY,
    SAFE_METHODS,
    TOKEN_FIELD,
    ForgedRequest,
    check_form_post,
    form_token,
)
from invoice_sync.airflow.ui.page import STATE_LABELS, Filters, build_page
from invoice_sync.airflow.ui.template import page_template
from invoice_sync.airflow.ui.trigger import (
    MANUAL_DAG_ID,
    TriggerError,
    manual_conf,
    trigger_manual_sync,
)
from invoice_sync.store.db import database_url, shared_engine
from invoice_sync.store.repository import SyncStore

URL_PREFIX = "/invoice-sync"
"""Where the plugin mounts the app (Airflow refuses prefixes under /api/v2, /ui, /execution, /auth)."""

AIRFLOW_APP_KEY = "invoice_sync.airflow_app"
"""Scope key under which the mounted app keeps the Airflow app that routed the request to it."""


class _MountedApp(FastAPI):
    """A FastAPI app that remembers its parent: the Airflow app, which also serves ``/api/v2``.

    Starlette replaces ``scope["app"]`` with the mounted app when it hands a request over, so this is the
    one moment the parent is known; the trigger needs it to call the REST API in-process. It is also the
    one place every response passes, errors included: the Content-Security-Policy is added here.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent = scope.get("app")
        if parent is not None and parent is not self:
            scope[AIRFLOW_APP_KEY] = parent

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"content-security-policy"]
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_policy if scope["type"] == "http" else send)


CanSeePage = Depends(requires_access_dag("GET", param_dag_id=MANUAL_DAG_ID))
CanTrigger = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=MANUAL_DAG_ID))


async def _from_the_page(request: Request, user: GetUserDep) -> None:
    """Refuse (403) a request that changes something unless the page's own form sent it."""
    if request.method in SAFE_METHODS:
        return
    form = await request.form()  # Starlette keeps it: the route's own Form() fields read the same
    token = form.get(TOKEN_FIELD)
    try:
        check_form_post(request, user.get_id(), token if isinstance(token, str) else "")
    except ForgedRequest as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None


def create_app() -> FastAPI:
    """The page's app; the plugin mounts it under :data:`URL_PREFIX`. Opens no database until a request."""
    app = _MountedApp(
        title="Invoice sync",
        dependencies=[Depends(get_user), Depends(_from_the_page)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _login_first(request: Request, exc: StarletteHTTPException) -> Response:
        """Send a browser without a session to Airflow's login page, then back here."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and request.method == "GET" and wants_html:
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303)
        return await http_exception_handler(request, exc)

    @app.get("/", response_class=HTMLResponse, dependencies=[CanSeePage], name="page")
    def page(
        request: Request,
        user: GetUserDep,
        started: Annotated[str | None, Query()] = None,
        paused: Annotated[str | None, Query()] = None,
        error: Annotated[str | None, Query()] = None,
    ) -> HTMLResponse:
        try:  # the filters and pages (Filters.parse names each parameter) are read here, not by FastAPI
            filters = Filters.parse(request.query_params)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        view = build_page(_store(), filters)
        flash_ok = None
        if started:
            flash_ok = f"Sync started: run {started}."
            if paused:
                flash_ok += f" The DAG {MANUAL_DAG_ID} is paused: unpause it in Airflow for the run to start."
        html = page_template.render(
            page=view,
            user=user.get_name(),
            states=STATE_LABELS,
            default_filters=Filters(),
            flash_ok=flash_ok,
            flash_run_link=f"../dags/{MANUAL_DAG_ID}/runs/{started}" if started else None,
            flash_error=error,
            form_token=form_token(user.get_id()),
        )
        return HTMLResponse(html)

    @app.post("/integrations/{integration_id}/sync", dependencies=[CanTrigger])
    async def sync_now(
        request: Request, integration_id: int, user: GetUserDep, back: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        return await _trigger(request, user, integration_id, back, retry_failed_only=False)

    @app.post("/integrations/{integration_id}/retry-failed", dependencies=[CanTrigger])
    async def retry_failed(
        request: Request, integration_id: int, user: GetUserDep, back: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        return await _trigger(request, user, integration_id, back, retry_failed_only=True)

    return app


async def _trigger(
    request: Request, user: Any, integration_id: int, back: str, *, retry_failed_only: bool
) -> RedirectResponse:
    """Start the manual DAG for one integration, then go back to the page with the outcome."""
    airflow_app = request.scope.get(AIRFLOW_APP_KEY)
    if airflow_app is None:
        raise HTTPException(status_code=500, detail="The page is not mounted in Airflow's api-server")
    query = _back_query(back)
    try:
        run = await trigger_manual_sync(
            airflow_app,
            _token(request, user),
            manual_conf(integration_id, retry_failed_only=retry_failed_only),
            root_path=getattr(airflow_app, "root_path", "") or "",
        )
    except TriggerError as exc:
        query["error"] = str(exc)
    else:
        query["started"] = run.run_id
        if run.dag_paused:
            query["paused"] = "1"
    # Relative to /invoice-sync/integrations/<id>/<action>, so it holds under any base path.
    return RedirectResponse(f"../../?{urlencode(query)}", status_code=303)


def _token(request: Request, user: Any) -> str:
    """The caller's own JWT, so Airflow checks *their* permissions and records *them* as the trigger.

    Without one (only when an auth manager middleware authenticated the request itself, as
    SimpleAuthManager's all-admins mode does), a token is issued for the same user.
    """
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    cookie = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if cookie:
        return cookie
    return get_auth_manager().generate_jwt(user)


def _back_query(back: str) -> dict[str, str]:
    """The filters and pages the person had, and nothing else: ``back`` comes from the form and is not
    trusted (a value the page would refuse brings them back to the page's defaults)."""
    try:
        filters = Filters.parse(dict(parse_qsl(back)))
    except ValueError:
        return {}
    return dict(parse_qsl(filters.query()))


def _store() -> SyncStore:
    return SyncStore(shared_engine(database_url()))
