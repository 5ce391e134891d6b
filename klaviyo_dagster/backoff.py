"""The backoff between retries of a failed call, shared by the Klaviyo client and the Storage client."""

from __future__ import annotations

import random


def jittered_backoff(attempt: int, base_seconds: float, cap_seconds: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)`` capped at
    ``cap``, then a random value in its upper half ("equal jitter"), so clients that failed together
    do not retry together."""
    ceiling = min(cap_seconds, base_seconds * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # jitter, not security  # nosec B311
