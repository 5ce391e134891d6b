"""Which Klaviyo accounts this deployment syncs, and each one's API key.

An account is the dashboard's account uuid; it names a partition and, later, a storage folder, so it
is validated before it reaches either. For now one account comes from the environment
(``KLAVIYO_ACCOUNT_ID`` with the env key); a later issue reads many from the dashboard's database.
Everything asks ``api_key_for_account`` so that change stays in this module.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping

from klaviyo_dagster.klaviyo.client import resolve_api_key
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError

ACCOUNT_ID_ENV_VAR = "KLAVIYO_ACCOUNT_ID"
# The account `make demo` and `make dev` sync against the simulator.
DEMO_ACCOUNT_ID = "00000000-0000-4000-8000-00000000d3e0"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UnknownAccountError(KlaviyoConfigError):
    """The account has no Klaviyo key configured in this deployment."""


def validate_account_id(account_id: str) -> str:
    """The account id in canonical form; ValueError unless it is a uuid (no path tricks possible)."""
    if not isinstance(account_id, str) or not _UUID.match(account_id.lower()):
        raise ValueError(f"Account id must be the dashboard's account uuid, got {account_id!r}")
    return str(uuid.UUID(account_id))


def configured_account_ids(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    raw = (env.get(ACCOUNT_ID_ENV_VAR) or "").strip()
    return [validate_account_id(raw)] if raw else []


def api_key_for_account(account_id: str, env: Mapping[str, str] | None = None) -> str:
    """The Klaviyo private key for ``account_id``; a clear error when this deployment has none."""
    account_id = validate_account_id(account_id)
    configured = configured_account_ids(env)
    if account_id not in configured:
        raise UnknownAccountError(
            f"No Klaviyo key for account {account_id}: this deployment syncs the account in "
            f"{ACCOUNT_ID_ENV_VAR} ({configured[0] if configured else 'unset'}). Set {ACCOUNT_ID_ENV_VAR} "
            f"to this account and KLAVIYO_API_KEY_PRIVATE to its key."
        )
    return resolve_api_key(None, env)
