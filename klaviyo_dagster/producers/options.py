"""What a sync may be asked to do: one set of options shared by the three producers.

The Dagster run config (``defs/config.py``) is this model, so every range below is checked before
any Klaviyo call, and the error names the field and its allowed range.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

AudienceSchema = Literal["required", "extended", "minimal"]

# Inclusive ranges of the numeric options, checked with a message naming the field and its range.
RANGES: dict[str, tuple[int, int | None]] = {
    "days": (1, 30),
    "limit_flows": (1, 100),
    "limit_messages": (1, 100),
    "audience_page_size": (1, 100),
    "audience_max_pages": (0, None),
}

# How long the campaign metrics window is for each accepted ``timeframe_key``; the window always
# ends on the partition date, so a backfill asks Klaviyo for the same days as the original run.
TIMEFRAME_DAYS = {"last_7_days": 7, "last_30_days": 30, "last_90_days": 90, "last_365_days": 365}


class SyncOptions(BaseModel):
    """Options of one sync (one account, one partition date)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["live", "dry-run"] = Field(
        default="live", description="dry-run builds the files exactly as live but writes nothing."
    )
    days: int = Field(
        default=7,
        description="Days in the flows/campaigns window, ending on the partition date (1..30).",
    )
    timeframe_key: Literal["last_7_days", "last_30_days", "last_90_days", "last_365_days"] = Field(
        default="last_30_days",
        description="Length of the campaign metrics window, ending on the partition date.",
    )
    fast: bool = Field(
        default=False,
        description="Smoke mode: 1 flow, 1 message, no enrichment, header-only subscribers.",
    )
    limit_flows: int = Field(default=100, description="Live flows kept (1..100).")
    limit_messages: int = Field(default=100, description="Email messages kept per flow (1..100).")
    enrich_message_names: bool = Field(
        default=True, description="Read each flow's definition for message names and zero-filled rows."
    )
    audience_schema: AudienceSchema = Field(default="required", description="subscribers.csv columns.")
    audience_page_size: int = Field(default=100, description="Profiles per page (1..100).")
    audience_max_pages: int | None = Field(
        default=None, description="Stop after this many profile pages; 0 = header only; unset = all."
    )
    conversion_metric_id: str | None = Field(
        default=None,
        description="Placed Order metric id; else SHOPIFY_PLACED_ORDER_METRIC_ID, else looked up by name.",
    )

    @field_validator(*RANGES)
    @classmethod
    def _in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high = RANGES[info.field_name]
        if value is not None and (value < low or (high is not None and value > high)):
            allowed = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise ValueError(f"{info.field_name} must be {allowed}, got {value}")
        return value

    @property
    def campaign_metrics_days(self) -> int:
        return TIMEFRAME_DAYS[self.timeframe_key]

    @property
    def is_dry_run(self) -> bool:
        return self.mode == "dry-run"

    def effective(self) -> SyncOptions:
        """The options as the producers apply them: fast mode overrides the limits it names."""
        if not self.fast:
            return self
        return self.model_copy(
            update={
                "limit_flows": 1,
                "limit_messages": 1,
                "enrich_message_names": False,
                "audience_max_pages": 0,
            }
        )


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` per problem of a ``SyncOptions`` validation, without pydantic's
    "Value error, " prefix (our validators' messages already say what is wrong and how to fix it)."""
    return [
        (".".join(map(str, error["loc"])), str(error["msg"]).removeprefix("Value error, "))
        for error in exc.errors()
    ]
