"""``python -m klaviyo_dagster dry-run``: the contract's JSON on success, a JSON error on failure."""

from __future__ import annotations

import json
import subprocess
import sys

from klaviyo_dagster.__main__ import main
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.paths import PROJECT_ROOT
from klaviyo_dagster_tests.producers import test_campaigns, test_flows


def dry_run(capsys, *args: str) -> tuple[int, dict]:
    code = main(["dry-run", "--date", "2026-03-09", "--days", "3", *args])
    return code, json.loads(capsys.readouterr().out)


def test_the_dry_run_prints_rows_and_previews(tiny_store_env, capsys) -> None:
    code, result = dry_run(capsys, "--account", ACCOUNT_ID)

    assert code == 0
    assert result["mode"] == "dry-run"
    assert result["rows"] == {"flows": 9, "campaigns": 2, "subscribers": 3}
    assert result["previews"]["flows"] == test_flows.EXPECTED.split("\n")[:3]
    assert result["previews"]["campaigns"] == test_campaigns.EXPECTED.split("\n")[:3]
    assert isinstance(result["ms"], int)
    assert {r.method for r in tiny_store_env.requests} <= {"GET", "POST"}


def test_fast_mode_skips_campaigns_and_subscribers(tiny_store_env, capsys) -> None:
    code, result = dry_run(capsys, "--fast")

    assert code == 0
    assert result["rows"] == {"flows": 3, "campaigns": 0, "subscribers": 0}
    assert result["previews"]["campaigns"] == [test_campaigns.HEADER]
    operations = {r.operation_id for r in tiny_store_env.requests}
    assert not operations & {"get_campaigns", "query_campaign_values", "get_profiles"}


def test_a_klaviyo_failure_is_a_json_error_with_klaviyos_details(tiny_store_env, capsys) -> None:
    tiny_store_env.set_fault("query_flow_series", FaultSpec(status=400))
    code, result = dry_run(capsys)

    assert code == 1
    assert result["error"] == "FlowSyncFailed"
    assert result["details"]["endpoint"] == "POST /api/flow-series-reports"
    assert result["details"]["errors"][0]["status"] == 400


def test_bad_options_are_refused_before_any_call(tiny_store_env, capsys) -> None:
    code, result = dry_run(capsys, "--audience-max-pages", "-1")

    assert code == 1
    assert result == {
        "error": "InvalidOptions",
        "details": ["audience_max_pages: Value error, audience_max_pages must be 0 or more, got -1"],
    }
    assert tiny_store_env.requests == []


def test_the_module_runs_as_a_command(tiny_store_env) -> None:
    command = [
        sys.executable,
        "-m",
        "klaviyo_dagster",
        "dry-run",
        "--date",
        "2026-03-09",
        "--days",
        "3",
        "--fast",
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"]["flows"] == 3
