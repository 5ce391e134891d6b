"""``python -m klaviyo_dagster dry-run``: the contract's JSON on success, a JSON error on failure."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from klaviyo_dagster.__main__ import main
from klaviyo_dagster.cli_dry_run import add_arguments, run
from klaviyo_dagster.environment import ingest_store as ingest_store_from_env
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster.storage.tables import IngestTables
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
        "details": ["audience_max_pages must be 0 or more, got -1"],
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


# --- which date: the newest complete one by default, never one whose day is not over -----------------


def run_at(now: datetime, *args: str) -> tuple[int, dict]:
    """The command's ``run`` with its clock stopped at ``now``; (exit code, printed JSON)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = io.StringIO()
    code = run(parser.parse_args(["--days", "3", *args]), out, now=now)
    return code, json.loads(out.getvalue())


@pytest.fixture
def own_store(tmp_path, monkeypatch) -> IngestTables:
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path / "data"))
    return ingest_store_from_env().tables


def test_without_a_date_the_newest_complete_date_is_dry_run(tiny_store_env, own_store, capsys) -> None:
    # The tiny store is in New York (EDT from 03-08): 03-09 ends at 04:00 UTC, complete from 07:05.
    code, result = run_at(datetime(2026, 3, 10, 7, 5, tzinfo=UTC))

    assert code == 0
    assert result["rows"] == {"flows": 9, "campaigns": 2, "subscribers": 3}  # as with --date 2026-03-09
    assert "dry run of 2026-03-09, the newest complete date in America/New_York" in capsys.readouterr().err
    zone_lookups = [r for r in tiny_store_env.requests if r.operation_id == "get_accounts"]
    assert len(zone_lookups) == 2  # the zone (not recorded here), then the dry run's own

    code, result = run_at(datetime(2026, 3, 10, 7, 4, tzinfo=UTC))
    assert code == 0
    assert "dry run of 2026-03-08" in capsys.readouterr().err


def test_a_recorded_zone_is_used_without_asking_klaviyo(tiny_store_env, own_store, capsys) -> None:
    own_store.record_account_timezone(ACCOUNT_ID, "Pacific/Auckland", None, "run")

    code, _ = run_at(datetime(2026, 3, 10, 14, 5, tzinfo=UTC), "--account", ACCOUNT_ID)

    assert code == 0
    assert "dry run of 2026-03-10, the newest complete date in Pacific/Auckland" in capsys.readouterr().err
    assert len([r for r in tiny_store_env.requests if r.operation_id == "get_accounts"]) == 1  # the dry run's


@pytest.mark.parametrize("day", ["2026-03-09", "2099-01-01"])
def test_a_date_whose_day_is_not_over_is_refused(tiny_store_env, own_store, day) -> None:
    code, result = run_at(datetime(2026, 3, 10, 7, 4, tzinfo=UTC), "--date", day)

    assert code == 1
    assert result["error"] == "DateNotComplete"
    assert result["details"].startswith(
        f"{day} is not complete yet for account {ACCOUNT_ID}: the day ends at "
    )
    assert (
        "in America/New_York" in result["details"]
        and "newest complete date is 2026-03-08" in result["details"]
    )
    assert [r.operation_id for r in tiny_store_env.requests] == ["get_accounts"]  # the zone, nothing else


def test_a_date_complete_everywhere_needs_no_zone(tiny_store_env, own_store) -> None:
    code, _ = run_at(datetime(2026, 3, 10, 15, 5, tzinfo=UTC), "--date", "2026-03-09")  # over at UTC-12 too

    assert code == 0
    assert len([r for r in tiny_store_env.requests if r.operation_id == "get_accounts"]) == 1  # the dry run's


@pytest.mark.parametrize(
    ("args", "details"),
    [
        (["--date", "2026-13-01"], ["date: must be a date YYYY-MM-DD, got '2026-13-01'"]),
        (["--date", "20260309"], ["date: must be a date YYYY-MM-DD, got '20260309'"]),
        (["--date", "yesterday"], ["date: must be a date YYYY-MM-DD, got 'yesterday'"]),
        (["--days", "many"], ["days: Input should be a valid integer, unable to parse string as an integer"]),
        (
            ["--timeframe-key", "forever"],
            [
                "timeframe_key: Input should be 'last_7_days', 'last_30_days', 'last_90_days' or 'last_365_days'"
            ],
        ),
    ],
)
def test_a_malformed_value_gets_the_json_error_not_a_usage_message(
    tiny_store_env, capsys, args, details
) -> None:
    code = main(["dry-run", *args])

    assert code == 1
    assert json.loads(capsys.readouterr().out) == {"error": "InvalidOptions", "details": details}
    assert tiny_store_env.requests == []


def test_a_malformed_date_exits_1_with_json_from_the_command_line(tiny_store_env) -> None:
    command = [sys.executable, "-m", "klaviyo_dagster", "dry-run", "--date", "2026-02-30"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {
        "error": "InvalidOptions",
        "details": ["date: must be a date YYYY-MM-DD, got '2026-02-30'"],
    }


def test_a_date_after_the_calendar_ends_is_refused_not_a_traceback(tiny_store_env, own_store) -> None:
    own_store.record_account_timezone(ACCOUNT_ID, "UTC", None, "run")

    code, result = run_at(datetime(2026, 3, 10, 7, 4, tzinfo=UTC), "--date", "9999-12-31")

    assert code == 1
    assert result["error"] == "DateNotComplete"
    assert result["details"].startswith(f"9999-12-31 is never complete for account {ACCOUNT_ID}")
    assert tiny_store_env.requests == []


def test_a_date_before_the_partitions_start_is_refused(tiny_store_env, own_store) -> None:
    code, result = run_at(datetime(2026, 3, 10, 7, 4, tzinfo=UTC), "--date", "0001-01-01")

    assert (code, result) == (
        1,
        {
            "error": "InvalidOptions",
            "details": ["date: must be a partition date from 2024-01-01, got 0001-01-01"],
        },
    )
    assert tiny_store_env.requests == []


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "America/New_York ", "../../etc/passwd", "UTC\x00"])
def test_a_recorded_zone_that_is_not_a_timezone_is_read_from_klaviyo_instead(
    tiny_store_env, own_store, capsys, bad
) -> None:
    own_store.record_account_timezone(ACCOUNT_ID, bad, None, "run")

    code, result = run_at(datetime(2026, 3, 10, 7, 4, tzinfo=UTC), "--date", "2026-03-09")

    assert code == 1  # the tiny store is in New York: 03-09 is complete from 07:05 UTC
    assert result["error"] == "DateNotComplete"
    assert "in America/New_York" in result["details"]
    assert "is not a valid timezone" in capsys.readouterr().err
