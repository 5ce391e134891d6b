"""Sensors: keep the ``klaviyo_accounts`` partitions in step with the accounts this deployment syncs."""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.accounts import configured_account_ids
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME

ACCOUNTS_SENSOR_NAME = "klaviyo_accounts_sensor"


@dg.sensor(
    name=ACCOUNTS_SENSOR_NAME, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING
)
def klaviyo_accounts_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Adds a partition for each configured account that has none yet (today: KLAVIYO_ACCOUNT_ID)."""
    known = set(context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME))
    new = [account for account in configured_account_ids() if account not in known]
    if not new:
        return dg.SkipReason(f"{len(known)} account partition(s) already registered; nothing new")
    context.log.info(f"registering account partition(s): {', '.join(new)}")
    return dg.SensorResult(
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(ACCOUNTS_PARTITIONS_NAME, new)]
    )
