"""A real Dagster deployment on this machine, on the production instance settings, for benchmarks.

What ``deployment(...)`` sets up (and tears down):

- a fresh PostgreSQL database on 127.0.0.1:5432 (trust auth) with ``CREATE SCHEMA dagster``;
- a temp ``DAGSTER_HOME`` whose ``dagster.yaml`` is ``deploy/dagster.yaml`` copied verbatim
  (QueuedRunCoordinator with one run per account, Postgres storage, DefaultRunLauncher, run
  monitoring and retries), with ``DAGSTER_PG_*`` pointing at that database;
- a ``workspace.yaml`` loading the code location ``klaviyo_dagster.definitions`` from the code root
  being measured (the folder ``klaviyo_dagster`` is imported from: set ``PYTHONPATH`` to measure
  another checkout; every subprocess gets the same ``PYTHONPATH`` and runs in that folder);
- ``dagster-webserver`` on a random free port, then the unwanted schedules and sensors stopped through
  GraphQL (a fresh instance has them at their code default: the catch-up sensor and the schedule are
  RUNNING and would launch runs on their own), the account partitions added, then ``dagster-daemon
  run`` (scheduler, sensors, backfills, run queue, monitoring, retries);
- a sampler of every process under the daemon (every 0.5 s, from /proc: no psutil): run workers
  (children of the code server started with multiprocessing's spawn) and step workers (their
  children), with peak RSS (VmHWM) and CPU seconds. Run ids are matched to worker pids from the
  runs' own engine events ("Started process for run (pid: N)"), so figures are per run.

The harness process itself sets ``DAGSTER_HOME`` and ``DAGSTER_PG_*`` in ``os.environ`` while the
deployment is up (to open the same instance and read materializations); it restores them after.

    with deployment(run_env, accounts=[...]) as dep:
        backfill = dep.launch_backfill(keys, ASSETS)
        runs = dep.wait_for_backfill(backfill)
        figures = dep.run_figures(runs)
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import psycopg

import klaviyo_dagster
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME

CODE_ROOT = Path(klaviyo_dagster.__file__).resolve().parents[1]
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = PROJECT_ROOT / "deploy" / "dagster.yaml"
LOCATION = "klaviyo_dagster.definitions"
REPOSITORY = "__repository__"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ENV = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres"}
# Instigators a benchmark does not want: they launch runs or call Klaviyo on their own. The run
# status sensors stay on, as in production (they only stamp the integration row after a run).
UNWANTED_SENSORS = ("klaviyo_catch_up_sensor", "klaviyo_accounts_sensor")
UNWANTED_SCHEDULES = ("klaviyo_complete_days_schedule", "klaviyo_cleanup_schedule")
ACTIVE_STATUSES = ("STARTING", "STARTED")
FINISHED_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_RUNNING = {"REQUESTED", "CANCELING", "FAILING"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.5
_PID = re.compile(r"\(pid: (\d+)\)")


# --- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat a sampler needs (CPU in clock ticks)."""

    pid: int
    ppid: int
    start: int
    own_ticks: int
    reaped_ticks: int  # children already waited for (cutime + cstime)


def read_stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    ticks = [int(value) for value in rest[11:15]]
    return Stat(pid, int(rest[1]), int(rest[19]), ticks[0] + ticks[1], ticks[2] + ticks[3])


def read_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def read_peak_rss_kb(pid: int) -> int:
    """VmHWM (the process's own peak resident set), or VmRSS if the kernel does not give it."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0])
    except OSError:
        return 0
    return max(found.values(), default=0)


def all_stats() -> dict[int, Stat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_stat(int(entry))) is not None:
            stats[stat.pid] = stat
    return stats


def descendants(root: int, stats: Mapping[int, Stat]) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for stat in stats.values():
        children[stat.ppid].append(stat.pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_spawned_worker(cmdline: str) -> bool:
    """A run worker, a fork server or a step worker: multiprocessing's spawn and forkserver
    children (a step forked by the fork server keeps the fork server's command line)."""
    return ("spawn_main" in cmdline or "forkserver" in cmdline) and "resource_tracker" not in cmdline


@dataclass
class WorkerRecord:
    """One run or step worker process as sampled (the key is (pid, start ticks): pids get reused)."""

    pid: int
    start: int
    ppid: int
    role: str  # "run worker" | "fork server" | "step worker"
    cmdline: str
    first_seen: float
    last_seen: float
    peak_rss_kb: int = 0
    own_ticks: int = 0
    tree_ticks: int = 0  # own + reaped children + live children, the most seen at any sample

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    @property
    def cpu_seconds(self) -> float:
        return self.tree_ticks / CLK_TCK


class WorkerSampler:
    """Samples every run/step worker under ``root`` in a thread until ``stop()``."""

    def __init__(self, root: int, interval: float = SAMPLE_SECONDS):
        self.root = root
        self.interval = interval
        self.records: dict[tuple[int, int], WorkerRecord] = {}
        self._lock = threading.Lock()  # the thread and a final sample() from the caller
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        with self._lock:
            self._sample()

    def _sample(self) -> None:
        stats = all_stats()
        now = time.monotonic()
        live: dict[int, WorkerRecord] = {}
        for pid in descendants(self.root, stats):
            record = self._record(stats[pid], stats, now)
            if record is not None:
                live[pid] = record
        for record in live.values():
            record.tree_ticks = max(record.tree_ticks, _tree_ticks(record.pid, live, stats))

    def _record(self, stat: Stat, stats: Mapping[int, Stat], now: float) -> WorkerRecord | None:
        key = (stat.pid, stat.start)
        record = self.records.get(key)
        if record is None:
            cmdline = read_cmdline(stat.pid)
            if not is_spawned_worker(cmdline):
                return None
            parent = stats.get(stat.ppid)
            parent_is_worker = parent is not None and is_spawned_worker(read_cmdline(parent.pid))
            if not parent_is_worker:
                role = "run worker"
            elif "forkserver" in cmdline and "spawn_main" in read_cmdline(stat.ppid):
                role = "fork server"
            else:
                role = "step worker"
            record = WorkerRecord(stat.pid, stat.start, stat.ppid, role, cmdline, now, now)
            self.records[key] = record
        record.last_seen = now
        record.own_ticks = stat.own_ticks
        record.peak_rss_kb = max(record.peak_rss_kb, read_peak_rss_kb(stat.pid))
        return record

    def workers(self) -> list[WorkerRecord]:
        with self._lock:
            return sorted(self.records.values(), key=lambda r: r.first_seen)


def stop_process_tree(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process we started, then SIGKILL whatever of its own descendants is left."""
    if process.poll() is not None:
        return
    stats = all_stats()
    tree = [(pid, stats[pid].start) for pid in descendants(process.pid, stats)]
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
    deadline = time.monotonic() + 10
    for pid, start in tree:
        while (stat := read_stat(pid)) is not None and stat.start == start and time.monotonic() < deadline:
            time.sleep(0.2)
        if (stat := read_stat(pid)) is not None and stat.start == start:
            os.kill(pid, signal.SIGKILL)


# --- the database and DAGSTER_HOME -----------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway database with an empty ``dagster`` schema; dropped on exit."""
    name = f"klaviyo_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as db:
            db.execute("create schema dagster")
        yield name
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def write_home(folder: Path) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml (verbatim) and the code location's workspace.yaml."""
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    (home / "workspace.yaml").write_text(
        f"load_from:\n  - python_module:\n      module_name: {LOCATION}\n      working_directory: {CODE_ROOT}\n"
    )
    return home


@contextmanager
def process_env(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in this process's os.environ while inside; the previous values restored after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- GraphQL ---------------------------------------------------------------------------------------


class GraphQLError(RuntimeError):
    pass


class GraphQL:
    """Plain POSTs to the webserver's /graphql, as the UI sends them."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=60)

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(str(body["errors"]))
        return body["data"]

    def close(self) -> None:
        self.http.close()


LOCATION_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
SENSOR_QUERY = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { id status } } ... on Error { message } } }
"""
STOP_SENSOR = """
mutation ($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on Error { message } } }
"""
SCHEDULE_QUERY = """
query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
  __typename ... on Schedule { scheduleState { id status } } ... on Error { message } } }
"""
STOP_SCHEDULE = """
mutation ($id: String) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on Error { message } } }
"""
LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }
"""
BACKFILL_QUERY = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions } ... on Error { message } } }
"""
RUNS_QUERY = """
query ($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId status startTime endTime tags { key value } } } ... on Error { message } } }
"""


def expect(result: dict[str, Any], typename: str) -> dict[str, Any]:
    if result.get("__typename") != typename:
        raise GraphQLError(f"expected {typename}, got {result.get('__typename')}: {result.get('message')}")
    return result


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str
    start: float | None
    end: float | None
    tags: Mapping[str, str]

    @property
    def partition(self) -> str:
        return self.tags.get("dagster/partition", "")

    @property
    def account(self) -> str:
        return self.tags.get("klaviyo/account") or self.tags.get("dagster/partition/klaviyo_account", "")


def run_state(raw: Mapping[str, Any]) -> RunState:
    tags = {tag["key"]: tag["value"] for tag in raw["tags"]}
    return RunState(raw["runId"], raw["status"], raw["startTime"], raw["endTime"], tags)


# --- per-run figures from the instance -------------------------------------------------------------


@dataclass
class RunFigures:
    """One run: status, its materializations' Klaviyo stats, and its workers as sampled."""

    run: RunState
    calls_by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    materialized: list[str] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)

    @property
    def run_worker(self) -> WorkerRecord | None:
        return next((w for w in self.workers if w.role == "run worker"), None)

    @property
    def peak_rss_mb(self) -> float:
        """The largest single process of the run (run worker or one of its step workers)."""
        return max((w.peak_rss_mb for w in self.workers), default=0.0)

    @property
    def cpu_seconds(self) -> float:
        """The run worker's CPU with its step workers' (reaped ones counted in full)."""
        worker = self.run_worker
        return worker.cpu_seconds if worker else sum(w.cpu_seconds for w in self.workers)

    @property
    def wall_seconds(self) -> float:
        return (self.run.end or 0) - (self.run.start or 0) if self.run.start else 0.0

    @property
    def calls(self) -> int:
        return int(sum(stats.get("calls", 0) for stats in self.calls_by_group.values()))


def _tree_ticks(pid: int, live: Mapping[int, WorkerRecord], stats: Mapping[int, Stat]) -> int:
    """CPU ticks of ``pid``, its reaped children and, recursively, its live worker children."""
    stat = stats[pid]
    children = [record.pid for record in live.values() if record.ppid == pid]
    return stat.own_ticks + stat.reaped_ticks + sum(_tree_ticks(child, live, stats) for child in children)


def add_group_stats(total: dict[str, dict[str, float]], by_group: Mapping[str, Mapping[str, float]]) -> None:
    for group, stats in by_group.items():
        into = total.setdefault(group, {})
        for name, value in stats.items():
            if isinstance(value, int | float):
                into[name] = into.get(name, 0) + value


def read_run_events(instance: dg.DagsterInstance, figures: RunFigures) -> set[int]:
    """Fills the run's Klaviyo stats and materialized assets; returns the worker pids its events name."""
    pids: set[int] = set()
    for record in instance.all_logs(figures.run.run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
            figures.materialized.append(materialization.asset_key.to_user_string())
            by_group = materialization.metadata.get("klaviyo_calls_by_group")
            if by_group is not None:
                add_group_stats(figures.calls_by_group, by_group.value)
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and _names_run_worker(event.message):
            pids.update(int(pid) for pid in _PID.findall(event.message or ""))
    return pids


def _names_run_worker(message: str | None) -> bool:
    return bool(message) and ("Started process for run" in message or "parent process" in message)


def attach_workers(
    figures: Sequence[RunFigures], pids: Mapping[str, set[int]], sampler: WorkerSampler
) -> list[WorkerRecord]:
    """Gives each run its run worker (by the pid its events name, the worker sampled during the
    run) and that worker's step workers; returns the workers no run claimed."""
    claimed: set[tuple[int, int]] = set()
    workers = sampler.workers()
    for figure in figures:
        for worker in workers:
            named = worker.pid in pids.get(figure.run.run_id, set())
            if worker.role == "run worker" and named and _overlaps(worker, figure.run):
                steps = [w for w in _worker_descendants(worker, workers) if w.role != "run worker"]
                steps = [w for w in steps if worker.first_seen <= w.first_seen <= worker.last_seen]
                figure.workers = [worker, *steps]
                claimed.update((w.pid, w.start) for w in figure.workers)
                break
    return [w for w in workers if (w.pid, w.start) not in claimed]


def _worker_descendants(root: WorkerRecord, workers: Sequence[WorkerRecord]) -> list[WorkerRecord]:
    found: list[WorkerRecord] = []
    parents = {root.pid}
    for worker in workers:  # sorted by first_seen: a parent is seen before its children
        if worker.ppid in parents and worker is not root:
            found.append(worker)
            parents.add(worker.pid)
    return found


def _overlaps(worker: WorkerRecord, run: RunState) -> bool:
    if run.start is None:
        return True
    # Worker times are monotonic, run times are epoch: compare through the offset between clocks.
    offset = time.time() - time.monotonic()
    first, last = worker.first_seen + offset, worker.last_seen + offset
    return first <= (run.end or time.time()) + 5 and last >= run.start - 30


# --- the deployment --------------------------------------------------------------------------------


@dataclass
class Deployment:
    graphql: GraphQL
    instance: dg.DagsterInstance
    sampler: WorkerSampler
    home: Path
    data_dir: Path
    log_dir: Path
    env: dict[str, str]

    def launch_backfill(self, partition_keys: Sequence[str], asset_keys: Sequence[dg.AssetKey]) -> str:
        """An asset backfill of those partitions, as the UI launches one; returns its id."""
        params = {
            "partitionNames": list(partition_keys),
            "assetSelection": [{"path": list(key.path)} for key in asset_keys],
        }
        result = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        return expect(result, "LaunchBackfillSuccess")["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        result = self.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        return expect(result, "PartitionBackfill")["status"]

    def runs(self, tags: Mapping[str, str] | None = None, statuses: Sequence[str] = ()) -> list[RunState]:
        run_filter: dict[str, Any] = {}
        if tags:
            run_filter["tags"] = [{"key": key, "value": value} for key, value in tags.items()]
        if statuses:
            run_filter["statuses"] = list(statuses)
        result = expect(self.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"], "Runs")
        return [run_state(raw) for raw in result["results"]]

    def wait_for_backfill(
        self,
        backfill_id: str,
        timeout: float,
        progress_every: float = 60,
        on_poll: Callable[[], None] | None = None,
        poll_seconds: float = 2,
    ) -> list[RunState]:
        """Polls until the backfill is done and every run of it has finished; returns its runs."""
        started = last_report = time.monotonic()
        while True:
            status = self.backfill_status(backfill_id)
            runs = self.runs({"dagster/backfill": backfill_id})
            if status not in BACKFILL_RUNNING and all(run.status in FINISHED_STATUSES for run in runs):
                return runs
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout:.0f} s")
            if time.monotonic() - last_report >= progress_every:
                last_report = time.monotonic()
                print(progress_line(time.monotonic() - started, status, runs), file=sys.stderr, flush=True)
            if on_poll is not None:
                on_poll()
            time.sleep(poll_seconds)

    def run_figures(self, runs: Sequence[RunState]) -> tuple[list[RunFigures], list[WorkerRecord]]:
        """Per run: Klaviyo stats from its materializations, and its sampled workers; plus the
        workers no run claimed (reported per process)."""
        self.sampler.sample()
        figures = [RunFigures(run) for run in sorted(runs, key=lambda r: (r.start or 0, r.partition))]
        pids = {figure.run.run_id: read_run_events(self.instance, figure) for figure in figures}
        unclaimed = attach_workers(figures, pids, self.sampler)
        return figures, unclaimed


def progress_line(elapsed: float, status: str, runs: Sequence[RunState]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        counts[run.status] += 1
    summary = ", ".join(f"{count} {status.lower()}" for status, count in sorted(counts.items()))
    return f"[{elapsed:6.0f} s] backfill {status}: {len(runs)} runs ({summary or 'none yet'})"


def wait_for_location(graphql: GraphQL, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            workspace = graphql(LOCATION_QUERY)["workspaceOrError"]
            entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
            entry = entries.get(LOCATION)
            if entry and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise GraphQLError(f"code location failed to load: {error['message']}")
                return
        except (httpx.TransportError, httpx.HTTPStatusError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the webserver did not load {LOCATION} within {timeout:.0f} s")
        time.sleep(1)


def stop_instigators(graphql: GraphQL, sensors: Sequence[str], schedules: Sequence[str]) -> None:
    """Stops them through GraphQL, as a person would in the UI (the state is kept in the instance)."""
    for name in sensors:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        state = expect(graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"], "Sensor")[
            "sensorState"
        ]
        expect(graphql(STOP_SENSOR, {"id": state["id"]})["stopSensor"], "StopSensorMutationResult")
    for name in schedules:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": name}
        schedule = expect(graphql(SCHEDULE_QUERY, {"selector": selector})["scheduleOrError"], "Schedule")
        result = graphql(STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})["stopRunningSchedule"]
        expect(result, "ScheduleStateResult")


def start_process(command: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(command), env=dict(env), cwd=CODE_ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def venv_tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def deployment(
    run_env: Mapping[str, str],
    accounts: Sequence[str],
    seed_store: Callable[[Path], None] | None = None,
    keep_logs: Path | None = None,
) -> Iterator[Deployment]:
    """The deployment described in the module docstring.

    ``run_env`` is added to the environment of the webserver, the daemon and so every run worker
    (KLAVIYO_*); ``KLAVIYO_DAGSTER_DATA_DIR`` is set to a temp folder unless given. ``seed_store``
    is called with the data dir before anything starts (e.g. to seed account_integrations).
    ``accounts`` become ``klaviyo_accounts`` partitions before the daemon starts.
    """
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="klaviyo-deploy-")))
        database = stack.enter_context(postgres_database())
        home = write_home(folder)
        log_dir = keep_logs or folder / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        data_dir = Path(run_env.get("KLAVIYO_DAGSTER_DATA_DIR") or folder / "data")
        instance_env = {
            **PG_ENV,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": database,
            "DAGSTER_HOME": str(home),
        }
        env = {**os.environ, **instance_env, "KLAVIYO_DAGSTER_DATA_DIR": str(data_dir), **run_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH")) if p)
        stack.enter_context(process_env({**instance_env, "KLAVIYO_DAGSTER_DATA_DIR": str(data_dir)}))
        if seed_store is not None:
            seed_store(data_dir)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        workspace = str(home / "workspace.yaml")
        port = free_port()
        webserver = start_process(
            [venv_tool("dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
            env,
            log_dir / "webserver.log",
        )
        stack.callback(stop_process_tree, webserver)
        graphql = GraphQL(f"http://127.0.0.1:{port}")
        stack.callback(graphql.close)
        wait_for_location(graphql)
        stop_instigators(graphql, UNWANTED_SENSORS, UNWANTED_SCHEDULES)
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, list(accounts))
        daemon = start_process(
            [venv_tool("dagster-daemon"), "run", "-w", workspace], env, log_dir / "daemon.log"
        )
        stack.callback(stop_process_tree, daemon)
        sampler = WorkerSampler(daemon.pid)
        sampler.start()
        stack.callback(sampler.stop)
        yield Deployment(graphql, instance, sampler, home, data_dir, log_dir, env)


# --- shared report helpers -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_run_table(figures: Sequence[RunFigures], time_scale: float) -> None:
    """One line per run: partition, status, Klaviyo wall seconds, calls, peak RSS, CPU seconds."""
    print(f"{'partition':<48}{'status':>9}{'wall s':>9}{'calls':>8}{'rss MB':>8}{'steps MB':>9}{'cpu s':>8}")
    for figure in figures:
        worker = figure.run_worker
        steps = max((w.peak_rss_mb for w in figure.workers if w.role == "step worker"), default=0.0)
        print(
            f"{figure.run.partition:<48}{figure.run.status:>9}{figure.wall_seconds / time_scale:>9,.0f}"
            f"{figure.calls:>8}{worker.peak_rss_mb if worker else 0:>8.0f}{steps:>9.0f}{figure.cpu_seconds:>8.1f}"
        )


def print_unclaimed(workers: Sequence[WorkerRecord]) -> None:
    if not workers:
        return
    print(f"{len(workers)} worker process(es) not matched to a run (per process):")
    for worker in workers:
        print(
            f"  pid {worker.pid} ({worker.role}, parent {worker.ppid}): peak RSS {worker.peak_rss_mb:.0f} MB, "
            f"CPU {worker.cpu_seconds:.1f} s"
        )


PHASES = ("dequeue", "launch", "to first step", "steps", "to run end")


def run_phases(instance: dg.DagsterInstance, runs: Sequence[RunState]) -> list[dict[str, float]]:
    """Per run after the first (in start order), real seconds spent in each of ``PHASES``: from the
    previous run's end to this one's launch, launch to RUN_START (process start, code load), to the
    first step's start (executor, step processes), the steps, and the last step to the run's end."""
    ordered = sorted((run for run in runs if run.start and run.end), key=lambda run: run.start or 0)
    phases: list[dict[str, float]] = []
    for previous, run in itertools.pairwise(ordered):
        times: dict[str, list[float]] = defaultdict(list)
        for record in instance.all_logs(run.run_id):
            if record.dagster_event is not None:
                times[record.dagster_event.event_type_value].append(record.timestamp)
        steps_start = min(times.get("STEP_START", [run.start or 0]))
        steps_end = max(times.get("STEP_SUCCESS", []) + times.get("STEP_FAILURE", []) or [run.end or 0])
        launched = min(times.get("PIPELINE_STARTING", [run.start or 0]))
        started = min(times.get("PIPELINE_START", [run.start or 0]))
        step_times = _step_seconds(instance, run.run_id)
        phases.append(
            {
                **step_times,
                "dequeue": launched - (previous.end or 0),
                "launch": started - launched,
                "to first step": steps_start - started,
                "steps": steps_end - steps_start,
                "to run end": (run.end or 0) - steps_end,
            }
        )
    return phases


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Real seconds from each step's STEP_START to its STEP_SUCCESS (or failure), keyed ``step <key>``."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ends[event.step_key] = record.timestamp
    return {f"step {key}": ends[key] - starts[key] for key in sorted(starts) if key in ends}


def print_run_phases(phases: Sequence[Mapping[str, float]]) -> None:
    """Medians of ``run_phases``: where a run's own time goes once the Klaviyo work is shared."""
    if not phases:
        return
    names = [*PHASES, *sorted({name for p in phases for name in p if name.startswith("step ")})]
    cells = ", ".join(f"{name} {median([p.get(name, 0.0) for p in phases]):.1f}" for name in names)
    print(f"runs after the first, median real seconds: {cells}")
