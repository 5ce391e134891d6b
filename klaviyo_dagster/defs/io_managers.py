"""Where the ingest CSVs land. For now a local folder; the Supabase/local ingest store replaces it.

Files are placed atomically (written beside the target, then renamed), so a reader never sees half
a file and a rerun of a partition overwrites its files instead of adding new ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from klaviyo_dagster.defs.partitions import split_partition_key

INGEST_IO_MANAGER_KEY = "ingest_io_manager"
DATA_DIR_ENV_VAR = "KLAVIYO_DAGSTER_DATA_DIR"


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV_VAR) or str(Path.cwd() / ".data")


class LocalCsvIOManager(dg.ConfigurableIOManager):
    """Stores each CSV asset at ``{base_dir}/ingest/{account}/{date}/{asset}.csv``."""

    base_dir: str

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        target = self._path(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".csv.partial")
        shutil.move(obj, staging)
        os.replace(staging, target)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(target))})

    def load_input(self, context: dg.InputContext) -> Path:
        return self._path(context.upstream_output) if context.upstream_output else self._path(context)

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        account_id, day = split_partition_key(context.asset_partition_key)
        name = context.asset_key.path[-1]
        return Path(self.base_dir) / "ingest" / account_id / day.isoformat() / f"{name}.csv"
