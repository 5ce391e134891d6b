"""Bad input: run config of the wrong type or out of range, unknown and malformed accounts and dates
(no path escapes the bucket folder), a corrupt encrypted key, and awkward CSV values.

Already covered: ``days`` out of range, a missing key, a disabled source, an account unknown to the
env (``defs/test_assets.py``); malformed key blobs in ``decrypt_api_key`` (``test_accounts.py``) and a
broken blob failing its account alone (``defs/test_accounts_in_runs.py``); the basic unsafe object keys
(``storage/test_objects.py``); commas, quotes and newlines through csv and pandas
(``producers/test_csvfile.py``).
"""

from __future__ import annotations

import csv
import io
import json
import random
from base64 import b64decode, b64encode
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.defs.io_managers import object_key
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, split_partition_key
from klaviyo_dagster.producers.csvfile import CsvWriter
from klaviyo_dagster.sim import DEFAULT_API_KEY
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.objects import LocalObjectStore, validate_object_key
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, add_klaviyo_integration
from klaviyo_dagster_tests.defs.conftest import TINY_UPLOAD_ID, reloaded
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE
from klaviyo_dagster_tests.reliability.conftest import (
    FILE_NODES,
    materialized,
    run_config,
    run_partition,
    step_events,
    supabase_resources,
)

# --- run config ---------------------------------------------------------------------------------------

WRONG = {
    "days as text": {"days": "seven"},
    "days as a float": {"days": 2.5},
    "fast as text": {"fast": "yes please"},
    "unknown mode": {"mode": "LIVE"},
    "unknown timeframe": {"timeframe_key": "last_2_days"},
    "unknown schema": {"audience_schema": "everything"},
    "unknown field": {"dayz": 3},
    "page size 0": {"audience_page_size": 0},
    "page size 101": {"audience_page_size": 101},
    "no flows": {"limit_flows": 0},
    "too many messages": {"limit_messages": 101},
    "negative max pages": {"audience_max_pages": -1},
    "zero days": {"days": 0},
}
FIELD = {case: next(iter(values)) for case, values in WRONG.items()}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_bad_run_config_fails_before_any_call_naming_the_field(
    case, tiny_store_env, instance, resources, data_dir
) -> None:
    config = run_config(**WRONG[case])
    try:
        result = run_partition(instance, resources, config)
    except dg.DagsterInvalidConfigError as exc:  # rejected by Dagster's config schema
        message = str(exc)
    else:  # or by SyncOptions' validators when the step starts
        assert not result.success
        assert materialized(result) == {}
        message = "\n".join(str(result.failure_data_for_node(node).error) for node in FILE_NODES)
        if "must be" in message:
            low_high = {"audience_page_size": "between 1 and 100", "audience_max_pages": "0 or more"}
            assert low_high.get(FIELD[case], "between") in message
    assert FIELD[case] in message, message
    assert tiny_store_env.requests == []
    assert not data_dir.exists() or not list(data_dir.rglob("*.csv"))


# --- accounts and partition keys ------------------------------------------------------------------------------

UNSAFE_KEYS = [
    "2026-03-09|../../etc",
    f"2026-03-09|{ACCOUNT_ID}/..",
    f"2026-03-09/../..|{ACCOUNT_ID}",
    f"2026-03-09|{{{ACCOUNT_ID}}}",
    f"2026-03-09\n|{ACCOUNT_ID}",
    f"2026-02-30|{ACCOUNT_ID}",
    f"2026-03-09T00:00|{ACCOUNT_ID}",
    f"2026-03-09|{ACCOUNT_ID}|x",
    f"{ACCOUNT_ID}|2026-03-09",  # the account first, as keys read before the date led
    "|",
    "",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_a_malformed_partition_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError):
        split_partition_key(key)
    with pytest.raises(ValueError):
        object_key(key, "flows_csv")


def test_an_upper_case_account_id_maps_to_the_same_folder() -> None:
    assert object_key(f"2026-03-09|{ACCOUNT_ID.upper()}", "flows_csv") == f"{TINY_UPLOAD_ID}/flows.csv"


@pytest.mark.parametrize("day", ["20260309", "2026W101", "2026-W10-1"])
def test_only_the_canonical_date_form_is_a_partition_date(day: str) -> None:
    with pytest.raises(ValueError):
        split_partition_key(f"{day}|{ACCOUNT_ID}")


@pytest.mark.parametrize(
    "account", ["../../../escape", "a", "%2e%2e", "00000000-0000-0000-0000-00000000000g"]
)
def test_a_run_of_a_malformed_account_partition_writes_nothing_anywhere(
    account, tiny_store_env, instance, resources, data_dir, tmp_path: Path
) -> None:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [account])
    key = dg.MultiPartitionKey({"date": PARTITION_DATE.isoformat(), "klaviyo_account": account})

    result = run_partition(instance, resources, partition=key)

    assert not result.success
    assert sorted(step_events(result, "STEP_FAILURE")) == sorted(FILE_NODES)
    assert "Account id must be the dashboard's account uuid" in str(
        result.failure_data_for_node("flows_csv").error
    )
    assert tiny_store_env.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] or not data_dir.exists()
    assert not list(tmp_path.rglob("*.csv"))


def test_an_account_missing_from_the_dashboard_fails_the_snapshot_and_binds_nothing(
    tiny_store_env, instance, resources, supabase_double, clean_postgres
) -> None:
    result = run_partition(instance, supabase_resources(resources, supabase_double.url, clean_postgres))

    assert step_events(result, "STEP_FAILURE") == ["snapshot"]
    assert "is not in the dashboard's accounts table" in str(result.failure_data_for_node("snapshot").error)
    tables = IngestTables.postgres(clean_postgres)
    assert tables.upload(TINY_UPLOAD_ID) is None and tables.snapshot_for_upload(TINY_UPLOAD_ID) is None


EXTRA_UNSAFE_OBJECT_KEYS = [
    "%2e%2e/x",
    "u/..",
    "u/...",
    "u/flows.csv\x00.png",
    "u/flows.csv\n",
    "\uff55/flows.csv",  # fullwidth u
    "u/flows.csv/",
    " /flows.csv",
    "u/" + "a" * 1100,
    "C:/x",
    "u/~",
]


@pytest.mark.parametrize("key", EXTRA_UNSAFE_OBJECT_KEYS)
def test_more_unsafe_object_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        validate_object_key(key)


def test_no_accepted_object_key_resolves_outside_the_bucket_folder(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    bucket = store.bucket_dir.resolve()
    rng = random.Random(7)
    alphabet = "./\\%~:-_aZ0\x00 é"
    accepted = 0
    for _ in range(5000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        try:
            path = store._path(key)
        except ValueError:
            continue
        accepted += 1
        assert bucket in path.resolve().parents, key
    assert accepted > 50  # the generator does produce acceptable keys


def test_every_partitions_object_key_is_its_upload_folder_and_a_contract_name() -> None:
    for account in (ACCOUNT_ID, "00000000-0000-4000-8000-00000000d3e0"):
        for node in FILE_NODES:
            key = object_key(f"2026-03-09|{account}", node)
            upload, name = key.split("/")
            assert upload == nightly_upload_id(account, PARTITION_DATE) and name == f"{node[:-4]}.csv"
            assert validate_object_key(key) == key


# --- a corrupt encrypted key ----------------------------------------------------------------------------------

ENCRYPTION_KEY = "reliability-enc-key"


def tampered(blob: str) -> str:
    parsed = json.loads(blob)
    ct = bytearray(b64decode(parsed["ct"]))
    ct[0] ^= 0x01
    parsed["ct"] = b64encode(bytes(ct)).decode()
    return json.dumps(parsed)


@pytest.mark.parametrize("damage", ["tampered ciphertext", "wrong INTEGRATIONS_ENC_KEY"])
def test_a_corrupt_encrypted_key_fails_the_partition_before_any_call(
    damage, tiny_store_env, instance, resources, store_resource, data_dir, monkeypatch
) -> None:
    blob = encrypt_api_key(DEFAULT_API_KEY, ENCRYPTION_KEY)
    monkeypatch.setenv(
        "INTEGRATIONS_ENC_KEY", "not-the-dashboards-key" if "wrong" in damage else ENCRYPTION_KEY
    )
    tables = store_resource.get_store().tables
    tables.ensure_account(ACCOUNT_ID, "store")
    add_klaviyo_integration(tables, ACCOUNT_ID, tampered(blob) if "tampered" in damage else blob)

    result = run_partition(instance, reloaded(resources))

    assert sorted(step_events(result, "STEP_FAILURE")) == sorted(FILE_NODES)
    for node in FILE_NODES:
        message = result.failure_data_for_node(node).user_failure_data.description
        assert message == (
            f"Account {ACCOUNT_ID}: the stored Klaviyo key does not decrypt with INTEGRATIONS_ENC_KEY: "
            "wrong key or tampered blob"
        )
    assert tiny_store_env.requests == []
    assert not list(data_dir.rglob("*.csv"))
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID) is None
    seen = repr(result.all_events)
    assert ENCRYPTION_KEY not in seen and DEFAULT_API_KEY not in seen


# --- awkward CSV values ---------------------------------------------------------------------------------------

AWKWARD = [
    "comma, inside",
    'quote " inside',
    '"fully quoted"',
    "new\nline",
    "carriage\rreturn",
    "crlf\r\nend",
    "tab\tsemi;pipe|",
    " leading and trailing ",
    '=HYPERLINK("http://x")',
    "line\u2028separator\u0085nel",
    "emoji 🎂 and é",
    "",
    '"',
    ",",
    "x" * 1_000_000,
    ('a,"b"\n' * 20_000),
]


def written(rows: list[list[object]]) -> str:
    out = io.StringIO(newline="")
    writer = CsvWriter(out, ["Name", "Value"], final_newline=True)
    for row in rows:
        writer.write_row(row)
    writer.close()
    return out.getvalue()


@pytest.fixture
def big_csv_fields() -> Iterator[None]:
    """The csv module refuses fields over 128 KiB by default (NOTES.md #5): raise it for one test."""
    previous = csv.field_size_limit(16 * 1024 * 1024)
    yield
    csv.field_size_limit(previous)


def test_awkward_and_very_long_values_round_trip_exactly(big_csv_fields) -> None:
    rows = [[value, index] for index, value in enumerate(AWKWARD)]
    text = written(rows)

    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["Name", "Value"]] + [[value, str(index)] for value, index in rows]
    frame = pd.read_csv(io.StringIO(text, newline=""), keep_default_na=False, dtype=str)
    assert frame["Name"].tolist() == AWKWARD
    assert frame["Value"].tolist() == [str(i) for i in range(len(AWKWARD))]


def test_a_nul_byte_is_dropped_so_every_reader_sees_the_same_field() -> None:
    text = written([["before\x00after", 1]])
    assert list(csv.reader(io.StringIO(text, newline="")))[1] == ["beforeafter", "1"]


def test_a_nul_byte_does_not_truncate_the_field_for_common_readers() -> None:
    text = written([["before\x00after", 1]])
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
    assert frame["Name"].tolist()[0].startswith("before") and frame["Name"].tolist()[0].endswith("after")
