"""Processing by the web app instead: ask its processor endpoint to compute a snapshot's metrics.

Used when ``SNAPSHOT_PROCESS_URL`` is set. The old orchestrator ignored the answer; here anything but
a 2xx is an error, so a snapshot never silently lacks its metrics.
"""

from __future__ import annotations

import httpx

SECRET_HEADER = "x-admin-job-secret"  # noqa: S105 - a header name, not a secret  # nosec B105


class RemoteProcessingFailed(Exception):
    """The processor endpoint did not answer 2xx."""


def request_processing(url: str, secret: str, snapshot_id: str, timeout_seconds: float = 120.0) -> None:
    """POSTs ``{"snapshotId": ...}`` with the admin secret; raises unless the answer is 2xx."""
    try:
        response = httpx.post(
            url, json={"snapshotId": snapshot_id}, headers={SECRET_HEADER: secret}, timeout=timeout_seconds
        )
    except httpx.HTTPError as exc:
        raise RemoteProcessingFailed(
            f"snapshot processor at {url} unreachable: {type(exc).__name__}"
        ) from None
    if not response.is_success:
        body = response.text[:300].replace(secret, "[redacted]") if secret else response.text[:300]
        raise RemoteProcessingFailed(
            f"snapshot processor at {url} answered {response.status_code} for snapshot {snapshot_id}: {body}"
        )
