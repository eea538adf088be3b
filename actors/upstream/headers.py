"""What the upstream's response headers say: its request budget and when to retry."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from .base import RateLimitInfo

# A Retry-After longer than this is taken as this: one bad header must not close the shared
# gate for hours (``inf`` would close it for good).
MAX_RETRY_AFTER_S = 300.0


def rate_limit_of(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The request budget the upstream reported, or None when it sent no such headers."""
    limit = headers.get("x-ratelimit-limit-requests")
    remaining = headers.get("x-ratelimit-remaining-requests")
    if limit is None or remaining is None or not limit.isdigit() or not remaining.isdigit():
        return None
    return RateLimitInfo(int(limit), int(remaining))


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date).

    None when absent or unreadable; never negative, never over ``MAX_RETRY_AFTER_S``.
    """
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    try:
        if milliseconds:
            seconds = float(milliseconds) / 1000
        elif value:
            seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None and value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            seconds = email.utils.mktime_tz(parsed) - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
