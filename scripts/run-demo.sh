#!/usr/bin/env bash
# The body of `make run`: a nightly sync run on embedded defaults, against the local sandbox.
# Honours INVOICE_SYNC_DB_URL and AIRFLOW_HOME (the Makefile gives project-local defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p var "$AIRFLOW_HOME"

echo "==> Airflow metadata database ($AIRFLOW_HOME) and a pool per accounting tool"
$BIN/airflow db migrate >var/airflow-db-migrate.log 2>&1 || { tail -30 var/airflow-db-migrate.log; exit 1; }
$BIN/python -m invoice_sync.airflow.pools var/pools.json
$BIN/airflow pools import var/pools.json >var/airflow-pools.log 2>&1 || { cat var/airflow-pools.log; exit 1; }

echo "==> Invoicing database and demo data"
seeded=$($BIN/invoice-sync-dev demo seed --if-empty)
echo "    $seeded"
if [[ $seeded == seeded* ]]; then
    rm -f var/sandbox-state.json  # new books in the app: the sandbox starts with new books as well
fi

port=${INVOICE_SYNC_SANDBOX_PORT:-$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
echo "==> Accounting sandbox on 127.0.0.1:$port (books kept in var/sandbox-state.json)"
$BIN/invoice-sync-dev sandbox serve --port "$port" --state var/sandbox-state.json >var/sandbox.log 2>&1 &
sandbox_pid=$!
trap 'kill $sandbox_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q "sandbox listening" var/sandbox.log 2>/dev/null && break
    kill -0 $sandbox_pid 2>/dev/null || { cat var/sandbox.log; exit 1; }
    sleep 0.1
done

# One connection per demo tool (Exact Online, Yuki, Twinfield, Xero, QuickBooks Online), all pointing at
# the sandbox; in production they come from a secrets backend.
for conn_id in exact_demo yuki_demo twinfield_demo xero_demo quickbooks_demo; do
    export "AIRFLOW_CONN_${conn_id^^}=$($BIN/python -m invoice_sync_dev.sandbox.connections "$conn_id" "http://127.0.0.1:$port")"
done

echo "==> airflow dags test invoice_sync_nightly (log: var/last-run.log)"
start=$(date +%s)
if ! $BIN/airflow dags test invoice_sync_nightly >var/last-run.log 2>&1 \
    || ! grep -qE "Marking run <DagRun invoice_sync_nightly .*> successful" var/last-run.log; then
    echo "the nightly run did not succeed; last lines of var/last-run.log:"
    tail -40 var/last-run.log
    exit 1
fi
echo "    finished in $(( $(date +%s) - start )) s"
echo
$BIN/invoice-sync status
