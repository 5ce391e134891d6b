"""The object stores: the same behaviour from a local folder and from Supabase Storage (via its double).

The Supabase store talks to the double through the real ``supabase`` client over HTTP, so these
tests also pin what storage3 sends and how it reports Storage's answers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from storage3.exceptions import StorageApiError
from supabase import ClientOptions, create_client

from klaviyo_dagster.storage.objects import (
    BucketNotFound,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageAuthError,
    StorageError,
    validate_object_key,
)
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster_tests.conftest import BUCKET, DOUBLE_MAX_OBJECT_BYTES, SERVICE_KEY
from klaviyo_dagster_tests.storage.supabase_double import DEFAULT_ANON_KEY, SupabaseStorageDouble

UPLOAD = "1c07270a-9f63-5515-9655-5f2e754ff900"
OTHER_UPLOAD = "7cd1726a-a0c2-5aa0-81c0-bada9f7b11c6"
FLOWS = f"{UPLOAD}/flows.csv"
BAD_KEYS = ["../x", "/abs", "a\\b", "", "a//b", "a/./b", "a/../b", "u/", "u/fl ows.csv", "u/é.csv"]

StoreFactory = Callable[..., SupabaseObjectStore]


@pytest.fixture(params=["local", "supabase"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_back(store: ObjectStore, key: str, tmp_path: Path) -> bytes:
    destination = tmp_path / "out" / key.replace("/", "_")
    store.download(key, destination)
    return destination.read_bytes()


def sent(double: SupabaseStorageDouble) -> list[tuple[str, str, int | None]]:
    return [(r.method, r.path, r.status) for r in double.requests]


# --- both stores ---------------------------------------------------------------------------------------
def test_upload_then_download_round_trips_the_bytes(store: ObjectStore, tmp_path: Path) -> None:
    data = b"Day,Revenue\n2025-09-18,12.5\n" + bytes(range(256))
    store.upload(FLOWS, write(tmp_path, "flows.csv", data))
    assert read_back(store, FLOWS, tmp_path) == data


def test_upload_is_an_upsert(store: ObjectStore, tmp_path: Path) -> None:
    store.upload(FLOWS, write(tmp_path, "a.csv", b"first\n"))
    store.upload(FLOWS, write(tmp_path, "b.csv", b"second, longer\n"))
    assert read_back(store, FLOWS, tmp_path) == b"second, longer\n"
    assert store.list(UPLOAD) == ["flows.csv"]


def test_list_names_direct_children_only_sorted(store: ObjectStore, tmp_path: Path) -> None:
    source = write(tmp_path, "x.csv", b"x\n")
    for key in (f"{UPLOAD}/subscribers.csv", FLOWS, f"{UPLOAD}/campaigns.csv", f"{UPLOAD}/nested/deep.csv"):
        store.upload(key, source)
    store.upload(f"{OTHER_UPLOAD}/flows.csv", source)
    assert store.list(UPLOAD) == ["campaigns.csv", "flows.csv", "nested", "subscribers.csv"]
    assert store.list(f"{UPLOAD}/") == store.list(UPLOAD)
    assert store.list(f"{UPLOAD}/nested") == ["deep.csv"]
    assert store.list("") == sorted([UPLOAD, OTHER_UPLOAD])
    assert store.list("no-such-folder") == []


def test_remove_skips_missing_keys(store: ObjectStore, tmp_path: Path) -> None:
    source = write(tmp_path, "x.csv", b"x\n")
    store.upload(FLOWS, source)
    store.upload(f"{UPLOAD}/campaigns.csv", source)
    store.remove([FLOWS, f"{UPLOAD}/subscribers.csv", f"{OTHER_UPLOAD}/flows.csv"])
    assert store.list(UPLOAD) == ["campaigns.csv"]
    store.remove([])
    store.remove([f"{UPLOAD}/campaigns.csv"])
    assert store.list("") == []  # an emptied folder disappears, as in Supabase Storage


def test_download_of_a_missing_object_is_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        store.download(FLOWS, tmp_path / "out.csv")
    assert caught.value.key == FLOWS
    assert caught.value.status == 404
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_before_anything_happens(
    request: pytest.FixtureRequest, store: ObjectStore, key: str, tmp_path: Path
) -> None:
    source = write(tmp_path, "x.csv", b"x\n")
    for call in (
        lambda: store.upload(key, source),
        lambda: store.download(key, tmp_path / "out.csv"),
        lambda: store.remove([FLOWS, key]),
    ):
        with pytest.raises(ValueError):
            call()
    if key not in ("", "u/"):  # "" is the bucket root and a trailing "/" is dropped for folders
        with pytest.raises(ValueError):
            store.list(key)
    if isinstance(store, SupabaseObjectStore):
        assert request.getfixturevalue("supabase_double").requests == []
    else:
        assert not (tmp_path / "objects").exists()


def test_describe_names_the_bucket_and_no_secret(store: ObjectStore, tmp_path: Path) -> None:
    text = store.describe()
    assert BUCKET in text
    assert SERVICE_KEY not in text and SERVICE_KEY not in repr(store)
    if isinstance(store, LocalObjectStore):
        assert text == (tmp_path / "objects" / BUCKET).resolve().as_uri()
    else:
        assert text == f"supabase://{BUCKET}"


def test_both_stores_satisfy_the_protocol(
    local_store: LocalObjectStore, supabase_store: SupabaseObjectStore
) -> None:
    assert isinstance(local_store, ObjectStore)
    assert isinstance(supabase_store, ObjectStore)


# --- keys and settings ---------------------------------------------------------------------------------
def test_validate_object_key_accepts_the_contract_layout() -> None:
    for name in ("flows.csv", "campaigns.csv", "subscribers.csv"):
        assert validate_object_key(f"{UPLOAD}/{name}") == f"{UPLOAD}/{name}"
    assert validate_object_key("a_b-c.1/x.csv") == "a_b-c.1/x.csv"


# --- the local store -----------------------------------------------------------------------------------
def test_local_upload_is_atomic(local_store: LocalObjectStore, tmp_path: Path, monkeypatch) -> None:
    local_store.upload(FLOWS, write(tmp_path, "a.csv", b"old\n"))

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        local_store.upload(FLOWS, write(tmp_path, "b.csv", b"new\n"))
    monkeypatch.undo()
    assert read_back(local_store, FLOWS, tmp_path) == b"old\n"
    assert sorted(p.name for p in (local_store.bucket_dir / UPLOAD).iterdir()) == ["flows.csv"]


def test_local_store_can_mimic_a_size_limit(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", BUCKET, max_object_bytes=10)
    with pytest.raises(ObjectTooLarge, match="resumable upload"):
        store.upload(FLOWS, write(tmp_path, "big.csv", b"x" * 11))
    assert store.list("") == []


# --- Supabase: request shape ---------------------------------------------------------------------------
def test_upload_request_shape(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    supabase_store.upload(FLOWS, write(tmp_path, "flows.csv", b"a,b\n"))
    (request,) = supabase_double.requests
    assert (request.method, request.path, request.status) == (
        "POST",
        f"/storage/v1/object/{BUCKET}/{FLOWS}",
        200,
    )
    assert request.headers["x-upsert"] == "true"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.file_content_type == "text/csv"
    assert "authorization" not in request.headers and "apikey" not in request.headers
    assert supabase_double.objects == {FLOWS: (b"a,b\n", "text/csv")}


def test_other_requests_shape(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    supabase_double.put_object(FLOWS, b"x")
    supabase_store.download(FLOWS, tmp_path / "out.csv")
    supabase_store.list(UPLOAD)
    supabase_store.remove([FLOWS])
    assert sent(supabase_double) == [
        ("GET", f"/storage/v1/object/{BUCKET}/{FLOWS}", 200),
        ("POST", f"/storage/v1/object/list/{BUCKET}", 200),
        ("DELETE", f"/storage/v1/object/{BUCKET}", 200),
    ]


def test_list_pages_through_more_than_a_thousand_names(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble
) -> None:
    names = [f"part-{i:04d}.csv" for i in range(1005)]
    for name in names:
        supabase_double.put_object(f"{UPLOAD}/{name}", b"x")
    supabase_double.put_object(f"{UPLOAD}/.emptyFolderPlaceholder", b"")
    assert supabase_store.list(UPLOAD) == names
    assert [r.method for r in supabase_double.requests] == ["POST", "POST"]


def test_remove_sends_at_most_a_thousand_names_per_request(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble
) -> None:
    keys = [f"{UPLOAD}/part-{i:04d}.csv" for i in range(1500)]
    for key in keys[::2]:
        supabase_double.put_object(key, b"x")
    supabase_store.remove(keys)
    assert supabase_double.objects == {}
    assert [r.method for r in supabase_double.requests] == ["DELETE", "DELETE"]


# --- Supabase: retries ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [503, 500, 429, "gateway_html", "timeout"])
def test_transient_failures_are_retried_then_succeed(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble, tmp_path: Path, fault
) -> None:
    supabase_double.fail_next(2 if fault != "timeout" else 1, fault)
    supabase_store.upload(FLOWS, write(tmp_path, "flows.csv", b"a,b\n"))
    assert supabase_double.objects[FLOWS] == (b"a,b\n", "text/csv")
    requests = supabase_double.requests
    assert [r.fault for r in requests][:-1] == [str(fault)] * (len(requests) - 1)
    assert requests[-1].status == 200 and requests[-1].fault is None


def test_timeouts_are_retried_for_reads_too(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble
) -> None:
    supabase_double.put_object(FLOWS, b"x")
    supabase_double.fail_next(1, "timeout")
    assert supabase_store.list(UPLOAD) == ["flows.csv"]


def test_gives_up_after_max_attempts_naming_the_key(
    supabase_store_factory: StoreFactory, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    delays: list[float] = []
    store = supabase_store_factory(max_attempts=4, backoff_base=0.01, backoff_max=0.03, sleep=delays.append)
    supabase_double.fail_next(10, 503)
    with pytest.raises(StorageError) as caught:
        store.upload(FLOWS, write(tmp_path, "flows.csv", b"a\n"))
    error = caught.value
    assert type(error) is StorageError
    assert (error.key, error.status) == (FLOWS, 503)
    assert FLOWS in str(error) and "4 attempts" in str(error)
    assert len(supabase_double.requests) == 4
    # capped exponential backoff with jitter: each delay in [d/2, d], d = min(0.03, 0.01 * 2**n)
    assert len(delays) == 3
    for n, delay in enumerate(delays):
        cap = min(0.03, 0.01 * 2**n)
        assert cap / 2 <= delay <= cap


def test_a_gateway_page_that_persists_is_a_clear_error(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble
) -> None:
    supabase_double.fail_next(3, "gateway_html")
    with pytest.raises(StorageError) as caught:
        supabase_store.list(UPLOAD)
    assert (caught.value.status, caught.value.code) == (502, "InternalError")
    assert "gateway" in str(caught.value) and "<html>" not in str(caught.value)
    assert len(supabase_double.requests) == 3


def test_unreachable_storage_is_retried_then_reported(supabase_store_factory: StoreFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = supabase_store_factory(url=f"http://127.0.0.1:{port}")
    with pytest.raises(StorageError) as caught:
        store.list(UPLOAD)
    assert caught.value.code == "ConnectError"
    assert "3 attempts" in str(caught.value)


# --- Supabase: errors that are never retried -----------------------------------------------------------
def test_a_wrong_key_is_an_auth_error_without_retries(
    supabase_store_factory: StoreFactory, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    wrong_key = "sb-wrong-service-role-" + "0" * 30
    store = supabase_store_factory(service_role_key=wrong_key)
    with pytest.raises(StorageAuthError) as caught:
        store.upload(FLOWS, write(tmp_path, "flows.csv", b"a\n"))
    assert (caught.value.status, caught.value.code, caught.value.key) == (403, "Unauthorized", FLOWS)
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(caught.value)
    assert wrong_key not in str(caught.value) and wrong_key not in repr(caught.value)
    assert sent(supabase_double) == [("POST", f"/storage/v1/object/{BUCKET}/{FLOWS}", 400)]


def test_a_missing_bucket_is_reported_without_retries(
    supabase_store_factory: StoreFactory, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    store = supabase_store_factory(bucket="no-such-bucket")
    with pytest.raises(BucketNotFound) as caught:
        store.upload(FLOWS, write(tmp_path, "flows.csv", b"a\n"))
    assert caught.value.status == 404 and "DATA_INGEST_BUCKET" in str(caught.value)
    assert len(supabase_double.requests) == 1


def test_too_large_is_refused_before_any_request(
    supabase_store_factory: StoreFactory, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    store = supabase_store_factory(max_object_bytes=1000)
    with pytest.raises(ObjectTooLarge) as caught:
        store.upload(f"{UPLOAD}/subscribers.csv", write(tmp_path, "subscribers.csv", b"x" * 1001))
    message = str(caught.value)
    assert "1001 bytes" in message and "1000 bytes" in message
    assert "paid plan" in message and "resumable upload" in message
    assert caught.value.key == f"{UPLOAD}/subscribers.csv"
    assert supabase_double.requests == []


def test_the_services_413_is_object_too_large_without_retries(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    assert supabase_store.max_object_bytes > DOUBLE_MAX_OBJECT_BYTES  # so the store lets it through
    with pytest.raises(ObjectTooLarge) as caught:
        supabase_store.upload(FLOWS, write(tmp_path, "flows.csv", b"x" * (DOUBLE_MAX_OBJECT_BYTES + 1)))
    assert (caught.value.status, caught.value.code) == (413, "Payload too large")
    assert len(supabase_double.requests) == 1 and supabase_double.objects == {}


def test_a_gateway_413_page_is_object_too_large_without_retries(
    supabase_store: SupabaseObjectStore, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    # A proxy in front of Storage may refuse the body itself, with its own HTML page.
    supabase_double.fail_next(3, "gateway_html", gateway_status=413)
    with pytest.raises(ObjectTooLarge) as caught:
        supabase_store.upload(FLOWS, write(tmp_path, "flows.csv", b"a\n"))
    assert (caught.value.status, caught.value.code) == (413, "InternalError")
    assert len(supabase_double.requests) == 1


def test_a_disallowed_mime_type_is_not_retried(tmp_path: Path) -> None:
    with (
        SupabaseStorageDouble(service_key=SERVICE_KEY, allowed_mime_types=["image/png"]) as double,
        SupabaseObjectStore(double.url, SERVICE_KEY, BUCKET, backoff_base=0.001) as store,
    ):
        with pytest.raises(StorageError) as caught:
            store.upload(FLOWS, write(tmp_path, "flows.csv", b"a\n"))
        assert (caught.value.status, caught.value.code) == (415, "invalid_mime_type")
        assert "allowed MIME types" in str(caught.value)
        assert len(double.requests) == 1


def test_the_service_key_never_appears_in_errors_or_logs(
    supabase_store_factory: StoreFactory,
    supabase_double: SupabaseStorageDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = supabase_store_factory()
    wrong_key = "sb-wrong-service-role-" + "1" * 30
    bad_store = supabase_store_factory(service_role_key=wrong_key)
    source = write(tmp_path, "flows.csv", b"a\n")
    errors: list[BaseException] = []
    supabase_double.fail_next(1, "timeout")
    supabase_double.fail_next(1, "gateway_html")
    store.upload(FLOWS, source)
    supabase_double.fail_next(3, 503)
    for action in (
        lambda: store.upload(FLOWS, source),
        lambda: store.download(f"{UPLOAD}/missing.csv", tmp_path / "out.csv"),
        lambda: bad_store.list(UPLOAD),
        lambda: supabase_store_factory(max_object_bytes=1).upload(FLOWS, source),
    ):
        with pytest.raises(StorageError) as caught:
            action()
        errors.append(caught.value)
    assert [type(e) for e in errors] == [StorageError, ObjectNotFound, StorageAuthError, ObjectTooLarge]
    texts = [caplog.text, repr(store), repr(bad_store)]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            texts += [str(chain), repr(chain)]
            chain = chain.__cause__ or chain.__context__
    assert "retrying" in caplog.text
    for text in texts:
        assert SERVICE_KEY not in text and wrong_key not in text


# --- the double reproduces Storage's observed answers to the raw client --------------------------------
# ../shared/contracts/supabase.md, "Storage": "Seen on the real server (2026-11-30 lab), and what a
# faithful double must answer". Each answer is pinned through the real supabase client.
def raw_bucket(double: SupabaseStorageDouble, key: str = SERVICE_KEY, name: str = BUCKET) -> Any:
    options = ClientOptions(httpx_client=httpx.Client(timeout=2))
    return create_client(double.url, key, options=options).storage.from_(name)


def error_of(call: Callable[[], object]) -> tuple[object, str]:
    with pytest.raises(StorageApiError) as caught:
        call()
    return caught.value.status, caught.value.code


def raw_body(
    double: SupabaseStorageDouble, method: str, path: str, key: str = SERVICE_KEY, **kwargs: Any
) -> Any:
    headers = {"apikey": key, "authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    response = httpx.request(method, f"{double.url}/storage/v1/{path}", headers=headers, timeout=2, **kwargs)
    return response.status_code, response.json()


def test_the_double_answers_like_storage(supabase_double: SupabaseStorageDouble) -> None:
    files = raw_bucket(supabase_double)
    files.upload(FLOWS, b"a\n", {"content-type": "text/csv"})
    assert error_of(lambda: files.upload(FLOWS, b"b\n", {"content-type": "text/csv"})) == ("409", "Duplicate")
    files.upload(FLOWS, b"b\n", {"content-type": "text/csv", "upsert": "true"})
    assert files.download(FLOWS) == b"b\n"
    files.update(FLOWS, b"c\n", {"content-type": "text/csv"})
    assert supabase_double.objects[FLOWS] == (b"c\n", "text/csv")
    assert error_of(lambda: files.download(f"{UPLOAD}/nope.csv")) == ("404", "not_found")
    too_big = b"x" * (DOUBLE_MAX_OBJECT_BYTES + 1)
    assert error_of(lambda: files.upload(f"{UPLOAD}/big.csv", too_big)) == ("413", "Payload too large")
    supabase_double.fail_next(1, "gateway_html")
    assert error_of(lambda: files.list(UPLOAD)) == (502, "InternalError")
    (entry,) = files.list(UPLOAD)
    assert entry["name"] == "flows.csv" and entry["metadata"]["mimetype"] == "text/csv"
    assert [row["name"] for row in files.remove([FLOWS, f"{UPLOAD}/nope.csv"])] == [FLOWS]
    assert all(r.status == 400 for r in supabase_double.requests if r.status not in (200, 502))


def test_a_missing_bucket_lists_and_removes_nothing_with_200(supabase_double: SupabaseStorageDouble) -> None:
    """Not an error: an empty listing is no proof that a folder is empty."""
    supabase_double.put_object(FLOWS, b"a\n")
    nowhere = raw_bucket(supabase_double, name="no-such-bucket")
    assert nowhere.list(UPLOAD) == []
    assert nowhere.remove([FLOWS]) == []
    assert error_of(lambda: nowhere.upload(FLOWS, b"a\n")) == ("404", "Bucket not found")
    assert error_of(lambda: nowhere.download(FLOWS)) == ("404", "Bucket not found")
    assert [r.status for r in supabase_double.requests] == [200, 200, 400, 400]
    assert FLOWS in supabase_double.objects


def test_a_key_limited_by_row_level_security_lists_and_removes_nothing_with_200(
    supabase_double: SupabaseStorageDouble,
) -> None:
    supabase_double.put_object(FLOWS, b"a\n")
    anon = raw_bucket(supabase_double, key=DEFAULT_ANON_KEY)
    assert anon.list(UPLOAD) == []
    assert anon.remove([FLOWS]) == []
    assert error_of(lambda: anon.upload(f"{UPLOAD}/x.csv", b"a\n")) == ("403", "Unauthorized")
    assert error_of(lambda: anon.download(FLOWS)) == ("404", "not_found")
    assert supabase_double.objects == {FLOWS: (b"a\n", "text/csv")}


def test_a_bad_key_is_403_except_on_download_where_the_bucket_is_not_found(
    supabase_double: SupabaseStorageDouble,
) -> None:
    supabase_double.put_object(FLOWS, b"a\n")
    bad = raw_bucket(supabase_double, key="sb-wrong-" + "0" * 30)
    assert error_of(lambda: bad.upload(FLOWS, b"b\n")) == ("403", "Unauthorized")
    assert error_of(lambda: bad.list(UPLOAD)) == ("403", "Unauthorized")
    assert error_of(lambda: bad.remove([FLOWS])) == ("403", "Unauthorized")
    assert error_of(lambda: bad.download(FLOWS)) == ("404", "Bucket not found")
    assert supabase_double.objects == {FLOWS: (b"a\n", "text/csv")}


def test_removing_nothing_is_an_invalid_request(supabase_double: SupabaseStorageDouble) -> None:
    assert error_of(lambda: raw_bucket(supabase_double).remove([])) == ("400", "InvalidRequest")


def test_update_of_a_missing_key_creates_it(supabase_double: SupabaseStorageDouble) -> None:
    raw_bucket(supabase_double).update(FLOWS, b"new\n", {"content-type": "text/csv"})
    assert supabase_double.objects == {FLOWS: (b"new\n", "text/csv")}


def test_move_and_copy_onto_an_existing_key_are_duplicates_unless_copy_upserts(
    supabase_double: SupabaseStorageDouble,
) -> None:
    staged, final = f"{UPLOAD}/.staging.flows.csv", FLOWS
    supabase_double.put_object(staged, b"new\n")
    supabase_double.put_object(final, b"old\n")
    files = raw_bucket(supabase_double)
    assert error_of(lambda: files.move(staged, final)) == ("409", "Duplicate")
    assert error_of(lambda: files.copy(staged, final)) == ("409", "Duplicate")
    assert error_of(lambda: files.move(f"{UPLOAD}/nope.csv", f"{UPLOAD}/x.csv")) == ("404", "not_found")
    assert supabase_double.objects[final] == (b"old\n", "text/csv")
    # storage3's copy() sends no x-upsert; the header itself is honoured.
    body = {"bucketId": BUCKET, "sourceKey": staged, "destinationKey": final}
    assert raw_body(supabase_double, "POST", "object/copy", json=body, headers={"x-upsert": "true"}) == (
        200,
        {"Key": f"{BUCKET}/{final}"},
    )
    assert supabase_double.objects[final] == (b"new\n", "text/csv")
    files.move(staged, f"{UPLOAD}/moved.csv")
    assert set(supabase_double.objects) == {final, f"{UPLOAD}/moved.csv"}


def test_downloads_carry_the_stored_content_type_without_a_charset(
    supabase_double: SupabaseStorageDouble,
) -> None:
    supabase_double.put_object(FLOWS, b"a\n")
    response = httpx.get(
        f"{supabase_double.url}/storage/v1/object/{BUCKET}/{FLOWS}",
        headers={"apikey": SERVICE_KEY, "authorization": f"Bearer {SERVICE_KEY}"},
    )
    assert (response.status_code, response.headers["content-type"]) == (200, "text/csv")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda files: files.download(f"{UPLOAD}/nope.csv"), "NoSuchKey"),
        (lambda files: files.upload(FLOWS, b"again\n"), "KeyAlreadyExists"),
        (
            lambda files: files.upload(f"{UPLOAD}/big.csv", b"x" * (DOUBLE_MAX_OBJECT_BYTES + 1)),
            "EntityTooLarge",
        ),
        (lambda files: files.remove([]), "InvalidRequest"),
    ],
)
def test_error_bodies_carry_a_code(
    supabase_double: SupabaseStorageDouble, call: Callable[[Any], object], code: str
) -> None:
    supabase_double.put_object(FLOWS, b"a\n")
    captured: list[httpx.Response] = []
    http = httpx.Client(timeout=2, event_hooks={"response": [lambda r: (r.read(), captured.append(r))]})
    files = create_client(supabase_double.url, SERVICE_KEY, options=ClientOptions(httpx_client=http))
    with pytest.raises(StorageApiError):
        call(files.storage.from_(BUCKET))
    assert captured[-1].status_code == 400 and captured[-1].json()["code"] == code


def test_error_bodies_name_the_missing_bucket_and_the_refused_type(tmp_path: Path) -> None:
    with SupabaseStorageDouble(service_key=SERVICE_KEY, allowed_mime_types=["image/png"]) as double:
        assert (
            raw_body(double, "POST", "object/no-such-bucket/x.csv", content=b"a")[1]["code"] == "NoSuchBucket"
        )
        assert (
            raw_body(
                double, "POST", f"object/{BUCKET}/x.csv", content=b"a", headers={"content-type": "text/csv"}
            )[1]["code"]
            == "InvalidMimeType"
        )


# --- the store on Storage's quiet answers ----------------------------------------------------------------
def test_the_store_hints_at_the_key_when_a_download_finds_no_bucket(
    supabase_store_factory: StoreFactory, supabase_double: SupabaseStorageDouble, tmp_path: Path
) -> None:
    supabase_double.put_object(FLOWS, b"a\n")
    store = supabase_store_factory(service_role_key="sb-wrong-" + "0" * 30)
    with pytest.raises(BucketNotFound) as caught:
        store.download(FLOWS, tmp_path / "out.csv")
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(caught.value)


def test_the_store_redacts_url_credentials(supabase_store_factory: StoreFactory, supabase_double) -> None:
    secret = "SENTINELurlpw"
    store = supabase_store_factory(url=f"http://user:{secret}@127.0.0.1:1")
    with pytest.raises(StorageError) as caught:
        store.list(UPLOAD)
    texts = [repr(store), store.describe()]
    chain: BaseException | None = caught.value
    while chain is not None:
        texts += [str(chain), repr(chain)]
        chain = chain.__cause__ or chain.__context__
    assert all(secret not in text for text in texts)
