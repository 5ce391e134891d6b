"""Run config of the ingest assets: the producers' options, validated before any Klaviyo call."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from klaviyo_dagster.producers.options import SyncOptions


class SyncConfig(SyncOptions, dg.Config):
    """One config shared by flows_csv, campaigns_csv and subscribers_csv.

    Out-of-range values fail with the field and its allowed range, e.g.
    "days must be between 1 and 30, got 40".
    """

    share_fetches: bool = Field(
        default=True,
        description=(
            "Reuse what the account's runs of the same UTC day already read from Klaviyo (the audience, "
            "flows, campaigns, a covering flow series). False: this run reads everything afresh."
        ),
    )

    def options(self, default_conversion_metric_id: str | None = None) -> SyncOptions:
        """The sync options; ``default_conversion_metric_id`` (the deployment's
        ``SHOPIFY_PLACED_ORDER_METRIC_ID``) applies when the run config names no metric."""
        options = self.model_dump(exclude={"share_fetches"})
        options["conversion_metric_id"] = options["conversion_metric_id"] or default_conversion_metric_id
        return SyncOptions(**options)
