"""A run's batch: the account's other dates queued or going, and what a backfill has still to launch;
and runs of one account on one day sharing what they read from Klaviyo."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import dagster as dg
import pytest
from dagster._core.execution.backfill import PartitionBackfill

from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.assets import FLOWS_CSV, INGEST_ASSETS
from klaviyo_dagster.defs.batch import pending_dates
from klaviyo_dagster.defs.jobs import DRY_RUN_JOB_NAME, INGEST_JOB_NAME
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource, klaviyo_resource_from_env
from klaviyo_dagster.defs.snapshot import snapshot
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

OTHER_ACCOUNT = "6c1d8b4f-3a5e-4d2b-8f9c-2e3d4c5b6a71"
DAY = date(2026, 3, 9)
CATCH_UP = {"dagster/sensor_name": "klaviyo_catch_up_sensor"}  # as Dagster tags a sensor's runs


def _run(
    instance: dg.DagsterInstance, account: str, day: date, *, job: str = INGEST_JOB_NAME, **tags: str
) -> dg.DagsterRun:
    return instance.add_run(
        dg.DagsterRun(
            job_name=job,
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={
                "dagster/partition/klaviyo_account": account,
                "dagster/partition/date": day.isoformat(),
                **tags,
            },
        )
    )


def test_the_batch_is_the_accounts_other_dates_waiting_or_going(instance: dg.DagsterInstance) -> None:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [OTHER_ACCOUNT])
    me = _run(instance, ACCOUNT_ID, DAY)
    queued = _run(instance, ACCOUNT_ID, DAY - timedelta(days=1))
    going = _run(instance, ACCOUNT_ID, DAY - timedelta(days=2))
    instance.handle_run_event(
        going.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, INGEST_JOB_NAME)
    )
    done = _run(instance, ACCOUNT_ID, DAY - timedelta(days=3))
    instance.report_run_failed(done)
    _run(instance, OTHER_ACCOUNT, DAY - timedelta(days=4))
    _run(instance, ACCOUNT_ID, DAY - timedelta(days=5), job=DRY_RUN_JOB_NAME)

    assert queued.status == dg.DagsterRunStatus.NOT_STARTED
    assert pending_dates(instance, me, ACCOUNT_ID, FLOWS_CSV) == {
        DAY - timedelta(days=1),
        DAY - timedelta(days=2),
    }


def test_a_backfill_run_counts_the_backfills_dates_not_launched_yet(
    instance: dg.DagsterInstance, resources: dict
) -> None:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [OTHER_ACCOUNT])
    defs = dg.Definitions(assets=[*INGEST_ASSETS, snapshot], resources=resources)
    dates = [DAY - timedelta(days=n) for n in range(5)]
    keys = [str(partition_key(account, d)) for account in (ACCOUNT_ID, OTHER_ACCOUNT) for d in dates]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="abcdefgh",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=keys,
        asset_selection=[FLOWS_CSV],
        backfill_timestamp=0.0,
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    me = _run(instance, ACCOUNT_ID, dates[0], **{"dagster/backfill": "abcdefgh"})

    assert pending_dates(instance, me, ACCOUNT_ID, FLOWS_CSV) == set(dates[1:])


@pytest.mark.usefixtures("one_utc_day")
def test_runs_of_one_account_on_one_day_share_what_they_read_and_write_the_same_files(
    tiny_store_env, instance, resources, data_dir
) -> None:
    """Three dates as three runs (the others queued, as a catch-up leaves them): the later runs reuse
    the audience, flows and series of the first, and every file equals a run on its own."""
    dates = [PARTITION_DATE - timedelta(days=n) for n in range(3)]
    waiting = [_run(instance, ACCOUNT_ID, d) for d in dates]

    def files(day: date, share: bool) -> tuple[dict[str, bytes], dict[str, dict]]:
        result = dg.materialize(
            [*INGEST_ASSETS, snapshot],
            partition_key=partition_key(ACCOUNT_ID, day),
            instance=instance,
            resources=resources,
            run_config={"ops": {a.key.path[-1]: {"config": {"share_fetches": share}} for a in INGEST_ASSETS}},
            tags=CATCH_UP,
        )
        assert result.success
        folder = next((data_dir / "objects" / "preauth-uploads").glob("*/flows.csv")).parent.parent
        upload = result.asset_materializations_for_node("snapshot")[0].metadata["upload_id"].value
        built = {
            name: (folder / upload / name).read_bytes()
            for name in ("flows.csv", "campaigns.csv", "subscribers.csv")
        }
        metadata = {
            m.asset_key.path[-1]: {k: v.value for k, v in m.metadata.items()}
            for node in ("flows_csv", "campaigns_csv", "subscribers_csv")
            for m in result.asset_materializations_for_node(node)
        }
        return built, metadata

    alone = {d: files(d, share=False)[0] for d in dates}
    shared = {}
    for day, run in zip(dates, waiting, strict=True):
        instance.report_run_failed(run)  # its turn: no longer waiting
        shared[day] = files(day, share=True)

    assert {d: built for d, (built, _) in shared.items()} == alone
    for day in dates[1:]:
        metadata = shared[day][1]
        assert metadata["flows_csv"]["klaviyo_answers_reused"] > 0
        assert "first run" in metadata["subscribers_csv"]["klaviyo_window"]
        assert "query_flow_series" not in metadata["flows_csv"]["klaviyo_calls_by_group"]
        assert metadata["subscribers_csv"]["preview"] == shared[dates[0]][1]["subscribers_csv"]["preview"]


@pytest.mark.usefixtures("one_utc_day")
def test_a_date_launched_by_hand_reads_klaviyo_afresh_but_an_automated_one_shares(
    tiny_store_env, instance, resources
) -> None:
    """A rerun someone asks for is usually meant to pick up what changed in Klaviyo."""

    def reused(tags: dict[str, str]) -> int:
        result = dg.materialize(
            [*INGEST_ASSETS, snapshot],
            partition_key=partition_key(ACCOUNT_ID, PARTITION_DATE),
            instance=instance,
            resources=resources,
            tags=tags,
        )
        assert result.success
        return sum(
            m.metadata["klaviyo_answers_reused"].value
            for node in ("flows_csv", "campaigns_csv")
            for m in result.asset_materializations_for_node(node)
        )

    assert reused({}) == 0  # the first run of the day: nothing to reuse yet
    _run(instance, ACCOUNT_ID, PARTITION_DATE - timedelta(days=5))  # the account's catch-up waits
    assert reused({}) == 0  # by hand, again, while another run of the account waits: afresh
    assert reused(CATCH_UP) > 0
    assert reused({"dagster/schedule_name": "klaviyo_complete_days_schedule"}) > 0


def _derived_rows_of_newest(store_resource, newest: date) -> tuple[object, ...]:
    tables = store_resource.get_store().tables
    found = tables.snapshot_for_upload(nightly_upload_id(ACCOUNT_ID, newest))
    assert found is not None and found.status == "ready"
    return (sorted(tables.totals(found.id).items()), list(tables.series(found.id)), found.last_email_date)


def test_the_newest_snapshot_holds_the_same_history_whatever_order_the_dates_ran_in(
    tiny_store_env, instance, tmp_path
) -> None:
    """The same four dates, oldest first and newest first (a backfill of older dates after the
    nightly runs): the newest snapshot's derived rows come out identical."""
    dates = [PARTITION_DATE - timedelta(days=n) for n in range(4)]
    newest = {}
    for order, ordered in (("in_order", sorted(dates)), ("newest_first", sorted(dates, reverse=True))):
        store = IngestStoreResource(data_dir=str(tmp_path / order))
        resources = pipeline_resources(klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE), store)
        waiting = [_run(instance, ACCOUNT_ID, d) for d in ordered]
        for day, run in zip(ordered, waiting, strict=True):
            instance.report_run_failed(run)  # its turn: the others of the batch still wait
            result = dg.materialize(
                [*INGEST_ASSETS, snapshot],
                partition_key=partition_key(ACCOUNT_ID, day),
                instance=instance,
                resources=resources,
                tags=CATCH_UP,
            )
            assert result.success
        newest[order] = _derived_rows_of_newest(store, max(dates))
        refreshed = result.asset_materializations_for_node("snapshot")[0].metadata.get(
            "refreshed_newest_snapshot"
        )
        assert (refreshed is not None) == (order == "newest_first")

    assert newest["in_order"] == newest["newest_first"]
