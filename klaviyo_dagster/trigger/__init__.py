"""The old orchestrator's trigger, ``/api/dashboard/update``, served in front of Dagster.

The web app and external crons called the serverless orchestrator at ``/api/dashboard/update``;
this small HTTP service keeps that contract so they move by changing one URL. A dry run builds the
three files synchronously (no Dagster run); a live call launches the ``klaviyo_ingest`` job for the
account's partition through Dagster's GraphQL API and answers 202 with the run id, and
``/api/dashboard/update/status`` reports the run and, once it succeeded, the snapshot and the keys
written. ``python -m klaviyo_dagster.trigger --port N`` serves it (settings from the environment).
"""

from klaviyo_dagster.trigger.app import create_app
from klaviyo_dagster.trigger.settings import TriggerSettings

__all__ = ["TriggerSettings", "create_app"]
