"""Where the ingest CSVs land: each run stages them; the snapshot step publishes them.

The upload id is the contract's deterministic id of ``"{accountId}:nightly-{date}"``, so a rerun or a
backfill of a partition ends in the same folder instead of adding new ones. A file asset never writes
the final key the dashboard reads: it stores its file under its run's own staging name,
``{uploadId}/.staging/{runId}/{name}`` (:func:`klaviyo_dagster.publishing.publish.staging_key`), and the
snapshot step publishes the run's three files (``publishing/publish.py``). Two runs of one partition
never share a staging name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from klaviyo_dagster.defs.partitions import split_partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.producers.sync import FILES
from klaviyo_dagster.publishing.publish import staging_key
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.objects import ObjectStore

INGEST_IO_MANAGER_KEY = "ingest_io_manager"
# Asset name (flows_csv, ...) → the object name the dashboard expects.
OBJECT_NAMES = {f"{file.kind}_csv": file.filename for file in FILES}


@dataclass(frozen=True)
class StoredCsv:
    """A partition's CSV in the ingest store, as downstream assets receive it (nothing is read)."""

    key: str  # the final key, the one the dashboard reads
    objects: ObjectStore

    @property
    def upload_id(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[1]

    def staged_key(self, run_id: str) -> str:
        """Where run ``run_id`` staged this file."""
        return staging_key(self.upload_id, run_id, self.name)


def staging_run_id(run: dg.DagsterRun) -> str:
    """The staging folder's run id: the run group's first run. A re-execution (Dagster's automatic
    retry of a crashed run, "Re-execute from failure") stages beside the files of the run it
    continues, so its snapshot finds all three; two separate launches never share a group."""
    return run.root_run_id or run.run_id


def object_key(partition_key: str, asset_name: str) -> str:
    """The object's final key, the one the dashboard reads."""
    account_id, day = split_partition_key(partition_key)
    return f"{nightly_upload_id(account_id, day)}/{OBJECT_NAMES[asset_name]}"


class IngestStoreIOManager(dg.ConfigurableIOManager):
    """Stages the three CSV assets under the run's own names and hands downstream a ``StoredCsv``."""

    store: IngestStoreResource

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        objects = self.store.get_store().objects
        stored = StoredCsv(object_key(context.asset_partition_key, context.asset_key.path[-1]), objects)
        staged = stored.staged_key(staging_run_id(context.step_context.dagster_run))
        try:
            objects.upload(staged, obj)  # published by the snapshot step
        finally:
            Path(obj).unlink(missing_ok=True)
        context.add_output_metadata(
            {
                "upload_id": stored.upload_id,
                "object": f"{objects.describe()}/{stored.key}",
                "staged_object": staged,
            }
        )

    def load_input(self, context: dg.InputContext) -> StoredCsv:
        upstream = context.upstream_output
        name = (upstream.asset_key if upstream else context.asset_key).path[-1]
        return StoredCsv(object_key(context.asset_partition_key, name), self.store.get_store().objects)
