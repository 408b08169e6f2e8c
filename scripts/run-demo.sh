#!/usr/bin/env bash
# The body of `make run`: a nightly sync run on embedded defaults, against the local sandbox.
# The set-up (metadata DB and pools, demo data, sandbox, demo connections) is scripts/demo-env.sh, shared
# with `make ui`; it honours INVOICE_SYNC_DB_URL and AIRFLOW_HOME (the Makefile gives project-local defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo-env.sh

demo_airflow_db
demo_seed
demo_sandbox
demo_connections "$SANDBOX_URL"

echo "==> airflow dags test invoice_sync_nightly (log: $RUN_DIR/last-run.log)"
start=$(date +%s)
if ! $BIN/airflow dags test invoice_sync_nightly >"$RUN_DIR/last-run.log" 2>&1 \
    || ! grep -qE "Marking run <DagRun invoice_sync_nightly .*> successful" "$RUN_DIR/last-run.log"; then
    echo "the nightly run did not succeed; last lines of $RUN_DIR/last-run.log:"
    tail -40 "$RUN_DIR/last-run.log"
    exit 1
fi
echo "    finished in $(( $(date +%s) - start )) s"
echo
$BIN/invoice-sync status
