"""Bodies of the plain tasks around the connector operators. Each passes ids and counts, never payloads."""

from __future__ import annotations

import logging
import math
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
    """Group the integrations that have work by tool, in shards that keep every tool under max_map_length.

    With up to 1024 integrations of a tool, every shard is one integration (one mapped task instance per
    integration); beyond that, integrations share shards rather than raising Airflow's limit.
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


def shard(ids: list[int], limit: int = MAX_MAP_LENGTH) -> list[list[int]]:
    if not ids:
        return []
    size = math.ceil(len(ids) / limit)
    return [ids[i : i + size] for i in range(0, len(ids), size)]


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
    from invoice_sync.engine.summary import notification, summarize  # pandas: only when the task runs

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
    recipient = getattr(context["dag_run"], "triggering_user_name", None)
    body["run_id"] = sync_run_id(context)
    notification_id = store.notify(
        recipient=recipient,
        title=title,
        body=body,
        integration_id=integration_ids[0] if len(integration_ids) == 1 else None,
    )
    log.info("notification %s for %s: %s", notification_id, recipient or "(no user)", title)
    _post_webhook(webhook_conn_id, title, body, context)
    return notification_id


def _post_webhook(conn_id: str, title: str, body: dict[str, Any], context: Any) -> None:
    """Send the notification through the http provider's notifier when a connection for it exists."""
    from airflow.providers.http.notifications.http import HttpNotifier
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # no webhook configured: the bell is enough
        log.info("no %r connection; notification not posted to a webhook", conn_id)
        return
    HttpNotifier(http_conn_id=conn_id, endpoint="", json={"title": title, **body}).notify(context)
