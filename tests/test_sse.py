"""The one SSE encoder."""

from __future__ import annotations

import json

from web.api.sse import DONE, sse_event, wants_event_stream


def test_an_event_is_one_data_line_of_compact_json_and_a_blank_line() -> None:
    raw = sse_event({"delta": "two\nlines"})
    assert raw == b'data: {"delta":"two\\nlines"}\n\n'
    assert json.loads(raw[len(b"data: "):]) == {"delta": "two\nlines"}


def test_a_named_event_carries_its_name_first() -> None:
    assert sse_event({"type": "x", "message": "y"}, "error").startswith(b"event: error\ndata: ")


def test_the_stream_ends_like_openais() -> None:
    assert DONE == b"data: [DONE]\n\n"


def test_accept_headers_that_ask_for_an_event_stream_are_recognised() -> None:
    assert wants_event_stream("text/event-stream")
    assert wants_event_stream("application/json, Text/Event-Stream;q=0.9")
    assert not wants_event_stream("application/json")
    assert not wants_event_stream(None)
