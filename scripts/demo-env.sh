# shellcheck shell=bash
# The embedded defaults that `make run` (scripts/run-demo.sh) and `make ui` (scripts/run-ui.sh) share:
# the Airflow metadata DB and pools, the demo invoicing data, the accounting sandbox and the demo
# connections. Sourced, not run, so both scripts set up exactly the same world and differ only in what
# they do with it (one `airflow dags test`, or Airflow's servers).
#
# The sourcing script must have cd'ed into the project. It honours INVOICE_SYNC_DB_URL and AIRFLOW_HOME
# (the Makefile gives project-local defaults; the same ones apply here when a script runs on its own),
# INVOICE_SYNC_SANDBOX_PORT (default: a free port) and INVOICE_SYNC_RUN_DIR (default var/: logs, the
# pools file and the sandbox's books; the tests point it at a temporary directory).

BIN=.venv/bin
RUN_DIR=${INVOICE_SYNC_RUN_DIR:-var}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$PWD/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$PWD/plugins}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
mkdir -p "$RUN_DIR" "$AIRFLOW_HOME"
RUN_DIR=$(cd "$RUN_DIR" && pwd)  # absolute: the servers are handed paths inside it

# Background processes, each the leader of a process group of its own (job control is on while they
# start), so stopping one also stops what it forked, and a Ctrl-C reaches them only through the trap
# below, in order, instead of all at once.
DEMO_GROUPS=()
DEMO_LOGS=()

demo_start() {  # LOG COMMAND...: start COMMAND in the background, its output in LOG
    local log=$1
    shift
    set -m
    "$@" </dev/null >"$log" 2>&1 &
    set +m
    DEMO_GROUPS+=("$!")
    DEMO_LOGS+=("$log")
}

demo_report_dead() {  # the end of the log of every background process that is no longer running
    local i
    for i in "${!DEMO_GROUPS[@]}"; do
        kill -0 "${DEMO_GROUPS[$i]}" 2>/dev/null && continue
        echo "--- ${DEMO_LOGS[$i]} (stopped)" >&2
        tail -20 "${DEMO_LOGS[$i]}" >&2
    done
}

demo_stop_all() {  # SIGTERM every group, wait up to 30 s, then SIGKILL what is left
    local group deadline alive
    trap - EXIT INT TERM
    ((${#DEMO_GROUPS[@]})) || return 0
    for group in "${DEMO_GROUPS[@]}"; do
        kill -TERM -- "-$group" 2>/dev/null || true
    done
    deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        alive=0
        for group in "${DEMO_GROUPS[@]}"; do
            kill -0 -- "-$group" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.2
    done
    for group in "${DEMO_GROUPS[@]}"; do
        kill -KILL -- "-$group" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    DEMO_GROUPS=()
    DEMO_LOGS=()
}

trap demo_stop_all EXIT
trap 'echo "==> Stopping"; exit 130' INT
trap 'echo "==> Stopping"; exit 143' TERM

demo_airflow_db() {  # the metadata DB migrated, and a pool per accounting tool (tasks need their pool)
    echo "==> Airflow metadata database ($AIRFLOW_HOME) and a pool per accounting tool"
    $BIN/airflow db migrate >"$RUN_DIR/airflow-db-migrate.log" 2>&1 \
        || { tail -30 "$RUN_DIR/airflow-db-migrate.log"; exit 1; }
    $BIN/python -m invoice_sync.airflow.pools "$RUN_DIR/pools.json"
    $BIN/airflow pools import "$RUN_DIR/pools.json" >"$RUN_DIR/airflow-pools.log" 2>&1 \
        || { cat "$RUN_DIR/airflow-pools.log"; exit 1; }
}

demo_seed() {  # demo data in the invoicing DB unless it has data already
    local seeded
    echo "==> Invoicing database and demo data"
    seeded=$($BIN/invoice-sync-dev demo seed --if-empty)
    echo "    $seeded"
    if [[ $seeded == seeded* ]]; then
        rm -f "$RUN_DIR/sandbox-state.json"  # new books in the app: the sandbox starts with new books as well
    fi
}

demo_sandbox() {  # the simulators on loopback, their books kept across runs; sets SANDBOX_URL
    local port log=$RUN_DIR/sandbox.log
    port=${INVOICE_SYNC_SANDBOX_PORT:-$($BIN/python -c \
        'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    echo "==> Accounting sandbox on 127.0.0.1:$port (books kept in $RUN_DIR/sandbox-state.json)"
    demo_start "$log" $BIN/invoice-sync-dev sandbox serve --port "$port" --state "$RUN_DIR/sandbox-state.json"
    local pid=${DEMO_GROUPS[-1]}
    until grep -q "sandbox listening" "$log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.1
    done
    SANDBOX_URL=http://127.0.0.1:$port
}

demo_connections() {  # SANDBOX_URL: an AIRFLOW_CONN_* per demo connection, each tool's on the sandbox
    # (in production they come from a secrets backend)
    local exports
    exports=$($BIN/invoice-sync-dev sandbox connections "$1")
    eval "$exports"
}
