"""Reading a whole audience in parallel: disjoint ``created`` ranges, fetched side by side, written in order.

Without ``predictive_analytics`` Klaviyo allows 750 profile pages a minute, far more than one call
at a time reaches when each takes ~150 ms. So the scan is cut into slices of creation time, a few
workers fetch them at once (the client's pacing keeps them all inside the account's limit), each
writes its rows to its own temporary file, and the files are joined in slice order: memory stays flat
and the output is in creation order.

Klaviyo filters ``created`` only with strict ``greater-than`` / ``less-than`` at second granularity,
so slice ``[a, b)`` is ``greater-than(created, a - 1 s)`` and ``less-than(created, b)``: a profile
created exactly on a boundary second belongs to exactly one slice. The last slice has no upper
bound, so profiles created while the scan runs are not lost.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.jsonapi import Resource, attribute
from klaviyo_dagster.producers.csvfile import CsvBlock, CsvWriter

PROFILES_PATH = "/api/profiles"
SLICES = 16  # more slices than workers, so one late-heavy slice does not leave the others idle
WORKERS = 4

RowWriter = Callable[[Resource, CsvWriter | CsvBlock], None]


def write_sliced(client: KlaviyoClient, params: dict[str, str], write: RowWriter, writer: CsvWriter) -> None:
    """Scans ``GET /api/profiles`` with ``params`` in created-time slices; rows go to ``writer`` in order.

    When the audience cannot be cut by ``created`` (the spec lets it be null, and a profile without
    it matches no ``created`` filter), the whole scan runs as one unfiltered sequence instead.
    """
    filters = slice_filters(client, params)
    if filters is None:
        for page in client.iter_pages(PROFILES_PATH, params):
            for profile in page.data:
                write(profile, writer)
        return
    if not filters:
        return
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="profile-slice") as pool:
        futures = [pool.submit(_scan_slice, client, {**params, "filter": f}, write) for f in filters]
    failed = next((future.exception() for future in futures if future.exception()), None)
    if failed is not None:  # no partial audience: drop every slice, report the first error
        for future in futures:
            if not future.exception():
                future.result().out.close()
        raise failed
    for block in (future.result() for future in futures):  # in slice order: the file is in creation order
        with block.out:
            writer.append_block(block)


def slice_filters(client: KlaviyoClient, params: dict[str, str]) -> list[str] | None:
    """The slices' filters, from the earliest and latest creation times (two one-profile calls):
    ``[]`` for an empty audience, None when a profile at either end has no ``created`` (nulls sort
    to an end), so slicing by ``created`` would lose it."""
    probe = {key: value for key, value in params.items() if key not in ("page[size]", "sort")}
    first = _first_profile(client, {**probe, "sort": "created"})
    if first is None:
        return []
    last = _first_profile(client, {**probe, "sort": "-created"}) or first
    earliest, latest = _created(first), _created(last)
    if earliest is None or latest is None:
        return None
    start, end = _floor_second(earliest), _floor_second(latest) + timedelta(seconds=1)
    step = timedelta(seconds=max(1, math.ceil((end - start).total_seconds() / SLICES)))
    bounds = [start + step * n for n in range(SLICES) if start + step * n < end]
    filters = []
    for lower, upper in zip(bounds, [*bounds[1:], None], strict=True):
        after = f"greater-than(created,{_stamp(lower - timedelta(seconds=1))})"
        filters.append(after if upper is None else f"and({after},less-than(created,{_stamp(upper)}))")
    return filters


def _scan_slice(client: KlaviyoClient, params: dict[str, str], write: RowWriter) -> CsvBlock:
    # Closed by write_sliced once joined (or here on failure); a temporary file needs no other cleanup.
    block = CsvBlock(tempfile.TemporaryFile("w+", encoding="utf-8", newline=""))  # noqa: SIM115
    try:
        for page in client.iter_pages(PROFILES_PATH, {**params, "sort": "created"}):
            for profile in page.data:
                write(profile, block)
    except BaseException:
        block.out.close()
        raise
    return block


def _first_profile(client: KlaviyoClient, params: dict[str, str]) -> Resource | None:
    found = client.get(PROFILES_PATH, {**params, "page[size]": "1"}).data
    return found[0] if found else None


def _created(profile: Resource) -> datetime | None:
    created = attribute(profile, "created")
    return datetime.fromisoformat(created).astimezone(UTC) if created else None


def _floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
