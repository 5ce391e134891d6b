"""A Klaviyo REST client that is fast up to Klaviyo's own limits and never loses an error.

Plain Python on httpx, no Dagster. One client per account (Klaviyo's limits are per account, so
everything sharing a client shares its pacing); thread-safe, so one client can fetch in parallel.

- Pacing per rate-limit group from the spec's ``x-klaviyo-ratelimit`` (see ``pacing.py``), so a normal
  run meets no 429 at all.
- Given a ``ReportCallLedger`` (``ledger.py``), the groups with a daily window — the report endpoints,
  1/s, 2/min and 225/day per account — are paced by the ledger in the ingest database instead, which
  counts every run's and process's calls of the account: a new run never lands in the previous run's
  steady window, and a full daily quota is waited out (``on_long_wait`` says so) instead of failing.
  Without a ledger (lookups, tests, no database) these groups are paced in-process like the others,
  and so they are, after one warning, when the ledger's database fails.
- A 429 anyway: wait what Klaviyo asks, plus jitter — the ``Retry-After`` header, or when that is
  missing the throttled body's ``errors[].detail`` ("Expected available in 37 seconds."); only when
  neither says, capped backoff. A wait longer than ``max_wait_seconds`` (the daily report quota says
  hours) fails at once, without sleeping, with "daily quota exhausted for <endpoint>": with a ledger
  our own calls never get there, so such a 429 means someone else spent the account's quota.
- 5xx (not 501), timeouts, connection errors and unreadable bodies: retried a bounded number of
  times with capped exponential backoff and jitter.
- Pages from Klaviyo's edge (CDN) rather than the API — a 403 or a retried 5xx whose body is not a
  JSON:API error document, e.g. Cloudflare's HTML "403 Forbidden" — are transient and retried the
  same way; if they persist, ``KlaviyoUnavailableError`` says the edge kept answering with a non-JSON
  page (and its title), not that the key lacks a scope.
- Not retried: 401, a JSON:API 403 (``permission_denied``: the key lacks a scope) and every other 4xx,
  HTML or not.
- Errors carry the endpoint and Klaviyo's ``errors[]``, never the key.

The rules come from ``../shared/contracts/klaviyo-api.md`` ("Errors" and "Rate limits").
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx

from klaviyo_dagster.backoff import jittered_backoff
from klaviyo_dagster.klaviyo.errors import (
    KlaviyoAuthError,
    KlaviyoConfigError,
    KlaviyoDataError,
    KlaviyoDisabledError,
    KlaviyoError,
    KlaviyoErrorDetail,
    KlaviyoQuotaWouldWait,
    KlaviyoRequestError,
    KlaviyoThrottledError,
    KlaviyoUnavailableError,
)
from klaviyo_dagster.klaviyo.jsonapi import Document
from klaviyo_dagster.klaviyo.ledger import (
    CallLedgerError,
    LedgerSlot,
    LongWaitHook,
    ReportCallLedger,
    ResumeHook,
)
from klaviyo_dagster.klaviyo.pacing import GroupPacer, PacingWaitTooLong
from klaviyo_dagster.klaviyo.spec import RateLimit, Window, match_operation
from klaviyo_dagster.klaviyo.stats import ClientStats

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"

# Calls to an operation outside the spec extract are paced at Klaviyo's most conservative tier (XS).
_UNKNOWN_OPERATION_LIMIT = RateLimit((Window("burst", 1, 1), Window("steady", 15, 60)))
_NOT_RETRIED_5XX = {501}
# "Expected available in 37 seconds." — Klaviyo's throttled detail; tolerant of other wordings.
_THROTTLED_WAIT = re.compile(
    r"\bin\s+(\d[\d,]*(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b", re.IGNORECASE
)
_WAIT_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up. Backoff is ``base * 2**attempt`` capped, with jitter."""

    max_retries: int = 5  # for 5xx, timeouts, connection errors and unreadable bodies
    max_throttle_retries: int = 8  # 429s in a row for one call
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    max_wait_seconds: float = 600.0  # longest single wait (pacing or Retry-After) before failing


def resolve_api_key(api_key: str | None) -> str:
    """The key stripped; ``KlaviyoConfigError`` saying where to set one when it is missing or blank."""
    if api_key and api_key.strip():
        return api_key.strip()
    raise KlaviyoConfigError(
        "No Klaviyo API key: set KLAVIYO_API_KEY_PRIVATE (or KLAVIYO_API_KEY) to a private key "
        "with read scopes, or pass api_key explicitly."
    )


class ReadCache(Protocol):
    """Where a client finds answers it need not ask Klaviyo for again (``producers/shared.py``)."""

    def lookup(self, method: str, path: str, query: str) -> dict[str, Any] | None: ...

    def remember(self, method: str, path: str, query: str, document: Mapping[str, Any]) -> None: ...


# How a kept 404 is told from a kept document (a JSON:API document has no such member).
_NOT_FOUND = "klaviyo_dagster:not_found"


def _refuse_daily_wait(group: str, wait_seconds: float, used: int, limit: int) -> None:
    raise KlaviyoQuotaWouldWait(
        f"{used} of {limit} daily report calls used; the next frees in {wait_seconds:.0f} s", endpoint=group
    )


@cache
def _verified_tls() -> ssl.SSLContext:
    """The TLS context (certificate and host name checks on) that httpx builds for ``verify=True``,
    built once per process: httpx reads ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` then, for the process's
    first client (restart a process to change them). Built per client, loading the certificate
    store costs about 30 ms: a run opens a client per file step, and the sensors one per account
    each pass. httpx takes a context as ``verify`` (its docs, "SSL"); one context serves many
    clients and threads."""
    return httpx.create_ssl_context()


class KlaviyoClient:
    """Talks to one Klaviyo account. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        revision: str = DEFAULT_REVISION,
        enabled: bool = True,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        time_scale: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        ledger: ReportCallLedger | None = None,
        on_long_wait: LongWaitHook | None = None,
        on_resume: ResumeHook | None = None,
    ) -> None:
        """
        ``time_scale`` is real seconds per Klaviyo second: 1.0 against Klaviyo; the simulator's
        ``--time-scale`` value against a simulator whose windows are shrunk for benchmarks.

        ``enabled``: the operators' switch (``KLAVIYO_ENABLE``); False refuses to build a client
        (``KlaviyoDisabledError``), so no call leaves.

        ``ledger``: the account's report call ledger (same ``time_scale``); the report groups are then
        paced across processes, and a full daily quota calls ``on_long_wait(group, wait_seconds, used,
        limit)`` and waits, then ``on_resume(group)``, instead of failing.
        """
        if not enabled:
            raise KlaviyoDisabledError("Klaviyo source disabled: set KLAVIYO_ENABLE=true")
        if ledger is not None and ledger.time_scale != time_scale:
            raise KlaviyoConfigError(
                f"the report call ledger counts time at time_scale {ledger.time_scale:g}, the client at "
                f"{time_scale:g}: give both the same"
            )
        self._ledger = ledger
        self._on_long_wait = on_long_wait
        self._on_resume = on_resume
        self._api_key = resolve_api_key(api_key)
        self.base_url = _validated_base_url(base_url)
        self.revision = revision
        self.retry = retry or RetryPolicy()
        self.time_scale = time_scale
        self.stats = ClientStats()
        # Answers other runs of the account already had today (producers/shared.py); None: always ask.
        self.read_cache: ReadCache | None = None
        self.answers_reused = 0  # answers from read_cache: not calls, so not in ``stats``
        self._daily_waits = True
        # Klaviyo's limits are per account: every client of one account in this process paces together.
        self._account_fingerprint = hashlib.sha256(f"{self.base_url} {self._api_key}".encode()).hexdigest()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            headers={
                "Authorization": f"Klaviyo-API-Key {self._api_key}",
                "revision": self.revision,
                "accept": JSON_API,
                "user-agent": "klaviyo-dagster/0.1",
            },
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            verify=_verified_tls() if transport is None else True,  # a transport brings its own
        )

    def __repr__(self) -> str:  # never show the key
        return f"KlaviyoClient(base_url={self.base_url!r}, revision={self.revision!r})"

    def __enter__(self) -> KlaviyoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def without_daily_waits(self) -> Iterator[None]:
        """Inside, a report call that would wait for the account's daily quota (in the ledger) raises
        ``KlaviyoQuotaWouldWait`` instead: for calls made ahead for other runs, which must not keep
        this one waiting."""
        self._daily_waits = False
        try:
            yield
        finally:
            self._daily_waits = True

    # --- single calls ----------------------------------------------------------------------------

    def get(self, path_or_url: str, params: Mapping[str, str] | None = None) -> Document:
        """One GET; answered from ``read_cache`` when it holds the same path and query."""
        if self.read_cache is None:
            return Document(self._request("GET", path_or_url, params=params))
        url = self._http.build_request("GET", path_or_url, params=params).url
        ask = lambda: self._request("GET", path_or_url, params=params)  # noqa: E731
        return self._cached(self.read_cache, "GET", url.path, url.query.decode(), ask)

    def post(self, path: str, body: dict[str, Any], params: Mapping[str, str] | None = None) -> Document:
        """One POST; a report answered from ``read_cache`` when it holds the same path, query and body."""
        if self.read_cache is None:
            return Document(self._request("POST", path, params=params, body=body))
        query = f"{httpx.QueryParams(params or {})}\n{json.dumps(body, sort_keys=True)}"
        ask = lambda: self._request("POST", path, params=params, body=body)  # noqa: E731
        return self._cached(self.read_cache, "POST", path, query, ask)

    def _cached(
        self, cache: ReadCache, method: str, path: str, query: str, ask: Callable[[], dict[str, Any]]
    ) -> Document:
        """The kept answer of the request, else Klaviyo's (kept). A 404 is an answer too (a campaign
        audience is looked up as a list first, and a segment's id is not one): it is kept, and
        raised again as the same ``KlaviyoRequestError``."""
        kept = cache.lookup(method, path, query)
        if kept is not None:
            self.answers_reused += 1
            if _NOT_FOUND in kept:
                raise KlaviyoRequestError(kept[_NOT_FOUND], endpoint=f"{method} {path}", status=404)
            return Document(kept)
        try:
            raw = ask()
        except KlaviyoRequestError as exc:
            if exc.status == 404:
                cache.remember(method, path, query, {_NOT_FOUND: str(exc)})
            raise
        cache.remember(method, path, query, raw)
        return Document(raw)

    # --- pagination ------------------------------------------------------------------------------

    def iter_pages(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[Document]:
        """Every page of a cursor-paginated GET, following ``links.next`` verbatim.

        ``links.next`` already repeats every query parameter, so nothing is re-added to it. A next
        link already followed raises ``KlaviyoDataError`` rather than loop for ever (each link is
        remembered as a 64-bit hash: about 60 bytes per page, 1.2 MB for 2M profiles).
        """
        document = self.get(path, params)
        yield document
        seen = _SeenCursors(f"GET {path}")
        while document.next_url:
            seen.check(document.next_url)
            document = self.get(document.next_url)
            yield document

    def iter_resources(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        for document in self.iter_pages(path, params):
            yield from document.data

    def iter_report_pages(self, path: str, body: dict[str, Any]) -> Iterator[Document]:
        """Every page of a reporting query; reports paginate with ``page_cursor`` from ``links.next``.

        A cursor already followed raises ``KlaviyoDataError``: looping would spend the account's
        daily report quota.
        """
        document = self.post(path, body)
        yield document
        seen = _SeenCursors(f"POST {path}")
        while document.next_url:
            cursor = parse_qs(urlsplit(document.next_url).query).get("page_cursor")
            if not cursor:
                raise KlaviyoUnavailableError(
                    f"Klaviyo's next link for POST {path} has no page_cursor; cannot read further pages",
                    endpoint=f"POST {path}",
                )
            seen.check(cursor[0])
            document = self.post(path, body, params={"page_cursor": cursor[0]})
            yield document

    # --- the request loop ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request = self._http.build_request(
            method,
            path_or_url,
            params=params,
            content=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": JSON_API} if body is not None else None,
        )
        self._check_same_origin(request.url)
        endpoint = f"{method} {request.url.path}"
        group, limit = self._rate_limit_for(method, request.url)
        failures = throttles = 0
        while True:
            release = self._acquire(group, limit, endpoint)
            failure: str | None = None
            try:
                self.stats.add(group, calls=1)
                response = self._http.send(request)
                payload = self._payload(response)
            except (httpx.TimeoutException, httpx.TransportError, _Unreadable) as exc:
                failure = _describe_transport_error(exc)
            finally:
                release()
            if failure is not None:
                failures += 1
                self._backoff_or_raise(failures, group, endpoint, failure)
                continue
            if response.status_code == 429:
                throttles += 1
                self._wait_retry_after(response, payload, throttles, group, endpoint)
                continue
            if _is_retried_5xx(response.status_code) or _is_edge_page(response.status_code, payload):
                failures += 1
                self._retry_failed_response(failures, group, endpoint, response, payload)
                continue
            if response.status_code >= 400:
                raise self._error_for(response, payload, endpoint)
            if not isinstance(payload, dict):
                failures += 1
                self._backoff_or_raise(failures, group, endpoint, "response body is not a JSON object")
                continue
            return payload

    def _acquire(self, group: str, limit: RateLimit, endpoint: str) -> Callable[[], None]:
        """Waits until a call of ``group`` may be sent; returns what to call once it is done."""
        ledger = self._ledger
        if ledger is not None and ledger.covers(group, limit):
            slot = self._acquire_ledger_slot(ledger, group, limit, endpoint)
            if slot is not None:
                return lambda: self._release_ledger_slot(ledger, slot, endpoint)
        pacer = _shared_pacer((self._account_fingerprint, self.time_scale, group), limit, self.time_scale)
        self._acquire_slot(pacer, group, endpoint)
        return pacer.release

    def _acquire_ledger_slot(
        self, ledger: ReportCallLedger, group: str, limit: RateLimit, endpoint: str
    ) -> LedgerSlot | None:
        """A slot from the account's report call ledger (see ``ledger.py``); a full daily quota is
        waited out, announced through ``on_long_wait``, rather than failing.

        None when the ledger's database fails (unreachable, not migrated, no rights on the table):
        the client then paces in-process as without a ledger, and says so once. The files do not
        depend on the ledger, so its failure does not fail them.
        """
        try:
            slot = ledger.acquire(
                group,
                limit,
                max_wait_seconds=self.retry.max_wait_seconds,
                on_long_wait=self._on_long_wait if self._daily_waits else _refuse_daily_wait,
                on_resume=self._on_resume if self._daily_waits else None,
            )
        except CallLedgerError as exc:
            if self._ledger is not None:
                self._ledger = None
                log.warning(
                    "the report call ledger is unavailable (%s); this client's report calls (%s and "
                    "others) are paced in this process only, not counted across runs",
                    exc,
                    endpoint,
                )
            return None
        if slot.waited_seconds:
            self.stats.add(group, paced_seconds=slot.waited_seconds)
        return slot

    def _release_ledger_slot(self, ledger: ReportCallLedger, slot: LedgerSlot, endpoint: str) -> None:
        """Records the call's end; if the database fails, its row counts as in flight until stale."""
        try:
            ledger.release(slot)
        except CallLedgerError as exc:
            log.warning(
                "could not record the end of a call to %s in the report call ledger: %s", endpoint, exc
            )

    def _acquire_slot(self, pacer: GroupPacer, group: str, endpoint: str) -> None:
        try:
            waited = pacer.acquire(self.retry.max_wait_seconds)
        except PacingWaitTooLong as exc:
            raise KlaviyoThrottledError(
                f"{exc.window.name} quota exhausted for {endpoint}: {exc.window.limit} calls per "
                f"{exc.window.seconds} s already used; the next slot frees in {exc.wait_seconds:.0f} s, "
                f"over the {self.retry.max_wait_seconds:.0f} s cap",
                endpoint=endpoint,
                status=429,
            ) from None
        if waited:
            self.stats.add(group, paced_seconds=waited)

    def _wait_retry_after(
        self, response: httpx.Response, payload: Any, throttles: int, group: str, endpoint: str
    ) -> None:
        """Wait out a 429 as Klaviyo asks, or fail at once when that is over the cap.

        contracts/klaviyo-api.md, "Rate limits": honour Retry-After (or, without the header, the wait
        the throttled body states); a daily quota's wait is hours, so fail clearly instead of sleeping.
        """
        self.stats.add(group, throttled=1)
        details = self._details(payload)
        retry_after, source = _klaviyo_wait_seconds(response, details)
        if retry_after is None:
            retry_after, source = self._backoff_delay(throttles) / self.time_scale, "backoff"
        wait = retry_after * self.time_scale
        if wait > self.retry.max_wait_seconds:
            raise KlaviyoThrottledError(
                f"daily quota exhausted for {endpoint}: Klaviyo asked to retry after {retry_after:.0f} s "
                f"({source}), over the {self.retry.max_wait_seconds:g} s cap; "
                "run again once the quota resets",
                endpoint=endpoint,
                status=429,
                errors=details,
            )
        if throttles > self.retry.max_throttle_retries:
            raise KlaviyoThrottledError(
                f"Klaviyo kept rate-limiting {endpoint}: {throttles} responses 429 in a row",
                endpoint=endpoint,
                status=429,
                errors=details,
            )
        wait += random.uniform(
            0, min(1.0, 0.1 * wait) + 0.05 * self.time_scale
        )  # jitter or simulated data, not security  # nosec B311
        log.warning("Klaviyo throttled %s; waiting %.1f s (%s: %g s)", endpoint, wait, source, retry_after)
        self.stats.add(group, retries=1, retry_after_seconds=wait)
        time.sleep(wait)

    def _retry_failed_response(
        self, failures: int, group: str, endpoint: str, response: httpx.Response, payload: Any
    ) -> None:
        """Back off after a retried 5xx or an edge page, or raise once the retries are spent.

        contracts/klaviyo-api.md, "Errors": error bodies are not always JSON — the CDN in front of the
        API answers with its own HTML pages, which say nothing about the key or the request.
        """
        if _is_error_document(payload):
            reason = self._error_text(response, payload)
            self._backoff_or_raise(failures, group, endpoint, reason, response, payload)
            return
        status = response.status_code
        page = f"a {_body_kind(response, payload)} {status} page {self._page_summary(response)}"
        self._backoff_or_raise(
            failures,
            group,
            endpoint,
            f"Klaviyo's edge (CDN) answered with {page}",
            response,
            payload,
            gave_up=f"Klaviyo's edge (CDN) kept answering with {page} instead of the API "
            "(usually transient: run again later)",
        )

    def _backoff_or_raise(
        self,
        failures: int,
        group: str,
        endpoint: str,
        reason: str,
        response: httpx.Response | None = None,
        payload: Any = None,
        *,
        gave_up: str | None = None,
    ) -> None:
        """Sleep a capped, jittered backoff, or raise ``KlaviyoUnavailableError`` past ``max_retries``.

        ``gave_up`` replaces ``reason`` in the final error when the persistence itself is the news.
        """
        if failures > self.retry.max_retries:
            raise KlaviyoUnavailableError(
                self._redact(f"Klaviyo {endpoint} failed after {failures} attempts: {gave_up or reason}"),
                endpoint=endpoint,
                status=response.status_code if response is not None else None,
                errors=self._details(payload),
            )
        delay = self._backoff_delay(failures)
        log.warning(
            "Klaviyo %s failed (%s); retry %d in %.2f s", endpoint, self._redact(reason), failures, delay
        )
        self.stats.add(group, retries=1, backoff_seconds=delay)
        time.sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        return jittered_backoff(attempt, self.retry.backoff_base_seconds, self.retry.backoff_cap_seconds)

    # --- responses and errors --------------------------------------------------------------------

    def _payload(self, response: httpx.Response) -> Any:
        """The parsed JSON body; raises _Unreadable for a success whose body is not JSON."""
        if response.status_code == 204 or not response.content:
            return {}
        parsed = _json_or_none(response)
        if parsed is None and response.status_code < 400:
            raise _Unreadable(
                f"HTTP {response.status_code} with an unreadable body "
                f"({response.headers.get('content-type', 'no content-type')})"
            )
        return parsed

    def _error_for(self, response: httpx.Response, payload: Any, endpoint: str) -> KlaviyoError:
        status = response.status_code
        kind: type[KlaviyoError] = KlaviyoAuthError if status in (401, 403) else KlaviyoRequestError
        hint = {
            401: " — check the Klaviyo private key (KLAVIYO_API_KEY_PRIVATE)",
            403: " — the key lacks a scope this call needs (give it read access)",
            410: f" — revision {self.revision} is retired; set KLAVIYO_API_REVISION to a current one",
        }.get(status, "")
        return kind(
            self._redact(
                f"Klaviyo {endpoint} returned {status}: {self._error_text(response, payload)}{hint}"
            ),
            endpoint=endpoint,
            status=status,
            errors=self._details(payload),
        )

    def _error_text(self, response: httpx.Response, payload: Any) -> str:
        details = self._details(payload)
        if details:
            return "; ".join(d.describe() for d in details)
        content_type = response.headers.get("content-type", "no content-type")
        return self._redact(f"non-JSON body ({content_type}): {_page_title(response)}")

    def _page_summary(self, response: httpx.Response) -> str:
        """``"403 Forbidden" (text/html)`` — a non-JSON body's title and content type, for messages."""
        content_type = response.headers.get("content-type", "no content-type")
        return self._redact(f'"{_page_title(response)}" ({content_type})')

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _details(self, payload: Any) -> tuple[KlaviyoErrorDetail, ...]:
        """Klaviyo's ``errors[]``, scrubbed of the key: a server (or a proxy) may echo the
        Authorization header in a detail, and these details travel into failure metadata."""
        return tuple(
            replace(
                detail,
                title=self._redact(detail.title) if detail.title else detail.title,
                detail=self._redact(detail.detail) if detail.detail else detail.detail,
                code=self._redact(detail.code) if detail.code else detail.code,
                source=json.loads(self._redact(json.dumps(detail.source))),
            )
            for detail in _error_details(payload)
        )

    # --- plumbing --------------------------------------------------------------------------------

    def _rate_limit_for(self, method: str, url: httpx.URL) -> tuple[str, RateLimit]:
        """The rate-limit group a call counts against, and its limits from the spec."""
        operation = match_operation(method, url.path)
        if operation is None:
            return f"{method} {url.path}", _UNKNOWN_OPERATION_LIMIT
        params = {key: value for key, value in url.params.multi_items()}
        return operation.rate_limit_for(params)

    def _check_same_origin(self, url: httpx.URL) -> None:
        base = httpx.URL(self.base_url)
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise KlaviyoRequestError(
                f"refusing to send the Klaviyo key to {url.scheme}://{url.host}: "
                f"not the configured base URL {self.base_url}",
                endpoint=f"GET {url.path}",
            )


_PACERS: dict[tuple[str, float, str], GroupPacer] = {}
_PACERS_LOCK = threading.Lock()


def _shared_pacer(key: tuple[str, float, str], limit: RateLimit, time_scale: float) -> GroupPacer:
    with _PACERS_LOCK:
        if key not in _PACERS:
            _PACERS[key] = GroupPacer(limit, time_scale=time_scale)
        return _PACERS[key]


class _SeenCursors:
    """The next links (or cursors) one paging loop has followed, as hashes."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._seen: set[int] = set()

    def check(self, cursor: str) -> None:
        key = hash(cursor)
        if key in self._seen:
            raise KlaviyoDataError(
                f"Klaviyo's next link for {self.endpoint} repeats a page already read "
                f"(after {len(self._seen)} pages); stopped rather than loop. Run again later.",
                endpoint=self.endpoint,
            )
        self._seen.add(key)


class _Unreadable(Exception):
    """A success response whose body could not be parsed; retried like a 5xx."""


def _validated_base_url(raw: str) -> str:
    parsed = urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise KlaviyoConfigError(
            f"KLAVIYO_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}, got {raw!r}"
        )
    return raw.rstrip("/")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _error_details(payload: Any) -> tuple[KlaviyoErrorDetail, ...]:
    if not isinstance(payload, dict) or not isinstance(payload.get("errors"), list):
        return ()
    return tuple(KlaviyoErrorDetail.from_json(e) for e in payload["errors"] if isinstance(e, dict))


def _is_retried_5xx(status: int) -> bool:
    """contracts/klaviyo-api.md, "Rate limits": retry 5xx, but not 501."""
    return status >= 500 and status not in _NOT_RETRIED_5XX


def _is_error_document(payload: Any) -> bool:
    """A JSON:API error document (``{"errors": [...]}``): an answer from the API itself."""
    return isinstance(payload, dict) and isinstance(payload.get("errors"), list)


def _is_edge_page(status: int, payload: Any) -> bool:
    """A 403 (or retried 5xx) that is not a JSON:API error document: a page from Klaviyo's CDN.

    contracts/klaviyo-api.md, "Errors": a 403 is sometimes an HTML page from the CDN; the API's own
    403 (``permission_denied``, a missing scope) is a JSON:API error document and is not retried.
    """
    return (status == 403 or _is_retried_5xx(status)) and not _is_error_document(payload)


def _body_kind(response: httpx.Response, payload: Any) -> str:
    return "non-JSON" if payload is None or not response.content else "non-JSON:API"


def _page_title(response: httpx.Response) -> str:
    """An HTML page's ``<title>``, else the start of the body, else the reason phrase."""
    title = re.search(r"<title>(.*?)</title>", response.text, re.IGNORECASE | re.DOTALL)
    summary = title.group(1).strip() if title else response.text.strip()[:200]
    return summary or response.reason_phrase


def parse_throttled_wait(detail: str | None) -> float | None:
    """Seconds from a throttled error's detail, e.g. "Expected available in 37 seconds." → 37.0.

    contracts/klaviyo-api.md, "Rate limits": a 429 carries the ``throttled`` body; when it comes
    without ``Retry-After``, the body's "Expected available in N second(s)" is the wait to honour.
    N may be an integer, a decimal or have thousands separators ("1,200 seconds"), in seconds,
    minutes or hours; None when the detail states no wait.
    """
    match = _THROTTLED_WAIT.search(detail or "")
    if match is None:
        return None
    amount, unit = match.groups()
    return float(amount.replace(",", "")) * _WAIT_UNIT_SECONDS[unit[0].lower()]


def _klaviyo_wait_seconds(
    response: httpx.Response, details: tuple[KlaviyoErrorDetail, ...]
) -> tuple[float | None, str]:
    """The wait a 429 asks for, and where it came from: the Retry-After header, else the body."""
    header = _retry_after_seconds(response)
    if header is not None:
        return header, "Retry-After header"
    for detail in details:
        for text in (detail.detail, detail.title):
            seconds = parse_throttled_wait(text)
            if seconds is not None:
                return seconds, "throttled body"
    return None, "none"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe_transport_error(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
