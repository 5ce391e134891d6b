"""Deterministic ids: the same partition always writes the same upload folder and rows.

The web app derives upload ids this way, and so must we, byte for byte (it is not RFC 4122 uuid5:
the namespace is the raw SHA-1 of a fixed string rather than a uuid).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAMESPACE = hashlib.sha1(b"email-metrics-orchestrator", usedforsecurity=False).digest()


def deterministic_id(name: str) -> str:
    """The app's name-based id: SHA-1(namespace + name), version 5 and variant bits set."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    hex_ = digest.hex()
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def upload_id(account_id: str, idempotency_key: str) -> str:
    return deterministic_id(f"{account_id}:{idempotency_key}")


def nightly_upload_id(account_id: str, day: date) -> str:
    """The upload of an account's partition: ``"{accountId}:nightly-{D}"``."""
    return upload_id(account_id, f"nightly-{day.isoformat()}")


def validate_account_id(account_id: str) -> str:
    """The account id in canonical form; ValueError unless it is a uuid (no path tricks possible)."""
    if not isinstance(account_id, str) or not _UUID.match(account_id.lower()):
        raise ValueError(f"Account id must be the dashboard's account uuid, got {account_id!r}")
    return str(uuid.UUID(account_id))
