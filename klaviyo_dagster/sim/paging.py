"""Opaque, signed page cursors.

A cursor is ``base64url(offset) . base64url(hmac(secret, offset + query fingerprint))``: the client
cannot forge or edit it, and a cursor taken from one query (or another account) is refused by any
other. The secret is derived from the account's seed so identical configs give identical links.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class CursorError(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, offset: int, fingerprint: str) -> bytes:
    return hmac.new(secret, f"{offset}|{fingerprint}".encode(), hashlib.sha256).digest()[:12]


def encode(secret: bytes, offset: int, fingerprint: str) -> str:
    return f"{_b64(str(offset).encode())}.{_b64(_mac(secret, offset, fingerprint))}"


def decode(secret: bytes, cursor: str, fingerprint: str) -> int:
    """The offset inside ``cursor``; CursorError when it was not issued for this query."""
    try:
        head, _, tag = cursor.partition(".")
        offset = int(_unb64(head).decode())
        valid = hmac.compare_digest(_unb64(tag), _mac(secret, offset, fingerprint))
    except (ValueError, UnicodeDecodeError) as err:
        raise CursorError("invalid page cursor") from err
    if not valid or offset < 0:
        raise CursorError("invalid page cursor")
    return offset
