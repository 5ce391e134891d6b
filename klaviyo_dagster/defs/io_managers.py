"""Where the ingest CSVs land: ``{uploadId}/{flows,campaigns,subscribers}.csv`` in the ingest store.

The upload id is the contract's deterministic id of ``"{accountId}:nightly-{date}"``, so a rerun or a
backfill of a partition overwrites the same objects instead of adding new ones.

Each file is first stored beside its final name (``.staging.flows.csv``) and only moved into place by
the snapshot step, once all three exist: a rerun that dies half way never leaves the partition's
current snapshot over files of two different runs. (Runs of one account never overlap: the instance
allows one at a time, so one staging name per file is enough.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from klaviyo_dagster.defs.partitions import split_partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.objects import ObjectStore

INGEST_IO_MANAGER_KEY = "ingest_io_manager"
# Asset name → the object name the dashboard expects.
OBJECT_NAMES = {
    "flows_csv": "flows.csv",
    "campaigns_csv": "campaigns.csv",
    "subscribers_csv": "subscribers.csv",
}


STAGING_PREFIX = ".staging."


@dataclass(frozen=True)
class StoredCsv:
    """A CSV in the ingest store, as downstream assets receive it (nothing is read until opened)."""

    key: str
    objects: ObjectStore

    @property
    def staged_key(self) -> str:
        folder, name = self.key.rsplit("/", 1)
        return f"{folder}/{STAGING_PREFIX}{name}"

    def promote(self) -> None:
        """Moves a freshly stored file from its staging name into place (no-op when none is staged)."""
        folder, _ = self.key.rsplit("/", 1)
        if self.staged_key.rsplit("/", 1)[1] not in self.objects.list(folder):
            return
        with self._downloaded(self.staged_key) as path:
            self.objects.upload(self.key, path)
        self.objects.remove([self.staged_key])

    @contextmanager
    def local_path(self) -> Iterator[Path]:
        """The object as a local file for the duration of the block (downloaded when remote)."""
        with self._downloaded(self.key) as path:
            yield path

    @contextmanager
    def _downloaded(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="klaviyo-dagster-") as folder:
            path = Path(folder) / Path(self.key).name
            self.objects.download(key, path)
            yield path


def object_key(partition_key: str, asset_name: str) -> str:
    """The object's final key, the one the dashboard reads."""
    account_id, day = split_partition_key(partition_key)
    return f"{nightly_upload_id(account_id, day)}/{OBJECT_NAMES[asset_name]}"


class IngestStoreIOManager(dg.ConfigurableIOManager):
    """Stores the three CSV assets in the ingest store and hands downstream a ``StoredCsv``."""

    store: IngestStoreResource

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        objects = self.store.get_store().objects
        stored = StoredCsv(object_key(context.asset_partition_key, context.asset_key.path[-1]), objects)
        try:
            objects.upload(stored.staged_key, obj)  # moved into place by the snapshot
        finally:
            Path(obj).unlink(missing_ok=True)
        context.add_output_metadata(
            {"upload_id": stored.key.split("/")[0], "object": f"{objects.describe()}/{stored.key}"}
        )

    def load_input(self, context: dg.InputContext) -> StoredCsv:
        upstream = context.upstream_output
        name = (upstream.asset_key if upstream else context.asset_key).path[-1]
        return StoredCsv(object_key(context.asset_partition_key, name), self.store.get_store().objects)
