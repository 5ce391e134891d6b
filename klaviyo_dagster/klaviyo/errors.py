"""What can go wrong talking to Klaviyo, as types a caller can act on.

- ``KlaviyoConfigError``: fix the setup (source disabled, no key, bad base URL); raised before any call.
- ``KlaviyoAuthError``: 401, or a JSON:API 403 (``permission_denied``) — the key is wrong or lacks a
  scope. A 403 page from Klaviyo's CDN (HTML, not JSON:API) is not about the key: it is retried.
- ``KlaviyoRequestError``: other 4xx — our request was wrong (bad filter, unknown id, retired revision).
- ``KlaviyoThrottledError``: rate limited past what we are willing to wait (e.g. the daily report quota).
- ``KlaviyoDataError``: Klaviyo answered, but with data that cannot be written faithfully (a report
  statistic that is not a number, an unknown timezone); not retried.
- ``KlaviyoUnavailableError``: 5xx, timeouts, connection failures, unreadable bodies or non-JSON pages
  from Klaviyo's edge (CDN: an HTML 403 or gateway page), after retries.

Every error carries the endpoint (``GET /api/flows``) and Klaviyo's ``errors[]`` details, and never the
API key: messages are built from the response body only, and scrubbed of the key besides. Which
statuses are retried follows ``../shared/contracts/klaviyo-api.md`` ("Errors", "Rate limits").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KlaviyoErrorDetail:
    """One entry of a JSON:API ``errors[]`` array."""

    status: int | None
    code: str | None = None
    title: str | None = None
    detail: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KlaviyoErrorDetail:
        status = raw.get("status")
        return cls(
            status=int(status) if isinstance(status, int | str) and str(status).isdigit() else None,
            code=raw.get("code"),
            title=raw.get("title"),
            detail=raw.get("detail"),
            source=raw.get("source") or {},
        )

    def describe(self) -> str:
        text = " — ".join(part for part in (self.code, self.title, self.detail) if part)
        where = self.source.get("parameter") or self.source.get("pointer")
        return f"{text} (at {where})" if where else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": self.source,
        }


class KlaviyoError(Exception):
    """Base class: a Klaviyo call (or the setup for one) failed."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        errors: tuple[KlaviyoErrorDetail, ...] = (),
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.errors = errors

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary, e.g. for an asset failure's metadata or a CLI error line."""
        return {
            "type": type(self).__name__,
            "message": str(self),
            "endpoint": self.endpoint,
            "status": self.status,
            "errors": [e.as_dict() for e in self.errors],
        }


class KlaviyoConfigError(KlaviyoError):
    """The client cannot be used as configured; nothing was sent."""


class KlaviyoDisabledError(KlaviyoConfigError):
    """``KLAVIYO_ENABLE`` is not ``true``."""


class KlaviyoAuthError(KlaviyoError):
    """401 (key missing/invalid) or a JSON:API 403 (key lacks a scope); never retried."""


class KlaviyoRequestError(KlaviyoError):
    """A 4xx other than 401/403/429: the request itself is wrong and retrying will not help."""


class KlaviyoThrottledError(KlaviyoError):
    """Rate limited for longer than the configured cap, or too many 429s in a row."""


class KlaviyoUnavailableError(KlaviyoError):
    """Klaviyo kept failing (5xx, timeout, connection error, bad body, a CDN page) after every retry."""


class KlaviyoDataError(KlaviyoError):
    """Klaviyo answered, but with data that cannot be written faithfully (e.g. a report statistic
    that is not a number, or a response shape the spec does not allow). Not retried: the same call
    gives the same data, so the file fails with the value named rather than write a wrong number."""


class KlaviyoQuotaWouldWait(KlaviyoThrottledError):
    """A call asked not to wait for the daily quota (``KlaviyoClient.without_daily_waits``) would have."""
