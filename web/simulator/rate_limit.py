"""The simulator's request budget: a token bucket, quantized as OpenAI enforces ``rpm_limit``.

OpenAI documents that its limits are quantized: "60,000 requests/minute may be enforced as 1,000
requests/second". So the budget is not a minute-long window but a bucket that refills
``rpm_limit / 60`` tokens a second, holds at most ``rpm_burst`` of them, and spends one per
accepted request. Nothing here speaks HTTP beyond building header values; the bucket reads only
the times it is given, so ``trio.testing.MockClock`` drives it in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_TOLERANCE = 1e-9
"""Refill arithmetic is in floats: 20 s at 0.05 token/s may come to 0.9999999999999999 token,
which must still count as a whole one."""


def default_burst(rpm_limit: int) -> int:
    """One second's worth of ``rpm_limit``, rounded up, and at least one request."""
    return max(1, math.ceil(rpm_limit / 60))


@dataclass(frozen=True)
class BucketState:
    """The bucket as one request sees it.

    ``limit``: the requests per minute (for ``x-ratelimit-limit-requests``). ``tokens``: the
    tokens in the bucket, a fraction included. ``capacity``: the most it holds (the burst).
    ``rate_per_s``: tokens added per second.
    """

    limit: int
    tokens: float
    capacity: int
    rate_per_s: float

    @property
    def has_token(self) -> bool:
        """A whole token is there: one more request may go on now."""
        return self.tokens + _TOLERANCE >= 1

    @property
    def remaining(self) -> int:
        """The whole tokens in the bucket: requests that may still be made right now."""
        return math.floor(self.tokens + _TOLERANCE)

    @property
    def next_token_s(self) -> float:
        """Seconds until a whole token is there (0 if one is)."""
        return 0.0 if self.has_token else (1 - self.tokens) / self.rate_per_s

    @property
    def full_s(self) -> float:
        """Seconds until the bucket is full again (0 if it is)."""
        return max(0.0, (self.capacity - self.tokens) / self.rate_per_s)


class TokenBucket:
    """``rpm_limit / 60`` tokens a second, at most ``burst`` held; it starts full.

    `peek(now)` shows whether a request may go on without spending anything, `take(now)` spends a
    token. The two are separate so a request can be refused by an injected fault after the check
    without using up the budget. Neither blocks; ``now`` is Trio time and must not go backwards.
    """

    def __init__(self, rpm_limit: int, burst: int) -> None:
        if rpm_limit < 1 or burst < 1:
            raise ValueError(f"rpm_limit and burst must be at least 1, not {rpm_limit}, {burst}")
        self.limit = rpm_limit
        self.capacity = burst
        self.rate_per_s = rpm_limit / 60
        self._tokens = float(burst)
        self._updated_at: float | None = None

    def peek(self, now: float) -> BucketState:
        """Refill up to ``now`` and report, spending nothing."""
        if self._updated_at is not None:
            refill = max(0.0, now - self._updated_at) * self.rate_per_s
            self._tokens = min(float(self.capacity), self._tokens + refill)
        self._updated_at = now
        return BucketState(self.limit, self._tokens, self.capacity, self.rate_per_s)

    def take(self, now: float) -> BucketState:
        """Spend one token and return the state after it.

        Call it when `peek` showed `BucketState.has_token`; with no whole token in the bucket it
        raises ``ValueError`` and spends nothing.
        """
        if not self.peek(now).has_token:
            raise ValueError("no whole token in the bucket: peek before taking")
        self._tokens = max(0.0, self._tokens - 1)
        return BucketState(self.limit, self._tokens, self.capacity, self.rate_per_s)


def retry_after_headers(seconds: float, *, at_least_one: bool = False) -> list[tuple[str, str]]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``, as OpenAI sends them."""
    whole = math.ceil(seconds)
    millis = math.ceil(seconds * 1000)
    if at_least_one:
        whole, millis = max(1, whole), max(1, millis)
    return [("retry-after", str(whole)), ("retry-after-ms", str(millis))]


def format_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format, a Go duration: ``17ms``, ``1.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def ratelimit_headers(state: BucketState) -> list[tuple[str, str]]:
    """The ``x-ratelimit-*-requests`` headers for a response under an rpm limit."""
    return [
        ("x-ratelimit-limit-requests", str(state.limit)),
        ("x-ratelimit-remaining-requests", str(state.remaining)),
        ("x-ratelimit-reset-requests", format_duration(state.full_s)),
    ]
