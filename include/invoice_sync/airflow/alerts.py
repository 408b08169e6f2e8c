"""Alerts for the people who run the sync: a nightly task that fails posts to the operators' webhook.

The nightly has no bookkeeper waiting for it, so its failures ring no bell in the app (the product
promises a silent nightly); the operators hear instead, through the http connection named by
``INVOICE_SYNC_ALERT_CONN_ID`` (default ``invoice_sync_alerts``). No such connection: nothing is sent.
The connection's type chooses the channel: ``smtp`` sends an e-mail through Airflow's SMTP provider to the
addresses in its extra's ``to``; any other type is a webhook the alert is POSTed to as JSON (with a
``text`` line, which chat webhooks such as Slack's and Mattermost's show). The alert names the integrations
of the failed task with their error class (from the ledger, the same classes the page and the bell show),
the exception, and the link to the task's log in Airflow (``[api] base_url``).
"""

from __future__ import annotations

import logging
from typing import Any

from invoice_sync import config

log = logging.getLogger(__name__)

MAX_NAMED = 20
"""Integrations one alert names; a larger shard says "and N more"."""
MAX_MESSAGE = 1000
"""Characters of the exception's text an alert carries; the log link has the rest."""


def alert_operators(context: Any) -> None:
    """``on_failure_callback`` of the nightly's tasks: called once a task has failed for good (not on a
    try that will be retried). Never raises: a broken alert must not change what the run did."""
    from airflow.sdk import BaseHook

    from invoice_sync.airflow.tasks import _post_webhook  # the project's one webhook POST (masks secrets)

    conn_id = config.alert_conn_id()
    try:
        try:
            conn_type = BaseHook.get_connection(conn_id).conn_type
        except Exception:  # not configured: operators chose to watch Airflow's own UI instead
            log.info("no %r connection; the failed task alerts nobody", conn_id)
            return
        alert = failure_alert(context)
        title = alert.pop("title")
        if conn_type == "smtp":
            _email(conn_id, title, alert)
        else:
            _post_webhook(
                conn_id, title, {"text": f"{title}: {alert['message']} {alert['log_url']}", **alert}, context
            )
    except Exception:
        log.exception("the alert for the failed task could not be sent")


def _email(conn_id: str, title: str, alert: dict[str, Any]) -> None:
    """Send ``alert`` through the SMTP provider's hook, to the connection extra's ``to`` (addresses
    separated by commas), from its ``from_email``: the provider's own connection form has both places."""
    from html import escape

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=conn_id) as hook:
        recipients = str(hook.conn.extra_dejson.get("to") or "").strip()
        if not recipients:
            raise ValueError(f"the {conn_id!r} smtp connection names no recipients: set its extra 'to'")
        rows = "".join(
            f"<li>{escape(item['integration'])}: {escape(item['error_class'])}</li>"
            for item in alert["integrations"]
        )
        more, link = alert["more_integrations"], escape(str(alert["log_url"]))
        html = (
            f"<p>{escape(title)}.</p><ul>{rows}</ul>"
            + (f"<p>and {more} more integrations</p>" if more else "")
            + f"<p>{escape(str(alert['exception']))}: {escape(alert['message'])}</p>"
            + f'<p>Task log: <a href="{link}">{link}</a></p>'
        )
        hook.send_email_smtp(to=recipients, subject=title, html_content=html)
    log.info("alert e-mailed through the %r connection", conn_id)


def failure_alert(context: Any) -> dict[str, Any]:
    """The alert's JSON body (``title`` included) for the failed task instance of ``context``."""
    ti = context["ti"]
    exception = context.get("exception")
    integrations = _failed_integrations(context, exception)
    names = [item["integration"] for item in integrations]
    title = f"Nightly sync: task {ti.task_id} failed"
    if names:
        more = len(names) - MAX_NAMED
        title += " for " + ", ".join(names[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")
    return {
        "kind": "invoice_sync_alert",
        "title": title,
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "integrations": integrations[:MAX_NAMED],
        "more_integrations": max(0, len(integrations) - MAX_NAMED),
        "exception": type(exception).__name__ if exception is not None else None,
        "message": str(exception or "")[:MAX_MESSAGE],
        "log_url": ti.log_url,
    }


def _failed_integrations(context: Any, exception: BaseException | None) -> list[dict[str, Any]]:
    """The failed task's integrations, each with the error class of the refusal the task failed with.

    The connector task fails with the text of each integration's refusal (``name: message``), and the
    ledger keeps each refused invoice's class and message; the run that first refused them wrote them
    (a later nightly does not refuse unchanged invoices again), so the message, not the run, matches them.
    An integration without a matching refusal is named with the exception's class.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from invoice_sync.airflow.runtime import open_store
    from invoice_sync.store.models import LedgerRow, LedgerState

    ids = [int(i) for i in getattr(context["task"], "integration_ids", None) or []]
    if not ids:
        return []
    store = open_store()
    text = str(exception or "")
    with Session(store.engine) as session:
        refusals = session.execute(
            select(LedgerRow.integration_id, LedgerRow.error_class, LedgerRow.error_message)
            .where(LedgerRow.integration_id.in_(ids), LedgerRow.state == LedgerState.REJECTED)
            .distinct()
        ).all()
    fallback = type(exception).__name__ if exception is not None else "unknown"
    named = []
    for integration in store.integrations(ids):
        classes = sorted(
            {
                str(error_class)
                for integration_id, error_class, message in refusals
                if integration_id == integration.id and message and f"{integration.name}: {message}" in text
            }
        )
        named.append({"integration": integration.name, "error_class": ", ".join(classes) or fallback})
    return named
