"""Fixtures for the Dagster layer: an instance knowing the account, resources on the tiny store."""

from __future__ import annotations

import multiprocessing.forkserver
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import sleep
from typing import Any

import dagster as dg
import pytest

from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import (
    KLAVIYO_RESOURCE_KEY,
    IngestStoreResource,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

TINY_PARTITION = partition_key(ACCOUNT_ID, PARTITION_DATE)
TINY_UPLOAD_ID = nightly_upload_id(ACCOUNT_ID, PARTITION_DATE)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        yield instance


@pytest.fixture
def own_fork_server() -> Iterator[None]:
    """Step processes fork from a server started in this test, with its environment. Python keeps one
    fork server per process: a later test running a job in the same pytest process would otherwise
    fork from the earlier test's, with its settings (a simulator's URL that is closed by then)."""
    multiprocessing.forkserver._forkserver._stop()  # "used by unit tests to stop the server" (CPython)
    yield
    multiprocessing.forkserver._forkserver._stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store_resource(data_dir: Path) -> IngestStoreResource:
    """The local store (folder + SQLite) under the test's data directory."""
    return IngestStoreResource(data_dir=str(data_dir))


@pytest.fixture
def resources(store_resource: IngestStoreResource) -> dict[str, Any]:
    return pipeline_resources(klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE), store_resource)


def reloaded(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources`` with the Klaviyo resource read again from the environment, as a code location
    that reloads after a deployment changed its variables."""
    return {**resources, KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE)}


def stored_object(data_dir: Path, name: str, staged: bool = False) -> Path:
    """Where the local store keeps one of the tiny partition's files; ``staged``: where the one run
    that staged it put it (``{uploadId}/.staging/{runId}/{name}``, until the snapshot publishes it)."""
    folder = data_dir / "objects" / "preauth-uploads" / TINY_UPLOAD_ID
    if not staged:
        return folder / name
    found = sorted((folder / ".staging").glob(f"*/{name}"))
    assert len(found) <= 1, f"staged by more than one run: {found}"
    return found[0] if found else folder / ".staging" / "no-run" / name


@pytest.fixture
def one_utc_day() -> None:
    """The test's runs share what they read, which the fetch cache keeps for one UTC day: a test that
    would start in the last two minutes of a day waits for the next one."""
    now = datetime.now(UTC)
    left = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC) - now
    if left < timedelta(minutes=2):
        sleep(left.total_seconds() + 1)
