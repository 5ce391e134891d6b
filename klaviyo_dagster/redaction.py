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

libpq takes the password in three forms, all known here: the URL's user-info (``user:pw@``), a
``key=value`` string's ``password=`` (quoted or not) and a URL's query parameter ``password=`` (whose
name may be percent-encoded, ``%70assword=``); each in any case, raw and percent-decoded. A query
password that libpq cannot decode is quoted whole (``invalid percent-encoded token: "pw%zz"``).

Redaction is by value (the password, every fragment of it between ``@ : / ? # & = %`` and spaces, the
user-info and the whole URL, raw and percent-decoded) and, when the password would need encoding
(so a fragment may be quoted that no rule foresees), by form: every quoted string in the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

import psycopg

REDACTED = "[redacted]"
MIN_FRAGMENT = 3  # shorter fragments ("o", "rd") are too common to replace by value
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
# key=value form, any case; a quoted value up to its closing quote, or to the end when unterminated.
_KEYWORD_PASSWORD = re.compile(
    r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*(?:'|$)|\S+)", re.IGNORECASE | re.DOTALL
)
# A URL query's parameters: a value runs to the next ``&name=`` (an ``&`` not followed by one, as in
# an unencoded password ``pw&rd``, stays in the value, since libpq may quote what follows it).
_QUERY_PARAMETER = re.compile(r"(?:^|&)(?P<name>[^&=]*)=(?P<value>.*?)(?=&[^&=]*=|$)", re.DOTALL)
# Characters a URL password must percent-encode (RFC 3986 user-info), and %00 (which libpq refuses).
_NEEDS_ENCODING = re.compile(r"[\s@:/?#\[\]]|%(?![0-9A-Fa-f]{2})|%00")
# The same for a query parameter's value (libpq splits the query on & and =).
_QUERY_NEEDS_ENCODING = re.compile(r"[\s&=#]|%(?![0-9A-Fa-f]{2})|%00")
_FRAGMENT = re.compile(r"[^\s@:/?#&=%]+")
_DECODE_ROUNDS = 4  # a name encoded more often than this is not one libpq would read either


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
    """The secret, its percent-decoded forms and every run of its delimiter-separated pieces."""
    found: set[str] = set()
    for form in {secret, unquote(secret), unquote_plus(secret)}:
        found.add(form)
        spans = [m.span() for m in _FRAGMENT.finditer(form)]
        for i, (start, _) in enumerate(spans):
            for _, end in spans[i:]:
                found.add(form[start:end])
    return {f for f in found if len(f) >= MIN_FRAGMENT}


def _decoded_name(name: str) -> str:
    """A query parameter's name percent-decoded until it no longer changes (bounded), lower case."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()


def query_passwords(dsn: str) -> list[str]:
    """The raw values of a URL's query parameters named ``password`` (in any case or encoding).

    Every ``?`` after ``scheme://`` is taken as a possible start of the query: an unencoded ``?`` or
    ``@`` in the user-info or in the password itself must not hide it (more is redacted, never less).
    """
    scheme = dsn.find("://")
    if scheme < 0:
        return []
    found: list[str] = []
    question = dsn.find("?", scheme + 3)
    while question >= 0:
        query = dsn[question + 1 :]  # a "#" too: libpq has no fragment, so it stays in the value
        for match in _QUERY_PARAMETER.finditer(query):
            if _decoded_name(match.group("name")) == "password" and match.group("value") not in found:
                found.append(match.group("value"))
        question = dsn.find("?", question + 1)
    return found


def dsn_secrets(dsn: str) -> set[str]:
    """Everything in a connection string (URL or ``key=value``) that must not be shown."""
    secrets: set[str] = set()
    password = url_password(dsn)
    if password:
        secrets |= _fragments(password)
        scheme = dsn.find("://")
        userinfo = dsn[scheme + 3 : dsn.rfind("@")]
        secrets |= {userinfo, unquote(userinfo)}
    in_query = query_passwords(dsn)
    for value in in_query:
        secrets |= _fragments(value)
    if password or in_query:
        secrets |= {dsn, unquote(dsn)}
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        value = match.group(1)
        secrets |= _fragments(value)
        if value.startswith("'"):
            quoted = value[1:].removesuffix("'")
            secrets |= _fragments(quoted) | _fragments(re.sub(r"\\(.)", r"\1", quoted))
    return {s for s in secrets if len(s) >= MIN_FRAGMENT}


def needs_encoding(dsn: str) -> bool:
    """Whether the DSN's URL password (user-info or query) holds characters that must be percent-encoded."""
    password = url_password(dsn)
    if password and _NEEDS_ENCODING.search(password):
        return True
    return any(_QUERY_NEEDS_ENCODING.search(value) for value in query_passwords(dsn))


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
