"""Dagster resources: how assets get a Klaviyo client (and later the ingest store)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from klaviyo_dagster.klaviyo.client import API_KEY_ENV_VARS, KlaviyoClient, RetryPolicy

KLAVIYO_RESOURCE_KEY = "klaviyo"


class KlaviyoResource(dg.ConfigurableResource):
    """Klaviyo's REST API for one store.

    The key is a private API key with read scopes. Give it as ``dg.EnvVar(...)`` so that Dagster
    shows the variable's name, never its value; left unset, the client reads
    ``KLAVIYO_API_KEY_PRIVATE`` or ``KLAVIYO_API_KEY`` when a run starts. Calls also need
    ``KLAVIYO_ENABLE=true``, a switch that lets operators stop all Klaviyo traffic without a deploy.
    """

    api_key: str | None = Field(
        default=None,
        description="Private API key; use EnvVar. Unset: KLAVIYO_API_KEY_PRIVATE, else KLAVIYO_API_KEY.",
    )
    base_url: str | None = Field(
        default=None, description="Unset: KLAVIYO_BASE_URL, else https://a.klaviyo.com."
    )
    revision: str | None = Field(
        default=None, description="API revision header. Unset: KLAVIYO_API_REVISION, else 2026-07-15."
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Real seconds per Klaviyo second for pacing: 1 against Klaviyo, the simulator's --time-scale against it.",
    )
    max_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest single wait for a rate limit before failing (the daily report quota says hours).",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per-request timeout.")

    def get_client(self, api_key: str | None = None) -> KlaviyoClient:
        """A client for this store (or for ``api_key``'s store); close it when done."""
        return KlaviyoClient(
            api_key or self.api_key,
            base_url=self.base_url,
            revision=self.revision,
            time_scale=self.time_scale,
            timeout_seconds=self.timeout_seconds,
            retry=RetryPolicy(max_wait_seconds=self.max_wait_seconds),
        )


def klaviyo_resource_from_env() -> KlaviyoResource:
    """The resource bound to whichever key variable is set, by name (EnvVar), never by value."""
    key_var = next((name for name in API_KEY_ENV_VARS if os.environ.get(name)), None)
    return KlaviyoResource(api_key=dg.EnvVar(key_var) if key_var else None)
