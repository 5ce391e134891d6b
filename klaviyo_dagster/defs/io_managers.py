"""Where the ingest CSVs land: ``{uploadId}/{flows,campaigns,subscribers}.csv`` in the ingest store.

The upload id is the contract's deterministic id of ``"{accountId}:nightly-{date}"``, so a rerun or a
backfill of a partition overwrites the same objects instead of adding new ones.
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


@dataclass(frozen=True)
class StoredCsv:
    """A CSV in the ingest store, as downstream assets receive it (nothing is read until opened)."""

    key: str
    objects: ObjectStore

    @contextmanager
    def local_path(self) -> Iterator[Path]:
        """The object as a local file for the duration of the block (downloaded when remote)."""
        with tempfile.TemporaryDirectory(prefix="klaviyo-dagster-") as folder:
            path = Path(folder) / Path(self.key).name
            self.objects.download(self.key, path)
            yield path


def object_key(partition_key: str, asset_name: str) -> str:
    account_id, day = split_partition_key(partition_key)
    return f"{nightly_upload_id(account_id, day)}/{OBJECT_NAMES[asset_name]}"


class IngestStoreIOManager(dg.ConfigurableIOManager):
    """Stores the three CSV assets in the ingest store and hands downstream a ``StoredCsv``."""

    store: IngestStoreResource

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        key = object_key(context.asset_partition_key, context.asset_key.path[-1])
        objects = self.store.get_store().objects
        try:
            objects.upload(key, obj)
        finally:
            Path(obj).unlink(missing_ok=True)
        context.add_output_metadata({"upload_id": key.split("/")[0], "object": f"{objects.describe()}/{key}"})

    def load_input(self, context: dg.InputContext) -> StoredCsv:
        upstream = context.upstream_output
        name = (upstream.asset_key if upstream else context.asset_key).path[-1]
        return StoredCsv(object_key(context.asset_partition_key, name), self.store.get_store().objects)
