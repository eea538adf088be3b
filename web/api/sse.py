"""Server-sent events on the wire: one encoder for every event stream the API serves.

An event is ``event: <name>`` (optional), then ``data: <compact JSON>``, then a blank line;
a stream of chat deltas ends with ``data: [DONE]``, as OpenAI's does. JSON never contains a
raw line break, so one ``data:`` line always carries the whole event.
"""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPE = "text/event-stream; charset=utf-8"

HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", CONTENT_TYPE),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),  # tell nginx-style proxies not to buffer the stream
)

DONE = b"data: [DONE]\n\n"


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One event: ``data`` as compact JSON, under ``event`` when given."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def wants_event_stream(accept: str | None) -> bool:
    """True when an ``Accept`` header asks for ``text/event-stream``."""
    if not accept:
        return False
    return any(part.split(";")[0].strip().lower() == "text/event-stream"
               for part in accept.split(","))
