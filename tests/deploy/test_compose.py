"""The production topology (docker-compose.yaml, Dockerfile, .env.example), checked without a Docker engine.

The file is read with ``yaml.safe_load``, which resolves the ``x-airflow-common`` anchor and ``<<`` merges,
so every check sees each service the way compose does (before ``${VAR}`` interpolation).

Secrets: unlike Airflow's official file, which writes the metadata DB's ``airflow:airflow`` credentials
in clear, this file is meant as the production topology, and a literal password there would be copied
into production. So there is no exception: every password, key and secret is a ``${VAR}`` reference
without a default, and ``.env.example`` lists it with a placeholder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
AIRFLOW_SERVICES = {*AIRFLOW_COMMANDS, "airflow-init", "airflow-cli"}
OTHER_SERVICES = {"postgres", "redis", "invoicing-db", "sandbox"}
ONE_SHOT_SERVICES = {"airflow-init", "airflow-cli"}
"""Run to completion and are awaited with ``service_completed_successfully``: a healthcheck means nothing."""

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
ONLY_REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
URL_CREDENTIALS = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def common(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["x-airflow-common"]


def references(text: str) -> list[re.Match[str]]:
    """Every ``${...}`` compose interpolates in ``text``; ``$$`` is compose's escape for a literal ``$``."""
    return list(REFERENCE.finditer(text.replace("$$", "")))


def required_variables(text: str) -> set[str]:
    """Variables referenced without a default (``${VAR}``, ``${VAR:?msg}``): .env must provide them."""
    return {m["name"] for m in references(text) if m["op"] in (None, "?", ":?")}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def walk_environment(services: dict[str, dict[str, Any]]):
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            yield name, key, "" if value is None else str(value)


def test_every_expected_service_is_defined(services: dict[str, dict[str, Any]]) -> None:
    assert AIRFLOW_SERVICES | OTHER_SERVICES <= set(services)


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_services_use_the_common_block(
    name: str, services: dict[str, dict[str, Any]], common: dict[str, Any]
) -> None:
    service = services[name]
    for key in ("build", "image", "env_file", "volumes"):
        assert service[key] == common[key], f"{name}.{key} differs from x-airflow-common"
    missing = {k: v for k, v in common["environment"].items() if service["environment"].get(k) != v}
    assert not missing, f"{name} lacks common environment entries: {sorted(missing)}"
    if name != "airflow-init":  # runs as root to chown the shared folders, as in the official file
        assert service["user"] == common["user"] == "${AIRFLOW_UID:-50000}:0"
    for dependency, spec in common["depends_on"].items():
        assert service["depends_on"][dependency] == spec


@pytest.mark.parametrize(("name", "command"), sorted(AIRFLOW_COMMANDS.items()))
def test_airflow_services_run_their_command(name: str, command: str, services: dict[str, Any]) -> None:
    assert command_text(services[name]) == command


def test_airflow_init_migrates_both_databases(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    script = command_text(init)
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "/entrypoint airflow version" in script  # the image's entrypoint runs `airflow db migrate`
    assert "mkdir" in script and "/opt/airflow/{logs,dags,plugins,config}" in script
    assert "invoice-sync db upgrade" in script
    assert script.index("/entrypoint airflow") < script.index("invoice-sync db upgrade")


def test_airflow_init_imports_a_pool_per_tool(services: dict[str, dict[str, Any]]) -> None:
    """A sync task in a pool that does not exist is never scheduled: init writes and imports them all."""
    script = command_text(services["airflow-init"])
    written = script.index("python -m invoice_sync.airflow.pools /tmp/invoice-sync-pools.json")
    imported = script.index("/entrypoint airflow pools import /tmp/invoice-sync-pools.json")
    assert script.index("/entrypoint airflow version") < written < imported  # after the DB migration


def test_worker_handles_warm_shutdown(services: dict[str, dict[str, Any]]) -> None:
    assert services["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"


def test_celery_executor_and_its_wiring(common: dict[str, Any]) -> None:
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "@postgres/" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert ONLY_REQUIRED_REFERENCE.match(env["AIRFLOW__API_AUTH__JWT_SECRET"])
    assert ONLY_REQUIRED_REFERENCE.match(env["AIRFLOW__CORE__FERNET_KEY"])
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_common_block_mounts_and_env_file(common: dict[str, Any]) -> None:
    targets = {volume.rsplit(":", 1)[1] for volume in common["volumes"]}
    assert {f"/opt/airflow/{d}" for d in ("dags", "logs", "config", "plugins")} <= targets
    assert {"path": ".env", "required": False} in common["env_file"]


def test_tasks_use_the_invoicing_database_service(common: dict[str, Any]) -> None:
    url = common["environment"]["INVOICE_SYNC_DB_URL"]
    assert url.startswith("postgresql+psycopg2://")
    assert "@invoicing-db:5432/" in url


def test_sandbox_is_a_demo_profile_service(services: dict[str, dict[str, Any]]) -> None:
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["demo"]
    assert command_text(sandbox).startswith("invoice-sync-dev sandbox serve --host 0.0.0.0 --port 8765")


@pytest.mark.parametrize("name", ["postgres", "invoicing-db"])
def test_databases_are_postgres_16_with_pg_isready(name: str, services: dict[str, dict[str, Any]]) -> None:
    service = services[name]
    assert service["image"] == "postgres:16"
    assert "pg_isready" in service["healthcheck"]["test"]


def test_redis_image(services: dict[str, dict[str, Any]]) -> None:
    assert services["redis"]["image"] == "redis:7.2-bookworm"


def test_no_secret_is_written_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    for name, key, value in walk_environment(services):
        if SECRET_KEY.search(key):
            assert ONLY_REQUIRED_REFERENCE.match(value), (
                f"{name}: {key} must be a ${{VAR}} reference without a default, not {value!r}"
            )
        for match in URL_CREDENTIALS.finditer(value):
            password = match["password"]
            assert password == "" or ONLY_REQUIRED_REFERENCE.match(password), (
                f"{name}: {key} has a literal password in its URL"
            )


def test_secret_references_have_no_default() -> None:
    """A default (``${VAR:-value}``) would be a committed secret."""
    for match in references(COMPOSE_FILE.read_text()):
        if SECRET_KEY.search(match["name"]):
            assert match["op"] in (None, "?", ":?"), f"${{{match['name']}}} has a default"


def test_known_secret_shapes_do_not_appear_literally() -> None:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text), "looks like a Fernet key"
    assert not re.search(r"\b[0-9a-f]{32,}\b", text), "looks like a generated secret"


@pytest.mark.parametrize("name", sorted((AIRFLOW_SERVICES | OTHER_SERVICES) - ONE_SHOT_SERVICES))
def test_long_running_services_have_a_healthcheck(name: str, services: dict[str, dict[str, Any]]) -> None:
    healthcheck = services[name].get("healthcheck")
    assert healthcheck and healthcheck.get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("airflow-apiserver", "http://localhost:8080/api/v2/monitor/health"),
        ("airflow-scheduler", "http://localhost:8974/health"),
        ("airflow-dag-processor", "DagProcessorJob"),
        ("airflow-triggerer", "TriggererJob"),
        ("airflow-worker", "inspect ping"),
        ("redis", "ping"),
        ("sandbox", "http://localhost:8765/"),
    ],
)
def test_healthchecks_probe_the_right_thing(name: str, probe: str, services: dict[str, Any]) -> None:
    assert probe in " ".join(services[name]["healthcheck"]["test"])


def test_every_service_depended_on_with_a_condition_exists_and_can_meet_it(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name
            condition = spec["condition"]
            assert condition in CONDITIONS, f"{name} -> {dependency}: unknown condition {condition}"
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT_SERVICES
            assert not services[dependency].get("profiles"), f"{name} needs optional {dependency}"


def test_long_running_airflow_services_wait_for_init(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_COMMANDS:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_project_images_build_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert AIRFLOW_SERVICES | {"sandbox"} <= built
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"] == {"context": ".", "target": "runtime"}, name
        assert services[name]["image"] == services["airflow-apiserver"]["image"], name
    # The simulators come from the development stage, under an image name of their own.
    assert services["sandbox"]["build"] == {"context": ".", "target": "sandbox"}
    assert services["sandbox"]["image"] != services["airflow-apiserver"]["image"]


def _stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions per stage (comments dropped, continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            parts = line.split()
            current = parts[3] if len(parts) > 3 and parts[2] == "AS" else f"final:{parts[1]}"
            stages[current] = [line]
        else:
            stages[current].append(line)
    return stages


def test_runtime_stage_installs_the_runtime_lock_and_the_project_only() -> None:
    stages = _stages()
    runtime = stages["runtime"]
    assert runtime[0] == "FROM apache/airflow:3.3.2-python3.11 AS runtime"
    sources = [
        word
        for line in runtime
        if line.startswith("COPY")
        for word in line.split()[1:-1]
        if not word.startswith("--")
    ]
    assert sorted(sources) == ["include/invoice_sync/", "pyproject.toml", "requirements.lock"]
    installs = re.findall(r"pip install ([^&]*)", " ".join(runtime))
    assert [i.split() for i in installs] == [
        ["--no-cache-dir", "--no-deps", "--require-hashes", "-r", "requirements.lock"],
        ["--no-cache-dir", "--no-deps", "/opt/airflow/project"],
    ]
    assert not any("invoice_sync_dev" in line or "requirements-dev" in line for line in runtime)
    # The default target (the last stage) is the runtime, so a plain `docker build` never has the simulators.
    assert list(stages)[-1] == "final:runtime"
    assert "invoice_sync_dev" in " ".join(stages["sandbox"])


def test_env_example_lists_every_required_variable() -> None:
    required = required_variables(COMPOSE_FILE.read_text())
    assert required, "expected required secrets in the compose file"
    listed = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert required <= listed, f".env.example lacks {sorted(required - listed)}"


def test_env_example_holds_placeholders_only() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        if SECRET_KEY.search(name):
            assert value.startswith("change-me"), f"{name} in .env.example must be a placeholder"


def test_env_example_demo_connections_reach_the_sandbox_service(services: dict[str, dict[str, Any]]) -> None:
    """Each demo integration's connection is in .env.example, exactly as the sandbox service (reached by
    its compose name and port) expects it: uncommenting the lines is all a demo needs."""
    from invoice_sync_dev.sandbox.tools import demo_connections

    port = services["sandbox"]["command"].split("--port ")[1].split()[0]
    listed = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.match(r"^# AIRFLOW_CONN_(?P<id>[A-Z_]+_DEMO)='(?P<json>.*)'$", line):
            listed[match["id"].lower()] = json.loads(match["json"])
    assert listed == demo_connections(f"http://sandbox:{port}")


def test_the_demo_lines_let_its_connections_pass_the_https_rule(
    monkeypatch: pytest.MonkeyPatch, common: dict[str, Any]
) -> None:
    """Compose's sandbox is reached over plain http on a private network: the demo block's
    INVOICE_SYNC_PLAIN_HTTP_HOSTS line (passed on by x-airflow-common) lists every demo connection's host,
    so uncommenting the demo lines is still all a demo needs (issue 14, item 8)."""
    from invoice_sync.connectors.hooks import safe_to_reach
    from invoice_sync_dev.sandbox.tools import demo_connections

    assert "INVOICE_SYNC_PLAIN_HTTP_HOSTS" in common["environment"]
    text = ENV_EXAMPLE.read_text()
    lines = [line for line in text.splitlines() if "INVOICE_SYNC_PLAIN_HTTP_HOSTS=" in line]
    assert len(lines) == 1 and lines[0].startswith("# "), lines
    monkeypatch.setenv("INVOICE_SYNC_PLAIN_HTTP_HOSTS", lines[0].split("=", 1)[1])
    for conn_id, connection in demo_connections("http://sandbox:8765").items():
        for url in (connection["host"], connection["extra"].get("token_url")):
            if url:
                assert safe_to_reach(url), (conn_id, url)
    assert not safe_to_reach("http://accounting.example.com")


# -- deployment secrets and the published port (issue 14, item 5) ------------------------------------

INVOICE_SYNC_CLI = Path(sys.executable).with_name("invoice-sync")
FERNET_KEY_COMMAND = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` the way compose interpolates it with ``env`` (defaults with ``:-`` and ``-`` only)."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        return env.get(name, "")

    return REFERENCE.sub(value, text)


def published(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(host ip, host port, container port)`` per port ``service`` publishes, interpolated with ``env``."""
    result = []
    for entry in service.get("ports", []):
        parts = interpolate(str(entry), env).split(":")
        assert len(parts) == 3, f"{entry!r} publishes on every interface: name the host address"
        result.append((parts[0], parts[1], parts[2]))
    return result


def test_the_api_server_is_published_on_loopback_unless_the_operator_says_otherwise(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["airflow-apiserver"]
    assert published(api, {}) == [("127.0.0.1", "8080", "8080")]
    assert published(api, {"AIRFLOW_API_BIND": "0.0.0.0", "AIRFLOW_API_PORT": "8443"}) == [
        ("0.0.0.0", "8443", "8080")
    ]
    # Nothing else is published beyond loopback by default either.
    for name, service in services.items():
        for host_ip, _, _ in published(service, {}):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}"
    listed = ENV_EXAMPLE.read_text()
    assert re.search(r"^# AIRFLOW_API_BIND=127\.0\.0\.1$", listed, re.MULTILINE)


def secret_variables() -> list[str]:
    """The secrets .env must provide: the compose file's required variables whose names say secret."""
    return sorted(name for name in required_variables(COMPOSE_FILE.read_text()) if SECRET_KEY.search(name))


def env_example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            values[name] = value
    return values


def test_airflow_init_checks_the_secrets_before_anything_else(services: dict[str, dict[str, Any]]) -> None:
    """A placeholder or short secret stops airflow-init, so no other service starts (they all wait for
    it to complete successfully); the check sees each secret under its .env name."""
    init = services["airflow-init"]
    script = command_text(init)
    assert "set -euo pipefail" in script
    assert script.index("invoice-sync secrets check") < script.index("/entrypoint airflow version")
    assert secret_variables() == sorted(
        [
            "AIRFLOW_ADMIN_PASSWORD",
            "AIRFLOW_DB_PASSWORD",
            "API_SECRET_KEY",
            "FERNET_KEY",
            "INVOICING_DB_PASSWORD",
            "JWT_SECRET",
        ]
    )
    for name in secret_variables():
        assert init["environment"][name] == f"${{{name}:?see .env.example}}", name


def good_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "FERNET_KEY": Fernet.generate_key().decode(),
        "JWT_SECRET": secrets.token_hex(32),
        "API_SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW_DB_PASSWORD": secrets.token_hex(16),
        "INVOICING_DB_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
    }


def check_secrets(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real console script, as airflow-init runs it, with ``values`` as its only secrets."""
    env = {"PATH": os.environ["PATH"], **values}
    return subprocess.run(
        [str(INVOICE_SYNC_CLI), "secrets", "check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_secret_check_accepts_generated_secrets() -> None:
    from cryptography.fernet import Fernet

    result = check_secrets(good_secrets())
    assert result.returncode == 0, result.stderr
    # Airflow rotates Fernet keys as `new,old`.
    rotating = {
        **good_secrets(),
        "FERNET_KEY": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    }
    assert check_secrets(rotating).returncode == 0


@pytest.mark.parametrize("name", sorted(name for name in env_example_values() if SECRET_KEY.search(name)))
def test_the_secret_check_refuses_each_placeholder_of_env_example(name: str) -> None:
    placeholder = env_example_values()[name]
    result = check_secrets({**good_secrets(), name: placeholder})
    assert result.returncode != 0, f"{name}={placeholder} was accepted"
    assert name in result.stderr and "generate" in result.stderr.lower(), result.stderr


RANDOM_LOOKING = "Vq3xK9mZ2pL7wN4rT8yB1cF6hJ0dG5sE"
BAD_VALUES = {
    # One character under each minimum: 32 for the keys, 12 for the passwords.
    "JWT_SECRET": RANDOM_LOOKING[:31],
    "API_SECRET_KEY": RANDOM_LOOKING[:31],
    "AIRFLOW_DB_PASSWORD": RANDOM_LOOKING[:11],
    "INVOICING_DB_PASSWORD": RANDOM_LOOKING[:11],
    "AIRFLOW_ADMIN_PASSWORD": RANDOM_LOOKING[:11],
    # Long enough, but not a Fernet key (32 url-safe base64-encoded bytes).
    "FERNET_KEY": RANDOM_LOOKING * 2,
}


@pytest.mark.parametrize(("name", "value"), sorted(BAD_VALUES.items()), ids=sorted(BAD_VALUES))
def test_the_secret_check_refuses_short_or_malformed_values(name: str, value: str) -> None:
    result = check_secrets({**good_secrets(), name: value})
    assert result.returncode != 0, f"{name}={value} was accepted"
    assert name in result.stderr and "generate" in result.stderr.lower(), result.stderr


def test_the_secret_check_refuses_a_missing_secret_and_names_every_bad_one() -> None:
    values = good_secrets()
    del values["JWT_SECRET"]
    result = check_secrets({**values, "FERNET_KEY": "change-me-fernet-key"})
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr and "FERNET_KEY" in result.stderr
    assert FERNET_KEY_COMMAND in result.stderr
    assert values["AIRFLOW_DB_PASSWORD"] not in result.stderr + result.stdout  # a secret is never echoed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AIRFLOW_ADMIN_PASSWORD", "a" * 40),  # long, but one character
        ("INVOICING_DB_PASSWORD", "Vq3x@K9mZ/2pL:7w"),  # breaks the database URL it goes into
    ],
    ids=["repetitive", "not-url-safe"],
)
def test_the_secret_check_refuses_values_that_only_look_long_enough(name: str, value: str) -> None:
    result = check_secrets({**good_secrets(), name: value})
    assert result.returncode != 0 and name in result.stderr, result.stderr
