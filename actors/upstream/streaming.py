"""A streamed chat completion as events: `CompletionStream` reads OpenAI's server-sent events.

OpenAI streams a completion as ``data: {chunk}`` events of ``chat.completion.chunk`` objects,
each with a piece of text in ``choices[0].delta.content``; with
``stream_options.include_usage`` a last chunk with no choices carries the ``usage``; then
``data: [DONE]``. An error after the head arrives as ``data: {"error": {...}}``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx2
import trio

from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .base import Completion, Delta, Head, StreamEvent
from .headers import rate_limit_of

_MAX_EVENT_BYTES = 1024 * 1024
"""The longest server-sent event accepted: memory stays bounded whatever the upstream sends."""

_DRAIN_S = 0.1
"""How long to wait, after ``[DONE]``, for the end of the body so that the connection can be
reused (the SDK's ``drain_response_async`` waits as long); then it is closed instead."""


def transport_error(error: httpx2.HTTPError) -> UpstreamError:
    """The domain error for an httpx2 error while the body streams (as `complete` maps the
    SDK's ``APITimeoutError`` and ``APIConnectionError``)."""
    if isinstance(error, httpx2.TimeoutException):
        return UpstreamTimeout("the upstream did not answer in time")
    return UpstreamUnavailable(f"the upstream's stream broke: {type(error).__name__}")


class SSEDecoder:
    """Splits a body into server-sent events; `feed` returns the data of each completed one.

    Only the ``data`` field matters here (several ``data`` lines join with a newline); other
    fields and comments are skipped. Lines end with LF or CRLF.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes, oldest first."""
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > _MAX_EVENT_BYTES:
            raise UpstreamUnavailable("the upstream sent a server-sent event over 1 MiB")
        events = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data).decode())
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events


class CompletionStream:
    """The events of one streamed completion: its `Head`, `Delta` pieces, then one `Completion`.

    It owns the HTTP ``response`` (opened with ``stream=True``) and reads it as it is
    iterated. Iteration raises `UpstreamTimeout` or `UpstreamUnavailable` when the stream
    breaks, is malformed, carries an error or ends without ``[DONE]`` (and without a
    ``finish_reason``). `aclose` closes the response wherever the iteration is; cancelling an
    iteration closes the connection under it. ``redact`` cleans text we repeat in errors.
    """

    def __init__(self, response: httpx2.Response, redact: Callable[[str], str]) -> None:
        self._response = response
        self._redact = redact
        self._body = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._pending: deque[str] = deque()
        self._parts: list[str] = []
        self._model = ""
        self._usage: dict[str, Any] | None = None
        self._finished = False  # a chunk said why the answer ended (finish_reason)
        self._done = False  # the final Completion has been returned
        self._head = True  # the Head is still to be returned

    def __aiter__(self) -> CompletionStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._head:
            self._head = False
            return Head(rate_limit_of(self._response.headers))
        while True:
            while self._pending:
                payload = self._pending.popleft()
                if payload == "[DONE]":
                    await self._drain()
                    return self._completion()
                event = self._event(payload)
                if event is not None:
                    return event
            if self._done:
                raise StopAsyncIteration
            try:
                data = await self._body.__anext__()
            except StopAsyncIteration:
                if not self._finished:
                    raise UpstreamUnavailable("the upstream's stream ended early") from None
                return self._completion()
            except httpx2.HTTPError as error:
                raise transport_error(error) from None
            self._pending.extend(self._decoder.feed(data))

    async def aclose(self) -> None:
        """Close the response (its connection too, unless the body had ended)."""
        await self._body.aclose()
        await self._response.aclose()

    def _event(self, payload: str) -> Delta | None:
        try:
            chunk = json.loads(payload)
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise UpstreamUnavailable(
                    "the upstream failed mid-stream: " + self._redact(str(message or error))
                )
            self._model = chunk.get("model") or self._model
            self._usage = chunk.get("usage") or self._usage
            choices = chunk.get("choices")
            if not choices:
                return None
            choice = choices[0]
            self._finished = self._finished or bool(choice.get("finish_reason"))
            text = (choice.get("delta") or {}).get("content")
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            raise UpstreamUnavailable("the upstream sent a malformed stream chunk") from None
        if not text:
            return None
        if not isinstance(text, str):
            raise UpstreamUnavailable("the upstream sent a malformed stream chunk")
        self._parts.append(text)
        return Delta(text)

    def _completion(self) -> Completion:
        self._done = True
        self._pending.clear()
        return Completion(
            content="".join(self._parts),
            model=self._model,
            usage=self._usage,
            rate_limit=rate_limit_of(self._response.headers),
        )

    async def _drain(self) -> None:
        """Read what is left of the body, for at most `_DRAIN_S`, so the connection is pooled."""
        with trio.move_on_after(_DRAIN_S):
            try:
                async for _ in self._body:
                    pass
            except httpx2.HTTPError:
                pass  # the answer is whole; only the connection is lost
