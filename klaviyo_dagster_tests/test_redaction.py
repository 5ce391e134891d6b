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
