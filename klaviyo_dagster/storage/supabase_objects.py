"""Supabase Storage as the object store, through the ``supabase`` package (storage3).

What storage3 2.34 sends (``{url}/storage/v1/`` + …, headers ``apiKey`` and ``Authorization: Bearer``):
upload ``POST object/{bucket}/{key}`` (multipart, part ``file`` with the content type, form field
``cacheControl``, header ``x-upsert``), download ``GET object/{bucket}/{key}``, list
``POST object/list/{bucket}`` (JSON ``prefix``/``limit``/``offset``/``sortBy``), remove
``DELETE object/{bucket}`` (JSON ``{"prefixes": [...]}``). Errors come back as HTTP 400 with the real
status as a *string* in the JSON body; storage3 raises ``StorageApiError(message, error, statusCode)``,
or ``code="InternalError"`` with the int HTTP status when the body is not that JSON. The client never
retries, so this module does: transport errors, 5xx, 429 and unparseable bodies, with capped
exponential backoff and jitter. Every call is idempotent (uploads are upserts).

The service key never appears in a message, repr or log line, nor do credentials in the URL
(``klaviyo_dagster.redaction``).

Storage's quiet answers (``../shared/contracts/supabase.md``, "Seen on the real server"): a missing
bucket or a key limited by row-level security lists and removes with ``200 []``, so an empty
:meth:`SupabaseObjectStore.list` is no proof of an empty folder (cleanup probes first); a refused
key downloads as ``404 Bucket not found`` (the error says to check the key too).
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from storage3.exceptions import StorageApiError
from supabase import Client, ClientOptions, create_client

from klaviyo_dagster.backoff import jittered_backoff
from klaviyo_dagster.redaction import redact, redact_url, url_password
from klaviyo_dagster.storage.objects import (
    DEFAULT_BUCKET,
    FREE_PLAN_MAX_OBJECT_BYTES,
    BucketNotFound,
    ObjectNotFound,
    ObjectTooLarge,
    StorageAuthError,
    StorageError,
    too_large_before_upload,
    validate_bucket,
    validate_object_key,
    validate_prefix,
    write_atomically,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # per network operation, not per call
LIST_PAGE_SIZE = 1000  # storage-api caps list limit at 1000
REMOVE_BATCH_SIZE = 1000  # and a delete at 1000 names
PLACEHOLDER = ".emptyFolderPlaceholder"  # written by the dashboard's "create folder"; not an object of ours

# Never retried: the request itself is wrong, or the answer will not change.
NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 415})


class StorageConfigError(ValueError):
    """Supabase Storage settings are missing or malformed (names the variables, never their values)."""


def _status_int(status: object) -> int | None:
    if isinstance(status, int):
        return status
    if isinstance(status, str) and status.strip().isdigit():
        return int(status.strip())
    return None


def is_transient(status: int | None, code: str | None) -> bool:
    """Worth retrying: 5xx, 429 and non-JSON (gateway) answers, except for statuses that never change."""
    if status in NON_RETRYABLE_STATUSES:
        return False
    if status is not None and (status >= 500 or status in (408, 429)):
        return True
    return code == "InternalError"


def _timestamp(value: object) -> datetime | None:
    """Storage's ISO timestamp (``2026-11-30T03:05:12.345Z``), None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class SupabaseObjectStore:
    """The :class:`~klaviyo_dagster.storage.objects.ObjectStore` on Supabase Storage.

    ``max_object_bytes`` (default 50 MB, the Free plan's limit) is checked before uploading.
    ``max_attempts`` counts the first try; the delay before retry ``n`` is a random value in
    ``[d/2, d]`` with ``d = min(backoff_max, backoff_base * 2**(n-1))``. Tests pass ``httpx_client``
    or ``transport`` (and a small ``backoff_base``); otherwise the store owns an ``httpx.Client`` with
    ``timeout`` and closes it in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        service_role_key: str,
        bucket: str = DEFAULT_BUCKET,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_object_bytes: int = FREE_PLAN_MAX_OBJECT_BYTES,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        httpx_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url.strip()):
            raise StorageConfigError(
                "The Supabase URL must look like https://<project>.supabase.co "
                "(set SUPABASE_URL or NEXT_PUBLIC_SUPABASE_URL)"
            )
        if not isinstance(service_role_key, str) or not service_role_key.strip():
            raise StorageConfigError("The Supabase service role key is empty (set SUPABASE_SERVICE_ROLE_KEY)")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if httpx_client is not None and transport is not None:
            raise ValueError("pass httpx_client or transport, not both")
        self.url = url.strip().rstrip("/")
        self.bucket = validate_bucket(bucket)
        self.max_object_bytes = max_object_bytes
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._service_key = service_role_key.strip()
        self._timeout = timeout
        self._sleep = sleep
        self._owns_http = httpx_client is None
        self._http = httpx_client
        self._transport = transport
        self._client: Client | None = None
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------------------
    def _bucket_api(self) -> Any:
        with self._lock:
            if self._client is None:
                if self._http is None:
                    self._http = httpx.Client(timeout=self._timeout, transport=self._transport)
                self._client = create_client(
                    self.url, self._service_key, options=ClientOptions(httpx_client=self._http)
                )
            return self._client.storage.from_(self.bucket)

    def close(self) -> None:
        """Close the HTTP client if this store created it."""
        with self._lock:
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None
            self._client = None

    def __enter__(self) -> SupabaseObjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        secrets = [self._service_key, url_password(self.url) or ""]
        text = redact_url(redact(text, secrets))
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:300] + "…"

    def _where(self, key: str | None) -> str:
        return f"{key!r} in bucket {self.bucket!r}" if key is not None else f"bucket {self.bucket!r}"

    def _map_api_error(self, op: str, key: str | None, err: StorageApiError) -> StorageError:
        status = _status_int(err.status)
        code = str(err.code) if err.code is not None else None
        detail = self._redact(str(err.message))
        if code == "InternalError":  # storage3's label for a body that is not Storage's JSON
            page = re.sub(r"<[^>]+>", " ", detail.removeprefix("Unable to parse error message:"))
            detail = f"not a Storage answer, likely a gateway or proxy page: {self._redact(page)[:160]!r}"
        what = f"Supabase Storage {op} of {self._where(key)} failed (status {err.status}, {code}: {detail})"
        kwargs: dict[str, Any] = {"status": status, "code": code, "key": key}
        if status in (401, 403):
            return StorageAuthError(
                f"{what}. The service key was refused: check that SUPABASE_SERVICE_ROLE_KEY is this project's "
                "service_role key (Project Settings → API) and that SUPABASE_URL points at the same project.",
                **kwargs,
            )
        if status == 404 and "bucket" in f"{code} {detail}".lower():
            # Storage also answers a refused key's download with "Bucket not found".
            also_key = (
                " (on a download, also check SUPABASE_SERVICE_ROLE_KEY: a refused key is answered the same)"
            )
            return BucketNotFound(
                f"{what}. Create the private bucket {self.bucket!r} in Supabase Storage, or set "
                f"DATA_INGEST_BUCKET to an existing one{also_key if op == 'download' else ''}.",
                **kwargs,
            )
        if status == 404:
            return ObjectNotFound(
                f"{what}. The object does not exist: check the upload id and file name, or run the "
                "partition that writes it first.",
                **kwargs,
            )
        if status == 413:
            return ObjectTooLarge(
                f"{what}. The file is over the project's or bucket's upload size limit: raise the "
                "bucket's file size limit (Storage settings), use a paid plan's larger limit or the resumable upload.",
                **kwargs,
            )
        if status == 415:
            return StorageError(
                f"{what}. The bucket does not accept this content type: add it to the bucket's "
                "allowed MIME types (text/csv for the ingest files) or clear that restriction.",
                **kwargs,
            )
        if status == 409:
            return StorageError(f"{what}. The object already exists and was not overwritten.", **kwargs)
        if is_transient(status, code):
            return StorageError(
                f"{what}. Supabase Storage (or its gateway) is unavailable or overloaded; try again "
                "later (reruns overwrite the same objects).",
                **kwargs,
            )
        return StorageError(f"{what}.", **kwargs)

    def _call(self, op: str, key: str | None, action: Callable[[], T]) -> T:
        """Run ``action``, retrying transient failures; raise a StorageError subclass otherwise."""
        attempt = 1
        while True:
            try:
                return action()
            except StorageApiError as err:
                error = self._map_api_error(op, key, err)
                transient = is_transient(error.status, error.code)
                cause: BaseException = err
            except httpx.TransportError as err:  # connect/read/write/pool timeouts, refused, reset
                reason = self._redact(str(err)) or "no detail"
                error = StorageError(
                    f"Supabase Storage {op} of {self._where(key)} failed: could not reach {redact_url(self.url)} "
                    f"({type(err).__name__}: {reason}). Check the network and SUPABASE_URL, or try again later.",
                    code=type(err).__name__,
                    key=key,
                )
                transient, cause = True, err
            except httpx.HTTPError as err:  # e.g. a body that cannot be decoded: not transient
                error = StorageError(
                    f"Supabase Storage {op} of {self._where(key)} failed: {type(err).__name__}: "
                    f"{self._redact(str(err))}",
                    code=type(err).__name__,
                    key=key,
                )
                transient, cause = False, err
            if not transient:
                raise error from cause
            if attempt >= self.max_attempts:
                error.message = f"{error.message} Gave up after {attempt} attempts."
                error.args = (error.message,)
                raise error from cause
            delay = jittered_backoff(attempt, self.backoff_base, self.backoff_max)
            logger.warning(
                "Supabase Storage %s of %s failed (attempt %d/%d: status %s, %s); retrying in %.2fs",
                op,
                self._where(key),
                attempt,
                self.max_attempts,
                error.status,
                error.code,
                delay,
            )
            self._sleep(delay)
            attempt += 1

    # --- the ObjectStore protocol --------------------------------------------------------------------
    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        validate_object_key(key)
        source = Path(source)
        size = source.stat().st_size
        if size > self.max_object_bytes:
            raise too_large_before_upload(key, size, self.max_object_bytes, self.describe())
        # Option values must be strings (a bool crashes inside httpx). Passing the *path* lets storage3
        # open the file itself on every attempt; httpx then streams that handle into the multipart body
        # in 64 KiB chunks (Content-Length from the file size), so the file is never read into memory.
        options = {"content-type": content_type, "upsert": "true"}
        self._call("upload", key, lambda: self._bucket_api().upload(key, source, file_options=options))
        logger.debug("uploaded %s (%d bytes) to %s", key, size, self.describe())

    def download(self, key: str, destination: Path) -> None:
        validate_object_key(key)
        # storage3's download returns the whole body as bytes (it has no streaming variant); objects
        # are at most max_object_bytes, so that is acceptable. The file is replaced atomically.
        data = self._call("download", key, lambda: self._bucket_api().download(key))
        write_atomically(data, Path(destination))

    def list(self, prefix: str) -> builtins.list[str]:
        return sorted(self._list_entries(prefix))

    def list_modified(self, prefix: str) -> dict[str, datetime | None]:
        """Direct children of ``prefix`` → Storage's ``updated_at`` (None for a folder or when absent)."""
        return {
            name: _timestamp(entry.get("updated_at")) for name, entry in self._list_entries(prefix).items()
        }

    def _list_entries(self, prefix: str) -> dict[str, dict[str, Any]]:
        folder = validate_prefix(prefix)
        entries: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            options = {
                "limit": LIST_PAGE_SIZE,
                "offset": offset,
                "sortBy": {"column": "name", "order": "asc"},
            }
            page = self._call(
                "list",
                folder or None,
                lambda: self._bucket_api().list(folder, options),  # noqa: B023 - called right away
            )
            if not isinstance(page, builtins.list):
                raise StorageError(
                    f"Supabase Storage list of {self._where(folder)} returned an unexpected body "
                    f"({type(page).__name__}, not a list)",
                    key=folder or None,
                )
            entries.update(
                (str(entry["name"]), entry)
                for entry in page
                if isinstance(entry, dict) and entry.get("name") and entry["name"] != PLACEHOLDER
            )
            if len(page) < LIST_PAGE_SIZE:
                return entries
            offset += LIST_PAGE_SIZE

    def remove(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("remove() takes a sequence of keys, not a single string")
        keys = [validate_object_key(key) for key in keys]
        for start in range(0, len(keys), REMOVE_BATCH_SIZE):
            batch = keys[start : start + REMOVE_BATCH_SIZE]
            label = batch[0] if len(batch) == 1 else f"{batch[0]} (+{len(batch) - 1} more)"
            self._call("remove", label, lambda batch=batch: self._bucket_api().remove(batch))

    def describe(self) -> str:
        return f"supabase://{self.bucket}"

    def __repr__(self) -> str:
        return f"SupabaseObjectStore(url={redact_url(self.url)!r}, bucket={self.bucket!r})"
