"""Start ``invoice_sync_manual`` through Airflow's own REST API, in-process, as the person who asked.

Why the REST API and not ``airflow.api.client.local_client`` or ``DagRun`` models: the REST endpoint is
where Airflow checks that this user may trigger this DAG, validates ``conf`` against the DAG's Params,
records the triggering user (so the run's bell notification names them) and writes the audit log. The
local client skips all of that and triggers as "CLI".

Why in-process: the page is served by the api-server that also serves ``/api/v2``, so the request goes
to that same ASGI app through ``httpx.ASGITransport``. No network hop, no base URL to configure (the
public URL behind a proxy is often not reachable from the server itself), and it works unchanged with
several api-servers, because each one calls itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp

MANUAL_DAG_ID = "invoice_sync_manual"


class TriggerError(Exception):
    """Airflow refused to start the run; the message is Airflow's own explanation."""


@dataclass(frozen=True, slots=True)
class TriggeredRun:
    run_id: str
    dag_paused: bool
    """A paused DAG queues the run but does not start it: the page says so, not leaving people waiting."""


def manual_conf(integration_id: int, *, retry_failed_only: bool) -> dict[str, Any]:
    """The manual DAG's ``conf`` for one integration (its Params: see ``dag_factory.build_sync_dag``)."""
    conf: dict[str, Any] = {"integrations": [integration_id]}
    if retry_failed_only:
        conf["retry_failed_only"] = True
    return conf


async def trigger_manual_sync(
    airflow_app: ASGIApp, token: str, conf: dict[str, Any], *, root_path: str = ""
) -> TriggeredRun:
    """POST ``/api/v2/dags/invoice_sync_manual/dagRuns`` to ``airflow_app`` with the user's ``token``.

    ``logical_date`` must be sent as null: Airflow 3 answers 422 when it is missing.
    """
    api = f"{root_path.rstrip('/')}/api/v2/dags/{MANUAL_DAG_ID}"
    transport = httpx.ASGITransport(app=airflow_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://api-server.internal",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    ) as client:
        response = await client.post(f"{api}/dagRuns", json={"logical_date": None, "conf": conf})
        if response.status_code not in (200, 201):
            raise TriggerError(f"Airflow did not start the run ({response.status_code}): {_detail(response)}")
        run_id = str(response.json()["dag_run_id"])
        dag = await client.get(api)
        paused = dag.status_code == 200 and bool(dag.json().get("is_paused"))
    return TriggeredRun(run_id=run_id, dag_paused=paused)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict))
    return str(detail)[:300]
