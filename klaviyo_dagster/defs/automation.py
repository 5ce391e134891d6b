"""Whether the automation that launches runs starts by itself (a deployment) or waits for a person.

A deployment relies on the complete-days schedule, the catch-up sensor and the nightly cleanup
running from the first start. ``make dev`` sets ``KLAVIYO_DAGSTER_AUTOMATION=off``: a newcomer's
first minute in the UI is not a burst of catch-up runs (against a real Klaviyo account, if
``KLAVIYO_BASE_URL`` points at one), nor a cleanup deleting uploads at 02:00; they wait under
Automation until switched on. Dagster keeps a switched state per instance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

AUTOMATION_ENV_VAR = "KLAVIYO_DAGSTER_AUTOMATION"
AUTOMATION_VALUES = ("on", "off")


def automation_on(env: Mapping[str, str] | None = None) -> bool:
    """``KLAVIYO_DAGSTER_AUTOMATION`` (``on``, the default, or ``off``, any case), read when the
    code loads.

    Raises ``ValueError`` naming the variable and the values it takes.
    """
    env = os.environ if env is None else env
    value = env.get(AUTOMATION_ENV_VAR, "on").strip().lower() or "on"
    if value not in AUTOMATION_VALUES:
        raise ValueError(f"{AUTOMATION_ENV_VAR} must be 'on' or 'off', not {value!r}")
    return value == "on"


def launching_sensor_status() -> dg.DefaultSensorStatus:
    """The default status of a sensor that launches runs."""
    return dg.DefaultSensorStatus.RUNNING if automation_on() else dg.DefaultSensorStatus.STOPPED


def launching_schedule_status() -> dg.DefaultScheduleStatus:
    """The default status of a schedule that launches runs."""
    return dg.DefaultScheduleStatus.RUNNING if automation_on() else dg.DefaultScheduleStatus.STOPPED
