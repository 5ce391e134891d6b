"""No secret leaks out of a whole run: sentinel values for every secret, then a search of everything
the runs produced.

Secrets (each a distinctive sentinel): the Klaviyo key (the only key the simulator accepts, stored
encrypted in ``account_integrations``), the encryption key ``INTEGRATIONS_ENC_KEY``, the Supabase
service key (the only one the Storage double accepts), the database password (a Postgres role made
for the test, in ``SUPABASE_DB_URL``) and the admin secret of ``SNAPSHOT_PROCESS_URL``. Resources are
built from the environment exactly as ``definitions.py`` builds them (secrets by ``EnvVar`` name).

Runs: a live partition, a dry run, a run whose snapshot processor echoes the request (secret
header included) in its error, a run where Klaviyo and Storage fail, and one where the database is
unreachable. Searched: every Dagster event-log entry and run record (serialized: run config, tags,
materialization/observation metadata, failures with their stack traces), captured stdout/stderr
(capfd), every log record at DEBUG (caplog), the stored objects and every row of the dashboard's
tables. Already covered per component: ``klaviyo/test_secrets.py`` (client errors/logs),
``storage/test_objects.py`` (Storage errors/logs), ``defs/test_supabase_store.py`` (resource repr).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.resources import (
    ingest_store_resource_from_env,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.defs.snapshot import snapshot_processing_from_env
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, BUCKET, TINY_TIME_SCALE, add_klaviyo_integration
from klaviyo_dagster_tests.producers.tiny_store import TinyStore
from klaviyo_dagster_tests.reliability.conftest import (
    FAST_RETRIES,
    closed_port_dsn,
    run_config,
    run_partition,
    step_events,
)
from klaviyo_dagster_tests.storage.supabase_double import SupabaseStorageDouble

SENTINELS = {
    "klaviyo key": "pk_SENTINELklaviyo0a1b2c3d4e5f60718293a4",
    "encryption key": "SENTINEL-enc-key-7f3e9a1c5b2d",
    "service key": "sb-SENTINEL-service-role-4c8e1f0a9b7d",
    "database password": "SENTINELdbpw9e8d7c6b5a",
    "admin secret": "SENTINEL-admin-job-secret-2b4d6f8a",
}
TABLES = ("accounts", "account_integrations", "uploads", "snapshots", "snapshot_totals", "snapshot_series")


class EchoingProcessor:
    """The web app's processor endpoint; with ``status`` >= 400 it echoes the request's headers back."""

    def __init__(self) -> None:
        self.status = 200
        self.secrets_received: list[str | None] = []
        processor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                processor.secrets_received.append(self.headers.get("x-admin-job-secret"))
                self.send_response(processor.status)
                self.end_headers()
                body = {"ok": processor.status < 400, "headers": dict(self.headers)}
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/snapshots/process"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sentinel_role_dsn(postgres_dsn: str, clean_postgres: str) -> Iterator[str]:
    """A login role with the sentinel password and rights on the ingest tables of the test database."""
    role = f"klaviyo_sentinel_{uuid.uuid4().hex[:8]}"
    database = postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(clean_postgres, autocommit=True) as admin:
        admin.execute(f"create role {role} login password '{SENTINELS['database password']}'")
        admin.execute(f"grant usage on schema public to {role}")
        admin.execute(f"grant select, insert, update, delete on all tables in schema public to {role}")
    try:
        yield f"postgresql://{role}:{SENTINELS['database password']}@127.0.0.1:5432/{database}"
    finally:
        with psycopg.connect(clean_postgres, autocommit=True) as admin:
            admin.execute(f"drop owned by {role}")
            admin.execute(f"drop role {role}")


@pytest.fixture
def sentinel_world(simulator_factory, sentinel_role_dsn, clean_postgres, monkeypatch) -> Iterator[dict]:
    """Simulator, Storage double, database and processor that accept only the sentinel secrets."""
    sim = simulator_factory(
        account_factory=TinyStore, time_scale=TINY_TIME_SCALE, api_keys=(SENTINELS["klaviyo key"],)
    )
    tables = IngestTables.postgres(clean_postgres)
    tables.ensure_account(ACCOUNT_ID, "Sentinel store")
    add_klaviyo_integration(
        tables, ACCOUNT_ID, encrypt_api_key(SENTINELS["klaviyo key"], SENTINELS["encryption key"])
    )
    processor = EchoingProcessor()
    with SupabaseStorageDouble(service_key=SENTINELS["service key"], buckets=(BUCKET,)) as double:
        for name in (
            "KLAVIYO_API_KEY",
            "KLAVIYO_API_KEY_PRIVATE",
            "KLAVIYO_ACCOUNT_ID",
            "NEXT_PUBLIC_SUPABASE_URL",
        ):
            monkeypatch.delenv(name, raising=False)
        for name, value in {
            "KLAVIYO_ENABLE": "true",
            "KLAVIYO_BASE_URL": sim.base_url,
            "INTEGRATIONS_ENC_KEY": SENTINELS["encryption key"],
            "SUPABASE_URL": double.url,
            "SUPABASE_SERVICE_ROLE_KEY": SENTINELS["service key"],
            "SUPABASE_DB_URL": sentinel_role_dsn,
            "SNAPSHOT_PROCESS_URL": processor.url,
            "ADMIN_JOB_SECRET": SENTINELS["admin secret"],
        }.items():
            monkeypatch.setenv(name, value)
        try:
            yield {"sim": sim, "double": double, "processor": processor, "db": clean_postgres}
        finally:
            processor.close()


def env_resources() -> dict:
    """Resources as definitions.py builds them from the environment (only the pacing scale differs)."""
    return pipeline_resources(
        klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE, timeout_seconds=2, **FAST_RETRIES),
        ingest_store_resource_from_env(),
        snapshot_processing_from_env(),
    )


def everything_recorded(instance: dg.DagsterInstance, results, world: dict) -> str:
    parts = []
    for result in results:
        parts.append(serialize_value(instance.get_run_by_id(result.run_id)))
        parts += [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
        parts.append(repr(result.all_events))
    for key, (data, content_type) in world["double"].bucket_objects(BUCKET).items():
        parts += [key, content_type, data.decode("utf-8", "replace")]
    with psycopg.connect(world["db"]) as connection:
        for table in TABLES:
            rows = connection.execute(f"select row_to_json(t)::text from {table} t").fetchall()  # noqa: S608
            parts += [row[0] for row in rows]
    return "\n".join(parts)


def test_no_secret_appears_in_anything_a_run_produces(
    sentinel_world, instance, caplog, capfd, monkeypatch
) -> None:
    caplog.set_level(logging.DEBUG)
    sim, double, processor = sentinel_world["sim"], sentinel_world["double"], sentinel_world["processor"]
    results = []

    live = run_partition(instance, env_resources())
    assert live.success  # every sentinel was accepted where it is checked
    results.append(live)

    dry = run_partition(instance, env_resources(), run_config(mode="dry-run"))
    assert dry.success and dry.get_asset_observation_events()
    results.append(dry)

    processor.status = 401  # echoes the x-admin-job-secret header in its answer
    echoed = run_partition(instance, env_resources())
    echo = echoed.failure_data_for_node("snapshot").user_failure_data.description
    assert "answered 401" in echo and "[redacted]" in echo  # the echoed header was there, redacted
    results.append(echoed)

    sim.set_fault("get_flows", FaultSpec(status=403))
    sim.set_fault("get_profiles", FaultSpec(error_rate=1.0))
    double.fail_next(4, 401)  # Storage refuses the service key on the campaigns upload
    failing = run_partition(instance, env_resources())
    assert {"flows_csv", "subscribers_csv"} <= set(step_events(failing, "STEP_FAILURE"))
    results.append(failing)
    sim.clear_faults()

    monkeypatch.setenv("SUPABASE_DB_URL", closed_port_dsn(SENTINELS["database password"]))
    unreachable = run_partition(instance, env_resources())
    assert "Connection refused" in str(unreachable.failure_data_for_node("flows_csv").error)
    results.append(unreachable)

    assert SENTINELS["admin secret"] in processor.secrets_received  # the secret did go where it belongs
    out, err = capfd.readouterr()
    searched = {
        "event logs, run records and metadata": everything_recorded(instance, results, sentinel_world),
        "stdout": out,
        "stderr": err,
        "log records": caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records),
    }
    assert caplog.records and err  # the search looked at real output
    assert ACCOUNT_ID in searched["event logs, run records and metadata"]
    leaks = [
        f"{secret} in {where}"
        for secret, value in SENTINELS.items()
        for where, text in searched.items()
        if value in text
    ]
    assert leaks == []


# Distinctive pieces between the characters a URL password must encode: psycopg would quote the whole
# password (a space) or the part after an "@" (as the host) if connections were not redacted.
UNENCODED_PASSWORD = "SENTINELp1 SENTINELp2@SENTINELp3:SENTINELp4/SENTINELp5"


def test_an_unencoded_database_password_appears_in_nothing_a_run_produces(
    sentinel_world, instance, caplog, capfd, monkeypatch
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = closed_port_dsn("PLACEHOLDER").replace("PLACEHOLDER", UNENCODED_PASSWORD)
    monkeypatch.setenv("SUPABASE_DB_URL", dsn)
    failed = run_partition(instance, env_resources())
    assert not failed.success
    assert "percent-encoded" in str(failed.failure_data_for_node("flows_csv").error)

    out, err = capfd.readouterr()
    texts = {
        "event logs, run records and metadata": everything_recorded(instance, [failed], sentinel_world),
        "stdout": out,
        "stderr": err,
        "log records": caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records),
    }
    pieces = [
        UNENCODED_PASSWORD,
        *UNENCODED_PASSWORD.replace("@", " ").replace(":", " ").replace("/", " ").split(),
    ]
    leaks = [f"{piece!r} in {where}" for piece in pieces for where, text in texts.items() if piece in text]
    assert leaks == []
