"""A live call against a real Dagster webserver (temporary instance, queued runs, no daemon).

The webserver loads ``workspace.yaml`` with the tiny store's environment; with the queued run
coordinator and no daemon, a launched run stays queued, so repeats can be checked deterministically.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import STATUS_PATH, UPDATE_PATH
from klaviyo_dagster.trigger.dagster_api import DagsterApi
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.paths import PROJECT_ROOT
from klaviyo_dagster_tests.trigger.conftest import SECRET

INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""
STARTUP_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dagster_webserver(sim_env, tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = _free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    process = subprocess.Popen(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/server_info", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("dagster-webserver did not answer /server_info in time")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the webserver and its code server, started here
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stderr.close()


def test_a_live_call_queues_one_run_in_dagster(dagster_webserver, serve) -> None:
    settings = TriggerSettings.from_env()
    dagster = DagsterApi(url=dagster_webserver, location=settings.dagster_location)
    client = serve(settings, dagster)
    auth = {"x-admin-job-secret": SECRET}
    body = {"mode": "live", "accountId": ACCOUNT_ID, "end": "2026-03-09", "days": 3}

    first = client.post(UPDATE_PATH, json=body, headers=auth)
    assert first.status_code == 202, first.text
    launched = first.json()
    assert launched["status"] == "queued"
    assert launched["uploadId"] == nightly_upload_id(ACCOUNT_ID, date(2026, 3, 9))
    assert launched["partition"] == f"2026-03-09|{ACCOUNT_ID}"

    again = client.post(UPDATE_PATH, json=body, headers=auth)
    by_get = client.get(  # the same parameters: a key reused with others is refused (409)
        UPDATE_PATH,
        params={"token": SECRET, "accountId": ACCOUNT_ID, "idempotency": "nightly-2026-03-09", "days": "3"},
    )
    assert again.status_code == by_get.status_code == 202
    assert again.json()["runId"] == by_get.json()["runId"] == launched["runId"]

    status = client.get(STATUS_PATH, params={"runId": launched["runId"], "token": SECRET})
    assert status.status_code == 200, status.text
    assert status.json() == {
        "runId": launched["runId"],
        "status": "queued",
        "dagsterStatus": "QUEUED",
        "job": "klaviyo_ingest",
        "accountId": ACCOUNT_ID,
        "uploadId": launched["uploadId"],
        "partition": launched["partition"],
    }
    run = dagster.run(launched["runId"])
    assert run is not None
    assert json.loads(run.tags["klaviyo/trigger-parameters"])["end"] == "2026-03-09"
    assert {
        k: v
        for k, v in run.tags.items()
        if k.startswith(("dagster/partition", "klaviyo/")) and k != "klaviyo/trigger-parameters"
    } == {
        "dagster/partition": f"2026-03-09|{ACCOUNT_ID}",
        "dagster/partition/klaviyo_account": ACCOUNT_ID,
        "dagster/partition/date": "2026-03-09",
        "klaviyo/account": ACCOUNT_ID,
        "klaviyo/idempotency-key": "nightly-2026-03-09",
        "klaviyo/trigger": "api",
    }

    other = client.post(UPDATE_PATH, json=body, headers={**auth, "x-idempotency-key": "manual-1"})
    assert other.status_code == 202
    assert other.json()["runId"] != launched["runId"]

    conflict = client.post(UPDATE_PATH, json={**body, "days": 5}, headers=auth)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["details"] == {"days": {"previous": 3, "now": 5}}
