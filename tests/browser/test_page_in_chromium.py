"""The Invoice sync page in headless Chromium, served by a real ``airflow api-server`` with the plugin.

Why a real api-server and not the in-process app of ``tests/plugins``: the page is mounted by Airflow's
plugin loader in another process, logged into through Airflow's own login form, and its "Sync now" run is
executed by a real scheduler with LocalExecutor, whose tasks call the api-server's execution API. Only
this catches a page that works in a TestClient but not behind the real server (cookies, redirects,
relative URLs, the in-process REST call, the run's notification).

Why Selenium with Debian's ``chromium`` + ``chromium-driver``: both come from Debian's archive, which this
project's machines reach; Playwright would need a browser download of its own. The driver is given
explicitly, so Selenium Manager never tries to download one.

Why no dag-processor: ``airflow dags reserialize`` writes the DAGs once before the servers start, which
is all the scheduler and the REST trigger need, and saves a process that keeps re-parsing on two cores.

The browser is missing -> skip with a reason, except under ``CI=true`` (``make browser`` installs it),
where a missing browser fails the test rather than silently testing less.

The second test is the provider's contract seen from Airflow's own UI: an Exact Online connection made
through the Connections form (our labels, our extra fields), its Test button reaching the hook against the
sandbox, and a wrong secret failing in Exact's words. It shares the servers: a second Airflow start-up
would double the module's time.

``INVOICE_SYNC_UPDATE_SCREENSHOTS=1`` also writes the screenshot to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow_servers import (
    AIRFLOW,
    USER,
    AirflowApi,
    airflow_env,
    demo_connection_env,
    run_airflow,
    start,
    stop,
    wait_healthy,
)
from synced_books import sync_and_write_back

from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.repository import SyncStore
from invoice_sync_dev.sandbox.demo import seed
from invoice_sync_dev.sandbox.exact_online import SANDBOX as EXACT_SANDBOX
from invoice_sync_dev.sandbox.server import SandboxHandle, start_in_thread

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SCREENSHOT = ROOT / "docs" / "screenshots" / "invoice-sync-page.png"
SYNCED_BEFORE = (1, 2)
"""Synced once before the browser comes: their rejections are what the page must explain."""
SYNC_NOW = 3
"""Never synced (manual only): the integration whose "Sync now" the browser presses."""
RUN_TIMEOUT_S = 150.0
FORM_CONN_ID = "exact_form_test"
"""The connection the second test makes through Airflow's Connections form (no demo connection's id)."""
WRONG_SECRET = "not-the-client-secret"
PORT_0_SHIM = """
(() => {
  // The Test button's request with the port the connection has (none) instead of Number(null), i.e. 0.
  const fixed = (url, body) => {
    if (!String(url).endsWith("/api/v2/connections/test") || typeof body !== "string") return body;
    const data = JSON.parse(body);
    if (data.port === 0) data.port = null;
    return JSON.stringify(data);
  };
  const open = XMLHttpRequest.prototype.open;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    this.testUrl = url;
    return open.call(this, method, url, ...rest);
  };
  XMLHttpRequest.prototype.send = function (body) {
    return send.call(this, fixed(this.testUrl, body));
  };
  const fetch = window.fetch;
  window.fetch = (input, init) => {
    const url = typeof input === "string" ? input : input.url;
    return fetch(input, init && init.body ? { ...init, body: fixed(url, init.body) } : init);
  };
})();
"""
"""Only where :func:`_test_button_rejects_portless_connections`: what apache/airflow#73298 fixes in the
api-server, done in the page instead, so this Airflow's button reaches the hook at all."""
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # The network is closed: without these Chromium keeps calling home and gets refused.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--window-size=1280,1500",
)

pytestmark = pytest.mark.timeout(420)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "Debian's chromium and chromium-driver are needed (`make browser` installs them)"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires the browser tests to run")
    pytest.skip(reason)


@dataclass
class Server(AirflowApi):
    """A running Airflow (api-server + scheduler) and the invoicing database it syncs."""

    store: SyncStore
    sandbox_url: str


def _seed_and_sync_once(url: str, sandbox: SandboxHandle) -> SyncStore:
    """The demo data, with integrations 1 and 2 synced once through the engine (real rejections)."""
    engine = make_engine(url)
    prepare(engine)
    seed(engine, tools=("exact_online",))
    store = SyncStore(engine)
    sync_and_write_back(store, SYNCED_BEFORE, holder="browser-seed")
    return store


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[str, str]:
    return _browser_binaries()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser_binaries: tuple[str, str]) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "airflow"
    home.mkdir()
    sandbox = start_in_thread()  # the tasks call it too: its in-memory books and OAuth tokens must last
    connections = demo_connection_env(sandbox.url)
    db_url = f"sqlite:///{tmp / 'invoicing.db'}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in connections.items():
                patch.setenv(name, value)
            patch.setenv("INVOICE_SYNC_DB_URL", db_url)
            store = _seed_and_sync_once(db_url, sandbox)
        env, base_url, password = airflow_env(
            home,
            metadata_db_url=f"sqlite:///{home / 'airflow.db'}",
            extra={
                **connections,
                "INVOICE_SYNC_DB_URL": db_url,
                # Airflow 3 disables the Connections page's Test button unless told otherwise.
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            },
        )
        for command in (["db", "migrate"], ["dags", "reserialize"]):
            run_airflow(command, env)
        logs = tmp / "logs"
        logs.mkdir()
        api = start([AIRFLOW, "api-server"], env, logs / "api-server.log")
        processes.append(api)
        # --skip-serve-logs: the log server would bind every interface on a fixed port.
        processes.append(start([AIRFLOW, "scheduler", "--skip-serve-logs"], env, logs / "scheduler.log"))
        wait_healthy(base_url, api, logs / "api-server.log")
        running = Server(base_url, password, logs, store, sandbox.url)
        running.prepare_deployment()
        yield running
    finally:
        stop(*processes)
        sandbox.stop()


@pytest.fixture
def driver(browser_binaries: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_binaries
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


def test_log_in_see_why_invoices_are_not_synced_and_sync_one_integration(
    server: Server, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)
    page_url = f"{server.base_url}/invoice-sync/"
    store = server.store

    _log_in(driver, server, page_url)
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert driver.find_element(By.TAG_NAME, "h1").text == "Invoice sync"
    assert f"Signed in as {USER}" in driver.find_element(By.TAG_NAME, "body").text

    # The seeded rejections, each with its error message, and the never-synced invoices of integration 3.
    rejected = [row for i in SYNCED_BEFORE for row in store.unsynced_invoices(i, state="rejected")]
    assert rejected, "the seeding sync should have left rejected invoices"
    for row in rejected:
        cells = _row_cells(driver, row.integration_id, str(row.number))
        assert row.error_message and row.error_message in cells, (row.number, cells)
        assert row.error_class in cells
    never_tried = {str(row.number) for row in store.unsynced_invoices(SYNC_NOW, state="new")}
    assert never_tried and never_tried <= _unsynced_numbers(driver, SYNC_NOW)
    driver.save_screenshot(str(tmp_path / "before-sync.png"))

    # "Sync now" for integration 3, pressed where people press it: in the page as the Airflow UI shows
    # it, in an iframe (so the page's frame-ancestors and form-action policy and the same-origin check
    # with the form's token must let it through). The page starts the manual DAG as this user.
    driver.get(f"{server.base_url}/plugin/invoice-sync")
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
    name = store.integration(SYNC_NOW).name
    button = f"button[aria-label='Sync now: {name}']"
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, button))).click()
    flash = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".flash.ok")))
    assert "Sync started: run " in flash.text and "paused" not in flash.text, flash.text
    started = re.search(r"Sync started: run (\S+)\.", flash.text)
    assert started, flash.text
    run_id = started.group(1)
    driver.switch_to.default_content()

    # The real scheduler runs it; the REST API says when it is done.
    state = server.wait_for_run("invoice_sync_manual", run_id, RUN_TIMEOUT_S)
    assert state == "success", f"run {run_id} ended {state}\n{server.log_tails()}"

    # Reload: the run's notification in the bell, and the invoices it booked have left the list.
    driver.get(page_url)
    bell = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "section.bell"))).text
    notification = store.latest_notification()
    assert notification is not None and str(notification.body.get("run_id", "")).endswith(run_id)
    assert notification.title in bell and run_id in bell
    booked = never_tried - {str(row.number) for row in store.unsynced_invoices(SYNC_NOW)}
    assert booked, "the manual run booked nothing"
    assert not booked & _unsynced_numbers(driver, SYNC_NOW)
    numbers = _registration_numbers(store, SYNC_NOW, booked)
    assert len(numbers) == len(booked) and all(numbers.values()), numbers

    shot = tmp_path / "invoice-sync-page.png"
    assert driver.save_screenshot(str(shot))
    if os.environ.get("INVOICE_SYNC_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_an_exact_online_connection_made_and_tested_in_airflows_connections_form(
    server: Server, driver: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)
    connections_url = f"{server.base_url}/connections"
    demo = EXACT_SANDBOX.connection(server.sandbox_url)
    label = EXACT_SANDBOX.descriptor.label

    _log_in(driver, server, connections_url)
    wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Add Connection']"))).click()
    dialog = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role='dialog']")))
    dialog.find_element(By.NAME, "connection_id").send_keys(FORM_CONN_ID)
    # The type picker is a searchable select: the provider's label is what people search for.
    _labelled(driver, dialog, "Connection Type").send_keys(label.split()[0])
    option = f"//*[@role='option'][normalize-space()='{label}']"
    wait.until(ec.element_to_be_clickable((By.XPATH, option))).click()

    # Our form: the standard fields under Exact's names, the refresh token as a masked extra field.
    wait.until(ec.visibility_of_element_located((By.NAME, "host")))
    for field_label, name, value in (
        ("Base URL", "host", demo["host"]),
        ("Client ID", "login", demo["login"]),
        ("Client secret", "password", demo["password"]),
    ):
        field = _labelled(driver, dialog, field_label)
        assert field.get_attribute("name") == name, field_label
        field.send_keys(value)
    assert not dialog.find_elements(By.NAME, "port") and not dialog.find_elements(By.NAME, "schema")
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Extra Fields']").click()
    refresh_token = wait.until(ec.visibility_of_element_located((By.NAME, "element_refresh_token")))
    assert refresh_token.get_attribute("type") == "password"
    assert dialog.find_element(By.XPATH, ".//label[normalize-space()='Refresh token']").is_displayed()
    refresh_token.send_keys(demo["extra"]["refresh_token"])
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
    wait.until(ec.invisibility_of_element(dialog))

    saved = server.call("GET", f"/api/v2/connections/{FORM_CONN_ID}")
    assert saved["conn_type"] == EXACT_SANDBOX.descriptor.conn_type == "exact_online", saved
    assert (saved["host"], saved["login"]) == (demo["host"], demo["login"]), saved
    assert "refresh_token" in json.loads(saved["extra"]), saved

    # Test, as the list's button does it: Airflow runs the hook's test_connection in the api-server.
    if _test_button_rejects_portless_connections(server):
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PORT_0_SHIM})
    driver.get(connections_url)
    _connection_row_button(wait, "Test Connection").click()
    passed = _toast(wait, "success")
    assert "Test Connection Successful" in passed and "Exact accepted the client ID and secret" in passed

    # A wrong secret, saved through the Edit form: the same button now fails with Exact's own words.
    _connection_row_button(wait, "Edit Connection").click()
    dialog = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role='dialog']")))
    secret = _labelled(driver, dialog, "Client secret")
    secret.send_keys(Keys.CONTROL, "a")
    secret.send_keys(WRONG_SECRET)
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
    wait.until(ec.invisibility_of_element(dialog))
    _connection_row_button(wait, "Test Connection").click()
    failed = _toast(wait, "error")
    assert "Test Connection Failed" in failed and "invalid_client" in failed, failed
    assert WRONG_SECRET not in failed


def _log_in(driver: Any, server: Server, url: str) -> None:
    """Open ``url`` logged out: Airflow's login form comes first and brings the browser back after."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)
    driver.get(url)
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[name='username']")))
    assert "/auth/login" in driver.current_url
    driver.find_element(By.CSS_SELECTOR, "input[name='username']").send_keys(USER)
    driver.find_element(By.CSS_SELECTOR, "input[name='password']").send_keys(server.password)
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait.until(ec.url_to_be(url))


def _labelled(driver: Any, dialog: Any, label: str) -> Any:
    """The input a form label names (the label's ``for``): finds a field by the words people read."""
    from selenium.webdriver.common.by import By

    element = dialog.find_element(By.XPATH, f".//label[starts-with(normalize-space(), '{label}')]")
    return driver.find_element(By.ID, element.get_attribute("for"))


def _connection_row_button(wait: Any, action: str) -> Any:
    """One of the action buttons of the form-made connection's row in the Connections list."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    button = f"//tr[td[normalize-space()='{FORM_CONN_ID}']]//button[@aria-label='{action}']"
    return wait.until(ec.element_to_be_clickable((By.XPATH, button)))


def _toast(wait: Any, kind: str) -> str:
    """The text of the first toast of ``kind`` (``success`` or ``error``) the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    toast = f"[data-scope='toast'][data-part='root'][data-type='{kind}']"
    return str(wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, toast))).text)


def _test_button_rejects_portless_connections(server: Server) -> bool:
    """Whether this Airflow has the bug fixed by apache/airflow#73298 (after 3.3.2): the list's Test button
    posts the stored connection with ``port: Number(null)``, i.e. 0, and a masked password; the api-server
    takes 0 for another port than the stored none and answers 400 "The host or port to test differs from
    the stored connection", so no connection without a port (ours hide it) can be tested from the list.

    Asked of the api-server with the body the button sends, so the browser-side fix below goes away by
    itself with an Airflow that has the fix.
    """
    stored = server.call("GET", f"/api/v2/connections/{FORM_CONN_ID}")
    as_the_button_sends_it = {**stored, "port": 0}
    as_the_button_sends_it.pop("team_name", None)
    try:
        server.call("POST", "/api/v2/connections/test", body=as_the_button_sends_it)
    except urllib.error.HTTPError as error:
        if error.code == 400 and "differs from the stored connection" in error.read().decode():
            return True
        raise
    return False


def _section(driver: Any, integration_id: int) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"section[aria-labelledby='int-{integration_id}']")


def _row_cells(driver: Any, integration_id: int, number: str) -> list[str]:
    """The cells of one invoice's row in the integration's "Not synced" table."""
    from selenium.webdriver.common.by import By

    for row in _section(driver, integration_id).find_elements(By.CSS_SELECTOR, "table tbody tr"):
        heads = row.find_elements(By.CSS_SELECTOR, "th[scope='row']")
        if heads and heads[0].text.split()[0] == number:
            return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    raise AssertionError(f"invoice {number} is not listed under integration {integration_id}")


def _unsynced_numbers(driver: Any, integration_id: int) -> set[str]:
    from selenium.webdriver.common.by import By

    table = _section(driver, integration_id).find_elements(By.TAG_NAME, "table")[0]
    return {head.text.split()[0] for head in table.find_elements(By.CSS_SELECTOR, "th[scope='row']")}


def _registration_numbers(store: SyncStore, integration_id: int, numbers: set[str]) -> dict[str, str | None]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from invoice_sync.store.models import InvoiceRow

    query = select(InvoiceRow.number, InvoiceRow.registration_number).where(
        InvoiceRow.integration_id == integration_id, InvoiceRow.number.in_(numbers)
    )
    with Session(store.engine) as session:
        return {str(number): registration for number, registration in session.execute(query)}
