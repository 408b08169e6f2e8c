"""
# Nightly invoice sync

Every night, for each integration with **automatic sync** switched on, pushes the registered invoices
and credit notes that have no registration number yet into the integration's accounting tool, writes the
tool's registration (booking) number back, and records every outcome in the sync ledger. Nobody is
notified; failures are visible on the *Invoice sync* page and in the `summarize` task's log.

Drafts are never pushed, an invoice with a registration number is never pushed again (edits after sync
are reported as *changed after sync*), and an invoice whose outcome is unknown is looked up in the tool
before anything is resent.

Schedule: `INVOICE_SYNC_NIGHTLY_CRON` (default 02:00) in `INVOICE_SYNC_TIMEZONE` (default Europe/Brussels).
"""

from __future__ import annotations

from invoice_sync import config
from invoice_sync.airflow.dag_factory import build_sync_dag

dag = build_sync_dag(
    dag_id="invoice_sync_nightly",
    doc_md=__doc__,
    manual=False,
    schedule=config.nightly_schedule(),
    timezone=config.timezone(),
)
