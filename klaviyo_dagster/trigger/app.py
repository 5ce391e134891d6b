"""The HTTP service: ``/api/dashboard/update`` (GET and POST) and ``/api/dashboard/update/status``.

Checks, in the old endpoint's order: ``KLAVIYO_ENABLE`` (501), the secret (401, constant-time; an
unset ``ADMIN_JOB_SECRET`` refuses everything), the body's size (413), the parameters (400 naming
the parameter; a live call without ``accountId`` before anything else; a date whose day is not over
for the account yet, ``readiness.py``), the account's Klaviyo key (400 ``Missing klaviyoApiKey``).
Without a date, the account's newest complete date is synced. A dry run then builds the three files
here and answers 200 (502 on a producer failure, 504 past the time limit); a live call launches or
finds the partition's run in Dagster and answers 202. Every answer is JSON; the log line of a
request never holds the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote, unquote_plus

import psycopg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from klaviyo_dagster.account_zones import zone_of
from klaviyo_dagster.accounts import AccountDirectory
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError
from klaviyo_dagster.processing.remote import SECRET_HEADER  # the web app's admin-secret header
from klaviyo_dagster.producers.sync import SyncFailed, dry_run
from klaviyo_dagster.readiness import AccountZone, DateNotComplete
from klaviyo_dagster.run_names import (
    ACCOUNT_PARTITION_TAG,
    ACCOUNT_TAG,
    ACCOUNTS_PARTITIONS_NAME,
    DATE_PARTITION_TAG,
    FILE_ASSET_NAMES,
    INGEST_JOB_NAME,
    PARTITION_TAG,
    partition_key_text,
)
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.tables import MissingTable
from klaviyo_dagster.trigger.claims import Claim, ClaimsNotMigrated, IdempotencyClaims, differences
from klaviyo_dagster.trigger.dagster_api import (
    IDEMPOTENCY_TAG,
    IN_PROGRESS,
    TRIGGER_TAG,
    DagsterApi,
    DagsterRefused,
    DagsterUnavailable,
    RunInfo,
)
from klaviyo_dagster.trigger.request import (
    OPTION_PARAMETERS,
    BadRequest,
    TriggerRequest,
    flatten_body,
    flatten_query,
    load_json,
    parse,
)
from klaviyo_dagster.trigger.settings import TriggerSettings

log = logging.getLogger("klaviyo_dagster.trigger")

UPDATE_PATH = "/api/dashboard/update"
STATUS_PATH = "/api/dashboard/update/status"
IDEMPOTENCY_HEADER = "x-idempotency-key"
TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret  # nosec B105
_RUN_ID = re.compile(r"[0-9a-fA-F-]{8,64}")
REDACTED = "[redacted]"
# Query parameters blanked in the log whatever their case or encoding: the secret's, and look-alikes.
_SECRET_NAME = re.compile(r"token|secret|password|key", re.IGNORECASE)
CLAIM_POLL_SECONDS = 0.05
_LAUNCH_IN_PROGRESS = {
    "error": "Launch in progress",
    "details": "another request with this idempotency key is launching its run; retry",
    "parameter": "idempotency",
}
# The ingest database not answering (psycopg's connection errors, and the redacted DatabaseConnectionError
# subclass) or the local SQLite file locked, unreadable or corrupt ("file is not a database" is a
# sqlite3.DatabaseError, the base of sqlite3.OperationalError).
DATABASE_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, sqlite3.DatabaseError)
# The run's parameters (``_claim_parameters``, compact JSON) on the run, so a request that finds the
# run in Dagster (not through its claim) can compare them too.
PARAMETERS_TAG = "klaviyo/trigger-parameters"
CLAIM_LOOKUP_SECONDS = 1.0  # how often a request waiting on a claim without a run id asks Dagster


class HttpError(Exception):
    """An answer other than 400 (which is BadRequest): its status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A JSON error answer ``{"error": message, **extra}``."""
    return JSONResponse({"error": message, **extra}, status_code=status)


class TriggerService:
    """The two endpoints; idempotency keys are claimed in the ingest database (``claims.py``), so any
    number of trigger processes launch one run per key."""

    def __init__(
        self,
        settings: TriggerSettings,
        dagster: DagsterApi,
        claims_factory: Callable[[], IdempotencyClaims] = IdempotencyClaims.from_env,
    ) -> None:
        self.settings = settings
        self.dagster = dagster
        self.claims_factory = claims_factory

    # --- the checks every request passes -----------------------------------------------------------

    def _gate(self, request: Request, *, token_allowed: bool) -> None:
        if not self.settings.klaviyo_enabled:
            raise HttpError(501, {"error": "Klaviyo source disabled"})
        expected = self.settings.secret
        given = request.headers.get(SECRET_HEADER)
        if given is None and token_allowed:
            given = request.query_params.get(TOKEN_PARAM)
        if expected is None or given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HttpError(401, {"error": "Unauthorized"})

    async def _json_body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise HttpError(413, {"error": "Request body too large", "limit": limit})

        async def read() -> bytes:
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, {"error": "Request body too large", "limit": limit})
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            raw = await asyncio.wait_for(read(), self.settings.body_read_timeout_seconds)
        except TimeoutError:
            raise HttpError(408, {"error": "Request body not received in time"}) from None
        except ClientDisconnect:
            raise HttpError(400, {"error": "Client disconnected"}) from None
        return load_json(raw, self.settings.max_json_depth)

    # --- /api/dashboard/update ---------------------------------------------------------------------

    async def update(self, request: Request) -> Response:
        """``/api/dashboard/update``: a dry run (200) or a live launch (202); GET and POST only."""
        self._gate(request, token_allowed=request.method == "GET")
        strict = request.method == "POST"
        if strict:
            params, default_mode = flatten_body(await self._json_body(request)), "dry-run"
        else:
            params, default_mode = flatten_query(request.query_params.multi_items()), "live"
        now = self.settings.clock()
        trigger = await run_in_threadpool(
            functools.partial(
                parse,
                params,
                default_mode=default_mode,
                idempotency_header=request.headers.get(IDEMPOTENCY_HEADER),
                default_date=functools.partial(self._newest_complete, now=now),
                strict_types=strict,
            )
        )
        if trigger.date_parameter is not None:
            await run_in_threadpool(self._check_complete, trigger, now)
        if trigger.is_live:
            return await self._live(trigger)
        return await self._dry_run(trigger)

    # --- which dates are complete (readiness.py) -----------------------------------------------------

    def _newest_complete(self, account_id: str | None, now: datetime) -> date:
        """The default partition date: the account's newest date complete at ``now``."""
        return self.settings.readiness.newest_complete(now, _zone(self.settings, account_id).name)

    def _check_complete(self, trigger: TriggerRequest, now: datetime) -> None:
        """400 naming the parameter when the date asked for is not complete for the account yet."""
        readiness, day = self.settings.readiness, trigger.partition_date
        first = self.settings.first_partition_date
        if day < first:  # a dry run too: no partition, and year 1 has no day before it to window
            raise BadRequest(
                f"{trigger.date_parameter} must be a partition date from {first}, got {day}",
                trigger.date_parameter,
            )
        if readiness.complete_everywhere(day, now):  # no need to know the zone (nor read the database)
            return
        account = _account(self.settings, trigger.account_id)
        try:
            readiness.check(
                day, now, _zone(self.settings, account), f"account {account or '(the environment key)'}"
            )
        except DateNotComplete as exc:
            raise BadRequest(
                f"{trigger.date_parameter}: {exc}",
                trigger.date_parameter,
                details={  # no readyAt for a date that is never complete (after 9999-12-31 somewhere)
                    **({"readyAt": exc.ready_at.isoformat()} if exc.ready_at is not None else {}),
                    "newestComplete": exc.newest_complete.isoformat(),
                },
            ) from None

    def _options(self, trigger: TriggerRequest) -> Any:
        """The request's options; the deployment's conversion metric when the request names none."""
        if trigger.options.conversion_metric_id is not None:
            return trigger.options
        return trigger.options.model_copy(update={"conversion_metric_id": self.settings.conversion_metric_id})

    async def _dry_run(self, trigger: TriggerRequest) -> Response:
        client = await run_in_threadpool(_dry_run_client, self.settings, trigger.account_id)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            None, functools.partial(_run_dry_run, client, self._options(trigger), trigger.partition_date)
        )
        try:
            result = await asyncio.wait_for(work, self.settings.dry_run_timeout_seconds)
        except TimeoutError:
            client.close()  # the worker's next Klaviyo call fails, so it stops instead of running on
            return error(
                504,
                "Timeout",
                details=f"the dry run took longer than {self.settings.dry_run_timeout_seconds:g} s",
            )
        except SyncFailed as exc:
            return error(502, exc.name, details=exc.details())
        return JSONResponse(result)

    async def _live(self, trigger: TriggerRequest) -> Response:
        """Claims the key (or finds its run), launches when claimed, answers 202; see ``claims.py``."""
        assert trigger.account_id is not None  # parse() refuses a live call without one
        account, day = trigger.account_id, trigger.partition_date
        first = self.settings.first_partition_date
        if day < first:  # complete dates are checked in update(): the newest key is today (UTC)
            raise BadRequest(f"end must be a partition date from {first}, got {day}", "end")
        await run_in_threadpool(
            _account_key, self.settings, account
        )  # 400 Missing klaviyoApiKey, before launching

        claims = await run_in_threadpool(self._claims)
        parameters = _claim_parameters(trigger)
        outcome = await self._claim(claims, trigger, parameters)
        if isinstance(outcome, RunInfo):
            return self._answer(trigger, outcome.run_id, outcome.status_word, outcome)
        try:
            run, existed = await self._launch_claimed(trigger, parameters)
        except BaseException:
            await self._release(claims, trigger, outcome)
            raise
        # The run exists: the claim is never given back (a retry would launch a second run), and the
        # caller gets its id whatever recording it does (a later request finds the run by its tags).
        await self._record(claims, trigger, outcome, run.run_id)
        return self._answer(trigger, run.run_id, run.status_word, run if existed else None)

    async def _record(
        self, claims: IdempotencyClaims, trigger: TriggerRequest, token: str, run_id: str
    ) -> None:
        """Stores the run id on the claim; a failure is logged only (the claim stays, without it)."""
        assert trigger.account_id is not None
        try:
            recorded = await run_in_threadpool(
                claims.record, trigger.account_id, trigger.idempotency_key, token, run_id
            )
        except Exception as exc:
            log.warning(
                "launched run %s for idempotency key %s but could not record it on the claim (%s); the "
                "claim stays, and the next request with the key finds the run in Dagster by its tags",
                run_id,
                trigger.idempotency_key,
                type(exc).__name__,
            )
            return
        if not recorded:
            log.warning(
                "the claim of idempotency key %s was taken over during its launch", trigger.idempotency_key
            )

    def _answer(
        self, trigger: TriggerRequest, run_id: str, status: str, existing: RunInfo | None
    ) -> Response:
        """The 202: the run's facts; ``repeated`` when the run existed before this request."""
        assert trigger.account_id is not None
        facts = (_facts_of(existing) if existing else None) or _run_facts(
            trigger.account_id, trigger.partition_date
        )
        body: dict[str, Any] = {**facts, "runId": run_id, "status": status}
        if existing is not None:
            body["repeated"] = True
        return JSONResponse({**body, "idempotencyKey": trigger.idempotency_key}, status_code=202)

    async def _claim(
        self, claims: IdempotencyClaims, trigger: TriggerRequest, parameters: dict[str, Any]
    ) -> str | RunInfo:
        """Our claim's token, or the run in progress for the key (same parameters); HttpError 409 else.

        Inserting the row is the atomic step: of two requests (in any processes) one inserts, the
        other reads the row: it waits while the first launches, returns the run while it is queued or
        running, and takes the row over (compare-and-set) once that run has finished. A row without
        a run id also has its run looked up in Dagster by tags (at most every CLAIM_LOOKUP_SECONDS):
        a launch whose run id could not be recorded is found, compared and recorded there.
        """
        assert trigger.account_id is not None
        account, key = trigger.account_id, trigger.idempotency_key
        deadline = time.monotonic() + self.settings.claim_wait_seconds
        next_lookup = time.monotonic()
        while True:
            token = await run_in_threadpool(claims.insert, account, key, parameters)
            if token is not None:
                return token
            claim = await run_in_threadpool(claims.read, account, key)
            if claim is None and time.monotonic() <= deadline:  # released meanwhile: insert again
                continue
            if claim is None:
                raise HttpError(409, _LAUNCH_IN_PROGRESS)
            if claim.run_id is None and time.monotonic() >= next_lookup:
                # Launching, or launched and its run id not recorded (the database failed then):
                # the run, if Dagster has it, is found by its tags.
                next_lookup = time.monotonic() + CLAIM_LOOKUP_SECONDS
                found = await self._run_of_claim(account, key, claim)
                if found is not None:
                    _refuse_other_parameters(
                        key, _parameters_of(found, claim.parameters), parameters, run_id=found.run_id
                    )
                    await self._record_found(claims, account, key, claim, found)
                    return found
            if claim.run_id is None:
                _refuse_other_parameters(key, claim.parameters, parameters)
                if claim.age_seconds(claims.now()) > self.settings.claim_stale_seconds:
                    token = await run_in_threadpool(claims.take_over, account, key, claim, parameters)
                elif time.monotonic() > deadline:
                    raise HttpError(409, _LAUNCH_IN_PROGRESS)
                else:
                    await asyncio.sleep(CLAIM_POLL_SECONDS)
                    continue
            else:
                run = await self._dagster(self.dagster.run, claim.run_id)
                if run is not None and run.status in IN_PROGRESS:
                    previous = _parameters_of(run, claim.parameters)
                    _refuse_other_parameters(key, previous, parameters, run_id=run.run_id)
                    return run
                token = await run_in_threadpool(claims.take_over, account, key, claim, parameters)
            if token is not None:
                return token

    async def _run_of_claim(self, account: str, key: str, claim: Claim) -> RunInfo | None:
        """The queued or running run of a claim whose run id is not recorded, from Dagster by its tags."""
        tags = {ACCOUNT_TAG: account, IDEMPOTENCY_TAG: key}
        end = claim.parameters.get("end")
        with contextlib.suppress(TypeError, ValueError):  # not a date: by account and key only
            tags[PARTITION_TAG] = partition_key_text(account, date.fromisoformat(end))
        return await self._dagster(self.dagster.find_in_progress, tags)

    async def _record_found(
        self, claims: IdempotencyClaims, account: str, key: str, claim: Claim, run: RunInfo
    ) -> None:
        """Records on the claim the run found for it in Dagster; a failure is logged only."""
        try:
            await run_in_threadpool(claims.record, account, key, claim.token, run.run_id)
        except Exception as exc:
            log.warning(
                "could not record run %s for idempotency key %s (%s)", run.run_id, key, type(exc).__name__
            )

    async def _launch_claimed(
        self, trigger: TriggerRequest, parameters: dict[str, Any]
    ) -> tuple[RunInfo, bool]:
        """Under our claim: (the key's run already in Dagster, True) when there is one (launched before
        claims existed, or whose answer was lost), else (a new run, False). A run found with other
        parameters is a 409, as through a claim."""
        assert trigger.account_id is not None
        account, day = trigger.account_id, trigger.partition_date
        key = partition_key_text(account, day)
        existing = await self._dagster(
            self.dagster.find_in_progress,
            {ACCOUNT_TAG: account, IDEMPOTENCY_TAG: trigger.idempotency_key, PARTITION_TAG: key},
        )
        if existing is not None:
            _refuse_other_parameters(
                trigger.idempotency_key,
                _parameters_of(existing, parameters),
                parameters,
                run_id=existing.run_id,
            )
            log.info(
                "run %s already in progress for idempotency key %s", existing.run_id, trigger.idempotency_key
            )
            return existing, True
        tags = {
            PARTITION_TAG: str(key),
            ACCOUNT_PARTITION_TAG: account,
            DATE_PARTITION_TAG: day.isoformat(),
            ACCOUNT_TAG: account,
            IDEMPOTENCY_TAG: trigger.idempotency_key,
            TRIGGER_TAG: "api",
            PARAMETERS_TAG: json.dumps(parameters, sort_keys=True, separators=(",", ":")),
        }
        options = trigger.options.model_dump(exclude_defaults=True)
        run_config = {"ops": {name: {"config": options} for name in FILE_ASSET_NAMES}}
        await self._dagster(self.dagster.add_dynamic_partition, ACCOUNTS_PARTITIONS_NAME, account)
        run_id = await self._dagster(self.dagster.launch, INGEST_JOB_NAME, run_config, tags)
        log.info("launched run %s for %s (idempotency key %s)", run_id, key, trigger.idempotency_key)
        return RunInfo(run_id, "QUEUED", INGEST_JOB_NAME, tags), False

    async def _release(self, claims: IdempotencyClaims, trigger: TriggerRequest, token: str) -> None:
        """Gives the claim back after a failed launch, so a retry launches; a failure here is logged only."""
        assert trigger.account_id is not None
        try:
            await run_in_threadpool(claims.release, trigger.account_id, trigger.idempotency_key, token)
        except Exception as exc:  # the launch's own error is the one to answer with
            log.warning(
                "could not release the claim of idempotency key %s (%s); it expires after %g s",
                trigger.idempotency_key,
                type(exc).__name__,
                self.settings.claim_stale_seconds,
            )

    def _claims(self) -> IdempotencyClaims:
        return self.claims_factory()

    async def _dagster(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args)
        except DagsterUnavailable as exc:
            raise HttpError(503, {"error": "Dagster unavailable", "details": str(exc)}) from None
        except DagsterRefused as exc:
            raise HttpError(
                502, {"error": "DagsterError", "details": {"kind": exc.kind, "message": exc.message}}
            ) from None

    # --- /api/dashboard/update/status --------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        """``/api/dashboard/update/status?runId=``: the run's status, and once succeeded what it wrote."""
        self._gate(request, token_allowed=True)
        run_id = request.query_params.get("runId")
        if not run_id:
            raise BadRequest("Missing runId", "runId")
        if not _RUN_ID.fullmatch(run_id):
            raise BadRequest(f"runId must be a Dagster run id, got {run_id!r}", "runId")
        run = await self._dagster(self.dagster.run, run_id)
        if run is None:
            return error(404, "Run not found", runId=run_id)
        body: dict[str, Any] = {
            "runId": run.run_id,
            "status": run.status_word,
            "dagsterStatus": run.status,
            "job": run.job_name,
        }
        facts = _facts_of(run)
        if facts is not None:
            body.update(facts)
            if run.status == "SUCCESS" and run.job_name == INGEST_JOB_NAME:
                body.update(await run_in_threadpool(_written, self.settings, facts["uploadId"]))
        return JSONResponse(body)


# --- blocking helpers (run in threads) --------------------------------------------------------------


def _account(settings: TriggerSettings, account_id: str | None) -> str | None:
    """The account asked for, else the deployment's first (as the CLI); None: the environment's key."""
    if account_id:
        return account_id
    with contextlib.closing(settings.store()) as store:
        return next(iter(AccountDirectory(store.tables, settings.accounts).account_ids()), None)


def _zone(settings: TriggerSettings, account_id: str | None) -> AccountZone:
    """The account's recorded timezone (one read of the table, no Klaviyo call), else the assumed one."""
    account = _account(settings, account_id)
    with contextlib.closing(settings.store()) as store:
        return zone_of(store.tables.account_timezones() if account else {}, account)


def _account_key(settings: TriggerSettings, account_id: str | None) -> str | None:
    """The account's key (None: the environment's, as the CLI); HttpError 400 when there is none."""
    with contextlib.closing(settings.store()) as store:
        accounts = AccountDirectory(store.tables, settings.accounts)
        try:
            account = account_id or next(iter(accounts.account_ids()), None)
            return accounts.api_key_for(account) if account else settings.accounts.api_key
        except KlaviyoConfigError as exc:
            raise HttpError(400, {"error": "Missing klaviyoApiKey", "details": str(exc)}) from None


def _dry_run_client(settings: TriggerSettings, account_id: str | None) -> KlaviyoClient:
    api_key = _account_key(settings, account_id)
    try:
        return settings.klaviyo_client(api_key)
    except KlaviyoConfigError as exc:  # no key in the environment either
        raise HttpError(400, {"error": "Missing klaviyoApiKey", "details": str(exc)}) from None


def _run_dry_run(client: KlaviyoClient, options: Any, partition_date: date) -> dict[str, Any]:
    with client:
        return dry_run(client, options, partition_date)


def _run_facts(account_id: str, day: date) -> dict[str, Any]:
    return {
        "accountId": account_id,
        "uploadId": nightly_upload_id(account_id, day),
        "partition": partition_key_text(account_id, day),
    }


def _facts_of(run: RunInfo) -> dict[str, Any] | None:
    """Account, upload and partition of an ingest run, from its tags (None for other runs)."""
    account = run.tags.get(ACCOUNT_TAG) or run.tags.get(ACCOUNT_PARTITION_TAG)
    day = run.tags.get(DATE_PARTITION_TAG)
    if not account or not day:
        return None
    try:
        return _run_facts(account, date.fromisoformat(day))
    except ValueError:
        return None


def _written(settings: TriggerSettings, upload_id: str) -> dict[str, Any]:
    """The old live response's facts: the snapshot of the upload and the object keys in its folder."""
    with contextlib.closing(settings.store()) as store:
        snapshot = store.tables.snapshot_for_upload(upload_id)
        keys = [f"{upload_id}/{name}" for name in store.objects.list(upload_id)]
    return {"mode": "live", "snapshotId": snapshot.id if snapshot else None, "keys": keys}


# --- idempotency: what a key was used with ---------------------------------------------------------


def _claim_parameters(trigger: TriggerRequest) -> dict[str, Any]:
    """The run a live request asks for, by the caller's names: ``end`` and every option (defaults
    included, so leaving an option out equals giving its default)."""
    options = trigger.options.model_dump(mode="json", exclude={"mode"})
    named = {OPTION_PARAMETERS[field][0]: value for field, value in options.items()}
    return {"end": trigger.partition_date.isoformat(), **named}


def _parameters_of(run: RunInfo, otherwise: dict[str, Any]) -> dict[str, Any]:
    """The parameters a run was launched with (its tag), else ``otherwise`` (a run without the tag,
    launched before it existed: what its claim says, or, found under a new claim, taken as equal)."""
    try:
        recorded = json.loads(run.tags[PARAMETERS_TAG])
    except (KeyError, ValueError):
        return otherwise
    return recorded if isinstance(recorded, dict) else otherwise


def _refuse_other_parameters(
    key: str, previous: dict[str, Any], parameters: dict[str, Any], run_id: str | None = None
) -> None:
    """HttpError 409 naming each parameter whose value differs from the key's run in progress."""
    changed = differences(previous, parameters)
    if not changed:
        return
    listed = ", ".join(
        f"{name} {values['previous']!r} then, {values['now']!r} now" for name, values in changed.items()
    )
    body: dict[str, Any] = {
        "error": f"idempotency key {key} was used with other parameters: {listed}",
        "parameter": "idempotency",
        "details": changed,
    }
    if run_id is not None:
        body["runId"] = run_id
    raise HttpError(409, body)


# --- the app --------------------------------------------------------------------------------------------


def _guarded(
    handler: Callable[[Request], Awaitable[Response]], methods: tuple[str, ...]
) -> Callable[[Request], Awaitable[Response]]:
    """The handler for ``methods`` only (HEAD and OPTIONS get 405: a HEAD must not launch a run), with
    every failure answered as JSON: a database down is 503 with a reason, anything else 500."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        if request.method not in methods:
            return _method_not_allowed(methods)
        try:
            return await handler(request)
        except HttpError as exc:
            headers = {"Retry-After": "5"} if exc.status == 503 else None
            return JSONResponse(exc.body, status_code=exc.status, headers=headers)
        except BadRequest as exc:
            return JSONResponse(exc.body(), status_code=400)
        except (ClaimsNotMigrated, MissingTable) as exc:
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return error(503, "Database not migrated", details=str(exc))
        except DATABASE_DOWN as exc:
            log.error(
                "%s %s: the ingest database is unavailable (%s)",
                request.method,
                request.url.path,
                type(exc).__name__,
            )
            details = "the ingest database did not answer; retry later"
            if isinstance(exc, sqlite3.Error):  # SQLite's messages name no path nor secret
                details = f"the local ingest database could not be used ({exc}); retry later"
            return JSONResponse(
                {"error": "Database unavailable", "details": details},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "Internal error")

    return guarded


def _method_not_allowed(methods: tuple[str, ...]) -> Response:
    """405 naming the methods allowed (also in the Allow header)."""
    response = error(405, "Method Not Allowed", allowed=list(methods))
    response.headers["Allow"] = ", ".join(methods)
    return response


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405) as JSON."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def redacted_target(scope: Scope, secrets: Iterable[str] = ()) -> str:
    """The request's path and query for the log, with secrets blanked.

    The query is split on ``&`` and ``;``; a parameter whose name, percent- and plus-decoded, contains
    ``token``, ``secret``, ``password`` or ``key`` in any case has its value replaced. Any of
    ``secrets`` (the configured secret) is blanked wherever it appears: raw, and in any name, value
    or path segment that holds it once percent- or plus-decoded, however often it was encoded (up to
    ``_DECODE_ROUNDS`` times: ``%2B``, ``%2b``, ``%252B``).
    """
    wanted = {form for secret in secrets if secret for form in (secret, unquote(secret))}
    path = scope.get("path", "")  # already percent-decoded once by the server
    if wanted:
        path = "/".join(REDACTED if _holds(segment, wanted) else segment for segment in path.split("/"))
    query = scope.get("query_string", b"").decode("latin-1")
    target = path + "?" + _redacted_query(query, wanted) if query else path
    for form in sorted(wanted, key=len, reverse=True):
        target = target.replace(form, REDACTED)
    return target


_DECODE_ROUNDS = 8


def _decodings(text: str) -> set[str]:
    """``text`` and its forms percent-decoded (and plus-decoded) again and again, up to a bound."""
    forms = {text}
    for decode in (unquote, unquote_plus):
        form = text
        for _ in range(_DECODE_ROUNDS):
            decoded = decode(form)
            if decoded == form:
                break
            forms.add(decoded)
            form = decoded
    return forms


def _holds(text: str, wanted: Collection[str]) -> bool:
    return any(secret in form for form in _decodings(text) for secret in wanted)


def _redacted_query(query: str, wanted: Collection[str] = ()) -> str:
    pieces = re.split(r"([&;])", query)
    for index in range(0, len(pieces), 2):
        name, sep, value = pieces[index].partition("=")
        if _holds(name, wanted):
            pieces[index] = REDACTED
        elif any(_SECRET_NAME.search(form) for form in _decodings(name)) or _holds(value, wanted):
            pieces[index] = f"{name}{sep or '='}{REDACTED}"
    return "".join(pieces)


class RequestLog:
    """One log line per request: client, method, path and query (token redacted), status, duration."""

    def __init__(self, app: ASGIApp, secret: Callable[[], str | None] = lambda: None) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self._log(scope, status, started)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log_once()  # before the last byte leaves: a client that has its answer finds the line
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log_once()

    def _log(self, scope: Scope, status: int, started: float) -> None:
        client = scope.get("client") or ("-", 0)
        secret = self.secret()
        log.info(
            "%s %s %s %d %d ms",
            client[0],
            scope.get("method"),
            redacted_target(scope, [secret] if secret else []),
            status,
            round((time.monotonic() - started) * 1000),
        )


def _every_method(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A route that every method (TRACE, CONNECT, any token) reaches, so its guard answers the ones it
    does not allow with its own 405 and Allow header. Starlette would answer them itself, naming every
    routed method in Allow; a function endpoint's ``methods=None`` means GET only, hence None after."""
    route = Route(path, endpoint)
    route.methods = None
    return route


def create_app(
    settings: TriggerSettings | None = None,
    dagster: DagsterApi | None = None,
    claims_factory: Callable[[], IdempotencyClaims] | None = None,
) -> Starlette:
    """The trigger's ASGI app (serve it with ``server.server_config``: header deadline, connection cap)."""
    settings = settings or TriggerSettings.from_env()
    dagster = dagster or DagsterApi(settings.dagster_url, settings.dagster_location)
    service = TriggerService(settings, dagster, claims_factory or IdempotencyClaims.from_env)
    app = Starlette(
        routes=[
            _every_method(UPDATE_PATH, _guarded(service.update, ("GET", "POST"))),
            _every_method(STATUS_PATH, _guarded(service.status, ("GET",))),
        ],
        exception_handlers={HTTPException: _http_exception},
    )
    app.add_middleware(RequestLog, secret=lambda: settings.secret)
    return app
