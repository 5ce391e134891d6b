"""run_names.py: partition keys read date first, and one account's dates can be listed for the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest

from klaviyo_dagster.defs.partitions import klaviyo_partitions, partition_key, split_partition_key
from klaviyo_dagster.run_names import MAX_LISTED_DATES, partition_key_text, partition_keys

ACCOUNT = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"


def test_the_text_of_a_key_is_dagsters_own_and_starts_with_the_date() -> None:
    day = date(2026, 11, 3)
    assert partition_key_text(ACCOUNT, day) == str(partition_key(ACCOUNT, day)) == f"2026-11-03|{ACCOUNT}"
    assert split_partition_key(partition_key_text(ACCOUNT, day)) == (ACCOUNT, day)


def test_listed_keys_are_one_accounts_dates_and_all_are_keys_of_the_partitions() -> None:
    keys = partition_keys(ACCOUNT, date(2026, 10, 30), date(2026, 11, 2))
    assert keys == [f"{d}|{ACCOUNT}" for d in ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02")]
    assert all(split_partition_key(key)[0] == ACCOUNT for key in keys)
    assert klaviyo_partitions.partition_dimension_names[0] == "date"


def test_a_reversed_or_huge_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--to \(2026-11-01\) is before --from \(2026-11-02\)"):
        partition_keys(ACCOUNT, date(2026, 11, 2), date(2026, 11, 1))
    with pytest.raises(ValueError, match=f"at most {MAX_LISTED_DATES}"):
        partition_keys(ACCOUNT, date(2000, 1, 1), date(2026, 1, 1))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klaviyo_dagster", "partitions", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_prints_the_keys_for_backfill_partitions() -> None:
    result = run_cli("--account", ACCOUNT.upper(), "--from", "2026-11-01", "--to", "2026-11-02")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"2026-11-01|{ACCOUNT},2026-11-02|{ACCOUNT}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--account", "../etc", "--from", "2026-11-01", "--to", "2026-11-02"), "account uuid"),
        (("--account", ACCOUNT, "--from", "20261101", "--to", "2026-11-02"), "must be a date YYYY-MM-DD"),
        (("--account", ACCOUNT, "--from", "2026-11-03", "--to", "2026-11-02"), "is before --from"),
    ],
)
def test_bad_arguments_exit_2_with_what_was_wrong(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
