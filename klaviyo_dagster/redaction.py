"""Secrets out of error text: database URLs, Storage URLs and keys, before anything is logged or raised.

``SUPABASE_DB_URL`` may hold a password that is not percent-encoded (``postgresql://postgres:pa
ss@w:o/rd@host/db``). libpq then parses it wrongly and psycopg's error quotes what it took for the
password, host or port: the whole password when it has a space (``unexpected spaces found in "pa
ss"``), the part after an ``@`` as the host (``failed to resolve host 'ss@127.0.0.1'``). Those errors
would reach run storage, compute logs, stdout and the trigger's log. So every connection is opened
through :func:`connection_error` (``PostgresDialect.connect``), which re-raises a
:class:`DatabaseConnectionError` whose text has the secrets removed, ``from None`` so the original
error is not chained. The Storage store redacts its key and any URL credentials with
:func:`redact` (``../shared/contracts/supabase.md``, "Storage": the service key never appears).

Redaction is by value (the password, every fragment of it between ``@ : / ?  #`` and spaces, the
user-info and the whole URL, raw and percent-decoded) and, when the password would need encoding
(so a fragment may be quoted that no rule foresees), by form: every quoted string in the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

import psycopg

REDACTED = "[redacted]"
MIN_FRAGMENT = 3  # shorter fragments ("o", "rd") are too common to replace by value
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
# Characters a URL password must percent-encode (RFC 3986 user-info).
_NEEDS_ENCODING = re.compile(r"[\s@:/?#\[\]]|%(?![0-9A-Fa-f]{2})")


class DatabaseConnectionError(psycopg.OperationalError):
    """The database could not be reached or refused the connection; the text holds no secret."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (longest first, so a fragment never splits a longer one) replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def url_password(url: str) -> str | None:
    """The password of a URL as a person meant it: between the first ``:`` after ``scheme://`` and
    the **last** ``@`` (an unencoded ``@``, ``/`` or ``:`` in it stays in it), percent-decoded later."""
    scheme = url.find("://")
    at = url.rfind("@")
    if scheme < 0 or at < scheme:
        return None
    userinfo = url[scheme + 3 : at]
    _user, colon, password = userinfo.partition(":")
    return password if colon else None


def _fragments(secret: str) -> set[str]:
    """The secret, its percent-decoded form and every run of its delimiter-separated pieces."""
    found = {secret, unquote(secret)}
    spans = [m.span() for m in re.finditer(r"[^\s@:/?#]+", secret)]
    for i, (start, _) in enumerate(spans):
        for _, end in spans[i:]:
            found.add(secret[start:end])
    return {f for f in found if len(f) >= MIN_FRAGMENT}


def dsn_secrets(dsn: str) -> set[str]:
    """Everything in a connection string (URL or ``key=value``) that must not be shown."""
    secrets: set[str] = set()
    password = url_password(dsn)
    if password:
        secrets |= _fragments(password)
        scheme = dsn.find("://")
        userinfo = dsn[scheme + 3 : dsn.rfind("@")]
        secrets |= {userinfo, unquote(userinfo), dsn, unquote(dsn)}
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        secrets |= _fragments(match.group(1).strip("'"))
    return {s for s in secrets if len(s) >= MIN_FRAGMENT}


def needs_encoding(dsn: str) -> bool:
    """Whether the DSN's URL password holds characters that must be percent-encoded."""
    password = url_password(dsn)
    return bool(password and _NEEDS_ENCODING.search(password))


def redact_url(url: str) -> str:
    """A URL with any ``user:password@`` replaced (for messages and reprs)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", url)


def redact_dsn_message(message: str, dsn: str) -> str:
    """A driver's message about ``dsn`` with its secrets (and, if it is ambiguous, every quote) gone."""
    text = redact(message, dsn_secrets(dsn))
    text = redact_url(text)
    if needs_encoding(dsn):
        text = _QUOTED.sub(f'"{REDACTED}"', text)
    return " ".join(text.split())


def connection_error(
    exc: BaseException, dsn: str, *, variable: str = "SUPABASE_DB_URL"
) -> DatabaseConnectionError:
    """A :class:`DatabaseConnectionError` for ``exc``, safe to log; raise it ``from None``."""
    detail = redact_dsn_message(str(exc), dsn) or type(exc).__name__
    message = f"Could not connect to the database in {variable} ({type(exc).__name__}: {detail})"
    if needs_encoding(dsn):
        message += (
            f". The password in {variable} holds characters that must be percent-encoded in a URL "
            "(space %20, @ %40, : %3A, / %2F, # %23, ? %3F, % %25)"
        )
    return DatabaseConnectionError(message)
