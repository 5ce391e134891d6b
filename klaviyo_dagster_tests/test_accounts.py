"""Accounts and their keys: decryption (the contract's vector), the directory, per-account errors."""

from __future__ import annotations

import json

import pytest

from klaviyo_dagster.accounts import (
    AccountDirectory,
    KeyDecryptionError,
    UnknownAccountError,
    decrypt_api_key,
    encrypt_api_key,
)
from klaviyo_dagster.environment import account_settings
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import add_klaviyo_integration

VECTOR_KEY = "test-integrations-key"
VECTOR_BLOB = json.dumps(
    {
        "v": 1,
        "iv": "AAECAwQFBgcICQoL",
        "ct": "Kg8Uah3XNTh/oJF5QQYfDuD2Wx2MXfyDAy76ybjNoZPx2cx9Xw==",
        "tag": "gV7hsPkMWFXvQPtQgVnEBA==",
    }
)
VECTOR_PLAINTEXT = "pk_0123456789abcdefghijklmnopqrstuv12"
ENABLED, DISABLED, DELETED, BROKEN = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
    "44444444-4444-4444-8444-444444444444",
)
ENV = {"INTEGRATIONS_ENC_KEY": VECTOR_KEY, "KLAVIYO_API_KEY": "pk_env_key"}


def test_the_contracts_test_vector_decrypts() -> None:
    assert decrypt_api_key(VECTOR_BLOB, VECTOR_KEY) == VECTOR_PLAINTEXT


def test_encryption_round_trips_like_the_dashboards() -> None:
    blob = encrypt_api_key(VECTOR_PLAINTEXT, VECTOR_KEY, iv=bytes(range(12)))
    assert json.loads(blob) == json.loads(VECTOR_BLOB)


@pytest.mark.parametrize(
    ("blob", "key", "message"),
    [
        (VECTOR_BLOB, "another-key", "does not decrypt"),
        (VECTOR_BLOB.replace("Kg8U", "Kg9U"), VECTOR_KEY, "does not decrypt"),
        ("not json", VECTOR_KEY, "not a valid encrypted blob"),
        (json.dumps({"v": 1, "iv": "!!", "ct": "", "tag": ""}), VECTOR_KEY, "not a valid encrypted blob"),
        (json.dumps({"v": 2}), VECTOR_KEY, "unsupported encrypted key version"),
    ],
)
def test_a_bad_blob_or_key_is_a_clear_error_without_secrets(blob: str, key: str, message: str) -> None:
    with pytest.raises(KeyDecryptionError, match=message) as failure:
        decrypt_api_key(blob, key)
    assert key not in str(failure.value) and blob not in str(failure.value)


@pytest.fixture(params=["postgres", "sqlite"])
def tables(request: pytest.FixtureRequest, tmp_path) -> IngestTables:
    if request.param == "postgres":
        made = IngestTables.postgres(request.getfixturevalue("clean_postgres"))
    else:
        made = IngestTables.sqlite(tmp_path / "ingest.sqlite3")
    for account in (ENABLED, DISABLED, DELETED, BROKEN):
        made.ensure_account(account, f"Store {account[:4]}")
    rows = [
        (ENABLED, VECTOR_BLOB, True),
        (DISABLED, VECTOR_BLOB, False),
        (DELETED, VECTOR_BLOB, True),
        (BROKEN, VECTOR_BLOB.replace("Kg8U", "Kg9U"), True),
    ]
    for account, blob, enabled in rows:
        add_klaviyo_integration(
            made, account, blob, enabled=enabled, integration_id=account.replace("-4", "-5", 1)
        )
    with made._transaction() as tx:
        tx.execute("update accounts set deleted_at = ? where id = ?", ("2026-01-01T00:00:00+00:00", DELETED))
    return made


def test_the_accounts_are_the_enabled_integrations_of_live_accounts(tables: IngestTables) -> None:
    assert AccountDirectory(tables, account_settings(ENV)).account_ids() == [ENABLED, BROKEN]


def test_each_account_gets_its_own_key_or_its_own_error(tables: IngestTables) -> None:
    directory = AccountDirectory(tables, account_settings(ENV))

    assert directory.api_key_for(ENABLED) == VECTOR_PLAINTEXT
    with pytest.raises(UnknownAccountError, match="disabled"):
        directory.api_key_for(DISABLED)
    with pytest.raises(UnknownAccountError, match="deleted"):
        directory.api_key_for(DELETED)
    with pytest.raises(KeyDecryptionError, match=f"Account {BROKEN}: .*does not decrypt"):
        directory.api_key_for(BROKEN)
    with pytest.raises(UnknownAccountError, match="INTEGRATIONS_ENC_KEY"):
        AccountDirectory(tables, account_settings({})).api_key_for(ENABLED)


def test_without_integrations_the_env_account_is_synced(tmp_path) -> None:
    directory = AccountDirectory(
        IngestTables.sqlite(tmp_path / "empty.sqlite3"),
        account_settings({**ENV, "KLAVIYO_ACCOUNT_ID": ENABLED}),
    )

    assert directory.account_ids() == [ENABLED]
    assert directory.api_key_for(ENABLED) == "pk_env_key"
    with pytest.raises(UnknownAccountError, match=f"No Klaviyo key for account {DISABLED}"):
        directory.api_key_for(DISABLED)
    assert not (tmp_path / "empty.sqlite3").exists()  # reading created nothing


def test_a_run_stamps_last_run_at_and_sets_then_clears_last_error(tables: IngestTables) -> None:
    directory = AccountDirectory(tables, account_settings(ENV))

    directory.record_run(ENABLED, "flows_csv: FlowSyncFailed: Klaviyo GET /api/flows returned 401")
    ran_at, error = tables.integration_status(ENABLED)
    assert ran_at and error.startswith("flows_csv: FlowSyncFailed")
    assert tables.integration_status(BROKEN) == (None, None)  # other accounts untouched

    directory.record_run(ENABLED, None)
    assert tables.integration_status(ENABLED)[1] is None
