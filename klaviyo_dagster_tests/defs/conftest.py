"""Fixtures for the Dagster layer: an instance knowing the account, resources on the tiny store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from klaviyo_dagster.defs.io_managers import INGEST_IO_MANAGER_KEY, LocalCsvIOManager
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import KLAVIYO_RESOURCE_KEY, KlaviyoResource
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

TINY_PARTITION = partition_key(ACCOUNT_ID, PARTITION_DATE)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        yield instance


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def resources(data_dir: Path) -> dict[str, Any]:
    return {
        KLAVIYO_RESOURCE_KEY: KlaviyoResource(),
        INGEST_IO_MANAGER_KEY: LocalCsvIOManager(base_dir=str(data_dir)),
    }
