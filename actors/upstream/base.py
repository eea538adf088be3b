"""What the actors need of an upstream: the `Upstream` protocol and the values it trades in.

`actors.upstream.openai_sdk.OpenAIUpstream` implements it over the official SDK; tests
implement it with fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to send upstream: the context, oldest first, and the sampling settings.

    ``params`` holds the other OpenAI parameters the client gave (``max_tokens``, ``top_p``,
    ``stop``, ``presence_penalty``, ``frequency_penalty``, ``seed``, ``user``), already
    checked; they go into the request body as they are. Parameters not given are absent.
    """

    messages: Sequence[Mapping[str, str]]
    model: str
    temperature: float
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """The upstream's answer as actorchat passes it on."""

    content: str
    model: str
    usage: dict[str, Any] | None
    rate_limit: RateLimitInfo | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text, as the upstream streamed it."""

    text: str


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's response head, its first event: the request budget the upstream reported.

    It comes before any text so that the rate gate learns the budget at once, not when the
    answer has finished streaming (until then it would let every waiting call through)."""

    rate_limit: RateLimitInfo | None


StreamEvent = Head | Delta | Completion
"""What a stream yields: one `Head` (an upstream may leave it out), `Delta` pieces, then one
final `Completion` whose ``content`` is the pieces joined."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model the upstream offers, as OpenAI's ``GET /v1/models`` lists it."""

    id: str
    owned_by: str
    created: int


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

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Make one streamed call::

            async with upstream.stream(request) as events:
                async for event in events:  # Delta, Delta, ..., then one Completion
                    ...

        Entering sends the request and waits for the response head: an error status, a
        connection failure or a timeout there raises the same
        :class:`~actors.errors.UpstreamError` subclasses as `complete`, before any event. A
        failure after that (the connection cut, a read timeout, an error sent mid-stream, a
        malformed chunk) raises one from the iteration. Leaving the block, early or not, or
        being cancelled closes the HTTP response; no task is left behind.
        """
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models the upstream offers (one attempt). Raises an
        :class:`~actors.errors.UpstreamError` subclass on failure; cancelling it cancels the
        HTTP request in flight."""
        ...

    async def aclose(self) -> None:
        """Release connections; no call may be made afterwards."""
        ...
