"""The connector operator: syncs the integrations of one tool that one mapped task instance was given."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from invoice_sync.domain.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from invoice_sync.domain.models import Integration
    from invoice_sync.domain.ports import Connector
    from invoice_sync.engine.sync import IntegrationSync, SyncOptions
    from invoice_sync.store.repository import SyncStore

log = logging.getLogger(__name__)


class SyncIntegrationsOperator(BaseOperator):
    """Sync each of ``integration_ids`` (all of tool ``tool``) through the engine.

    Mapped once per integration (or per shard of integrations when a tool has more than
    ``tasks.MAX_SHARDS``). One integration's failure never stops the next one; afterwards the task fails
    without retry when only authorisation/configuration problems remain (retrying cannot fix those and
    Exact blocks keys that keep failing), and fails with retry for anything transient.

    :param tool: the accounting tool, a name in :data:`invoice_sync.connectors.registry.TOOLS`.
    :param integration_ids: the integrations to sync.
    :param dry_run: validate and look up, but push and write nothing.
    :param invoice_numbers: restrict the run to these invoice numbers.
    :param retry_failed_only: only invoices that failed, were deferred or are unknown.
    :param retry_rejected: resend tool rejections even when nothing changed (manual runs).
    """

    template_fields: Sequence[str] = (
        "integration_ids",
        "is_dry_run",
        "invoice_numbers",
        "retry_failed_only",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        tool: str,
        integration_ids: Sequence[int],
        dry_run: bool | str = False,
        invoice_numbers: Sequence[str] | str = (),
        retry_failed_only: bool | str = False,
        retry_rejected: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tool = tool
        self.integration_ids = integration_ids
        # not ``self.dry_run``: that is BaseOperator's method (render templates only), which Airflow calls
        self.is_dry_run = dry_run
        self.invoice_numbers = invoice_numbers
        self.retry_failed_only = retry_failed_only
        self.retry_rejected = retry_rejected

    def execute(self, context: Any) -> list[dict[str, Any]]:
        # imported here, not at module level: the DAG files import this module at parse time
        from invoice_sync.airflow.runtime import open_budgets, open_store, open_vault
        from invoice_sync.connectors.registry import connector_for
        from invoice_sync.connectors.settings import with_tool_settings
        from invoice_sync.engine.sync import SyncOptions

        store = open_store()
        vault = open_vault(store)
        budgets = open_budgets(store)
        options = SyncOptions(
            dry_run=_flag(self.is_dry_run),
            invoice_numbers=tuple(_numbers(self.invoice_numbers)),
            retry_failed_only=_flag(self.retry_failed_only),
            retry_rejected=self.retry_rejected,
        )
        reports: list[dict[str, Any]] = []
        permanent: list[str] = []
        transient: list[Exception] = []
        for integration in store.integrations(list(self.integration_ids)):
            started = False
            try:
                # Task start, per integration: its row in the app, its settings (read once here, the
                # tool's own fields included) and its connection's fields (check) fail here, naming what
                # to fix, before any call; the other integrations go on.
                integration = with_tool_settings(integration)
                if integration.unreadable:
                    raise ConfigError(integration.unreadable)
                connector = connector_for(integration, vault, shared_budgets=budgets)
                connector.check_connection()
                started = True
                report = self._sync(integration, connector, context, store, options).run()
            except (AuthError, ConfigError) as exc:
                log.error("%s: %s", integration.name, exc.message)
                permanent.append(f"{integration.name}: {exc.message}")
                if not started:  # each of its invoices says why, in the summary, bell and page
                    try:
                        self._sync(integration, None, context, store, options).refuse(exc)
                    except Exception as refusal:  # another run holds it: that run will say it too
                        log.warning("%s: its invoices were not marked: %s", integration.name, refusal)
                continue
            except Exception as exc:  # transient: claim held, network, lease lost; retried by Airflow
                log.warning("%s: %s", integration.name, exc, exc_info=True)
                transient.append(exc)
                continue
            reports.append(report.to_dict())
            log.info("%s: %s", integration.name, report.to_dict())
        if transient:
            raise transient[0]
        if permanent:
            raise AirflowFailException("; ".join(permanent))
        return reports

    @staticmethod
    def _sync(
        integration: Integration,
        connector: Connector | None,
        context: Any,
        store: SyncStore,
        options: SyncOptions,
    ) -> IntegrationSync:
        from invoice_sync.airflow.runtime import holder_id, sync_run_id
        from invoice_sync.engine.sync import IntegrationSync

        return IntegrationSync(
            store,
            connector,
            integration,
            run_id=sync_run_id(context),
            holder=holder_id(context),
            options=options,
        )


def _flag(value: bool | str) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _numbers(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]
