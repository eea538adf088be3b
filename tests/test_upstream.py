"""The upstream module's own rules: Retry-After parsing, labels, key redaction, SSE decoding;
and the fakes keep to its protocol."""

from __future__ import annotations

import email.utils
import time

import pytest
import trio

from actors.config import build_settings
from actors.upstream import (
    MAX_RETRY_AFTER_S,
    ChatRequest,
    Completion,
    Delta,
    Upstream,
    retry_after_of,
)
from actors.upstream.streaming import SSEDecoder
from tests.fakes import ScriptedUpstream
from web.api.upstreams import open_upstream


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "inf", "retry-after": "2"}, None),
        ({"retry-after": "99999999"}, MAX_RETRY_AFTER_S),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_finite_bounded_and_never_negative(headers, seconds) -> None:
    assert retry_after_of(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_after_of({"retry-after": in_ten}) <= 10


async def test_the_upstream_label_never_shows_credentials() -> None:
    settings = build_settings(
        {"upstream": {"provider": "openai", "api_key": "k",
                      "base_url": "http://bob:hunter2@127.0.0.1:9/v1"}},
        environ={},
    )
    async with open_upstream(settings) as choice:
        assert choice.label == "http://127.0.0.1:9/v1"
        assert choice.client is not None


async def test_the_key_never_comes_back_in_an_upstream_error_message() -> None:
    from actors.errors import UpstreamRejected
    from actors.upstream import ChatRequest, OpenAIUpstream

    key = "my-very-private-key-123"
    body = ('{"error": {"message": "key=' + key + ' cannot use model x", '
            '"type": "invalid_request_error"}}').encode()

    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                              b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                              % (len(body), body))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, answer, 0)
        port = listeners[0].socket.getsockname()[1]
        upstream = OpenAIUpstream(
            api_key=key, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5
        )
        with pytest.raises(UpstreamRejected) as rejected:
            await upstream.complete(ChatRequest([{"role": "user", "content": "hi"}], "x", 0.7))
        await upstream.aclose()
        nursery.cancel_scope.cancel()
    assert key not in rejected.value.message
    assert "cannot use model x" in rejected.value.message


def test_the_sse_decoder_joins_data_lines_and_skips_comments_and_other_fields() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keep-alive\r\n\r\nevent: x\r\ndata: one\r\nda") == []
    assert decoder.feed(b"ta:two\r\n\r\ndata: [DONE]\n") == ["one\ntwo"]
    assert decoder.feed(b"\n") == ["[DONE]"]


async def test_the_fake_upstreams_stream_the_answer_they_would_complete() -> None:
    upstream: Upstream = ScriptedUpstream()
    request = ChatRequest([{"role": "user", "content": "hello"}], "m", 0.5)
    async with upstream.stream(request) as events:
        received = [event async for event in events]
    completion = received[-1]
    assert isinstance(completion, Completion)
    assert completion.content == "re: hello (1)"
    assert "".join(event.text for event in received if isinstance(event, Delta)) == \
        completion.content
    assert len(received) == 4
    await upstream.aclose()
