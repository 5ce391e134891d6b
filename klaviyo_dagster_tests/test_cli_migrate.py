"""``python -m klaviyo_dagster migrate`` on a fresh PostgreSQL database and on the local store."""

from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from klaviyo_dagster.__main__ import main
from klaviyo_dagster_tests.conftest import new_database
from klaviyo_dagster_tests.paths import PROJECT_ROOT

TABLES = {"accounts", "uploads", "snapshots", "snapshot_totals", "snapshot_series", "account_integrations"}


def test_migrate_creates_the_contract_tables_in_postgres_and_is_harmless_twice(
    clean_postgres, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", clean_postgres)
    with psycopg.connect(clean_postgres) as connection:
        connection.execute("drop table snapshot_series")  # as if this migration had never run

    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0

    assert "migrated postgres: 20261128000000_ingest_tables.sql" in capsys.readouterr().out
    with psycopg.connect(clean_postgres) as connection:
        found = {
            row[0]
            for row in connection.execute("select tablename from pg_tables where schemaname = 'public'")
        }
    assert found >= TABLES


def test_migrate_creates_the_local_sqlite_schema(tmp_path, monkeypatch, capsys) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path))

    assert main(["migrate"]) == 0

    assert "migrated sqlite" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "ingest.sqlite3") as connection:
        found = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    assert found >= TABLES


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A database with nothing in it, dropped at the end."""
    with new_database("klaviyo_wheel") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed from a built wheel, as in a container image: no
    project folder beside it. Its dependencies come from this venv's site-packages through a
    ``.pth`` line (PyPI is not needed), which does not carry this venv's editable install."""
    folder = tmp_path_factory.mktemp("wheel")
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=600)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder), "."],
        cwd=PROJECT_ROOT,
    )
    (wheel,) = folder.glob("klaviyo_dagster-*.whl")
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            str(wheel),
        ]
    )
    return venv


def test_migrate_from_a_wheel_install_creates_every_table(
    wheel_venv: Path, empty_postgres: str, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "SUPABASE_URL": "https://project.supabase.test",
        "SUPABASE_SERVICE_ROLE_KEY": "sb-test-key",
        "SUPABASE_DB_URL": empty_postgres,
    }
    python = str(wheel_venv / "bin" / "python")
    where = subprocess.run(
        [python, "-c", "import klaviyo_dagster; print(klaviyo_dagster.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(wheel_venv) in where.stdout  # the wheel's copy, not the project folder

    result = subprocess.run(
        [python, "-m", "klaviyo_dagster", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "20261205000000_snapshot_series_by_date.sql" in result.stdout
    with psycopg.connect(empty_postgres) as connection:
        found = {
            row[0]
            for row in connection.execute("select tablename from pg_tables where schemaname = 'public'")
        }
        own = {
            row[0]
            for row in connection.execute(
                "select tablename from pg_tables where schemaname = 'klaviyo_dagster'"
            )
        }
    assert found >= TABLES
    assert own >= {"account_timezones", "klaviyo_fetch_cache", "klaviyo_report_calls", "trigger_idempotency"}


def test_a_configuration_error_is_one_line_with_the_fix_and_exit_2(monkeypatch, capsys) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")

    assert main(["migrate"]) == 2

    err = capsys.readouterr().err
    assert err.startswith(
        "migrate: Supabase is partly configured: set SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL"
    )
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_database_says_so_without_its_password(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv(
        "SUPABASE_DB_URL", "postgresql://postgres:Sentinel-Pass-42@127.0.0.1:1/postgres?connect_timeout=3"
    )

    assert main(["migrate"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("migrate: Could not connect to the database in SUPABASE_DB_URL")
    assert "Sentinel-Pass-42" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "db_url", ["postgresql//postgres:Sentinel-Pass-42@127.0.0.1/db", "postgres:Sentinel-Pass-42@127.0.0.1/db"]
)
def test_a_malformed_database_url_is_refused_without_quoting_its_password(
    monkeypatch, capsys, db_url
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", db_url)

    assert main(["migrate"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("migrate: SUPABASE_DB_URL must be a URL like postgresql://")
    assert "Sentinel-Pass-42" not in err and len(err.strip().splitlines()) == 1


def test_a_local_store_folder_that_cannot_be_made_names_its_variable(monkeypatch, capsys, tmp_path) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(in_the_way))

    assert main(["migrate"]) == 2

    err = capsys.readouterr().err
    assert "KLAVIYO_DAGSTER_DATA_DIR" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
