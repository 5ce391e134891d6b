"""Object storage for the ingest CSVs: the store protocol, key rules, errors and the local folder store.

A partition's files live at ``{uploadId}/{name}`` in one bucket (see the Supabase contract). The
embedded default is :class:`LocalObjectStore` (a folder); :mod:`.supabase_objects` holds the
Supabase Storage implementation. Both validate every key before touching anything.
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

DEFAULT_BUCKET = "preauth-uploads"
# The three files of an upload folder (contracts/supabase.md, "Bucket layout"); the only copy.
FLOWS_OBJECT, CAMPAIGNS_OBJECT, SUBSCRIBERS_OBJECT = CSV_OBJECT_NAMES = (
    "flows.csv",
    "campaigns.csv",
    "subscribers.csv",
)
CSV_NAMES = frozenset(CSV_OBJECT_NAMES)
MAX_KEY_LENGTH = 1024  # Supabase Storage's limit on an object name
# Hosted Free plans cap a standard upload at 50 MB per object (50 * 1024 * 1024 bytes).
FREE_PLAN_MAX_OBJECT_BYTES = 50 * 1024 * 1024

_SAFE_PART = re.compile(r"[A-Za-z0-9._-]+")
_TEMP_PREFIX = ".upload-"  # temp files of an atomic write; never listed


class StorageError(Exception):
    """An object-store operation failed. ``status``/``code`` come from the service when it answered."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, key: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.key = key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r}, key={self.key!r})"


class ObjectTooLarge(StorageError):
    """The object is over the store's per-object size limit (checked before upload, or reported by it)."""


class ObjectNotFound(StorageError):
    """The object (or its bucket folder) does not exist."""


class BucketNotFound(StorageError):
    """The configured bucket does not exist in the project."""


class StorageAuthError(StorageError):
    """The service refused the credentials (wrong, expired or another project's key)."""


def _check_parts(value: str, what: str) -> builtins.list[str]:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value.encode("utf-8")) > MAX_KEY_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_KEY_LENGTH} bytes: {value[:60]!r}...")
    if "\\" in value:
        raise ValueError(f"{what} {value!r} contains a backslash; use '/' between parts")
    if value.startswith("/"):
        raise ValueError(f"{what} {value!r} starts with '/'; keys are relative to the bucket")
    parts = value.split("/")
    for part in parts:
        if not part:
            raise ValueError(f"{what} {value!r} has an empty part (a doubled or trailing '/')")
        if set(part) == {"."}:
            raise ValueError(f"{what} {value!r} contains a dot segment {part!r}")
        if not _SAFE_PART.fullmatch(part):
            raise ValueError(
                f"{what} {value!r} has an unsafe part {part!r}: use only letters, digits, '.', '_' and '-'"
            )
    return parts


def validate_object_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ValueError.

    Keys are ``{uploadId}/{name}`` (``name`` one of flows.csv, campaigns.csv, subscribers.csv) or, more
    generally, '/'-separated safe names ``[A-Za-z0-9._-]+``: no ``.``/``..``, no leading '/', no
    backslashes, no empty parts.
    """
    _check_parts(key, "object key")
    return key


def validate_prefix(prefix: str) -> str:
    """A folder prefix for ``list``: ``""`` (the bucket root) or safe parts; a trailing '/' is dropped."""
    if prefix == "":
        return ""
    stripped = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    _check_parts(stripped, "prefix")
    return stripped


def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or "/" in bucket:
        raise ValueError(f"bucket name {bucket!r} must be a single safe name")
    _check_parts(bucket, "bucket name")
    return bucket


def format_bytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB ({size} bytes)"


def too_large_before_upload(key: str, size: int, limit: int, where: str) -> ObjectTooLarge:
    return ObjectTooLarge(
        f"Cannot upload {key!r} to {where}: the file is {format_bytes(size)}, over the per-object limit "
        f"of {format_bytes(limit)}. Nothing was uploaded. Use a paid plan's larger limit (and raise "
        "max_object_bytes to match) or the resumable upload for files this large.",
        status=413,
        code="ObjectTooLarge",
        key=key,
    )


@runtime_checkable
class ObjectStore(Protocol):
    """Where the CSVs go. Every method validates its keys first (ValueError, before any I/O)."""

    bucket: str

    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        """Write ``source`` to ``key``, overwriting an existing object (upsert)."""
        ...

    def download(self, key: str, destination: Path) -> None:
        """Write the object to ``destination`` (ObjectNotFound when it does not exist)."""
        ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Names of the direct children (objects and sub-folders) of folder ``prefix``, sorted."""
        ...

    def remove(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; missing keys are fine."""
        ...

    def describe(self) -> str:
        """Where the objects go, e.g. ``supabase://preauth-uploads``; never a secret."""
        ...


@runtime_checkable
class KnowsModifiedTimes(Protocol):
    """A store that can say when each object of a folder was last written (both stores here can)."""

    def list_modified(self, prefix: str) -> dict[str, datetime | None]:
        """Direct children of ``prefix`` → when last written (UTC); None for a sub-folder or when unknown."""
        ...


def _atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temp file beside it and ``os.replace``."""
    with source.open("rb") as src:
        _write_atomically(target, lambda out: shutil.copyfileobj(src, out, 1024 * 1024))


def write_atomically(data: bytes, target: Path) -> None:
    """Write ``data`` to ``target`` through a temp file beside it and ``os.replace``."""
    _write_atomically(target, lambda out: out.write(data))


def _write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a temp file beside ``target`` (hidden from listings), synced, then renamed
    over it: a reader sees the old file or the whole new one. The temp file goes on any failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LocalObjectStore:
    """Objects as files under ``{root}/{bucket}/{key}``: the embedded default, no credentials.

    Uploads are atomic (a temp file beside the target, then ``os.replace``), so a reader never sees
    half a file. Content types are not kept (files are files). ``max_object_bytes`` (default none)
    mimics a hosted limit when set.
    """

    def __init__(self, root: str | Path, bucket: str = DEFAULT_BUCKET, max_object_bytes: int | None = None):
        self.root = Path(root)
        self.bucket = validate_bucket(bucket)
        self.max_object_bytes = max_object_bytes

    @property
    def bucket_dir(self) -> Path:
        return self.root / self.bucket

    def _path(self, key: str) -> Path:
        return self.bucket_dir.joinpath(*validate_object_key(key).split("/"))

    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        target = self._path(key)
        source = Path(source)
        size = source.stat().st_size
        if self.max_object_bytes is not None and size > self.max_object_bytes:
            raise too_large_before_upload(key, size, self.max_object_bytes, self.describe())
        _atomic_copy(source, target)

    def download(self, key: str, destination: Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(
                f"Object {key!r} does not exist in {self.describe()}: check the upload id and file name, "
                "or run the partition that writes it first.",
                status=404,
                code="not_found",
                key=key,
            )
        _atomic_copy(path, Path(destination))

    def list(self, prefix: str) -> builtins.list[str]:
        prefix = validate_prefix(prefix)
        folder = self.bucket_dir.joinpath(*prefix.split("/")) if prefix else self.bucket_dir
        if not folder.is_dir():
            return []
        return sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith(_TEMP_PREFIX))

    def list_modified(self, prefix: str) -> dict[str, datetime | None]:
        """Direct children of ``prefix`` with their modification time (None for a sub-folder)."""
        prefix = validate_prefix(prefix)
        folder = self.bucket_dir.joinpath(*prefix.split("/")) if prefix else self.bucket_dir
        if not folder.is_dir():
            return {}
        return {
            entry.name: None if entry.is_dir() else datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            for entry in folder.iterdir()
            if not entry.name.startswith(_TEMP_PREFIX)
        }

    def remove_stale_temp_files(self, prefix: str, before: datetime) -> builtins.list[str]:
        """Deletes the temp files of interrupted writes under folder ``prefix`` (recursively) last
        modified before ``before``; returns their paths relative to the bucket."""
        prefix = validate_prefix(prefix)
        folder = self.bucket_dir.joinpath(*prefix.split("/")) if prefix else self.bucket_dir
        removed = []
        for path in folder.rglob(f"{_TEMP_PREFIX}*") if folder.is_dir() else ():
            try:
                if path.is_file() and datetime.fromtimestamp(path.stat().st_mtime, UTC) < before:
                    path.unlink()
                    removed.append(path.relative_to(self.bucket_dir).as_posix())
            except FileNotFoundError:  # another process removed it meanwhile
                continue
        return removed

    def remove(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("remove() takes a sequence of keys, not a single string")
        paths = [self._path(key) for key in keys]  # validate them all before deleting any
        for path in paths:
            if path.is_dir():  # a folder is not an object: skipped, as Supabase Storage skips it
                continue
            path.unlink(missing_ok=True)
            # Folders exist only while they hold objects (as in Supabase Storage).
            parent = path.parent
            while parent != self.bucket_dir and self.bucket_dir in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def describe(self) -> str:
        return self.bucket_dir.resolve().as_uri()

    def __repr__(self) -> str:
        return f"LocalObjectStore({self.describe()!r})"
