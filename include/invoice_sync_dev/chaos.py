"""``invoice-sync-dev chaos``: many nightly runs under random faults, then a check of the books.

The tests prove each exactly-once mechanism in isolation; this command shows that they hold together, at
volume, on every tool, when failures pile up the way they do in production: 5xx before the tool acted,
answers lost after it committed (dropped connections, timeouts, garbled bodies), batches of which only a
part was booked before the answer was lost, lookups answering late, 429 bursts, slow answers, access
tokens expiring in the middle of a run, and the worker process killed outright. Where each fault lands
is the tool's own :class:`~invoice_sync_dev.sandbox.tools.ChaosTargets` (its booking call, its lookup,
its reads...), so a batch tool, where one lost answer leaves 25 to 50 invoices unknown, gets its faults
on whole batches. It is a benchmark-style
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
import urllib.request
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
from invoice_sync_dev.sandbox.demo import INTEGRATIONS, SeedResult, seed
from invoice_sync_dev.sandbox.faults import FAULT_KINDS
from invoice_sync_dev.sandbox.process import SandboxProcess, airflow_bin
from invoice_sync_dev.sandbox.process import airflow_env as isolated_airflow_env
from invoice_sync_dev.sandbox.tools import SandboxTool, Target, demo_connections, sandbox_tools, with_extra

DAG_ID = "invoice_sync_nightly"
WORKDIR = PROJECT_ROOT / "var" / "chaos"
SYNC_STARTED = "unsynced registered invoices to consider"
"""Logged by the engine once an integration's sync began: from then on a kill or a token expiry hurts."""
LEASE_ENV = config.LEASE_ENV
LOST_ANSWERS = ("commit_then_drop", "commit_then_timeout", "malformed", "partial_commit_then_drop")
"""The fault kinds after which the tool has (partly) booked and the caller does not know it."""


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """One chaos session. Defaults are what ``make chaos`` uses.

    :param invoices: valid invoices to book, at least, over every tool's demo integrations (the demo's
        drafts, already synced and deliberately broken invoices come on top).
    :param runs: nightly runs under faults, before up to ``clean_runs`` runs without faults.
    :param seed: drives the demo data and every random choice here, so a session can be replayed.
    :param kills: how many faulty runs get SIGKILLed mid-sync. Each kill costs a wait for the dead
        run's claim lease (``lease_s``) to run out.
    :param token_expiry_chance: how likely a faulty run has every access token expired under it.
    :param http_timeout_s: the connection's ``timeout`` extra: short, so hung requests cost little.
    :param lease_s: claim lease for the DAG runs (``INVOICE_SYNC_LEASE_SECONDS``), so a killed run's
        claim frees up quickly; it must outlast the longest pause without a write (a 429 waits up to 60 s).
    :param intensity: multiplies every fault probability (each read fault stays at most 5 %, or the
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
    integrations_per_tool: int | None = None
    """Sync only the first so many demo integrations of each tool (None: all): a small session's each
    integration costs a mapped task, seconds of Airflow each."""
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
class Aimed:
    """One fault rule for one tool's simulator, and what it aims at (a :class:`ChaosTargets` field)."""

    tool: str
    aim: str
    rule: dict[str, Any]

    @property
    def label(self) -> str:
        """``<aim>:<kind>`` (``book:partial_commit_then_drop``), how the verdict counts fired rules."""
        return f"{self.aim}:{self.rule['kind']}"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one run suffers: fault rules, and whether tokens expire or the process dies mid-sync."""

    rules: list[Aimed]
    expire_tokens_after_s: float | None = None
    kill_after_s: float | None = None

    def for_tool(self, tool: str) -> list[Aimed]:
        return [aimed for aimed in self.rules if aimed.tool == tool]


@dataclass(slots=True)
class RunResult:
    run: int
    faults: dict[str, dict[str, int]]
    """tool -> ``<aim>:<kind>`` -> how often such a rule fired"""
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
    by_tool: dict[str, dict[str, Any]] = field(default_factory=dict)
    """tool -> the same counts for that tool's integrations, its faults by kind and by aim"""
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
            "by_tool": self.by_tool,
            **self.details,
        }


# -- fault plans ------------------------------------------------------------------------------------


def draw_plan(rng: random.Random, settings: ChaosSettings, *, kill: bool = False) -> RunPlan:
    """Draw one run's faults for every tool. Probabilities and ``times`` are sized so a run still makes
    progress.

    Every rule has a ``times`` cap: an uncapped 1 % fault over thousands of calls would turn a run into a
    retry storm rather than a test of what happens after a failure. Lost answers (commit then drop,
    commit then timeout, malformed, a batch booked in part) are what exactly-once is about, so booking
    calls get those most often; reads get failures the hook retries itself. A hang lasts just past the
    client's timeout. A tool that books one invoice per call makes a call per invoice, so a low
    probability hits it often enough; a batch tool makes a few booking calls a night, so each of them is
    likely to be hit, a few times at most. A lookup runs only after a lost answer, so it is slowed down
    often. One tool at most gets a 429 (it waits for its window to reopen, up to 60 s).
    """
    limited = rng.choice([tool.name for tool in sandbox_tools()]) if rng.random() < 0.35 else None
    rules = [
        aimed
        for tool in sandbox_tools()
        for aimed in _tool_rules(rng, settings, tool, rate_limit=tool.name == limited)
        if aimed.rule["kind"] in settings.fault_kinds
    ]
    rng.shuffle(rules)
    # Both are timed from the first sync's start; a night's slice takes a few seconds per integration.
    expire = round(rng.uniform(0.2, 4.0), 1) if rng.random() < settings.token_expiry_chance else None
    kill_after = round(rng.uniform(0.3, 4.0), 1) if kill else None
    return RunPlan(rules, expire, kill_after)


def _tool_rules(
    rng: random.Random, settings: ChaosSettings, tool: SandboxTool, *, rate_limit: bool
) -> list[Aimed]:
    targets = tool.chaos
    hang = round(settings.http_timeout_s + 1.0, 1)

    def p(low: float, high: float, cap: float = 1.0) -> float:
        return round(min(cap, rng.uniform(low, high) * settings.intensity), 3)

    def at(target: Target) -> dict[str, str]:
        return {"method": target.method, "path": target.path}

    def read() -> dict[str, str]:
        return at(rng.choice(targets.reads))

    def writes(low: float, high: float, times: tuple[int, int]) -> dict[str, Any]:
        if targets.batch:  # a few booking calls a night: hit one or two of them
            return {"probability": p(0.25, 0.5), "times": rng.randint(1, 2)}
        return {"probability": p(low, high), "times": rng.randint(*times)}

    # A batch tool's calls are few (a booking call per 25 to 50 invoices): each is slowed down more often.
    slow = p(0.1, 0.3) if targets.batch else p(0.01, 0.03)

    book = at(targets.book)
    menu: list[tuple[float, str, Callable[[], dict[str, Any]]]] = [
        (0.8, "book", lambda: {"kind": "status", **book, "status": rng.choice((500, 503)),
                               **writes(0.01, 0.04, (5, 25))}),
        (0.8, "book", lambda: {"kind": "commit_then_drop", **book, **writes(0.01, 0.03, (5, 20))}),
        (0.5, "book", lambda: {"kind": "commit_then_timeout", **book, "delay_s": hang,
                               **writes(0.005, 0.015, (2, 6))}),
        (0.6, "book", lambda: {"kind": "malformed", **book, **writes(0.01, 0.03, (3, 15))}),
        (0.6, "lookup", lambda: {"kind": "latency", **at(targets.lookup),
                                 "delay_s": round(rng.uniform(0.3, 1.5), 2), "probability": p(0.1, 0.3),
                                 "times": rng.randint(3, 10)}),
        (0.3, "lookup", lambda: {"kind": "timeout", **at(targets.lookup), "delay_s": hang,
                                 "probability": p(0.02, 0.05, 0.05), "times": 1}),
        (0.6, "reads", lambda: {"kind": "status", **read(), "status": rng.choice((500, 502, 503)),
                                "probability": p(0.02, 0.05, 0.05), "times": rng.randint(2, 8)}),
        (0.4, "reads", lambda: {"kind": "malformed", **read(), "probability": p(0.01, 0.03, 0.05),
                                "times": rng.randint(1, 4)}),
        (0.3, "reads", lambda: {"kind": "timeout", **read(), "delay_s": hang,
                                "probability": p(0.005, 0.02, 0.05), "times": rng.randint(1, 3)}),
        (0.5, "api", lambda: {"kind": "latency", **at(targets.api),
                              "delay_s": round(rng.uniform(0.2, 1.0), 2), "probability": slow,
                              "times": rng.randint(5, 20)}),
    ]  # fmt: skip
    if targets.batch:
        menu.append((0.8, "book", lambda: {"kind": "partial_commit_then_drop", **book,
                                           **writes(0.015, 0.03, (1, 2))}))  # fmt: skip
    if targets.customers is not None:
        customers = at(targets.customers)
        menu += [
            (0.5, "customers", lambda: {"kind": "status", **customers, "status": rng.choice((500, 503)),
                                        "probability": p(0.1, 0.3), "times": rng.randint(1, 4)}),
            (0.5, "customers", lambda: {"kind": rng.choice(("commit_then_drop", "malformed")), **customers,
                                        "probability": p(0.1, 0.3), "times": rng.randint(1, 3)}),
        ]  # fmt: skip
    if rate_limit:
        # A 429 makes the client wait for the window to reopen (up to 60 s): one per run at most.
        menu.append((1.0, "api", lambda: {"kind": "rate_limit", **at(targets.api),
                                          "probability": p(0.002, 0.01), "times": 1}))  # fmt: skip
    return [Aimed(tool.name, aim, make()) for chance, aim, make in menu if rng.random() < chance]


# -- the sandbox ------------------------------------------------------------------------------------


class Sandbox(SandboxProcess):
    """The sandbox subprocess; chaos steers every tool's mount."""

    def set_faults(self, plan: RunPlan) -> None:
        for tool in sandbox_tools():
            self.control(tool.name, "POST", "faults", [aimed.rule for aimed in plan.for_tool(tool.name)])

    def fired(self, plan: RunPlan) -> dict[str, dict[str, int]]:
        """Per tool, how often the plan's rules fired by ``<aim>:<kind>`` (from the ``times`` left), and
        clears the rules."""
        fired: dict[str, dict[str, int]] = {}
        for tool in sandbox_tools():
            left = self.control(tool.name, "GET", "faults")
            self.control(tool.name, "DELETE", "faults")
            counts: Counter[str] = Counter()
            for aimed, rule in zip(plan.for_tool(tool.name), left, strict=True):
                counts[aimed.label] += int(aimed.rule["times"]) - int(rule["times"])
            fired[tool.name] = dict(sorted((label, n) for label, n in counts.items() if n))
        return fired

    def expire_tokens(self) -> None:
        for tool in sandbox_tools():
            self.control(tool.name, "POST", "expire-tokens")

    def fault_hits(self) -> dict[str, dict[str, int]]:
        """tool -> fault kind -> hits since the sandbox started."""
        return {tool.name: dict(sorted(self.stats(tool.name)["faults"].items())) for tool in sandbox_tools()}

    def books(self) -> list[dict[str, str]]:
        """Every booking of every tool: ``tool``, ``reference``, ``registration_number``."""
        with urllib.request.urlopen(f"{self.url}/_books", timeout=60) as response:
            found: list[dict[str, str]] = json.loads(response.read())
        return found


# -- one DAG run ------------------------------------------------------------------------------------


def airflow_env(settings: ChaosSettings, sandbox_url: str) -> dict[str, str]:
    """The environment of every Airflow subprocess: chaos's own homes, the sandbox, a short timeout, and
    the limits a connector counts itself raised as the simulators' are (``BenchKnobs.unpaced``)."""
    unpaced = {tool.name: tool.bench.unpaced for tool in sandbox_tools()}
    tool_of = {integration.conn_id: integration.tool for integration in INTEGRATIONS}
    connections = {
        conn_id: with_extra(connection, timeout=settings.http_timeout_s, **unpaced[tool_of[conn_id]])
        for conn_id, connection in demo_connections(sandbox_url).items()
    }
    return isolated_airflow_env(
        settings.airflow_home_dir,
        settings.invoicing_db_url,
        connections,
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
            sandbox.expire_tokens()
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
    """Let the tokens' lifetimes pass for our side too, as they do for the tools': Exact's hook refreshes
    after a 401 only when the stored token is old enough for Exact to grant a new one (a 401 on a young
    token is reported, not answered with a refresh Exact would refuse)."""
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


Key = tuple[str, str]
"""(tool, our invoice number): each demo integration numbers its invoices its own way, so a number is
unique within its tool (two integrations of one tool can share the tool's tenant)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What the seed says a correct sync must book: (tool, invoice number) of every valid invoice."""

    bookable: frozenset[Key]
    tools: dict[int, str]
    """integration id -> its tool"""


def expected_bookings(engine: Engine, rejected: set[str], before_cutover: set[str]) -> Expected:
    with Session(engine) as session:
        integrations = list(session.scalars(select(IntegrationRow)))
        tools = {row.id: str(row.tool) for row in integrations}
        synced = {row.id for row in integrations if row.auto_sync}
        rows = session.execute(
            select(InvoiceRow.integration_id, InvoiceRow.number).where(
                InvoiceRow.status.in_(("registered", "paid")), InvoiceRow.registration_number.is_(None)
            )
        ).all()
    bookable = frozenset(
        (tools[integration_id], number)
        for integration_id, number in rows
        if number and integration_id in synced and number not in rejected and number not in before_cutover
    )
    return Expected(bookable, tools)


def _per_tool(expected: Expected) -> str:
    counts = Counter(tool for tool, _ in expected.bookable)
    return ", ".join(f"{tool.name} {counts[tool.name]}" for tool in sandbox_tools())


def _listed(keys: Any) -> list[str]:
    return sorted(f"{tool}:{number}" for tool, number in keys)


def check_books(engine: Engine, sandbox: Sandbox, expected: Expected) -> dict[str, Any]:
    """Compare every simulator's books with the invoicing DB and the ledger; also per tool (``by_tool``)."""
    entries: dict[Key, list[str]] = defaultdict(list)
    for booking in sandbox.books():
        entries[(booking["tool"], booking["reference"])].append(booking["registration_number"])
    with Session(engine) as session:
        numbers = {
            (expected.tools[integration_id], number): registration
            for integration_id, number, registration in session.execute(
                select(InvoiceRow.integration_id, InvoiceRow.number, InvoiceRow.registration_number)
            )
            if number
        }
        unresolved_rows = session.execute(
            select(LedgerRow.integration_id, func.count())
            .where(LedgerRow.state.in_(LedgerState.NEEDS_LOOKUP))
            .group_by(LedgerRow.integration_id)
        ).all()
    unresolved: Counter[str] = Counter()
    for integration_id, count in unresolved_rows:
        unresolved[expected.tools[integration_id]] += int(count)
    found = {
        "duplicates": {key for key, booked in entries.items() if len(booked) > 1},
        "lost": {key for key, booked in entries.items() if numbers.get(key) not in booked},
        "unbooked": {key for key in expected.bookable if key not in entries},
        "unexpected": {key for key in entries if key not in expected.bookable},
    }
    by_tool = {
        tool.name: {
            "invoices": sum(1 for key in expected.bookable if key[0] == tool.name),
            "booked": sum(1 for key in entries if key[0] == tool.name),
            **{name: _listed(k for k in keys if k[0] == tool.name) for name, keys in found.items()},
            "unresolved": unresolved[tool.name],
        }
        for tool in sandbox_tools()
    }
    return {
        "booked": len(entries),
        **{name: _listed(keys) for name, keys in found.items()},
        "unresolved": sum(unresolved.values()),
        "by_tool": by_tool,
    }


def _progress(engine: Engine, sandbox: Sandbox) -> tuple[int, int]:
    """(bookings in the simulators, invoices with a registration number written back by a sync)."""
    booked = len(sandbox.books())
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
    """Wipe and seed the chaos DB with every tool's demo integrations, and switch automatic sync on
    everywhere (some demo ones are manual-only; ``integrations_per_tool`` keeps it on for fewer) so the
    nightly DAG syncs every integration.

    The demo's ``invoices`` counts the regular invoices of the Exact integrations (each other integration
    gets a third as many) and some of them are drafts or synced already, so the valid ones are counted after
    a first seeding, which is redone scaled to ``settings.invoices`` (and again, larger, while short).
    """
    engine = make_engine(settings.invoicing_db_url)
    prepare(engine)
    target = settings.invoices
    regular = target
    seeded, valid = _seed(engine, settings, regular)
    if valid > target:
        regular = max(1, -(-regular * target // valid))
        seeded, valid = _seed(engine, settings, regular)
    while valid < target:
        regular = -(-regular * target // max(valid, 1)) + 1
        seeded, valid = _seed(engine, settings, regular)
    expected = expected_bookings(engine, set(seeded.expected_rejections), set(seeded.before_cutover))
    return engine, expected


def _seed(engine: Engine, settings: ChaosSettings, regular: int) -> tuple[SeedResult, int]:
    """Seed ``regular`` regular demo invoices; returns what was seeded and how many are valid to book."""
    seeded = seed(
        engine, invoices=regular, seed_value=settings.seed, reset=True, confirm=settings.wipe_database
    )
    with Session(engine) as session, session.begin():
        kept: Counter[str] = Counter()
        for integration in session.scalars(select(IntegrationRow).order_by(IntegrationRow.id)):
            kept[str(integration.tool)] += 1
            limit = settings.integrations_per_tool
            integration.auto_sync = limit is None or kept[str(integration.tool)] <= limit
    valid = expected_bookings(engine, set(seeded.expected_rejections), set(seeded.before_cutover)).bookable
    return seeded, len(valid)


@dataclass(slots=True)
class Backlog:
    """The seeded invoices, registered night by night instead of all before the first run.

    With everything registered up front the first run books nearly all of it and the later runs' faults
    have almost nothing to hit. So, like the app does, each faulty run finds a new slice of freshly
    registered invoices: the others wait as drafts (which are never pushed) until their night comes.
    Each integration's invoices are sliced on their own, following invoice ids, so every night brings
    every tool its share (the seeder writes one tool's invoices after the other) and a credit note never
    comes before the invoice it credits.
    """

    slices: list[dict[int, str]]
    """per run: invoice id -> its seeded status (registered or paid)"""

    @classmethod
    def hold_back(cls, engine: Engine, parts: int) -> Backlog:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                select(InvoiceRow.integration_id, InvoiceRow.id, InvoiceRow.status)
                .where(
                    InvoiceRow.status.in_(("registered", "paid")), InvoiceRow.registration_number.is_(None)
                )
                .order_by(InvoiceRow.id)
            ).all()
            by_integration: dict[int, list[tuple[int, str]]] = defaultdict(list)
            for integration_id, invoice_id, status in rows:
                by_integration[integration_id].append((invoice_id, str(status)))
            slices: list[dict[int, str]] = [{} for _ in range(max(parts, 1))]
            for statuses in by_integration.values():
                size = -(-len(statuses) // len(slices))
                for index, start in enumerate(range(0, len(statuses), size)):
                    slices[index].update(statuses[start : start + size])
            slices = [part for part in slices if part]
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

    _note(
        err,
        f"seeding at least {settings.invoices} valid invoices (every tool) into {settings.invoicing_db_url}",
    )
    engine, expected = prepare_invoicing_db(settings)
    backlog = Backlog.hold_back(engine, settings.runs)
    sandbox = Sandbox(workdir)
    try:
        env = airflow_env(settings, sandbox.url)
        # The tools' real limits (Exact's 60 calls a minute) would make 2000 invoices take over half an
        # hour; they are switched off (raised where headers announce them, or the header-fed budgets
        # would still pause: BenchKnobs.limits_off), and 429s are injected as faults instead.
        for tool in sandbox_tools():
            sandbox.configure(tool.name, **tool.bench.limits_off)
        _note(
            err,
            f"sandbox on {sandbox.url} (log {sandbox.log_path}); rate limits off (429s are injected "
            f"instead), HTTP timeout {settings.http_timeout_s} s, claim lease {settings.lease_s} s",
        )
        _note(err, f"airflow db migrate (AIRFLOW_HOME={settings.airflow_home_dir})")
        migrate_airflow(env, logs / "airflow-db-migrate.log")
        _note(
            err,
            f"{len(expected.bookable)} valid invoices to book ({_per_tool(expected)}), registered in "
            f"{len(backlog.slices)} nightly slices; DAG run logs in {logs}",
        )

        results: list[RunResult] = []
        run_number = 0

        def one_run(plan: RunPlan, *, clean: bool) -> RunResult:
            nonlocal run_number
            run_number += 1
            sandbox.set_faults(plan)
            run_started = time.monotonic()
            state, killed, expired = run_dag(
                env, logs / f"run-{run_number:02d}.log", plan, sandbox, settings.run_timeout_s, engine
            )
            wall = round(time.monotonic() - run_started, 1)
            fired = sandbox.fired(plan)
            booked, written = _progress(engine, sandbox)
            result = RunResult(run_number, fired, expired, killed, state, booked, written, wall, clean)
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
        hits = sandbox.fault_hits()
    finally:
        sandbox.stop()
        engine.dispose()
    faults: Counter[str] = Counter()
    for kinds in hits.values():
        faults.update(kinds)
    verdict = Verdict(
        invoices=len(expected.bookable),
        runs=len(results),
        duplicates=len(books["duplicates"]),
        lost_registration_numbers=len(books["lost"]),
        unresolved=books["unresolved"],
        unbooked=len(books["unbooked"]),
        faults_injected=dict(sorted(faults.items())),
        wall_s=round(time.monotonic() - started, 1),
        by_tool={
            tool: _tool_verdict(tool, figures, hits[tool], results)
            for tool, figures in books["by_tool"].items()
        },
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


def _tool_verdict(
    tool: str, figures: Mapping[str, Any], hits: Mapping[str, int], results: list[RunResult]
) -> dict[str, Any]:
    """One tool's part of the verdict: the same counts as the whole, its faults by kind and by aim
    (``booking_answers_lost``: booking calls that committed, wholly or in part, and lost their answer)."""
    aimed: Counter[str] = Counter()
    for result in results:
        aimed.update(result.faults.get(tool, {}))
    lost_answers = sum(
        n for label, n in aimed.items() if label.startswith("book:") and label[5:] in LOST_ANSWERS
    )
    return {
        "invoices": figures["invoices"],
        "booked": figures["booked"],
        "duplicates": len(figures["duplicates"]),
        "lost_registration_numbers": len(figures["lost"]),
        "unresolved": figures["unresolved"],
        "unbooked": len(figures["unbooked"]),
        "faults_injected": dict(hits),
        "faults_by_aim": dict(sorted(aimed.items())),
        "booking_answers_lost": lost_answers,
        "examples": {
            k: figures[k][:5] for k in ("duplicates", "lost", "unbooked", "unexpected") if figures[k]
        },
    }


def main(*, invoices: int, runs: int, seed: int, kills: int = 1, wipe_database: str | None = None) -> int:
    """Entry point of ``invoice-sync-dev chaos``; non-zero when an invariant broke."""
    settings = ChaosSettings(
        invoices=invoices, runs=runs, seed=seed, kills=kills, wipe_database=wipe_database
    )
    verdict = run_chaos(settings)
    return 0 if verdict.ok else 1
