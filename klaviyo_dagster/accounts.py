"""Which Klaviyo accounts this deployment syncs, and each one's API key.

The dashboard keeps one row per connected store in ``account_integrations`` (provider ``klaviyo``)
with the store's private key encrypted (AES-256-GCM, key = SHA-256 of ``INTEGRATIONS_ENC_KEY``).
Those rows are the accounts; a deployment without any falls back to the single account in
``KLAVIYO_ACCOUNT_ID`` with the environment's key (the demo sets that to its fixed account). Those
settings arrive as an ``AccountSettings`` (read by ``environment.account_settings``).

An account id names a partition and an upload folder, so it is validated before it reaches either.
A missing, disabled or undecryptable key fails that account alone, with a message saying why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError
from klaviyo_dagster.storage.ids import validate_account_id
from klaviyo_dagster.storage.tables import IngestTables, Integration

# The account `make demo` and `make dev` sync against the simulator.
DEMO_ACCOUNT_ID = "00000000-0000-4000-8000-00000000d3e0"


class UnknownAccountError(KlaviyoConfigError):
    """The account has no usable Klaviyo key in this deployment."""


class KeyDecryptionError(UnknownAccountError):
    """An ``encrypted_api_key`` blob could not be decrypted (wrong key, tampered or malformed)."""


def decrypt_api_key(blob: str, encryption_key: str) -> str:
    """The Klaviyo key inside an ``account_integrations.encrypted_api_key`` blob.

    ``{"v":1,"iv":b64,"ct":b64,"tag":b64}``: AES-256-GCM with a 12-byte IV, keyed by
    SHA-256(``INTEGRATIONS_ENC_KEY``). Any failure raises KeyDecryptionError without the blob or key.
    """
    try:
        parsed = json.loads(blob)
        if parsed.get("v") != 1:
            raise KeyDecryptionError(f"unsupported encrypted key version {parsed.get('v')!r} (expected 1)")
        iv, ciphertext, tag = (base64.b64decode(parsed[name], validate=True) for name in ("iv", "ct", "tag"))
        key = hashlib.sha256(encryption_key.encode("utf-8")).digest()
        return AESGCM(key).decrypt(iv, ciphertext + tag, None).decode("utf-8")
    except KeyDecryptionError:
        raise
    except InvalidTag:
        raise KeyDecryptionError(
            "the stored Klaviyo key does not decrypt with INTEGRATIONS_ENC_KEY: wrong key or tampered blob"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise KeyDecryptionError("the stored Klaviyo key is not a valid encrypted blob") from None


def encrypt_api_key(api_key: str, encryption_key: str, iv: bytes | None = None) -> str:
    """The blob the dashboard stores for ``api_key`` (for seeding rows in tests and tools)."""
    iv = iv or os.urandom(12)
    sealed = AESGCM(hashlib.sha256(encryption_key.encode("utf-8")).digest()).encrypt(
        iv, api_key.encode("utf-8"), None
    )
    ciphertext, tag = sealed[:-16], sealed[-16:]
    encoded = {
        name: base64.b64encode(value).decode()
        for name, value in (("iv", iv), ("ct", ciphertext), ("tag", tag))
    }
    return json.dumps({"v": 1, **encoded}, separators=(",", ":"))


@dataclass(frozen=True)
class AccountSettings:
    """A deployment's account settings (``environment.account_settings`` reads them).

    ``encryption_key``: ``INTEGRATIONS_ENC_KEY``, which decrypts the dashboard's stored keys.
    ``account_id`` and ``api_key``: ``KLAVIYO_ACCOUNT_ID`` and the Klaviyo key, the one account
    synced when ``account_integrations`` has no Klaviyo row (the demo's).
    """

    account_id: str | None = None
    api_key: str | None = None
    encryption_key: str | None = None

    def __repr__(self) -> str:  # never a key
        return f"AccountSettings(account_id={self.account_id!r})"


@dataclass
class AccountDirectory:
    """The accounts to sync and their keys, from ``account_integrations`` or, without any, the
    settings' single account."""

    tables: IngestTables | None
    settings: AccountSettings = AccountSettings()

    def account_ids(self) -> list[str]:
        """Accounts with an enabled Klaviyo integration and not deleted; else the settings' account."""
        integrations = self._integrations()
        if integrations:
            return sorted(i.account_id for i in integrations.values() if i.enabled and not i.deleted)
        return self._configured_ids()

    def _configured_ids(self) -> list[str]:
        configured = self.settings.account_id
        return [validate_account_id(configured)] if configured else []

    def api_key_for(self, account_id: str) -> str:
        """The account's Klaviyo key; UnknownAccountError (per account, key-free) when there is none."""
        account_id = validate_account_id(account_id)
        integration = self._integrations().get(account_id)
        if integration is not None:
            return self._decrypt(integration)
        configured = self._configured_ids()
        if account_id in configured and self.settings.api_key:
            return self.settings.api_key
        if account_id in configured:
            raise UnknownAccountError(
                f"No Klaviyo key for account {account_id}: set KLAVIYO_API_KEY_PRIVATE (or KLAVIYO_API_KEY) "
                "to a private key with read scopes."
            )
        raise UnknownAccountError(
            f"No Klaviyo key for account {account_id}: it has no Klaviyo row in account_integrations, and "
            f"KLAVIYO_ACCOUNT_ID is {configured[0] if configured else 'unset'}. Connect Klaviyo for this "
            "account in the dashboard, or set KLAVIYO_ACCOUNT_ID and KLAVIYO_API_KEY_PRIVATE."
        )

    def record_run(self, account_id: str, error: str | None) -> None:
        """Stamps ``last_run_at`` and sets (or clears, on success) ``last_error`` on the integration row."""
        if self.tables is not None:
            self.tables.record_integration_run(validate_account_id(account_id), error)

    def _integrations(self) -> dict[str, Integration]:
        if self.tables is None:
            return {}
        return {i.account_id: i for i in self.tables.klaviyo_integrations()}

    def _decrypt(self, integration: Integration) -> str:
        if integration.deleted:
            raise UnknownAccountError(f"Account {integration.account_id} is deleted in the dashboard")
        if not integration.enabled:
            raise UnknownAccountError(
                f"Klaviyo is disabled for account {integration.account_id} (account_integrations.enabled)"
            )
        encryption_key = self.settings.encryption_key
        if not encryption_key:
            raise UnknownAccountError(
                f"Cannot read the Klaviyo key of account {integration.account_id}: set INTEGRATIONS_ENC_KEY"
            )
        try:
            return decrypt_api_key(integration.encrypted_api_key, encryption_key)
        except KeyDecryptionError as exc:
            raise KeyDecryptionError(f"Account {integration.account_id}: {exc}") from None
