#!/usr/bin/env bash
# The body of `make ui`: Airflow's UI on the embedded defaults of `make run` (demo invoicing DB, sandbox,
# demo connections, pools; scripts/demo-env.sh), both DAGs unpaused and the Invoice sync page, until Ctrl-C.
#
# The four Airflow 3 servers run as separate processes (api-server, scheduler, dag-processor, triggerer)
# rather than under `airflow standalone`: they start just as fast in parallel, each writes its own log
# under $RUN_DIR/ui/, readiness is the api-server's health endpoint instead of a fixed delay, and each is a
# process group of its own that the trap stops with SIGTERM (SIGKILL after 30 s), so nothing outlives it.
#
# Login: the simple auth manager (Airflow's development auth manager) with one admin user whose password
# is drawn once into $RUN_DIR/ui/passwords.json and printed. Port: INVOICE_SYNC_UI_PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo-env.sh

port=${INVOICE_SYNC_UI_PORT:-8080}
url=http://127.0.0.1:$port
ui_dir=$RUN_DIR/ui
mkdir -p "$ui_dir"
if ! $BIN/python -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' \
    "$port" 2>/dev/null; then
    echo "port $port is taken; choose another: INVOICE_SYNC_UI_PORT=8081 make ui" >&2
    exit 1
fi

# Drawn once and kept (mode 600): the password to print, and the secrets every server must share (the
# api-server checks the task tokens the scheduler signs; the session key keeps a login across restarts).
(
    umask 077
    [[ -s $ui_dir/passwords.json ]] || $BIN/python -c \
        'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' >"$ui_dir/passwords.json"
    [[ -s $ui_dir/secrets.env ]] || $BIN/python -c 'import secrets
for name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
    print(f"{name}={secrets.token_urlsafe(32)}")' >"$ui_dir/secrets.env"
)
set -a
source "$ui_dir/secrets.env"
set +a
password=$($BIN/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$ui_dir/passwords.json")

export AIRFLOW__CORE__EXECUTOR=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
# The LocalExecutor forks a worker per slot at start-up (32 by default); 8 covers the demo's tools.
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-8}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
# The Connections list's Test button (off by default in Airflow): here it calls the sandbox, through the
# tool's hook, as `airflow connections test` does.
export AIRFLOW__CORE__TEST_CONNECTION=${AIRFLOW__CORE__TEST_CONNECTION:-Enabled}
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$ui_dir/passwords.json
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=$port
export AIRFLOW__API__WORKERS=1
export AIRFLOW__API__BASE_URL=$url
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$url/execution/
export PYTHONUNBUFFERED=1

demo_airflow_db
demo_seed
demo_sandbox
demo_connections "$SANDBOX_URL"

echo "==> Airflow api-server, scheduler, dag-processor and triggerer (logs: $ui_dir/)"
# --skip-serve-logs: the log servers would bind fixed ports on every interface; the api-server reads the
# task logs from this machine's files.
demo_start "$ui_dir/api-server.log" $BIN/airflow api-server
demo_start "$ui_dir/scheduler.log" $BIN/airflow scheduler --skip-serve-logs
demo_start "$ui_dir/dag-processor.log" $BIN/airflow dag-processor
demo_start "$ui_dir/triggerer.log" $BIN/airflow triggerer --skip-serve-logs
watched=()
for i in "${!DEMO_GROUPS[@]}"; do
    watched+=("${DEMO_GROUPS[$i]}=${DEMO_LOGS[$i]}")
done
$BIN/python scripts/ui_ready.py "$url" admin "$password" "${watched[@]}"

cat <<EOF

Airflow UI:         $url
Login:              admin / $password
Invoice sync page:  $url/invoice-sync/
Ctrl-C stops Airflow and the sandbox.
EOF

# Until Ctrl-C (the trap stops everything), or until a server or the sandbox dies: then say which, and
# stop the rest.
set +e
wait -n
echo "a process stopped on its own (exit $?); stopping the others" >&2
demo_report_dead
exit 1
