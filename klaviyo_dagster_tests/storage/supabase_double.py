"""An HTTP-level double of Supabase Storage, for the real ``supabase`` client to talk to.

It serves the endpoints storage3 2.34 uses for upload/update/download/list/remove/move/copy under
``/storage/v1`` and answers like the real service does (``../shared/contracts/supabase.md``,
"Storage", and its "Seen on the real server (2026-11-30 lab)" facts):

* errors are HTTP 400 with the intended status as a *string* ``statusCode`` in a JSON body that
  also carries a ``code`` (``NoSuchKey``, ``NoSuchBucket``, ``KeyAlreadyExists``, ``EntityTooLarge``,
  ``InvalidMimeType``, ``InvalidRequest``; ``InvalidJWT``/``AccessDenied`` for refused keys);
* a **missing bucket**, or a key limited by row-level security (``anon_key``), gives ``200 []`` on
  list **and** remove — not an error; uploads there are ``404/Bucket not found`` and
  ``403/Unauthorized`` (RLS), and the RLS-limited key sees no object (download ``404/not_found``);
* a **bad key** gives ``403/Unauthorized`` on upload, list and remove, but ``404/Bucket not found``
  on download; ``remove([])`` is ``400/InvalidRequest``;
* a duplicate upload without ``x-upsert: true`` is ``409/Duplicate``; ``PUT`` (update) on a missing
  key creates it; ``move`` onto an existing key is ``409/Duplicate``, ``copy`` too unless
  ``x-upsert: true``; a missing source is ``404/not_found``;
* downloads carry the stored content type as is (``text/csv``, no charset); an object over the
  limit is ``413/Payload too large``, a refused type ``415/invalid_mime_type``.

Faults: ``fail_next(n, 503 | "timeout" | "gateway_html")``.

    with SupabaseStorageDouble(service_key="...") as double:
        store = SupabaseObjectStore(double.url, "...", "preauth-uploads")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from klaviyo_dagster.sim.background import ServedApp

DEFAULT_MAX_OBJECT_BYTES = 50 * 1024 * 1024
GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)
_SECRET_HEADERS = frozenset({"authorization", "apikey"})
# A key Storage accepts but whose role row-level security limits (the project's anon key).
DEFAULT_ANON_KEY = "sb-test-anon-" + "a11ce" * 6


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names, without authorization/apikey
    status: int | None  # None while a "timeout" fault hangs (and after the client gave up)
    fault: str | None = None  # "503", "timeout", "gateway_html", ... when injected
    file_content_type: str | None = None  # the multipart "file" part's Content-Type on uploads
    body_size: int = 0


@dataclass
class _Fault:
    remaining: int
    kind: int | str
    gateway_status: int


@dataclass
class _State:
    service_key: str
    anon_key: str | None
    buckets: dict[str, dict[str, tuple[bytes, str, str]]]  # bucket -> key -> (data, content type, id)
    max_object_bytes: int
    allowed_mime_types: frozenset[str] | None
    hang_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    written: dict[str, datetime] = field(default_factory=dict)  # "bucket/key" -> seeded updated_at
    faults: list[_Fault] = field(default_factory=list)
    shutdown: asyncio.Event | None = None


def _storage_error(status: str, error: str, message: str, code: str | None = None) -> JSONResponse:
    """Storage's error shape: HTTP 400, the real status as a string in the body."""
    body: dict[str, str] = {"statusCode": status, "error": error, "message": message}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=400)


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[bytes, str | None]]:
    """name -> (content, part content type). Enough for httpx's encoder (no python-multipart here)."""
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"').encode("latin-1")
    if not boundary:
        raise ValueError("multipart body without a boundary")
    fields: dict[str, tuple[bytes, str | None]] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            hname, _, hvalue = line.partition(":")
            headers[hname.strip().lower()] = hvalue.strip()
        disposition = headers.get("content-disposition", "")
        part_name = None
        for param in disposition.split(";")[1:]:
            pname, _, pvalue = param.strip().partition("=")
            if pname == "name":
                part_name = pvalue.strip('"')
        if part_name is not None:
            fields[part_name] = (content, headers.get("content-type"))
    return fields


def _object_row(
    bucket: str, name: str, key: str, entry: tuple[bytes, str, str], written: datetime | None = None
) -> dict[str, Any]:
    data, content_type, object_id = entry
    now = (written or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return {
        "name": name,
        "id": object_id,
        "bucket_id": bucket,
        "updated_at": now,
        "created_at": now,
        "last_accessed_at": now,
        "metadata": {
            "eTag": f'"{uuid.uuid5(uuid.NAMESPACE_URL, key).hex}"',
            "size": len(data),
            "mimetype": content_type,
            "cacheControl": "max-age=3600",
            "lastModified": now,
            "contentLength": len(data),
            "httpStatusCode": 200,
        },
    }


def _role(state: _State, request: Request) -> str | None:
    """``"service"``, ``"anon"`` (limited by row-level security) or None (a refused key)."""
    for role, key in (("service", state.service_key), ("anon", state.anon_key)):
        if (
            key
            and request.headers.get("authorization") == f"Bearer {key}"
            and request.headers.get("apikey") == key
        ):
            return role
    return None


def _not_found() -> JSONResponse:
    return _storage_error("404", "not_found", "Object not found", code="NoSuchKey")


def _bucket_missing() -> JSONResponse:
    return _storage_error("404", "Bucket not found", "Bucket not found", code="NoSuchBucket")


def build_app(state: _State) -> Starlette:
    def unauthorized() -> JSONResponse:
        return _storage_error("403", "Unauthorized", "invalid signature", code="InvalidJWT")

    def rls_denied() -> JSONResponse:
        return _storage_error(
            "403", "Unauthorized", "new row violates row-level security policy", code="AccessDenied"
        )

    def visible(request: Request, bucket: str) -> bool:
        """The bucket exists and the key's role may see its objects (Storage filters, not refuses)."""
        return bucket in state.buckets and request.state.role == "service"

    async def upload(request: Request, body: bytes) -> tuple[Response, str | None]:
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        if bucket not in state.buckets:
            return _bucket_missing(), None
        if request.state.role != "service":
            return rls_denied(), None
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            fields = _parse_multipart(body, content_type)
            if "file" not in fields:
                return _storage_error("400", "InvalidRequest", "No file in the form"), None
            data, part_type = fields["file"]
            mimetype = part_type or "application/octet-stream"
        else:
            data, mimetype = body, content_type or "application/octet-stream"
        if len(data) > state.max_object_bytes:
            return _storage_error(
                "413",
                "Payload too large",
                "The object exceeded the maximum allowed size",
                code="EntityTooLarge",
            ), mimetype
        if state.allowed_mime_types is not None and mimetype.split(";")[0] not in state.allowed_mime_types:
            return _storage_error(
                "415", "invalid_mime_type", f"mime type {mimetype} is not supported", code="InvalidMimeType"
            ), mimetype
        objects = state.buckets[bucket]
        with state.lock:
            existing = objects.get(key)
            if (
                request.method == "POST"
                and existing is not None
                and request.headers.get("x-upsert") != "true"
            ):
                return _storage_error(
                    "409", "Duplicate", "The resource already exists", code="KeyAlreadyExists"
                ), mimetype
            object_id = existing[2] if existing else str(uuid.uuid4())
            objects[key] = (data, mimetype, object_id)
            state.written.pop(f"{bucket}/{key}", None)  # written now
        return JSONResponse({"Key": f"{bucket}/{key}", "Id": object_id}), mimetype

    async def download(request: Request, body: bytes) -> tuple[Response, str | None]:
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        if bucket not in state.buckets:
            return _bucket_missing(), None
        with state.lock:
            entry = state.buckets[bucket].get(key) if visible(request, bucket) else None
        if entry is None:
            return _not_found(), None
        # The stored type as is: Starlette's media_type would append "; charset=utf-8" to text/*.
        return Response(entry[0], headers={"content-type": entry[1]}), None

    async def list_objects(request: Request, body: bytes) -> tuple[Response, str | None]:
        bucket = request.path_params["bucket"]
        if not visible(request, bucket):  # a missing bucket or an RLS-limited key: 200 [], not an error
            return JSONResponse([]), None
        options = json.loads(body or b"{}")
        prefix = str(options.get("prefix") or "").strip("/")
        folder = f"{prefix}/" if prefix else ""
        limit, offset = int(options.get("limit", 100)), int(options.get("offset", 0))
        search = str(options.get("search") or "").lower()
        descending = (options.get("sortBy") or {}).get("order") == "desc"
        rows: dict[str, dict[str, Any]] = {}
        with state.lock:
            for key, entry in state.buckets[bucket].items():
                if not key.startswith(folder):
                    continue
                rest = key[len(folder) :]
                name, slash, _ = rest.partition("/")
                if slash:  # a "folder": only its name, like Storage's search function
                    rows.setdefault(
                        name,
                        {
                            "name": name,
                            "id": None,
                            "updated_at": None,
                            "created_at": None,
                            "last_accessed_at": None,
                            "metadata": None,
                        },
                    )
                else:
                    rows[name] = _object_row(bucket, name, key, entry, state.written.get(f"{bucket}/{key}"))
        names = sorted((n for n in rows if n.lower().startswith(search)), reverse=descending)
        return JSONResponse([rows[n] for n in names[offset : offset + limit]]), None

    async def remove(request: Request, body: bytes) -> tuple[Response, str | None]:
        bucket = request.path_params["bucket"]
        prefixes = json.loads(body or b"{}").get("prefixes") or []
        if not prefixes:
            return _storage_error(
                "400",
                "InvalidRequest",
                "body/prefixes must NOT have fewer than 1 items",
                code="InvalidRequest",
            ), None
        if not visible(request, bucket):  # a missing bucket or an RLS-limited key: 200 [], nothing removed
            return JSONResponse([]), None
        removed = []
        with state.lock:
            for key in prefixes:
                entry = state.buckets[bucket].pop(key, None)
                if entry is not None:
                    removed.append(_object_row(bucket, key, key, entry))
        return JSONResponse(removed), None

    async def move_or_copy(request: Request, body: bytes) -> tuple[Response, str | None]:
        options = json.loads(body or b"{}")
        bucket = str(options.get("bucketId") or "")
        source, target = str(options.get("sourceKey") or ""), str(options.get("destinationKey") or "")
        copy = request.url.path.endswith("/copy")
        with state.lock:
            objects = state.buckets.get(bucket) if visible(request, bucket) else None
            entry = objects.get(source) if objects is not None else None
            if objects is None or entry is None:
                return _not_found(), None
            upsert = copy and request.headers.get("x-upsert") == "true"
            if target in objects and not upsert:
                return _storage_error(
                    "409", "Duplicate", "The resource already exists", code="KeyAlreadyExists"
                ), None
            state.written.pop(f"{bucket}/{target}", None)
            if copy:
                objects[target] = (entry[0], entry[1], str(uuid.uuid4()))
            else:
                objects[target] = objects.pop(source)
        if copy:
            return JSONResponse({"Key": f"{bucket}/{target}"}), None
        return JSONResponse({"message": "Successfully moved"}), None

    def endpoint(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k not in _SECRET_HEADERS}
            path = request.url.path

            def record(status: int | None, fault: str | None = None, file_type: str | None = None) -> None:
                with state.lock:
                    state.requests.append(
                        RecordedRequest(request.method, path, headers, status, fault, file_type, len(body))
                    )

            with state.lock:
                fault = state.faults[0] if state.faults else None
                if fault is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        state.faults.pop(0)
            if fault is not None:
                if fault.kind == "timeout":
                    record(None, "timeout")
                    assert state.shutdown is not None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(state.shutdown.wait(), state.hang_seconds)
                    return Response(status_code=504)
                if fault.kind == "gateway_html":
                    record(fault.gateway_status, "gateway_html")
                    return HTMLResponse(GATEWAY_HTML, status_code=fault.gateway_status)
                status = int(fault.kind)
                if status >= 500 or status == 429:
                    response: Response = JSONResponse(
                        {"statusCode": str(status), "error": "injected", "message": f"injected {status}"},
                        status_code=status,
                    )
                else:
                    response = _storage_error(str(status), "injected", f"injected {status}")
                record(response.status_code, str(status))
                return response
            request.state.role = _role(state, request)
            if request.state.role is None:
                # A refused key: 403 everywhere, except that a download says "Bucket not found".
                response = _bucket_missing() if request.method == "GET" else unauthorized()
                record(response.status_code)
                return response
            response, file_type = await handler(request, body)
            record(response.status_code, None, file_type)
            return response

        return run

    return Starlette(
        routes=[
            Route("/storage/v1/object/list/{bucket}", endpoint(list_objects), methods=["POST"]),
            Route("/storage/v1/object/move", endpoint(move_or_copy), methods=["POST"]),
            Route("/storage/v1/object/copy", endpoint(move_or_copy), methods=["POST"]),
            Route("/storage/v1/object/{bucket}/{key:path}", endpoint(upload), methods=["POST", "PUT"]),
            Route("/storage/v1/object/{bucket}/{key:path}", endpoint(download), methods=["GET"]),
            Route("/storage/v1/object/{bucket}", endpoint(remove), methods=["DELETE"]),
        ]
    )


class SupabaseStorageDouble(ServedApp):
    """Supabase Storage on 127.0.0.1 (a free port), as a context manager.

    ``url`` is what ``create_client`` takes; ``objects`` is the first bucket's content
    (key -> (bytes, content type)); ``requests`` the log; ``fail_next`` injects faults.
    ``anon_key`` is accepted but limited by row-level security (sees and removes nothing).
    """

    server_name = "supabase-storage-double"

    def __init__(
        self,
        service_key: str,
        buckets: Iterable[str] = ("preauth-uploads",),
        anon_key: str | None = DEFAULT_ANON_KEY,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        allowed_mime_types: Iterable[str] | None = None,
        hang_seconds: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        self.buckets = tuple(buckets)
        self.state = _State(
            service_key=service_key,
            anon_key=anon_key,
            buckets={name: {} for name in self.buckets},
            max_object_bytes=max_object_bytes,
            allowed_mime_types=frozenset(allowed_mime_types) if allowed_mime_types is not None else None,
            hang_seconds=hang_seconds,
        )

    def build_asgi_app(self) -> Any:
        return build_app(self.state)

    # --- test API ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The project URL to give ``create_client`` (Storage lives under ``/storage/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def objects(self) -> dict[str, tuple[bytes, str]]:
        """A snapshot of the first bucket: key -> (bytes, content type)."""
        return self.bucket_objects(self.buckets[0])

    def bucket_objects(self, bucket: str) -> dict[str, tuple[bytes, str]]:
        with self.state.lock:
            return {key: (data, ctype) for key, (data, ctype, _) in self.state.buckets[bucket].items()}

    def put_object(
        self,
        key: str,
        data: bytes,
        content_type: str = "text/csv",
        bucket: str | None = None,
        written: datetime | None = None,
    ) -> None:
        """Seed an object directly (no request logged); ``written`` back-dates its ``updated_at``."""
        bucket = bucket or self.buckets[0]
        with self.state.lock:
            self.state.buckets[bucket][key] = (data, content_type, str(uuid.uuid4()))
            if written is not None:
                self.state.written[f"{bucket}/{key}"] = written
            else:
                self.state.written.pop(f"{bucket}/{key}", None)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log, in arrival order."""
        with self.state.lock:
            return list(self.state.requests)

    def fail_next(self, n: int = 1, status: int | str = 503, *, gateway_status: int = 502) -> None:
        """The next ``n`` requests fail: an int status (5xx/429 as that HTTP status with a JSON body,
        other codes Storage-style as 400 + string ``statusCode``), ``"timeout"`` (hang for
        ``hang_seconds`` or until shutdown; the client times out first) or ``"gateway_html"`` (an HTML
        page with HTTP ``gateway_status``). Faults queue up in call order."""
        if status not in ("timeout", "gateway_html") and not isinstance(status, int):
            raise ValueError(f"unknown fault {status!r}")
        with self.state.lock:
            self.state.faults.append(_Fault(n, status, gateway_status))

    def reset(self) -> None:
        """Forget requests, faults and objects."""
        with self.state.lock:
            self.state.requests.clear()
            self.state.faults.clear()
            self.state.written.clear()
            for objects in self.state.buckets.values():
                objects.clear()
