"""``invoice-sync-dev chaos``: many nightly runs under random faults, then a check of the books.

The tests prove each exactly-once mechanism in isolation; this command shows that they hold together, at
volume, when failures pile up the way they do in production: 5xx before the tool acted, answers lost
after it committed (dropped connections, timeouts, garbled bodies), 429 bursts, slow answers, access
tokens expiring in the middle of a run, and the worker process killed outright. It is a benchmark-style
command, not a test: every run prints one JSON line, the end prints the verdict, and the exit status is
non-zero when an invariant broke (a double booking, a booking without its registration number in the app,
an attempt whose outcome was never settled).

Everything runs on its own throw-away state under ``var/chaos/`` (invoicing DB, Airflow home, logs),
because it wipes and reseeds the invoicing DB: ``CHAOS_DB_URL`` and ``CHAOS_AIRFLOW_HOME`` move it, the
general ``INVOICE_SYNC_DB_URL`` and ``AIRFLOW_HOME`` are deliberately ignored so it can never erase the
data ``make run`` works on; and like every wipe of the development tools it refuses a database with data
that the demo seeding did not make, unless ``--i-mean-this-database`` names it. Each DAG run is a real
``airflow dags test invoice_sync_nightly`` subprocess against the sandbox, itself a subprocess
(``invoice-sync-dev sandbox serve``).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from invoice_sync import config
from invoice_sync.config import PROJECT_ROOT
from invoice_sync.store.claims import DEFAULT_LEASE
from invoice_sync.store.db import make_engine
from invoice_sync.store.migrate import prepare
from invoice_sync.store.models import ClaimRow, IntegrationRow, InvoiceRow, LedgerRow, LedgerState, TokenRow
from invoice_sync_dev.sandbox.demo import DEMO_CONN_ID, seed
from invoice_sync_dev.sandbox.exact_online import demo_connection as exact_online_connection
from invoice_sync_dev.sandbox.faults import FAULT_KINDS
from invoice_sync_dev.sandbox.process import SandboxProcess, airflow_bin
from invoice_sync_dev.sandbox.process import airflow_env as isolated_airflow_env

DAG_ID = "invoice_sync_nightly"
WORKDIR = PROJECT_ROOT / "var" / "chaos"
SYNC_STARTED = "unsynced registered invoices to consider"
"""Logged by the engine once an integration's sync began: from then on a kill or a token expiry hurts."""
LEASE_ENV = config.LEASE_ENV

# Paths inside the Exact mount the fault rules aim at.
ENTRIES_POST = r"^/api/v1/\d+/salesentry/SalesEntries$"
ACCOUNTS_POST = r"^/api/v1/\d+/crm/Accounts$"
DIVISION_API = r"^/api/v1/\d+/"
"""Every division call (not the token endpoint: a lost token answer would burn the rotating refresh token,
which only a new consent repairs, and that is a different story from exactly-once bookings)."""


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """One chaos session. Defaults are what ``make chaos`` uses.

    :param invoices: regular demo invoices to seed (the deliberately broken ones come on top).
    :param runs: nightly runs under faults, before up to ``clean_runs`` runs without faults.
    :param seed: drives the demo data and every random choice here, so a session can be replayed.
    :param kills: how many faulty runs get SIGKILLed mid-sync. Each kill costs a wait for the dead
        run's claim lease (``lease_s``) to run out.
    :param token_expiry_chance: how likely a faulty run has every access token expired under it.
    :param http_timeout_s: the connection's ``timeout`` extra: short, so hung requests cost little.
    :param lease_s: claim lease for the DAG runs (``INVOICE_SYNC_LEASE_SECONDS``), so a killed run's
        claim frees up quickly; it must outlast the longest pause without a write (a 429 waits up to 60 s).
    :param intensity: multiplies every fault probability (each GET fault stays at most 5 %, or the
        hook's three tries would often all fail and cost an Airflow retry, 30 s or more); a small session
        needs more than 1 to see faults at all.
    :param fault_kinds: the fault kinds to draw from (default: all of them).
    :param run_timeout_s: a DAG run still going after this is killed and reported as ``timeout``.
    """

    invoices: int = 2000
    runs: int = 6
    seed: int = 1
    clean_runs: int = 2
    kills: int = 1
    token_expiry_chance: float = 0.4
    http_timeout_s: float = 2.0
    lease_s: int = 75
    intensity: float = 1.0
    fault_kinds: frozenset[str] = FAULT_KINDS
    run_timeout_s: float = 900.0
    workdir: Path = WORKDIR
    db_url: str | None = None
    airflow_home: Path | None = None
    wipe_database: str | None = None
    """Names the invoicing DB when the demo did not make it (``--i-mean-this-database``): only then is
    such a database with data wiped (:func:`invoice_sync_dev.sandbox.demo.wipe`)."""

    @property
    def invoicing_db_url(self) -> str:
        return self.db_url or os.environ.get("CHAOS_DB_URL") or f"sqlite:///{self.workdir / 'invoicing.db'}"

    @property
    def airflow_home_dir(self) -> Path:
        home = self.airflow_home or os.environ.get("CHAOS_AIRFLOW_HOME")
        return Path(home) if home else self.workdir / "airflow"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one run suffers: fault rules, and whether tokens expire or the process dies mid-sync."""

    rules: list[dict[str, Any]]
    expire_tokens_after_s: float | None = None
    kill_after_s: float | None = None


@dataclass(slots=True)
class RunResult:
    run: int
    faults: dict[str, int]
    expired_tokens: bool
    killed: bool
    dag_state: str
    booked_total: int
    written_back: int
    wall_s: float
    clean: bool = False
    lease_wait_s: float | None = None
    """After a kill: how long the dead run's claim still blocked the integration."""

    def to_json(self) -> dict[str, Any]:
        waited = {} if self.lease_wait_s is None else {"lease_wait_s": self.lease_wait_s}
        return {
            "run": self.run,
            "clean": self.clean,
            "faults": self.faults,
            "expired_tokens": self.expired_tokens,
            "killed": self.killed,
            "dag_state": self.dag_state,
            "booked_total": self.booked_total,
            "written_back": self.written_back,
            "wall_s": self.wall_s,
            **waited,
        }


@dataclass(slots=True)
class Verdict:
    """The final figures; ``ok`` when no invariant broke."""

    invoices: int
    runs: int
    duplicates: int
    lost_registration_numbers: int
    unresolved: int
    unbooked: int
    faults_injected: dict[str, int]
    wall_s: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.lost_registration_numbers == 0 and self.unresolved == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "invoices": self.invoices,
            "runs": self.runs,
            "duplicates": self.duplicates,
            "lost_registration_numbers": self.lost_registration_numbers,
            "unresolved": self.unresolved,
            "unbooked": self.unbooked,
            "faults_injected": self.faults_injected,
            "wall_s": self.wall_s,
            "ok": self.ok,
            **self.details,
        }


# -- fault plans ------------------------------------------------------------------------------------


def draw_plan(rng: random.Random, settings: ChaosSettings, *, kill: bool = False) -> RunPlan:
    """Draw one run's faults. Probabilities and ``times`` are sized so a run still makes progress.

    Every rule has a ``times`` cap: an uncapped 1 % fault over thousands of calls would turn a run into a
    retry storm rather than a test of what happens after a failure. Lost answers (commit then drop,
    commit then timeout, malformed) are what exactly-once is about, so POSTs get those most often; GETs get
    failures the hook retries itself. A hang lasts just past the client's timeout.
    """
    hang = round(settings.http_timeout_s + 1.0, 1)

    def p(low: float, high: float, cap: float = 1.0) -> float:
        return round(min(cap, rng.uniform(low, high) * settings.intensity), 3)

    menu: list[tuple[float, Callable[[], dict[str, Any]]]] = [
        (0.8, lambda: {"kind": "status", "method": "POST", "path": ENTRIES_POST,
                       "status": rng.choice((500, 503)), "probability": p(0.01, 0.04),
                       "times": rng.randint(5, 25)}),
        (0.8, lambda: {"kind": "commit_then_drop", "method": "POST", "path": ENTRIES_POST,
                       "probability": p(0.01, 0.03), "times": rng.randint(5, 20)}),
        (0.5, lambda: {"kind": "commit_then_timeout", "method": "POST", "path": ENTRIES_POST,
                       "delay_s": hang, "probability": p(0.005, 0.015), "times": rng.randint(2, 6)}),
        (0.6, lambda: {"kind": "malformed", "method": "POST", "path": ENTRIES_POST,
                       "probability": p(0.01, 0.03), "times": rng.randint(3, 15)}),
        (0.5, lambda: {"kind": "status", "method": "POST", "path": ACCOUNTS_POST,
                       "status": rng.choice((500, 503)), "probability": p(0.1, 0.3),
                       "times": rng.randint(1, 4)}),
        (0.5, lambda: {"kind": rng.choice(("commit_then_drop", "malformed")), "method": "POST",
                       "path": ACCOUNTS_POST, "probability": p(0.1, 0.3), "times": rng.randint(1, 3)}),
        (0.6, lambda: {"kind": "status", "method": "GET", "path": DIVISION_API,
                       "status": rng.choice((500, 502, 503)), "probability": p(0.02, 0.05, 0.05),
                       "times": rng.randint(2, 8)}),
        (0.4, lambda: {"kind": "malformed", "method": "GET", "path": DIVISION_API,
                       "probability": p(0.01, 0.03, 0.05), "times": rng.randint(1, 4)}),
        (0.3, lambda: {"kind": "timeout", "method": "GET", "path": DIVISION_API, "delay_s": hang,
                       "probability": p(0.005, 0.02, 0.05), "times": rng.randint(1, 3)}),
        (0.5, lambda: {"kind": "latency", "method": "*", "path": DIVISION_API,
                       "delay_s": round(rng.uniform(0.2, 1.0), 2), "probability": p(0.01, 0.03),
                       "times": rng.randint(5, 20)}),
        # A 429 makes the client wait for the minute window to reopen (up to 60 s): one per run at most.
        (0.35, lambda: {"kind": "rate_limit", "method": "*", "path": DIVISION_API,
                        "probability": p(0.002, 0.01), "times": 1}),
    ]  # fmt: skip
    drawn = [make() for chance, make in menu if rng.random() < chance]
    rules = [rule for rule in drawn if rule["kind"] in settings.fault_kinds]
    rng.shuffle(rules)
    # Both are timed from the first sync's start; a night's slice takes a few seconds per integration.
    expire = round(rng.uniform(0.2, 4.0), 1) if rng.random() < settings.token_expiry_chance else None
    kill_after = round(rng.uniform(0.3, 4.0), 1) if kill else None
    return RunPlan(rules, expire, kill_after)


# -- the sandbox ------------------------------------------------------------------------------------


class Sandbox(SandboxProcess):
    """The sandbox subprocess; chaos steers only its Exact Online mount."""

    def exact(self, method: str, name: str, body: Any = None) -> Any:
        return self.control("exact_online", method, name, body)

    def fault_hits(self) -> Counter[str]:
        return Counter(self.exact("GET", "stats")["faults"])


# -- one DAG run ------------------------------------------------------------------------------------


def airflow_env(settings: ChaosSettings, sandbox_url: str) -> dict[str, str]:
    """The environment of every Airflow subprocess: chaos's own homes, the sandbox, a short timeout."""
    connection = exact_online_connection(sandbox_url)
    connection["extra"] = {**connection["extra"], "timeout": settings.http_timeout_s}
    return isolated_airflow_env(
        settings.airflow_home_dir,
        settings.invoicing_db_url,
        {DEMO_CONN_ID: connection},
        extra={LEASE_ENV: str(settings.lease_s)},
    )


def run_dag(
    env: Mapping[str, str],
    log_path: Path,
    plan: RunPlan,
    sandbox: Sandbox,
    timeout_s: float,
    engine: Engine | None = None,
) -> tuple[str, bool, bool]:
    """One ``airflow dags test`` in its own process group; returns (dag state, killed, tokens expired).

    The mid-run actions are timed from the moment the log shows a sync has started, so a kill lands
    while invoices are in flight rather than while Airflow is still parsing the DAG.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [airflow_bin(), "dags", "test", DAG_ID],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL takes the task processes too
        )
        done = threading.Event()
        killed = threading.Event()
        expired = threading.Event()

        def after_sync_started(delay_s: float, action: Callable[[], None]) -> None:
            deadline = time.monotonic() + timeout_s
            while not done.is_set() and time.monotonic() < deadline:
                if SYNC_STARTED in log_path.read_text(errors="replace"):
                    if not done.wait(delay_s):
                        action()
                    return
                done.wait(0.25)

        def kill() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                killed.set()

        def expire() -> None:
            sandbox.exact("POST", "expire-tokens")
            if engine is not None:
                age_stored_tokens(engine)
            expired.set()

        helpers = []
        if plan.kill_after_s is not None:
            helpers.append(threading.Thread(target=after_sync_started, args=(plan.kill_after_s, kill)))
        if plan.expire_tokens_after_s is not None:
            helpers.append(
                threading.Thread(target=after_sync_started, args=(plan.expire_tokens_after_s, expire))
            )
        for helper in helpers:
            helper.start()
        try:
            process.wait(timeout=timeout_s)
            state = None
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            state = "timeout"
        done.set()
        for helper in helpers:
            helper.join()
    if killed.is_set():
        return "killed", True, expired.is_set()
    return state or dag_state(log_path.read_text(errors="replace")), False, expired.is_set()


def dag_state(log: str) -> str:
    """The run's final state as ``airflow dags test`` logs it."""
    match = re.search(rf"Marking run <DagRun {DAG_ID} .*?> (successful|failed)", log)
    if match is None:
        return "unknown"
    return "success" if match.group(1) == "successful" else "failed"


def age_stored_tokens(engine: Engine) -> None:
    """Let the tokens' ten minutes pass for our side too, as they do for Exact's: the hook refreshes after a
    401 only when the stored token is old enough for Exact to grant a new one (a 401 on a young token is
    reported, not answered with a refresh Exact would refuse)."""
    with Session(engine) as session, session.begin():
        session.execute(update(TokenRow).values(expires_at=datetime.now(UTC)))


def wait_for_leases(engine: Engine, *, limit_s: float) -> float:
    """Sleep until no claim is held: a killed run's lease must run out before the next run can sync.

    Returns the seconds waited. The lease is not broken here on purpose: that it expires on its own and
    the next holder's fencing token shuts the dead one out is part of what is being exercised.
    """
    started = time.monotonic()
    while True:
        with Session(engine) as session:
            latest = session.scalar(select(func.max(ClaimRow.lease_expires_at)))
        now = datetime.now(UTC)
        if latest is None or latest.replace(tzinfo=latest.tzinfo or UTC) < now:
            return round(time.monotonic() - started, 1)
        remaining = (latest.replace(tzinfo=latest.tzinfo or UTC) - now).total_seconds()
        if time.monotonic() - started + remaining > limit_s:
            raise RuntimeError(f"a claim is held for {remaining:.0f} s more; is {LEASE_ENV} honoured?")
        time.sleep(min(remaining + 0.5, 5.0))


# -- the books --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """What the seed says a correct sync must book: (division, invoice number) of every valid invoice."""

    bookable: frozenset[tuple[int, str]]
    divisions: dict[int, int]
    """integration id -> Exact division"""


def expected_bookings(engine: Engine, rejected: set[str], before_cutover: set[str]) -> Expected:
    with Session(engine) as session:
        divisions = {row.id: int(row.settings["division"]) for row in session.scalars(select(IntegrationRow))}
        rows = session.execute(
            select(InvoiceRow.integration_id, InvoiceRow.number).where(
                InvoiceRow.status.in_(("registered", "paid")), InvoiceRow.registration_number.is_(None)
            )
        ).all()
    bookable = frozenset(
        (divisions[integration_id], number)
        for integration_id, number in rows
        if number and number not in rejected and number not in before_cutover
    )
    return Expected(bookable, divisions)


def check_books(engine: Engine, sandbox: Sandbox, expected: Expected) -> dict[str, Any]:
    """Compare the simulator's books with the invoicing DB and the ledger."""
    entries: dict[tuple[int, str], list[str]] = defaultdict(list)
    for entry in sandbox.exact("GET", "entries"):
        entries[(int(entry["Division"]), str(entry["YourRef"]))].append(str(entry["EntryNumber"]))
    with Session(engine) as session:
        numbers = {
            (expected.divisions[integration_id], number): registration
            for integration_id, number, registration in session.execute(
                select(InvoiceRow.integration_id, InvoiceRow.number, InvoiceRow.registration_number)
            )
            if number
        }
        unresolved = session.scalar(select(func.count()).where(LedgerRow.state.in_(LedgerState.NEEDS_LOOKUP)))
    duplicates = sorted(f"{d}:{ref}" for (d, ref), booked in entries.items() if len(booked) > 1)
    lost = sorted(f"{d}:{ref}" for (d, ref), booked in entries.items() if numbers.get((d, ref)) not in booked)
    unbooked = sorted(f"{d}:{ref}" for d, ref in expected.bookable if (d, ref) not in entries)
    unexpected = sorted(f"{d}:{ref}" for d, ref in entries if (d, ref) not in expected.bookable)
    return {
        "booked": len(entries),
        "duplicates": duplicates,
        "lost": lost,
        "unresolved": int(unresolved or 0),
        "unbooked": unbooked,
        "unexpected": unexpected,
    }


def _progress(engine: Engine, sandbox: Sandbox) -> tuple[int, int]:
    """(entries in the simulator, invoices with a registration number written back by a sync)."""
    booked = len(sandbox.exact("GET", "entries"))
    with Session(engine) as session:
        written = session.scalar(select(func.count()).where(LedgerRow.state == LedgerState.WRITTEN_BACK))
    return booked, int(written or 0)


def _work_left(engine: Engine, sandbox: Sandbox, expected: Expected) -> int:
    books = check_books(engine, sandbox, expected)
    with Session(engine) as session:
        booked_not_written = session.scalar(select(func.count()).where(LedgerRow.state == LedgerState.BOOKED))
    unresolved = int(books["unresolved"])
    return len(books["unbooked"]) + len(books["lost"]) + unresolved + int(booked_not_written or 0)


# -- the session ------------------------------------------------------------------------------------


def _note(err: TextIO, message: str) -> None:
    print(f"chaos: {message}", file=err, flush=True)


def _emit(out: TextIO, payload: Mapping[str, Any]) -> None:
    print(json.dumps(payload, sort_keys=False), file=out, flush=True)


def prepare_invoicing_db(settings: ChaosSettings) -> tuple[Engine, Expected]:
    """Wipe and seed the chaos DB, and switch automatic sync on everywhere so the nightly DAG syncs
    every integration (the demo's third one is manual-only)."""
    engine = make_engine(settings.invoicing_db_url)
    prepare(engine)
    seeded = seed(
        engine,
        invoices=settings.invoices,
        seed_value=settings.seed,
        reset=True,
        tools=("exact_online",),
        confirm=settings.wipe_database,
    )
    with Session(engine) as session, session.begin():
        session.execute(update(IntegrationRow).values(auto_sync=True))
    expected = expected_bookings(engine, set(seeded.expected_rejections), set(seeded.before_cutover))
    return engine, expected


@dataclass(slots=True)
class Backlog:
    """The seeded invoices, registered night by night instead of all before the first run.

    With everything registered up front the first run books nearly all of it and the later runs' faults
    have almost nothing to hit. So, like the app does, each faulty run finds a new slice of freshly
    registered invoices: the others wait as drafts (which are never pushed) until their night comes.
    Slices follow invoice ids, so a credit note never comes before the invoice it credits.
    """

    slices: list[dict[int, str]]
    """per run: invoice id -> its seeded status (registered or paid)"""

    @classmethod
    def hold_back(cls, engine: Engine, parts: int) -> Backlog:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                select(InvoiceRow.id, InvoiceRow.status)
                .where(
                    InvoiceRow.status.in_(("registered", "paid")), InvoiceRow.registration_number.is_(None)
                )
                .order_by(InvoiceRow.id)
            ).all()
            size = -(-len(rows) // max(parts, 1))
            statuses = [(invoice_id, str(status)) for invoice_id, status in rows]
            slices = [dict(statuses[i : i + size]) for i in range(0, len(statuses), size)] if rows else []
            later = [invoice_id for part in slices[1:] for invoice_id in part]
            for start in range(0, len(later), 500):
                session.execute(
                    update(InvoiceRow)
                    .where(InvoiceRow.id.in_(later[start : start + 500]))
                    .values(status="draft")
                )
        return cls(slices)

    def release(self, engine: Engine, index: int) -> int:
        """Register slice ``index`` (the first one never was held back); returns how many invoices."""
        if index == 0 or index >= len(self.slices):
            return 0
        with Session(engine) as session, session.begin():
            for status in ("registered", "paid"):
                ids = [i for i, s in self.slices[index].items() if s == status]
                for start in range(0, len(ids), 500):
                    session.execute(
                        update(InvoiceRow)
                        .where(InvoiceRow.id.in_(ids[start : start + 500]))
                        .values(status=status)
                    )
        return len(self.slices[index])


def migrate_airflow(env: Mapping[str, str], log_path: Path) -> None:
    with log_path.open("w") as log:
        result = subprocess.run(
            [airflow_bin(), "db", "migrate"], env=dict(env), stdout=log, stderr=subprocess.STDOUT, timeout=900
        )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed; see {log_path}")


def run_chaos(settings: ChaosSettings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> Verdict:
    """The whole session: set up, faulty runs, clean runs until nothing is left, check the books."""
    started = time.monotonic()
    rng = random.Random(settings.seed)
    workdir = settings.workdir
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("run-*.log"):
        old.unlink()
    settings.airflow_home_dir.mkdir(parents=True, exist_ok=True)

    _note(err, f"seeding {settings.invoices} invoices into {settings.invoicing_db_url}")
    engine, expected = prepare_invoicing_db(settings)
    backlog = Backlog.hold_back(engine, settings.runs)
    sandbox = Sandbox(workdir)
    try:
        env = airflow_env(settings, sandbox.url)
        # Exact's real limits (60 calls a minute) would make 2000 invoices take over half an hour; they
        # are switched off, and 429s are injected as faults instead. The per-day counters are raised
        # too, or the headers would still announce a spent day after 5000 calls.
        sandbox.exact(
            "POST",
            "config",
            {"limits_enabled": False, "minutely_limit": 1_000_000, "daily_limit": 10_000_000},
        )
        _note(
            err,
            f"sandbox on {sandbox.url} (log {sandbox.log_path}); rate limits off (429s are injected "
            f"instead), HTTP timeout {settings.http_timeout_s} s, claim lease {settings.lease_s} s",
        )
        _note(err, f"airflow db migrate (AIRFLOW_HOME={settings.airflow_home_dir})")
        migrate_airflow(env, logs / "airflow-db-migrate.log")
        _note(
            err,
            f"{len(expected.bookable)} valid invoices to book, registered in {len(backlog.slices)} nightly "
            f"slices; DAG run logs in {logs}",
        )

        results: list[RunResult] = []
        run_number = 0

        def one_run(plan: RunPlan, *, clean: bool) -> RunResult:
            nonlocal run_number
            run_number += 1
            sandbox.exact("POST", "faults", plan.rules)
            hits_before = sandbox.fault_hits()
            run_started = time.monotonic()
            state, killed, expired = run_dag(
                env, logs / f"run-{run_number:02d}.log", plan, sandbox, settings.run_timeout_s, engine
            )
            wall = round(time.monotonic() - run_started, 1)
            sandbox.exact("DELETE", "faults")
            hits = sandbox.fault_hits() - hits_before
            booked, written = _progress(engine, sandbox)
            result = RunResult(
                run_number, dict(sorted(hits.items())), expired, killed, state, booked, written, wall, clean
            )
            if killed or state == "timeout":
                # An engine that ignored INVOICE_SYNC_LEASE_SECONDS would hold it for the default lease.
                limit = max(settings.lease_s, DEFAULT_LEASE.total_seconds()) + 30
                result.lease_wait_s = wait_for_leases(engine, limit_s=limit)
            _emit(out, result.to_json())
            results.append(result)
            return result

        killed_runs = set(rng.sample(range(settings.runs), min(settings.kills, settings.runs)))
        for index in range(settings.runs):
            backlog.release(engine, index)
            one_run(draw_plan(rng, settings, kill=index in killed_runs), clean=False)
        clean = 0
        while clean < settings.clean_runs and _work_left(engine, sandbox, expected) > 0:
            one_run(RunPlan([]), clean=True)
            clean += 1

        books = check_books(engine, sandbox, expected)
        faults = dict(sorted(sandbox.fault_hits().items()))
    finally:
        sandbox.stop()
        engine.dispose()
    verdict = Verdict(
        invoices=len(expected.bookable),
        runs=len(results),
        duplicates=len(books["duplicates"]),
        lost_registration_numbers=len(books["lost"]),
        unresolved=books["unresolved"],
        unbooked=len(books["unbooked"]),
        faults_injected=faults,
        wall_s=round(time.monotonic() - started, 1),
        details={
            "booked": books["booked"],
            "killed_runs": sum(r.killed for r in results),
            "token_expiries": sum(r.expired_tokens for r in results),
            "seed": settings.seed,
            "examples": {
                k: books[k][:5] for k in ("duplicates", "lost", "unbooked", "unexpected") if books[k]
            },
        },
    )
    _emit(out, verdict.to_json())
    return verdict


def main(*, invoices: int, runs: int, seed: int, kills: int = 1, wipe_database: str | None = None) -> int:
    """Entry point of ``invoice-sync-dev chaos``; non-zero when an invariant broke."""
    settings = ChaosSettings(
        invoices=invoices, runs=runs, seed=seed, kills=kills, wipe_database=wipe_database
    )
    verdict = run_chaos(settings)
    return 0 if verdict.ok else 1
