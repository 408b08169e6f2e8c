"""One factory for both sync DAGs, so the nightly and the manual DAG cannot drift apart.

Parsing imports no HTTP client and no pandas (the task modules import those when they run), which keeps
parsing fast and free of I/O.

Task graph: ``extract_registered_invoices`` -> ``filter_syncable`` -> one TaskGroup per tool whose
connector operator is mapped over that tool's integrations (one task instance per integration, or per
shard of them beyond ``tasks.MAX_SHARDS``, in the tool's pool) -> ``write_back_registration_numbers``
-> ``summarize``; the manual DAG adds ``notify``, which runs whatever happened upstream. A nightly task
that fails alerts the operators (:mod:`invoice_sync.airflow.alerts`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, ExceptionRetryPolicy, Param, RetryAction, RetryRule, TaskGroup, TriggerRule, task

from invoice_sync.airflow import alerts, tasks
from invoice_sync.airflow.operators import SyncIntegrationsOperator
from invoice_sync.airflow.pools import pool_name
from invoice_sync.connectors.registry import TOOLS

WEBHOOK_CONN_ID = "invoice_sync_webhook"

# Data and configuration errors must never be retried: the tool refuses the same input again, and Exact
# blocks an app key that sends more than ten failing calls an hour to one endpoint.
SYNC_RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="invoice_sync.domain.errors.AuthError", action=RetryAction.FAIL, reason="reconnect"
        ),
        RetryRule(
            exception="invoice_sync.domain.errors.ConfigError", action=RetryAction.FAIL, reason="fix settings"
        ),
        RetryRule(
            exception="invoice_sync.domain.errors.DataError", action=RetryAction.FAIL, reason="fix data"
        ),
        RetryRule(
            exception="invoice_sync.store.claims.ClaimHeldError",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=3),
            reason="another run holds the integration",
        ),
        RetryRule(
            exception="invoice_sync.domain.errors.RateLimitedError",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=1),
        ),
    ]
)

# Sizes of the manual DAG's Params, checked by Airflow against every run's conf before a task starts.
NAME_LENGTH = 255
"""The longest integration name (the app's ``integrations.name`` column)."""
NUMBER_LENGTH = 64
"""The longest invoice number (the app's ``invoices.number`` column)."""
MAX_CHOSEN = 1000
"""Integrations one run may name; more than that is ``all_integrations``."""
MAX_INVOICE_NUMBERS = 1000
"""Invoice numbers one run may name; a larger set is a run over whole integrations."""
MAX_ACTIVE_TIS_PER_TOOL = 8
"""A tool's task instances one DAG run runs at once (beside its pool, which counts across runs)."""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "invoice-sync",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
}


def build_sync_dag(
    *,
    dag_id: str,
    doc_md: str | None,
    manual: bool,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> DAG:
    default_args = DEFAULT_ARGS
    if not manual:  # the nightly's failures alert the operators; a manual run's notify tells its bookkeeper
        default_args = {**DEFAULT_ARGS, "on_failure_callback": alerts.alert_operators}
    params: dict[str, Param] = {}
    if manual:
        params = {
            "integrations": Param(
                [],
                type="array",
                items={"type": ["integer", "string"], "minimum": 1, "minLength": 1, "maxLength": NAME_LENGTH},
                maxItems=MAX_CHOSEN,
                title="Integrations",
                description=(
                    'Integration ids (numbers) or exact names (text), e.g. [1, "Atelier Demo BV"]. The '
                    "Invoice sync page lists them. Leave empty only with All integrations switched on."
                ),
            ),
            "all_integrations": Param(
                False,
                type="boolean",
                title="All integrations",
                description="Sync every integration, also those without automatic sync (Integrations empty).",
            ),
            "invoice_numbers": Param(
                [],
                type="array",
                items={"type": "string", "minLength": 1, "maxLength": NUMBER_LENGTH},
                maxItems=MAX_INVOICE_NUMBERS,
                title="Invoice numbers",
                description="Only these invoices (optional), one per line.",
            ),
            "dry_run": Param(
                False, type="boolean", title="Dry run", description="Validate and look up only."
            ),
            "retry_failed_only": Param(
                False,
                type="boolean",
                title="Retry failed only",
                description="Only failed or deferred invoices.",
            ),
        }
    with DAG(
        dag_id=dag_id,
        doc_md=doc_md,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz=timezone),
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        params=params,
        tags=["invoice-sync", "manual" if manual else "nightly"],
        render_template_as_native_obj=True,
    ) as dag:

        @task
        def extract_registered_invoices(**context: Any) -> list[dict[str, Any]]:
            if not manual:  # the nightly: every integration with auto_sync on
                return tasks.extract_registered_invoices(auto_sync_only=True)
            params = context["params"]
            return tasks.extract_registered_invoices(
                auto_sync_only=False,
                requested=params.get("integrations") or [],
                all_integrations=bool(params.get("all_integrations")),
            )

        @task
        def filter_syncable(extracted: list[dict[str, Any]]) -> dict[str, list[list[int]]]:
            return tasks.filter_syncable(extracted)

        # The closing tasks run whatever happened upstream (ALL_DONE), so they pull the extraction's
        # result themselves: an XCom argument from a failed task would fail them before they start.
        @task(trigger_rule=TriggerRule.ALL_DONE)
        def write_back_registration_numbers(**context: Any) -> dict[str, int]:
            return tasks.write_back_registration_numbers(tasks.extracted(context), context)

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def summarize(**context: Any) -> dict[str, Any]:
            return tasks.summarize_run(tasks.extracted(context), context)

        @task
        def integrations_of_tool(syncable: dict[str, list[list[int]]], tool: str) -> list[list[int]]:
            """This tool's shards; Airflow cannot map over one key of another task's result directly."""
            return syncable.get(tool, [])

        extracted = extract_registered_invoices()
        syncable = filter_syncable(extracted)  # type: ignore[arg-type]  # an XComArg here, its value at run time
        groups = []
        for tool in TOOLS:
            with TaskGroup(group_id=tool, tooltip=f"Sync to {tool}") as group:
                shards = integrations_of_tool(syncable, tool)  # type: ignore[arg-type]  # an XComArg here, its value at run time
                SyncIntegrationsOperator.partial(
                    task_id="sync",
                    tool=tool,
                    dry_run="{{ params.dry_run }}" if manual else False,
                    invoice_numbers="{{ params.invoice_numbers }}" if manual else (),
                    retry_failed_only="{{ params.retry_failed_only }}" if manual else False,
                    retry_rejected=manual,
                    retry_policy=SYNC_RETRY_POLICY,
                    max_active_tis_per_dagrun=MAX_ACTIVE_TIS_PER_TOOL,
                    pool=pool_name(tool),
                ).expand(integration_ids=shards)
            groups.append(group)
        written = write_back_registration_numbers()
        groups >> written
        summary = summarize()
        written >> summary

        if manual:

            @task(trigger_rule=TriggerRule.ALL_DONE)
            def notify(**context: Any) -> int:
                return tasks.notify(
                    tasks.extracted(context),
                    context,
                    dry_run=bool(context["params"].get("dry_run")),
                    webhook_conn_id=WEBHOOK_CONN_ID,
                )

            summary >> notify()
    return dag
