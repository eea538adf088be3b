"""What the actors need of an upstream: the `Upstream` protocol and the values it trades in.

`actors.upstream.openai_sdk.OpenAIUpstream` implements it over the official SDK; tests
implement it with fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to send upstream: the whole context, oldest first, and the sampling settings."""

    messages: Sequence[Mapping[str, str]]
    model: str
    temperature: float


@dataclass(frozen=True, slots=True)
class Completion:
    """The upstream's answer as actorchat passes it on."""

    content: str
    model: str
    usage: dict[str, Any] | None
    rate_limit: RateLimitInfo | None = None


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The request budget from OpenAI's ``x-ratelimit-*-requests`` headers."""

    limit: int
    remaining: int



class Upstream(Protocol):
    """One attempt at a chat completion. The retrying caller sits above it."""

    async def complete(self, request: ChatRequest) -> Completion:
        """Make one call. Raises an :class:`~actors.errors.UpstreamError` subclass on failure;
        cancelling it cancels the HTTP request in flight."""
        ...

    async def aclose(self) -> None:
        """Release connections; no call may be made afterwards."""
        ...
