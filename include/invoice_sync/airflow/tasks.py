"""Bodies of the plain tasks around the connector operators. Each passes ids and counts, never payloads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from invoice_sync.airflow.runtime import holder_id, open_store, sync_run_id
from invoice_sync.connectors.registry import BY_NAME, TOOLS
from invoice_sync.domain.models import Integration
from invoice_sync.domain.selection import SelectionError, choose
from invoice_sync.store.claims import ClaimHeldError, utcnow

log = logging.getLogger(__name__)

MAX_MAP_LENGTH = 1024
"""Airflow's ``max_map_length``: mapped task instances one task may have."""
MAX_SHARDS = 64
"""Mapped task instances per tool and run at most: beyond that, integrations share instances.

Each instance pays Airflow's task start-up (in a worker: a task process, its API client, the DAG file
parsed again), while a tool runs at most ``MAX_ACTIVE_TIS_PER_TOOL`` (8) instances at once anyway. The
``night`` bench's model showed one instance per integration making start-up the night's bottleneck at
10,000 tenants (5,000 instances); 64 per tool are eight rounds of eight, enough to keep every slot busy
and the last round short, and an installation with up to 64 integrations of a tool keeps one instance
per integration."""


def select_integrations(
    *, auto_sync_only: bool, requested: Sequence[object] = (), all_integrations: bool = False
) -> list[Integration]:
    """The integrations a run works on: nightly = auto-sync ones; manual = those asked for, by id (a
    number) or exact name (text), or every one when ``all_integrations`` is set.

    A selection that chooses nothing for certain (empty, unknown, a shared or digits-only name) fails the
    run before anything is sent, listing the valid choices: the trigger form cannot offer the live list (no
    database access at parse time). See :mod:`invoice_sync.domain.selection`.
    """
    everything = open_store().integrations()
    if auto_sync_only:
        return [i for i in everything if i.auto_sync]
    try:
        return choose(everything, requested, all_integrations=all_integrations)
    except SelectionError as exc:
        raise AirflowFailException(str(exc)) from None


def extract_registered_invoices(
    *, auto_sync_only: bool, requested: Sequence[object] = (), all_integrations: bool = False
) -> list[dict[str, Any]]:
    """Per selected integration: its id, tool and how many registered invoices still lack a number."""
    store = open_store()
    selected = select_integrations(
        auto_sync_only=auto_sync_only, requested=requested, all_integrations=all_integrations
    )
    extracted = [
        {"integration_id": i.id, "tool": i.tool, "unsynced": store.count_candidates(i.id)} for i in selected
    ]
    for item in extracted:
        log.info("integration %(integration_id)s (%(tool)s): %(unsynced)s unsynced registered invoices", item)
    return extracted


def extracted(context: Any) -> list[dict[str, Any]] | None:
    """The extraction result, or ``None`` when that task failed (say, an unknown integration was chosen)."""
    pulled: list[dict[str, Any]] | None = context["ti"].xcom_pull(task_ids="extract_registered_invoices")
    return pulled


def filter_syncable(extracted: list[dict[str, Any]]) -> dict[str, list[list[int]]]:
    """Group the integrations that have work by tool, in at most :data:`MAX_SHARDS` shards per tool.

    With up to 64 integrations of a tool, every shard is one integration (one mapped task instance per
    integration); beyond that, integrations share shards of nearly equal size.
    """
    by_tool: dict[str, list[int]] = {tool: [] for tool in TOOLS}
    for item in extracted:
        if item["tool"] not in BY_NAME:
            log.error("%s", unknown_tool(item))
            continue
        if item["unsynced"] > 0:
            by_tool[item["tool"]].append(item["integration_id"])
    return {tool: shard(ids) for tool, ids in by_tool.items()}


def unknown_tool(item: dict[str, Any]) -> str:
    """Why an extracted integration has no connector task: its tool is not one this installation has."""
    return (
        f"integrations.tool of integration #{item['integration_id']} is {item['tool']!r}, which this "
        f"installation has no connector for (it has {', '.join(TOOLS)}); correct the integration in the app"
    )


def shard(ids: list[int], limit: int = MAX_SHARDS) -> list[list[int]]:
    """``ids`` in at most ``limit`` (never above :data:`MAX_MAP_LENGTH`) shards whose sizes differ by one
    at most."""
    if not ids:
        return []
    count = min(len(ids), limit, MAX_MAP_LENGTH)
    size, larger = divmod(len(ids), count)
    bounds = [n * size + min(n, larger) for n in range(count + 1)]
    return [ids[bounds[n] : bounds[n + 1]] for n in range(count)]


def write_back_registration_numbers(extracted: list[dict[str, Any]] | None, context: Any) -> dict[str, int]:
    """Copy every booked registration number onto its invoice, for each selected integration.

    Also picks up bookings an earlier run recorded but could not write back. An integration another run
    holds is left to that run.
    """
    store = open_store()
    written: dict[str, int] = {}
    for item in extracted or []:
        integration_id = item["integration_id"]
        try:
            claim = store.acquire(integration_id, holder_id(context))
        except ClaimHeldError as exc:
            log.warning("%s", exc)
            continue
        try:
            written[str(integration_id)] = store.write_back(claim)
        finally:
            store.release(claim)
    log.info("registration numbers written back per integration: %s", written)
    return written


def summarize_run(extracted: list[dict[str, Any]] | None, context: Any) -> dict[str, Any]:
    from invoice_sync.engine.summary import summarize  # pandas: only when the task runs

    store = open_store()
    run_key = sync_run_id(context)
    summary = summarize(store, run_key, [item["integration_id"] for item in extracted or []])
    log.info("Sync summary for %s\n%s", run_key, summary.as_text())
    for item in summary.changed_after_sync:
        log.warning(
            "%(integration)s: invoice %(number)s was changed after sync (registration number "
            "%(registration_number)s); the change was not sent",
            item,
        )
    if summary.changed_count > len(summary.changed_after_sync):
        log.warning(
            "and %d more invoices changed after sync: the Invoice sync page lists every one",
            summary.changed_count - len(summary.changed_after_sync),
        )
    dag_run = context["dag_run"]
    started = getattr(dag_run, "start_date", None) or utcnow()
    store.save_run(
        dag_run.dag_id,
        run_key,
        getattr(dag_run.run_type, "value", str(dag_run.run_type)),
        getattr(dag_run, "triggering_user_name", None),
        summary.counts(),
        started,
    )
    counts = summary.counts()
    return {k: counts[k] for k in ("invoices_synced", "customers_created", "errors")}


def notify(
    extracted: list[dict[str, Any]] | None, context: Any, *, dry_run: bool, webhook_conn_id: str
) -> int:
    """Write the bell notification for the person who started the run, and post it to a webhook if set."""
    from invoice_sync.engine.summary import capped, notification, summarize  # pandas: only when it runs

    store = open_store()
    integration_ids = [item["integration_id"] for item in extracted or []]
    summary = summarize(store, sync_run_id(context), integration_ids)
    title, body = notification(summary, dry_run=dry_run)
    if extracted is None:
        title = "Sync could not start: no invoice was sent"
        body["errors"] = [
            {
                "integration": None,
                "invoice": None,
                "error_class": "config",
                "text": "The run stopped before syncing, for example because no integration was chosen, "
                "or one that does not exist, or a name two integrations share. The run's log in Airflow "
                "(task extract_registered_invoices) says which.",
                "hint": "Start the sync again choosing integrations by id (a number) or exact name, or "
                "with all_integrations switched on.",
            }
        ]
    # An integration whose tool has no connector never reached a connector task: no invoice says why.
    orphans = [item for item in extracted or [] if item["tool"] not in BY_NAME]
    body["errors"] += [
        {
            "integration": item["integration_id"],
            "invoice": None,
            "error_class": "config",
            "text": unknown_tool(item),
            "hint": "Correct the integration's tool in the app, then sync again.",
        }
        for item in orphans
    ]
    if orphans:
        title += f", {len(orphans)} integration{'s' if len(orphans) != 1 else ''} without a connector"
    dag_run = context["dag_run"]
    recipient = getattr(dag_run, "triggering_user_name", None)
    body["run_id"] = sync_run_id(context)
    body = capped(body)
    run_type = getattr(dag_run, "run_type", "manual")  # only the manual DAG notifies
    notice = store.notify_run(
        dag_run.dag_id,
        sync_run_id(context),
        run_type=str(getattr(run_type, "value", run_type)),
        started_at=getattr(dag_run, "start_date", None) or utcnow(),
        recipient=recipient,
        title=title,
        body=body,
        integration_id=integration_ids[0] if len(integration_ids) == 1 else None,
    )
    if not notice.created:
        log.info("notification %s of this run was written by an earlier try; not written again", notice.id)
    else:
        log.info("notification %s for %s: %s", notice.id, recipient or "(no user)", title)
    if notice.posted:
        log.info("notification %s was already posted to the webhook by an earlier try", notice.id)
    elif _post_webhook(webhook_conn_id, title, body, context):
        store.webhook_posted(dag_run.dag_id, sync_run_id(context))
    return notice.id


class WebhookPostError(Exception):
    """Posting the notification failed. The message names the webhook with its secrets masked."""


WEBHOOK_TIMEOUT_S = 10.0
"""How long a webhook post may take: the bell entry is written already, so a slow chat service only delays
the task, and a hung one must not hold it forever."""


def _post_webhook(conn_id: str, title: str, body: dict[str, Any], context: Any) -> bool:
    """POST the notification through the http provider's hook when a connection for it exists; True when
    it was sent.

    A webhook URL is a credential (Slack's ``/services/T/B/<secret>``, a token in the query, a password),
    so its secret parts are registered with Airflow's secrets masker before the post, the post goes through
    the hook's session directly (``HttpHook.run`` and ``HttpNotifier`` log the full URL when the connection
    fails or at debug level), and the error raised when the post fails has them masked.
    """
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception:  # no webhook configured: the bell is enough
        log.info("no %r connection; notification not posted to a webhook", conn_id)
        return False
    secrets = webhook_secrets(connection)
    for secret in secrets:
        mask_secret(secret)
    hook = HttpHook(method="POST", http_conn_id=conn_id)
    try:
        session = hook.get_conn()
        # Chat webhooks show ``text`` only and refuse a body without it (Slack: 400 invalid_payload).
        payload = {"title": title, "text": title, **body}
        response = session.post(hook.url_from_endpoint(""), json=payload, timeout=WEBHOOK_TIMEOUT_S)
        hook.check_response(response)
    except Exception as exc:
        failure = mask(f"{type(exc).__name__}: {exc}", secrets)
    else:
        log.info("notification posted to the %r webhook", conn_id)
        return True
    # raised outside the except block: the original exception, whose text carries the URL, is not chained
    raise WebhookPostError(f"posting the notification to the {conn_id!r} webhook failed: {failure}")


def webhook_secrets(connection: Any) -> list[str]:
    """The parts of a webhook connection that are credentials, longest first: its password (also one
    written into the host as ``user:password@``), every path segment and the whole path (Slack, Discord
    and Teams put the token there), and the query's values."""
    from urllib.parse import parse_qsl, urlsplit

    secrets = {connection.password or ""}
    host = str(connection.host or "")
    parts = urlsplit(host if "://" in host else f"//{host}")
    secrets.add(parts.password or "")
    if parts.path.strip("/"):
        secrets.update({parts.path, f"{parts.path}?{parts.query}" if parts.query else ""})
        secrets.update(segment for segment in parts.path.split("/") if len(segment) >= MIN_SECRET_LENGTH)
    secrets.update(value for _, value in parse_qsl(parts.query))
    secrets.update(str(connection.schema or "").strip("/").split("/"))  # a path given as the schema
    secrets.discard("http")
    secrets.discard("https")
    return sorted((s for s in secrets if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


MIN_SECRET_LENGTH = 4
"""Shorter parts are not masked: masking "v1" or "api" would garble every message and hide nothing."""


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
