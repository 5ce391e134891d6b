"""The nightly run on the Supabase store: Storage through the real client against the double,
tables in a real PostgreSQL; a storage failure mid-run leaves no snapshot, and a rerun completes it."""

from __future__ import annotations

import dagster as dg
import pytest

from klaviyo_dagster.definitions import store_resources
from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.snapshot import snapshot
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, BUCKET, SERVICE_KEY
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION, TINY_UPLOAD_ID

RUN_CONFIG = {
    "ops": {name: {"config": {"days": 3}} for name in ("flows_csv", "campaigns_csv", "subscribers_csv")}
}
OBJECTS = {f"{TINY_UPLOAD_ID}/{name}" for name in ("flows.csv", "campaigns.csv", "subscribers.csv")}


@pytest.fixture
def supabase_resources(resources, supabase_double, clean_postgres) -> dict:
    """The test resources with the Supabase store; the dashboard already has the account row."""
    IngestTables.postgres(clean_postgres).ensure_account(ACCOUNT_ID, "Acme")
    store = IngestStoreResource(
        supabase_url=supabase_double.url, service_role_key=SERVICE_KEY, db_url=clean_postgres
    )
    return {**resources, **store_resources(store)}


def run(instance, resources) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*INGEST_ASSETS, snapshot],
        partition_key=TINY_PARTITION,
        instance=instance,
        resources=resources,
        run_config=RUN_CONFIG,
        raise_on_error=False,
    )


def test_the_nightly_run_writes_the_contracts_objects_and_rows(
    tiny_store_env, instance, supabase_resources, supabase_double, clean_postgres
) -> None:
    result = run(instance, supabase_resources)

    assert result.success
    assert set(supabase_double.bucket_objects(BUCKET)) == OBJECTS
    uploads = [
        r for r in supabase_double.requests if r.method == "POST" and "/object/preauth-uploads/" in r.path
    ]
    assert {r.headers.get("x-upsert") for r in uploads} == {"true"}
    tables = IngestTables.postgres(clean_postgres)
    assert tables.upload(TINY_UPLOAD_ID)["status"] == "bound"
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID).status == "ready"
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert SERVICE_KEY not in repr(result.all_events)


def test_a_storage_failure_mid_run_leaves_no_snapshot_and_a_rerun_completes(
    tiny_store_env, instance, supabase_resources, supabase_double, clean_postgres
) -> None:
    supabase_double.fail_next(4, 503)  # every attempt of the first upload fails
    failed = run(instance, supabase_resources)

    tables = IngestTables.postgres(clean_postgres)
    assert not failed.success
    failures = [e.step_key for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1  # the upload that met the outage; the other two files were stored
    assert "snapshot" not in {e.step_key for e in failed.all_events if e.event_type_value == "STEP_START"}
    assert tables.upload(TINY_UPLOAD_ID) is None
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID) is None

    repaired = run(instance, supabase_resources)

    assert repaired.success
    assert set(supabase_double.bucket_objects(BUCKET)) == OBJECTS
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1
    assert tables.totals(tables.snapshot_for_upload(TINY_UPLOAD_ID).id)["emailsSent"] == 1156


def test_the_store_resource_names_its_secrets_never_their_values(monkeypatch) -> None:
    from klaviyo_dagster.defs.resources import ingest_store_resource_from_env

    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pa55word@db.test:5432/postgres")

    resource = ingest_store_resource_from_env()

    assert resource.service_role_key == dg.EnvVar("SUPABASE_SERVICE_ROLE_KEY")
    assert resource.db_url == dg.EnvVar("SUPABASE_DB_URL")
    assert SERVICE_KEY not in repr(resource) and "pa55word" not in repr(resource)


def test_a_partial_supabase_setup_is_refused_naming_what_is_missing(monkeypatch) -> None:
    from klaviyo_dagster.defs.resources import ingest_store_resource_from_env

    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
    with pytest.raises(ValueError, match="SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL"):
        ingest_store_resource_from_env()


def test_a_run_opens_one_storage_client_per_store_resource_and_closes_every_one(
    tiny_store_env, instance, supabase_resources, monkeypatch
) -> None:
    """The resource owns the store it opens: one per resource for the whole run, closed at its end."""
    opened: list[SupabaseObjectStore] = []
    closed: list[SupabaseObjectStore] = []
    real_init, real_close = SupabaseObjectStore.__init__, SupabaseObjectStore.close

    def counting_init(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    def counting_close(self) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(SupabaseObjectStore, "__init__", counting_init)
    monkeypatch.setattr(SupabaseObjectStore, "close", counting_close)

    assert run(instance, supabase_resources).success

    # The ingest_store resource and the IO manager's: not one per file, per output, per check.
    assert 1 <= len(opened) <= 2
    assert {id(store) for store in closed} == {id(store) for store in opened}
