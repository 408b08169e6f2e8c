"""
# Manual invoice sync

Started by a person (the trigger form, the *Invoice sync* page's **Sync now**, or the REST API) for
the integrations they pick. It does what the nightly sync does and then **notifies** the person who
started it: how many customers and invoices were synced and every error, in words a bookkeeper can act
on. The notification lands in the app's bell (`notifications` table) and, when an Airflow connection
`invoice_sync_webhook` exists, is posted there too.

Parameters:
- **integrations**: ids (numbers) or exact names (text), e.g. `[1, "Atelier Demo BV"]`; the text `"12"` is
  a name, never integration 12. A name two integrations share, or of digits only, is refused: choose by id.
- **all_integrations**: every integration (also those without automatic sync), with `integrations` empty.
  An empty selection without it fails the run, saying how to choose.
- **invoice_numbers**: only these invoices (optional).
- **dry_run**: validate and look up in the tool, but push and write nothing.
- **retry_failed_only**: only invoices that failed, were deferred or whose outcome is unknown.
"""

from __future__ import annotations

from invoice_sync.airflow.dag_factory import build_sync_dag

dag = build_sync_dag(dag_id="invoice_sync_manual", doc_md=__doc__, manual=True, schedule=None)
