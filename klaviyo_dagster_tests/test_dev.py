"""``make dev``: the UI on the chosen port, production's run queue, no automatic burst of runs."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import pytest

from klaviyo_dagster.dev import WRITTEN_BY_DEV, dev_environment, run_dev, write_dev_instance
from klaviyo_dagster.environment import AUTOMATION_VAR
from klaviyo_dagster_tests.paths import PROJECT_ROOT


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_busy_port_exits_non_zero_with_the_fix_before_starting_anything(
    busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))

    assert run_dev(port=busy_port, out=io.StringIO()) == 2

    error = capsys.readouterr().err
    assert f"port {busy_port} is already in use" in error and f"make dev PORT={busy_port + 1}" in error
    assert not (tmp_path / "home").exists()  # nothing was started or written


def test_the_dev_instance_queues_one_run_per_account(tmp_path: Path) -> None:
    write_dev_instance(tmp_path, io.StringIO())

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, dg.QueuedRunCoordinator)
        limits = {limit["key"]: limit for limit in coordinator.get_run_queue_config().tag_concurrency_limits}
    for tag in ("klaviyo/account", "dagster/partition/klaviyo_account"):
        assert limits[tag]["limit"] == 1
        assert limits[tag]["value"] == {"applyLimitPerUniqueValue": True}


def test_a_dagster_yaml_written_by_hand_is_kept(tmp_path: Path) -> None:
    own = tmp_path / "dagster.yaml"
    own.write_text("telemetry:\n  enabled: true\n")
    out = io.StringIO()

    write_dev_instance(tmp_path, out)
    write_dev_instance(tmp_path / "ours", io.StringIO())
    write_dev_instance(tmp_path / "ours", io.StringIO())  # rewritten: it is ours

    assert own.read_text() == "telemetry:\n  enabled: true\n"
    assert "Keeping your" in out.getvalue()
    assert (tmp_path / "ours" / "dagster.yaml").read_text().startswith(WRITTEN_BY_DEV)


@pytest.mark.parametrize(("setting", "expected"), [("off", "STOPPED"), ("on", "RUNNING"), (None, "RUNNING")])
def test_automation_that_launches_runs_waits_for_a_person_when_switched_off(
    setting: str | None, expected: str
) -> None:
    env = {name: value for name, value in os.environ.items() if name != AUTOMATION_VAR}
    if setting is not None:
        env[AUTOMATION_VAR] = setting
    code = (
        "from klaviyo_dagster.defs.schedules import klaviyo_complete_days_schedule as s;"
        "from klaviyo_dagster.defs.sensors import klaviyo_catch_up_sensor as c;"
        "print(s.default_status.name, c.default_status.name)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    assert result.stdout.split() == [expected, expected]


def test_a_wrong_automation_setting_names_the_variable_and_its_values() -> None:
    env = {**os.environ, AUTOMATION_VAR: "yes"}
    code = "import klaviyo_dagster.definitions"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode != 0
    assert "KLAVIYO_DAGSTER_AUTOMATION must be 'on' or 'off', not 'yes'" in result.stderr


def test_make_dev_serves_the_ui_on_the_chosen_port(tmp_path: Path) -> None:
    port = free_port()
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("KLAVIYO_", "SUPABASE_"))
    }
    env["KLAVIYO_DAGSTER_DATA_DIR"] = str(tmp_path / "data")
    process = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"PORT={port}", f"DEV_HOME={tmp_path / 'home'}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        answer = _wait_for_ui(port, process)
        # `kill <pid>` of our command alone (not Ctrl-C to the whole group): it must take the UI,
        # the daemon and the code server down with it.
        (command,) = [pid for pid, args in _session(process.pid) if "-m klaviyo_dagster dev" in args]
        os.kill(command, signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        left = _session(process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    assert answer.status_code == 200 and "dagster_webserver_version" in answer.text
    assert f"Dagster UI: http://127.0.0.1:{port}" in output
    assert (tmp_path / "home" / "dagster.yaml").read_text().startswith(WRITTEN_BY_DEV)
    assert left == []
    assert "Dagster services shut down" in output


def _session(session_id: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of the session ``make dev`` started (a zombie has
    exited already: it only waits for init to collect its status)."""
    listing = subprocess.run(
        ["ps", "-e", "-o", "sid=,pid=,stat=,args="], capture_output=True, text=True, check=True
    )
    processes = []
    for line in listing.stdout.splitlines():
        sid, pid, stat, args = line.split(None, 3)
        if int(sid) == session_id and not stat.startswith("Z"):
            processes.append((int(pid), args))
    return processes


def _wait_for_ui(port: int, process: subprocess.Popen[str], attempts: int = 240) -> httpx.Response:
    """Polls the webserver's ``/server_info`` until it answers (or the process ends)."""
    for _ in range(attempts):
        if process.poll() is not None:
            raise AssertionError(f"make dev exited with {process.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError(f"no UI on port {port}")


def test_the_dev_environment_hides_supabase_and_switches_automation_off_unless_told() -> None:
    shell = {
        "SUPABASE_URL": "https://production.supabase.test",
        "SUPABASE_SERVICE_ROLE_KEY": "sb-SENTINEL-123",
        "SUPABASE_DB_URL": "postgresql://u:SENTINELpw@db.test/postgres",
        AUTOMATION_VAR: "",  # set but empty: still off
    }

    env = dev_environment(shell)
    told = dev_environment({**shell, AUTOMATION_VAR: "on"}, use_environment=True)

    assert not any(name.startswith("SUPABASE_") for name in env)
    assert env[AUTOMATION_VAR] == "off" and told[AUTOMATION_VAR] == "on"
    assert told["SUPABASE_DB_URL"] == shell["SUPABASE_DB_URL"]
    assert date.fromisoformat(env["KLAVIYO_PARTITIONS_START_DATE"]) < date.today()


@pytest.mark.parametrize(
    ("arguments", "environ", "message"),
    [
        (["--port", "70000"], {}, "a port is a number from 1 to 65535, got 70000"),
        (["--port", "web"], {}, "a port is a number from 1 to 65535, got 'web'"),
        (
            ["--port", "3999"],
            {AUTOMATION_VAR: "bogus"},
            "KLAVIYO_DAGSTER_AUTOMATION must be 'on' or 'off'",
        ),
        (
            ["--port", "3999"],
            {"KLAVIYO_PARTITIONS_START_DATE": "yesterday"},
            "must be a date like 2024-01-01",
        ),
        (["--port", "3999"], {"KLAVIYO_SETTLING_DELAY_MINUTES": "-1"}, "must be whole minutes"),
        (
            ["--port", "3999", "--use-environment"],
            {
                "SUPABASE_URL": "https://x.supabase.co",
                "SUPABASE_SERVICE_ROLE_KEY": "k",
                "SUPABASE_DB_URL": "pg:SECRETpw@h/db",
            },
            "SUPABASE_DB_URL must be a URL like postgresql://",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_starts(arguments, environ, message) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "klaviyo_dagster", "dev", *arguments],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "SECRETpw" not in result.stderr
