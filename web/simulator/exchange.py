"""One HTTP exchange of the simulator, in raw ASGI 3, and OpenAI's error shape.

`Exchange` wraps the ASGI callables of one request with the headers every OpenAI answer carries
(``x-request-id``, ``openai-version``, ``openai-processing-ms``); `ApiError` is an error answer
raised while checking a request and sent by the route that catches it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Larger request bodies are refused with 413, as OpenAI does."""


class ApiError(Exception):
    """An OpenAI-style error answer: ``status`` and the ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def content_length(payload: bytes) -> tuple[str, str]:
    """The ``content-length`` header for ``payload``."""
    return ("content-length", str(len(payload)))


class Exchange:
    """One HTTP request/response: the ASGI callables and the headers every answer carries.

    Routes add to ``headers`` (e.g. the ``x-ratelimit-*`` ones) before answering; every answer
    sent through `start`, `json` or `error` carries them.
    """

    __slots__ = ("scope", "receive", "send", "headers", "_started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self._started = time.perf_counter()
        self.headers: Headers = [
            ("x-request-id", f"req_{secrets.token_hex(16)}"),
            ("openai-version", "2020-10-01"),
        ]

    def _raw_headers(self, content_type: str, extra: Headers) -> list[tuple[bytes, bytes]]:
        elapsed_ms = int((time.perf_counter() - self._started) * 1000)
        return [
            (b"content-type", content_type.encode()),
            (b"openai-processing-ms", str(elapsed_ms).encode()),
            *((name.encode(), value.encode()) for name, value in [*self.headers, *extra]),
        ]

    async def start(self, status: int, content_type: str, extra: Headers) -> None:
        """Send the response start: ``status``, the common headers and ``extra``."""
        headers = self._raw_headers(content_type, extra)
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def json(self, status: int, body: object, extra: Headers | None = None) -> None:
        """Send a whole JSON response."""
        payload = json.dumps(body).encode()
        await self.start(status, "application/json", [*(extra or []), content_length(payload)])
        await self.send({"type": "http.response.body", "body": payload})

    async def error(self, error: ApiError, extra: Headers | None = None) -> None:
        """Send ``error`` as OpenAI does: its status and ``{"error": {...}}`` body."""
        await self.json(error.status, error.body, extra)

    def bearer_key(self) -> str | None:
        """The key of an ``Authorization: Bearer <key>`` header; None if absent or empty."""
        for name, value in self.scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").strip().partition(" ")
                key = key.strip()
                return key if scheme.lower() == "bearer" and key else None
        return None

    async def read_body(self) -> bytes:
        """The whole request body; raises `ApiError` (400) if the client leaves while sending
        it, (413) past `MAX_BODY_BYTES`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "The client closed the connection before sending its body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"Request body too large: limit is {MAX_BODY_BYTES} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
