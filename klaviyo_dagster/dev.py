"""``make dev``: the Dagster UI on the embedded defaults, on a dev instance with production's run queue.

With no Klaviyo settings in the environment the UI talks to a local Klaviyo simulator started here,
so a newcomer can click "Materialize" without credentials. Set ``KLAVIYO_BASE_URL`` (and a key) to
point it at a real account instead.

The dev instance (``$DAGSTER_HOME``, ``.dagster_home`` by default) keeps Dagster's local storage
and takes from ``deploy/dagster.yaml`` the run queue (at most one run per account), run retries
and monitoring, so what a person sees in dev is how production schedules runs. The schedule and
the catch-up sensor start stopped (``KLAVIYO_DAGSTER_AUTOMATION=off``, ``defs/automation.py``), and
the date partitions start 30 days back (``KLAVIYO_PARTITIONS_START_DATE``), unless already set.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess  # runs our own fixed command  # nosec B404
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from klaviyo_dagster import environment
from klaviyo_dagster.accounts import DEMO_ACCOUNT_ID
from klaviyo_dagster.demo import DEMO_PROFILES, DEMO_SEED, SUPABASE_VARS, embedded_defaults
from klaviyo_dagster.environment import AUTOMATION_VAR, PARTITIONS_START_VAR, automation_on
from klaviyo_dagster.sim import SimConfig, SimulatorServer
from klaviyo_dagster.storage.supabase_objects import StorageConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.yaml"
# What the dev instance takes from production's; storage stays Dagster's local default.
PRODUCTION_KEYS = ("run_coordinator", "run_launcher", "run_retries", "run_monitoring", "telemetry")
WRITTEN_BY_DEV = (
    "# Written by `make dev` from deploy/dagster.yaml; edit that file, or delete this line to keep yours.\n"
)
DEFAULT_PORT = 3000
# Partitions from a month ago, so the UI's status bars say how much of the recent past is filled,
# not "0% of 1,000 dates" (a deployment sets its own first date).
DEV_HISTORY = timedelta(days=30)
HOST = "127.0.0.1"


class PortInUse(RuntimeError):
    """The UI's port is taken (another ``make dev``, or any server)."""


def run_dev(port: int = DEFAULT_PORT, out: TextIO = sys.stdout, use_environment: bool = False) -> int:
    """Starts ``dagster dev`` on ``port`` and waits for it; returns its exit status (2: a port in
    use or a bad setting, said on stderr before anything starts).

    Like the demo, it writes to the local store: ``SUPABASE_*`` in the shell are ignored unless
    ``use_environment`` (``--use-environment``), so a click on Materialize never writes simulator
    data into a real project.
    """
    env = dev_environment(os.environ, use_environment)
    try:
        ensure_port_free(port)
        environment.check(env)
        automated = automation_on(env)
    except (PortInUse, ValueError, StorageConfigError) as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 2
    home = Path(env.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home").resolve()
    env["DAGSTER_HOME"] = str(home)
    write_dev_instance(home, out)
    with ExitStack() as stack:
        if not env.get("KLAVIYO_BASE_URL"):
            sim = stack.enter_context(SimulatorServer(SimConfig(profiles=DEMO_PROFILES, seed=DEMO_SEED)))
            env.pop("KLAVIYO_API_KEY_PRIVATE", None)
            env.update(embedded_defaults(sim.base_url))
            print(f"Klaviyo simulator at {sim.base_url}, demo account {DEMO_ACCOUNT_ID}", file=out)
            print("(set KLAVIYO_BASE_URL, KLAVIYO_ACCOUNT_ID and a key to use a real account)", file=out)
        if not automated:
            print(
                "The schedules and the catch-up sensor are stopped: switch them on under Automation.",
                file=out,
            )
        print(f"Dagster UI: http://{HOST}:{port} (Ctrl-C stops it)", file=out, flush=True)
        command = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            HOST,
            "-p",
            str(port),
        ]
        return _serve(command, env)


def _serve(command: list[str], env: dict[str, str]) -> int:
    """Runs ``dagster dev`` until it ends. Ctrl-C reaches it through the terminal's process group;
    a SIGTERM or SIGHUP sent to this process alone (``kill``, a closed terminal) is passed on, so the
    UI, the daemon and the code server stop with us instead of outliving the simulator."""
    # Started in the background (`make dev &`), a shell ignores SIGINT for us and so for dagster dev,
    # which maps SIGTERM to its SIGINT handler: give it Python's own, so it can shut down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)  # noqa: S603 - our own command  # nosec B603

    def pass_on(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue  # dagster dev got the same Ctrl-C and is shutting down: wait for it
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def dev_environment(environ: Mapping[str, str], use_environment: bool = False) -> dict[str, str]:
    """The environment ``dagster dev`` gets: automation off unless set (an empty value counts as
    unset), partitions from 30 days back unless set, and no ``SUPABASE_*`` unless ``use_environment``."""
    env = dict(environ)
    if not (env.get(AUTOMATION_VAR) or "").strip():
        env[AUTOMATION_VAR] = "off"
    if not (env.get(PARTITIONS_START_VAR) or "").strip():
        env[PARTITIONS_START_VAR] = (datetime.now(UTC).date() - DEV_HISTORY).isoformat()
    if not use_environment:
        for name in SUPABASE_VARS:
            env.pop(name, None)
    return env


def ensure_port_free(port: int) -> None:
    """Raises ``PortInUse`` (with the fix) when ``port`` cannot be bound on 127.0.0.1.

    ``dagster dev`` on a busy port prints "Serving", then fails in the webserver only, and keeps
    the daemon running: checked before starting anything.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the webserver binds: a socket of a server stopped a moment ago (TIME_WAIT) is no obstacle.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"port {port} is already in use (another `make dev`?); stop it, or choose another: "
                f"make dev PORT={port + 1}"
            ) from None


def write_dev_instance(home: Path, out: TextIO = sys.stdout) -> Path:
    """Writes ``home/dagster.yaml`` from production's run queue, retries and monitoring.

    A ``dagster.yaml`` someone wrote by hand (without this module's first line) is kept as it is.
    """
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists() and not target.read_text().startswith(WRITTEN_BY_DEV):
        print(f"Keeping your {target} (production's run queue is not applied).", file=out)
        return target
    target.write_text(WRITTEN_BY_DEV + yaml.safe_dump(dev_instance_settings(), sort_keys=False))
    return target


def dev_instance_settings() -> dict[str, Any]:
    """The keys of ``deploy/dagster.yaml`` that say how runs are queued and watched."""
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    return {key: production[key] for key in PRODUCTION_KEYS if key in production}
