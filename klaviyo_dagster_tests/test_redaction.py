"""Secrets out of connection errors: an unencoded password in SUPABASE_DB_URL never shows.

psycopg quotes what it took from a malformed URL (the whole password when it has a space, the part
after an ``@`` as the host). Each password here is made of distinctive pieces between the characters
a URL password must encode (space, ``@``, ``:``, ``/``); no piece may appear in any str, repr,
traceback or log line of the error ``PostgresDialect.connect`` raises, to a closed port.
"""

from __future__ import annotations

import logging
import re
import socket
import traceback

import psycopg
import pytest

from klaviyo_dagster.redaction import (
    REDACTED,
    DatabaseConnectionError,
    connection_error,
    dsn_secrets,
    query_passwords,
    redact_dsn_message,
    redact_url,
    url_password,
)
from klaviyo_dagster.storage.tables import IngestTables

PASSWORDS = [
    "S3ntA Bx7qZ",  # a space
    "S3ntA@Bx7qZ",  # an @
    "S3ntA:Bx7qZ",  # a :
    "S3ntA/Bx7qZ",  # a /
    "S3ntA Bx7q@Kz9w:Pv4m/Ty6r",  # pa ss@w:o/rd
    "S3ntA@@Bx7q@Kz9w",  # several @
    "S3ntAokBx7qZ",  # nothing to encode: still never shown
]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pieces(password: str) -> list[str]:
    return [password, *(p for p in re.split(r"[\s@:/]+", password) if p)]


def everything_about(error: BaseException, caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error)), caplog.text]
    texts += [str(error.args), repr(error.__cause__), repr(error.__context__)]
    return texts


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_unencoded_password_appears_in_no_connection_error(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = f"postgresql://postgres:{password}@127.0.0.1:{closed_port()}/db"
    tables = IngestTables.postgres(dsn)
    with pytest.raises(DatabaseConnectionError) as caught:
        tables.dialect.connect()
    error = caught.value
    logging.getLogger("test").exception("connect failed", exc_info=error)
    assert isinstance(error, psycopg.OperationalError)  # existing handlers still catch it
    assert error.__cause__ is None and error.__context__ is None
    assert "SUPABASE_DB_URL" in str(error)
    for text in everything_about(error, caplog):
        for piece in pieces(password):
            assert piece not in text, (piece, text)


def test_a_closed_port_with_an_encodable_password_still_says_connection_refused() -> None:
    dsn = f"postgresql://postgres:S3ntAokBx7qZ@127.0.0.1:{closed_port()}/db"
    with pytest.raises(DatabaseConnectionError, match="Connection refused") as caught:
        IngestTables.postgres(dsn).dialect.connect()
    assert "percent-encoded" not in str(caught.value)


def test_an_unencoded_password_is_named_as_the_likely_cause() -> None:
    with pytest.raises(DatabaseConnectionError, match="must be percent-encoded"):
        IngestTables.postgres(f"postgresql://postgres:pa ss@127.0.0.1:{closed_port()}/db").dialect.connect()


def test_the_url_password_is_taken_up_to_the_last_at() -> None:
    assert url_password("postgresql://postgres:pa ss@w:o/rd@127.0.0.1:1/db") == "pa ss@w:o/rd"
    assert url_password("postgresql://postgres@127.0.0.1/db") is None
    assert url_password("host=x password=y") is None


def test_fragments_and_quoted_values_are_redacted() -> None:
    dsn = "postgresql://postgres:S3ntA Bx7q@Kz9w@127.0.0.1:1/db"
    assert {"S3ntA Bx7q@Kz9w", "S3ntA", "Bx7q", "Kz9w", "Bx7q@Kz9w"} <= dsn_secrets(dsn)
    message = redact_dsn_message("failed to resolve host 'Kz9w@127.0.0.1': unknown; saw \"S3ntA Bx7q\"", dsn)
    assert "Kz9w" not in message and "S3ntA" not in message and REDACTED in message


def test_keyword_dsn_passwords_and_url_credentials_are_redacted() -> None:
    assert "S3ntAkw" in dsn_secrets("host=127.0.0.1 password=S3ntAkw user=x")
    assert redact_url("see https://user:S3ntA@db.example.com/x") == f"see https://{REDACTED}@db.example.com/x"


def test_connection_error_keeps_the_drivers_class_name_and_no_secret() -> None:
    error = connection_error(psycopg.OperationalError('bad "S3ntA Bx7q"'), "postgresql://u:S3ntA Bx7q@h/db")
    assert "OperationalError" in str(error) and "S3ntA" not in str(error)


# --- every form libpq takes a password in --------------------------------------------------------------

# A sentinel password in each of libpq's forms: the URL's user-info, a key=value string, a URL query
# parameter ``password=`` (any case, the name percent-encoded too), raw and percent-encoded, with what
# libpq refuses to decode (``%zz``, ``%00``) or splits on (space, ``&``, ``=``).
SENTINEL_DSNS = [
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA%zzBx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA%00Bx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA Bx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA&Bx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA@Bx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA?Bx7qZ:Kz9wQ/Pv4mR",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3ntA=Bx7qZ&sslmode=disable",
    "postgresql://postgres@127.0.0.1:{port}/db?sslmode=disable&PASSWORD=S3ntA%zzBx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?Password=S3ntA%20Bx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?%70assword=S3ntA%zzBx7qZ",
    "postgresql://postgres@127.0.0.1:{port}/db?%70assword=S3ntA%25Bx7qZ&sslmode=bogus",
    "postgresql://postgres:S3ntA%zzBx7qZ@127.0.0.1:{port}/db",
    "postgresql://postgres:S3ntA%40Bx7qZ@127.0.0.1:{port}/db?sslmode=bogus",
    "host=127.0.0.1 port={port} user=postgres password='S3ntA Bx7qZ dbname=db",
    "host=127.0.0.1 port={port} user=postgres password='S3ntA\\' Bx7qZ' sslmode=bogus",
    "host=127.0.0.1 port={port} user=postgres PASSWORD=S3ntABx7qZ",
    "host=127.0.0.1 port={port} user=postgres password = S3ntABx7qZ sslmode=bogus'",
]
SENTINELS = ("S3ntA", "Bx7qZ")


@pytest.mark.parametrize("template", SENTINEL_DSNS)
def test_no_form_of_the_password_appears_in_a_connection_error(
    template: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as caught:
        IngestTables.postgres(template.format(port=closed_port())).dialect.connect()
    error = caught.value
    logging.getLogger("test").exception("connect failed", exc_info=error)
    assert error.__cause__ is None and error.__context__ is None
    for text in everything_about(error, caplog):
        for sentinel in SENTINELS:
            assert sentinel not in text, (sentinel, text)


def test_the_query_password_is_found_in_any_case_and_encoding() -> None:
    assert query_passwords("postgresql://u@h/db?sslmode=x&password=S3ntA%zz&y=1") == ["S3ntA%zz"]
    assert query_passwords("postgresql://u@h/db?PassWord=S3ntA") == ["S3ntA"]
    assert query_passwords("postgresql://u@h/db?%70%61ssword=S3ntA") == ["S3ntA"]
    assert query_passwords("postgresql://u@h/db?password=S3ntA&Bx7qZ") == ["S3ntA&Bx7qZ"]  # no "=" after &
    assert query_passwords("postgresql://u@h/db?password=S3ntA@Bx7qZ") == ["S3ntA@Bx7qZ"]  # an @ after ?
    assert query_passwords("postgresql://u:p?w@h/db") == []
    assert query_passwords("host=h password=S3ntA") == []
    assert {"S3ntA%zzBx7qZ", "S3ntA", "zzBx7qZ"} <= dsn_secrets("postgresql://u@h/db?password=S3ntA%zzBx7qZ")
    assert {"S3ntA%20Bx7qZ", "S3ntA Bx7qZ"} <= dsn_secrets("postgresql://u@h/db?password=S3ntA%20Bx7qZ")
    message = redact_dsn_message(
        'invalid percent-encoded token: "S3ntA%zzBx7qZ"', "postgresql://u@h/db?password=S3ntA%zzBx7qZ"
    )
    assert "S3ntA" not in message and "Bx7qZ" not in message


def test_a_keyword_password_is_found_quoted_unterminated_and_in_any_case() -> None:
    assert "S3ntA Bx7qZ" in dsn_secrets("host=h password='S3ntA Bx7qZ' user=u")
    assert "S3ntA Bx7qZ dbname=db" in dsn_secrets("host=h password='S3ntA Bx7qZ dbname=db")
    assert "S3ntA' Bx7qZ" in dsn_secrets("host=h password='S3ntA\\' Bx7qZ'")
    assert "S3ntABx7qZ" in dsn_secrets("host=h PASSWORD = S3ntABx7qZ")
