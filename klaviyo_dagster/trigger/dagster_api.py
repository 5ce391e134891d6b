"""Dagster's GraphQL API, as the trigger uses it: launch an ingest run, find it again, read its status.

Launching goes through ``DagsterGraphQLClient.submit_job_execution``; the queries the client has no
method for (runs by tag, one run with its tags, adding a dynamic partition) go through the same
client's executor. A client is made per call: gql's synchronous transport holds one session and
refuses concurrent use, and requests arrive concurrently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql.transport.exceptions import TransportConnectionFailed, TransportServerError

REPOSITORY_NAME = "__repository__"
IDEMPOTENCY_TAG = "klaviyo/idempotency-key"
TRIGGER_TAG = "klaviyo/trigger"

# Dagster run statuses → the old endpoint's words.
STATUS_WORDS = {
    "QUEUED": "queued",
    "NOT_STARTED": "queued",
    "MANAGED": "queued",
    "STARTING": "running",
    "STARTED": "running",
    "CANCELING": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "CANCELED": "canceled",
}
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")

_RUNS_BY_TAGS = """
query TriggerRunsByTags($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 1) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

_RUN = """
query TriggerRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

_ADD_PARTITION = """
mutation TriggerAddPartition($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""


class DagsterUnavailable(Exception):
    """The Dagster webserver did not answer."""


class DagsterRefused(Exception):
    """Dagster answered with an error (``kind`` is its GraphQL type, e.g. RunConfigValidationInvalid)."""

    def __init__(self, kind: str, message: Any) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # Dagster's, e.g. QUEUED
    job_name: str | None
    tags: dict[str, str]

    @property
    def status_word(self) -> str:
        return STATUS_WORDS.get(self.status, self.status.lower())


@dataclass(frozen=True)
class DagsterApi:
    url: str  # e.g. http://127.0.0.1:3000, or with a path prefix
    location: str
    repository: str = REPOSITORY_NAME
    timeout_seconds: int = 30

    def _client(self) -> DagsterGraphQLClient:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The Dagster URL must be http(s)://host[:port][/prefix], got {self.url!r}")
        return DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=self.timeout_seconds,
            path_prefix=parts.path.rstrip("/"),
        )

    def _execute(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        with _translated_errors():
            return self._client()._execute(query, dict(variables))

    def find_in_progress(self, tags: Mapping[str, str]) -> RunInfo | None:
        """The newest queued or running run carrying all ``tags``, if any."""
        result = self._execute(
            _RUNS_BY_TAGS,
            {
                "filter": {
                    "tags": [{"key": k, "value": v} for k, v in tags.items()],
                    "statuses": list(IN_PROGRESS),
                }
            },
        )["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterRefused(result["__typename"], result.get("message"))
        return _run_info(result["results"][0]) if result["results"] else None

    def add_dynamic_partition(self, partitions_def_name: str, key: str) -> None:
        """Registers ``key`` (a no-op when it exists), so a just-connected account can run at once."""
        result = self._execute(
            _ADD_PARTITION,
            {
                "selector": {"repositoryLocationName": self.location, "repositoryName": self.repository},
                "name": partitions_def_name,
                "key": key,
            },
        )["addDynamicPartition"]
        if result["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise DagsterRefused(result["__typename"], result.get("message"))

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        with _translated_errors():
            return self._client().submit_job_execution(
                job_name,
                repository_location_name=self.location,
                repository_name=self.repository,
                run_config=dict(run_config),
                tags=dict(tags),
            )

    def run(self, run_id: str) -> RunInfo | None:
        result = self._execute(_RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] == "RunNotFoundError":
            return None
        if result["__typename"] != "Run":
            raise DagsterRefused(result["__typename"], result.get("message"))
        return _run_info(result)


def _run_info(run: Mapping[str, Any]) -> RunInfo:
    tags = {tag["key"]: tag["value"] for tag in run.get("tags") or ()}
    return RunInfo(run["runId"], run["status"], run.get("jobName"), tags)


_NO_ANSWER = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    TransportConnectionFailed,
    TransportServerError,
)


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


class _translated_errors:
    """DagsterGraphQLClientError → DagsterUnavailable (no answer) or DagsterRefused (an error answer)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        if not isinstance(exc, DagsterGraphQLClientError):
            return False
        cause = exc.__cause__
        if any(isinstance(e, _NO_ANSWER) for e in _chain(cause)):
            raise DagsterUnavailable("The Dagster webserver did not answer") from None
        kind = str(exc.args[0]) if exc.args else "DagsterError"
        if kind.startswith("Server error"):  # an HTTP error status from the webserver
            raise DagsterUnavailable(kind.split("\n", 1)[0]) from None
        if kind.startswith("Exception occured"):  # a GraphQL error; the client's text repeats the query
            raise DagsterRefused("GraphQLError", str(cause)) from None
        message = exc.body if exc.body is not None else (exc.args[1] if len(exc.args) > 1 else None)
        raise DagsterRefused(kind, message) from None
