"""Whether the automation that launches runs starts by itself (a deployment) or waits for a person.

A deployment relies on the complete-days schedule, the catch-up sensor and the nightly cleanup
running from the first start. ``make dev`` sets ``KLAVIYO_DAGSTER_AUTOMATION=off``: a newcomer's
first minute in the UI is not a burst of catch-up runs (against a real Klaviyo account, if
``KLAVIYO_BASE_URL`` points at one), nor a cleanup deleting uploads at 02:00; they wait under
Automation until switched on. Dagster keeps a switched state per instance.
"""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.environment import automation_on


def launching_sensor_status() -> dg.DefaultSensorStatus:
    """The default status of a sensor that launches runs."""
    return dg.DefaultSensorStatus.RUNNING if automation_on() else dg.DefaultSensorStatus.STOPPED


def launching_schedule_status() -> dg.DefaultScheduleStatus:
    """The default status of a schedule that launches runs."""
    return dg.DefaultScheduleStatus.RUNNING if automation_on() else dg.DefaultScheduleStatus.STOPPED
