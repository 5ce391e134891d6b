"""History that does not depend on the order runs happen (``contracts/supabase.md``, "History").

A snapshot carries the series days before its window from the account's earlier partitions. An
in-order run of the partitions (the old carry-forward: each publish took the previous snapshot's
stored series) is the reference; publishing the same dates in any other order, with
``refresh_newest`` on the last publish of the backfill, must leave the account's newest snapshot
with exactly the same derived rows (totals, series, ``last_email_date``), on PostgreSQL and SQLite.
"""

from __future__ import annotations

import io
import random
import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klaviyo_dagster.derived_rows import SeriesPoint, SnapshotMetrics
from klaviyo_dagster.processing.metrics import DayTotals, OwnActivity, compute_metrics, daily_totals
from klaviyo_dagster.publishing.publish import Published, PublishRequest, publish, staging_key
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import Derivation, Finished, IngestTables
from klaviyo_dagster_tests.publishing.runs import CAMPAIGNS_HEADER, FLOWS_HEADER, SHORT
from klaviyo_dagster_tests.storage.stores import ACCOUNT, sqlite_store

OTHER = "0b9c2f61-5d7e-4f0a-8c3b-6e1d2a4f7c90"  # the same dates published in another order
# Six partitions, windows of varying length: overlapping, one reaching further back than the
# window before it (03-06, 7 days), and a day no window covers (03-07).
DATES = [
    (date(2026, 3, 1), 3),
    (date(2026, 3, 2), 1),
    (date(2026, 3, 3), 5),
    (date(2026, 3, 5), 2),
    (date(2026, 3, 6), 7),
    (date(2026, 3, 9), 2),
]
NEWEST = DATES[-1][0]

Derived = tuple[dict[str, float], list[SeriesPoint], date | None]


def window(day: date, days: int) -> tuple[date, date]:
    return day - timedelta(days=days - 1), day


def files_for(day: date, days: int) -> dict[str, bytes]:
    """A partition's three files, the same for every account: per window day zero to two flow
    messages (some days send nothing; revenues whose float sums are inexact) and maybe a campaign."""
    rng = random.Random(zlib.crc32(f"{day}/{days}".encode()))
    first, _ = window(day, days)
    flows = [FLOWS_HEADER]
    campaigns = [CAMPAIGNS_HEADER]
    for n in range(days):
        current = first + timedelta(days=n)
        for message in range(rng.choice((0, 1, 2))):
            delivered = rng.choice((0, rng.randint(1, 900)))
            opens, clicks = delivered // 2, delivered // 7
            revenue = rng.choice((0.1, 0.2, 0.3, round(rng.uniform(0, 500), 2)))
            flows.append(
                f"{current},Flow {message},email,{delivered},{opens},{clicks},{rng.randint(0, 3)},{revenue},"
                f"{rng.choice((0, 0.013, 0.0071))},0.001,{rng.choice((0, 0.02))}"
            )
        if rng.random() < 0.4:
            sent = rng.randint(0, 2000)
            campaigns.append(
                f"Campaign {n},{current}T11:30:00-04:00,{sent},{rng.randint(0, 9)},{rng.uniform(0, 900)},"
                f"{sent // 3},{sent // 11},{rng.randint(0, 4)},{rng.randint(0, 2)},{rng.randint(0, 5)}"
            )
    subscribers = ["Email,Source", f"a@example.com,{day}"]
    return {
        "flows.csv": ("\n".join(flows) + "\n").encode(),
        "campaigns.csv": ("\n".join(campaigns) + "\n").encode(),
        "subscribers.csv": ("\n".join(subscribers) + "\n").encode(),
    }


def own_days(day: date, days: int) -> dict[date, DayTotals]:
    files = files_for(day, days)
    return daily_totals(
        io.StringIO(files["flows.csv"].decode(), newline=""),
        io.StringIO(files["campaigns.csv"].decode(), newline=""),
    )


def in_order(dates: Sequence[tuple[date, int]]) -> dict[date, Derived]:
    """The reference: the old carry-forward, in date order, in memory (each previous snapshot's
    series and last email date handed to the next)."""
    results: dict[date, Derived] = {}
    previous: SnapshotMetrics | None = None
    for day, days in sorted(dates):
        previous = compute_metrics(
            own_days(day, days),
            window(day, days),
            previous.series if previous else (),
            previous.last_email_date if previous else None,
        )
        results[day] = (previous.totals, previous.series, previous.last_email_date)
    return results


def publish_date(
    store: IngestStore, account: str, day: date, days: int, tmp: Path, refresh_newest: bool = False
) -> Published:
    upload_id, run_id = nightly_upload_id(account, day), f"run-{day:%m%d}"
    for name, data in files_for(day, days).items():
        path = tmp / f"{account}-{run_id}-{name}"
        path.write_bytes(data)
        store.objects.upload(staging_key(upload_id, run_id, name), path)
        path.unlink()
    request = PublishRequest(
        upload_id=upload_id,
        account_id=account,
        partition_date=day,
        window=window(day, days),
        run_id=run_id,
        metadata={"source": "test"},
        refresh_newest=refresh_newest,
    )
    return publish(store, request, timeouts=SHORT)


def derived(tables: IngestTables, account: str, day: date) -> Derived:
    row = tables.snapshot_for_upload(nightly_upload_id(account, day))
    assert row is not None and row.status == "ready"
    return tables.totals(row.id), tables.series(row.id), row.last_email_date


def as_derived(metrics: SnapshotMetrics) -> Derived:
    return metrics.totals, metrics.series, metrics.last_email_date


@pytest.fixture
def replaced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The snapshot id of every replacement of derived rows, in order."""
    calls: list[str] = []
    real = IngestTables._replace_derived

    def spy(self: IngestTables, tx: Any, snapshot_id: str, metrics: SnapshotMetrics) -> None:
        calls.append(snapshot_id)
        real(self, tx, snapshot_id, metrics)

    monkeypatch.setattr(IngestTables, "_replace_derived", spy)
    return calls


# --- the issue: a backfill published after the newest date ------------------------------------------


def test_in_order_publishing_gives_the_old_carry_forward_rows_exactly(
    store: IngestStore, tmp_path: Path
) -> None:
    """Each in-order publish equals what the old code computed from the previous snapshot's rows."""
    reference = in_order(DATES)
    for day, days in DATES:
        previous = store.tables.previous_snapshot(ACCOUNT, before=day)
        old_code = compute_metrics(  # the old publish's _metrics, from the rows in the database
            own_days(day, days),
            window(day, days),
            store.tables.series(previous.id) if previous else (),
            previous.last_email_date if previous else None,
        )

        published = publish_date(store, ACCOUNT, day, days, tmp_path)

        assert derived(store.tables, ACCOUNT, day) == as_derived(old_code) == reference[day]
        assert as_derived(published.metrics) == reference[day]
    assert {p.day for p in reference[NEWEST][1]} == {
        date(2026, 2, 27) + timedelta(days=n)
        for n in range(11)
        if n != 8  # 03-07: in no window
    }


@pytest.mark.parametrize(
    "order",
    [
        [5, 4, 3, 2, 1, 0],  # the newest night first, then a backfill from the newest date down
        [5, 0, 3, 1, 4, 2],
        [2, 5, 0, 4, 1, 3],  # the newest published in the middle
    ],
    ids=["reverse", "shuffled", "newest-in-the-middle"],
)
def test_any_order_with_refresh_newest_on_the_last_publish_gives_the_in_order_newest(
    store: IngestStore, tmp_path: Path, replaced: list[str], order: list[int]
) -> None:
    store.tables.ensure_account(OTHER, "Other")
    for day, days in DATES:
        publish_date(store, ACCOUNT, day, days, tmp_path)
    newest_id = store.tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, NEWEST)).id

    results = [
        publish_date(store, OTHER, *DATES[i], tmp_path, refresh_newest=n == len(order) - 1)
        for n, i in enumerate(order)
    ]

    expected = derived(store.tables, ACCOUNT, NEWEST)
    assert expected == in_order(DATES)[NEWEST]
    assert derived(store.tables, OTHER, NEWEST) == expected
    other_newest = store.tables.snapshot_for_upload(nightly_upload_id(OTHER, NEWEST)).id
    last_is_newest = DATES[order[-1]][0] == NEWEST
    assert [r.refreshed for r in results] == [None] * (len(order) - 1) + [
        None if last_is_newest else other_newest
    ]
    # The newest's rows were replaced by its own publish, and once more by the refresh: not per date.
    assert replaced.count(other_newest) == (1 if last_is_newest else 2)
    assert replaced.count(newest_id) == 1


def test_a_date_published_after_all_earlier_ones_is_right_whatever_order_those_had(
    store: IngestStore, tmp_path: Path
) -> None:
    """Publishing D computes its history with the chain rule: the earlier snapshots' own windows,
    not their carried rows (which a backfill published out of order left stale)."""
    reference = in_order(DATES)
    for i in (4, 1, 3, 0, 2):  # out of order, and no refresh
        publish_date(store, ACCOUNT, *DATES[i], tmp_path)
    assert derived(store.tables, ACCOUNT, DATES[4][0]) != reference[DATES[4][0]]  # published first: stale
    publish_date(store, ACCOUNT, *DATES[5], tmp_path)

    assert derived(store.tables, ACCOUNT, NEWEST) == reference[NEWEST]
    history = store.tables.history(ACCOUNT, before=date(2026, 3, 8))  # 03-06's in-order rows
    assert (history.series, history.last_email_date) == reference[date(2026, 3, 6)][1:]


def test_without_the_flag_the_newest_is_left_alone(
    store: IngestStore, tmp_path: Path, replaced: list[str]
) -> None:
    publish_date(store, ACCOUNT, *DATES[5], tmp_path)
    newest = store.tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, NEWEST))
    before = derived(store.tables, ACCOUNT, NEWEST)
    assert {p.day for p in before[1]} == {date(2026, 3, 8), NEWEST}  # nothing earlier yet

    results = [publish_date(store, ACCOUNT, *DATES[i], tmp_path) for i in (4, 3)]

    assert [r.refreshed for r in results] == [None, None]
    assert derived(store.tables, ACCOUNT, NEWEST) == before
    assert replaced.count(newest.id) == 1  # its own publish only
    assert store.tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, NEWEST)).metadata == newest.metadata

    refreshing = publish_date(store, ACCOUNT, *DATES[2], tmp_path, refresh_newest=True)

    assert refreshing.refreshed == newest.id
    assert derived(store.tables, ACCOUNT, NEWEST) == in_order(DATES[2:])[NEWEST]
    assert store.tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, NEWEST)).metadata == newest.metadata


def test_refreshing_with_nothing_newer_changes_nothing_else(
    store: IngestStore, tmp_path: Path, replaced: list[str]
) -> None:
    published = publish_date(store, ACCOUNT, *DATES[0], tmp_path, refresh_newest=True)

    assert published.refreshed is None
    assert replaced == [published.snapshot_id]
    assert derived(store.tables, ACCOUNT, DATES[0][0]) == in_order(DATES[:1])[DATES[0][0]]


def test_a_remote_processor_ignores_the_flag(store: IngestStore, tmp_path: Path, replaced: list[str]) -> None:
    publish_date(store, ACCOUNT, *DATES[5], tmp_path)
    before = derived(store.tables, ACCOUNT, NEWEST)
    day, days = DATES[4]
    upload_id, run_id = nightly_upload_id(ACCOUNT, day), "run-processed"
    for name, data in files_for(day, days).items():
        path = tmp_path / name
        path.write_bytes(data)
        store.objects.upload(staging_key(upload_id, run_id, name), path)
    request = PublishRequest(upload_id, ACCOUNT, day, window(day, days), run_id, refresh_newest=True)

    published = publish(store, request, processor=lambda snapshot_id: None, timeouts=SHORT)

    assert published.metrics is None and published.refreshed is None
    assert derived(store.tables, ACCOUNT, NEWEST) == before
    assert len(replaced) == 1  # the newest's own publish


def test_the_snapshot_metadata_records_the_partition_and_window_the_history_reads(
    store: IngestStore, tmp_path: Path
) -> None:
    publish_date(store, ACCOUNT, *DATES[2], tmp_path)

    metadata = store.tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, DATES[2][0])).metadata
    assert metadata["partition_date"] == "2026-03-03"
    assert metadata["window"] == {"first_day": "2026-02-27", "last_day": "2026-03-03"}


# --- history that no remaining window holds (retention cleanup) -----------------------------------------


def delete_snapshot(tables: IngestTables, account: str, day: date) -> None:
    """What the retention cleanup does to an old upload's rows."""
    upload_id = nightly_upload_id(account, day)
    snapshot_id = tables.snapshot_for_upload(upload_id).id
    with tables._transaction() as tx:
        for statement in (
            "delete from snapshot_series where snapshot_id = ?",
            "delete from snapshot_totals where snapshot_id = ?",
            "delete from snapshots where id = ?",
        ):
            tx.execute(statement, (snapshot_id,))
        tx.execute("delete from uploads where id = ?", (upload_id,))


# Short windows, one after the other: 03-02..03-03 is in the window of 03-03 only.
GAPPY = [
    (date(2026, 3, 1), 2),
    (date(2026, 3, 3), 2),
    (date(2026, 3, 5), 2),
    (date(2026, 3, 7), 3),
    (date(2026, 3, 8), 1),
    (date(2026, 3, 9), 1),
]


@pytest.mark.parametrize(
    ("dates", "deleted"),
    [(DATES, (0, 1, 2)), (GAPPY, (1,)), (GAPPY, (0, 1))],
    ids=["the-oldest", "one-whose-days-no-other-window-has", "two"],
)
def test_history_only_deleted_snapshots_had_is_kept_from_the_carried_rows_after_them(
    store: IngestStore, tmp_path: Path, dates: list[tuple[date, int]], deleted: tuple[int, ...]
) -> None:
    """Retention deletes old snapshots: days that no remaining window holds live on in the carried rows
    of the snapshot published after them, and the next publish keeps them, as in an in-order run."""
    for day, days in dates[:-1]:
        publish_date(store, ACCOUNT, day, days, tmp_path)
    for i in deleted:
        delete_snapshot(store.tables, ACCOUNT, dates[i][0])

    publish_date(store, ACCOUNT, *dates[-1], tmp_path)

    assert derived(store.tables, ACCOUNT, dates[-1][0]) == in_order(dates)[dates[-1][0]]


def test_a_day_a_remaining_window_holds_comes_from_it_when_a_later_window_of_it_was_deleted(
    store: IngestStore, tmp_path: Path
) -> None:
    """The documented limit: 02-27 was last fetched by 03-03's run, whose snapshot is deleted; 03-01's
    window holds it too, so the history takes 03-01's numbers, as if 03-03 had never run."""
    for day, days in DATES[:5]:
        publish_date(store, ACCOUNT, day, days, tmp_path)
    delete_snapshot(store.tables, ACCOUNT, DATES[2][0])

    publish_date(store, ACCOUNT, *DATES[5], tmp_path)

    without = [DATES[i] for i in (0, 1, 3, 4, 5)]
    assert derived(store.tables, ACCOUNT, NEWEST)[1] == in_order(without)[NEWEST][1]
    assert derived(store.tables, ACCOUNT, NEWEST)[1] != in_order(DATES)[NEWEST][1]


# --- a property: any order, any window lengths ---------------------------------------------------------


def random_days(seed: int, days: Sequence[date]) -> dict[date, DayTotals]:
    """Activity on some days, with float values whose decimal digits go all the way."""
    rng = random.Random(seed)
    result = {}
    for day in days:
        if rng.random() < 0.25:
            continue  # a quiet day
        emails = rng.choice((0.0, float(rng.randint(1, 5000))))
        result[day] = DayTotals(
            revenue=rng.random() * 1000,
            emails=emails,
            orders=float(rng.randint(0, 20)),
            unique_opens=float(rng.randint(0, 3000)),
            unique_clicks=float(rng.randint(0, 300)),
            unsubscribes=float(rng.randint(0, 9)),
            spam_complaints=float(rng.randint(0, 3)),
            bounces=float(rng.randint(0, 30)),
        )
    return result


def finish(tables: IngestTables, account: str, day: date, own: OwnActivity, refresh: bool) -> Finished:
    """A publish of ``day`` as its database side runs it (the files are not what this is about)."""
    upload_id = nightly_upload_id(account, day)
    snapshot_id = tables.begin_publish(upload_id=upload_id, account_id=account, run_id="r", timeouts=SHORT)
    return tables.finish_publish(
        snapshot_id=snapshot_id,
        run_id="r",
        metadata={},
        metrics=Derivation(account, day, own, stored_own=OwnActivity.from_series, refresh_newest=refresh),
        ready=True,
        timeouts=SHORT,
    )


partitions = st.lists(
    st.tuples(st.integers(0, 14), st.integers(1, 6)), min_size=1, max_size=6, unique_by=lambda p: p[0]
)


def check_any_order(tables: IngestTables, plan: list[tuple[int, int]], seed: int, shuffle: Callable) -> None:
    account = str(uuid.uuid4())
    tables.ensure_account(account, "Property")
    start = date(2026, 1, 1)
    owns = {}
    for offset, days in plan:
        day = start + timedelta(days=offset)
        first, last = window(day, days)
        owns[day] = OwnActivity(
            (first, last), random_days(seed + offset, [first + timedelta(n) for n in range(days)])
        )
    reference: dict[date, Derived] = {}
    previous: SnapshotMetrics | None = None
    for day in sorted(owns):
        own = owns[day]
        previous = compute_metrics(
            dict(own.days),
            own.window,
            previous.series if previous else (),
            previous.last_email_date if previous else None,
        )
        reference[day] = as_derived(previous)
    order = shuffle(sorted(owns))
    for n, day in enumerate(order):
        finished = finish(tables, account, day, owns[day], refresh=n == len(order) - 1)
        if all(earlier in order[:n] for earlier in owns if earlier < day):
            assert as_derived(finished.metrics) == reference[day]  # published after all earlier dates
    newest = max(owns)
    assert derived(tables, account, newest) == reference[newest]
    # The history read on its own: the newest's in-order series, one point per day and key.
    history = tables.history(account, before=newest + timedelta(days=1))
    assert (history.series, history.last_email_date) == reference[newest][1:]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_property_any_order_and_window_lengths_give_the_in_order_newest(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "postgres":
        tables = IngestTables.postgres(request.getfixturevalue("clean_postgres"))
        examples = 25
    else:
        tables = sqlite_store(tmp_path / "data").tables
        examples = 60

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(plan=partitions, seed=st.integers(0, 2**32), randomness=st.randoms(use_true_random=False))
    def any_order(plan: list[tuple[int, int]], seed: int, randomness: random.Random) -> None:
        check_any_order(tables, plan, seed, lambda days: randomness.sample(days, len(days)))

    any_order()
