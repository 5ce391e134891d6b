"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.defs.resources import KLAVIYO_RESOURCE_KEY, klaviyo_resource_from_env


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env()})
