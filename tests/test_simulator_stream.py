"""The simulator's streamed answers: OpenAI's chunks, their pacing, and faults mid-stream.

Test policy: what the SDK makes of a stream, and what a client leaving does, go over real HTTP
(Hypercorn on a free port, the official ``openai`` SDK or ``httpx``), asserting on counts and
order, never on durations. The pacing of chunks is checked on the ``autojump_clock`` with the
ASGI app called directly, where the Trio clock is the only clock. The only real waits are a
bounded poll for the server to notice a client that went away.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionChunk

from actors.config import SimulatorConfig
from web.simulator import Simulator
from web.simulator.completions import ChunkEncoder, answer
from web.simulator.request import ChatRequest

from .conftest import simulators
from .simulator_support import (
    COMPLETIONS,
    HELLO,
    KEY,
    MODEL,
    exchange_with_app,
    sdk,
    settled_stats,
)

# The SDK stops reading its SSE generators at [DONE] or at an error without closing them
# (`openai._streaming.AsyncStream.__stream__`), so Trio warns when they are collected;
# `read_stream` collects them at once, under this filter.
pytestmark = pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")

StartSimulator = Callable[..., Awaitable[str]]
STREAM = {"model": MODEL, "messages": HELLO, "stream": True}


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulators that take any non-empty key, unless told one; all stop at teardown."""
    async with simulators() as start:
        yield start


async def read_stream(
    client: openai.AsyncOpenAI, **arguments: Any
) -> tuple[list[ChatCompletionChunk], openai.APIError | None]:
    """The chunks the SDK yields for a streamed create, and the error that ended it, if any."""
    stream = await client.chat.completions.create(model=MODEL, stream=True, **arguments)
    chunks: list[ChatCompletionChunk] = []
    error = None
    try:
        async with stream:
            async for item in stream:
                chunks.append(item)
    except openai.APIError as caught:
        error = caught
    del stream
    gc.collect()  # finalize the SDK's generators here, under this module's warning filter
    return chunks, error


def joined(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(item.choices[0].delta.content or "" for item in chunks if item.choices)


def content_chunks(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [item.choices[0].delta.content for item in chunks
            if item.choices and item.choices[0].delta.content]


# The happy path, as the SDK sees it


async def test_a_stream_is_the_unstreamed_text_in_chunks_then_stop_then_usage(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(stream_chunks=20, chunk_delay_ms=1)
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    async with sdk(base_url) as client:
        whole = await client.chat.completions.create(model=MODEL, messages=messages)
        chunks, error = await read_stream(
            client, messages=messages, stream_options={"include_usage": True}
        )
    assert error is None
    assert all(item.object == "chat.completion.chunk" for item in chunks)
    assert len({item.id for item in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert joined(chunks) == whole.choices[0].message.content
    assert len(content_chunks(chunks)) == 20
    finishes = [item.choices[0].finish_reason for item in chunks if item.choices]
    assert finishes == [None] * (len(finishes) - 1) + ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(item.usage is None for item in chunks[:-1])
    stats = await settled_stats(base_url)
    assert (stats["completed"], stats["streamed"], stats["in_flight"]) == (2, 1, 0)


async def test_the_wire_format_is_openais_event_stream(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(stream_chunks=3)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base_url}/chat/completions", headers={"authorization": f"Bearer {KEY}"},
            json=STREAM,
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    blocks = response.text.split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    events = [json.loads(block.removeprefix("data: ")) for block in blocks[:-2]]
    assert len(events) == 1 + 3 + 1  # role, three pieces, stop; no usage chunk unasked
    for event in events:
        assert set(event) == {"id", "object", "created", "model", "system_fingerprint", "choices"}
        assert event["model"] == f"{MODEL}-simulated"
        (choice,) = event["choices"]
        assert set(choice) == {"index", "delta", "finish_reason", "logprobs"}
        assert choice["index"] == 0
        assert choice["logprobs"] is None
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert all(set(event["choices"][0]["delta"]) == {"content"} for event in events[1:4])
    assert events[-1]["choices"][0] == {
        "index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None
    }


async def test_a_short_answer_gets_one_chunk_per_character_at_most() -> None:
    app = Simulator(SimulatorConfig(stream_chunks=500))
    reply = await exchange_with_app(app, "POST", COMPLETIONS, {**STREAM, "max_tokens": 2})
    pieces = [json.loads(event)["choices"][0]["delta"].get("content")
              for event in reply.events()[1:-2]]
    assert pieces == list("Simulate")


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_spliced_content_chunk_is_the_json_of_the_whole_chunk(include_usage: bool) -> None:
    request = ChatRequest(model='odd "model" \\ \x00', messages=[("user", 'say "hi"\n')])
    encoder = ChunkEncoder(answer(request), include_usage=include_usage)
    for piece in ("plain", 'a quote " a backslash \\ a newline \n', "\u00e9\U0001f600", ""):
        spliced = encoder.content(piece)
        whole = encoder.chunk({"content": piece})
        assert spliced.startswith(b"data: ")
        assert spliced.endswith(b"}\n\n")
        assert json.loads(spliced.removeprefix(b"data: ")) == json.loads(
            whole.removeprefix(b"data: ")
        )


# Pacing, on the Trio clock


async def test_chunks_are_paced_by_the_chunk_delay_after_the_latency(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Simulator(SimulatorConfig(latency_ms=100, chunk_delay_ms=20, stream_chunks=5))
    started = trio.current_time()
    reply = await exchange_with_app(app, "POST", COMPLETIONS, STREAM)
    times = [round(when - started, 6) for when, _ in reply.writes]
    assert times == [0.1, 0.12, 0.14, 0.16, 0.18]
    assert reply.writes[0][1].count(b"data: ") == 2  # the role chunk and the first piece
    assert reply.writes[-1][1].endswith(b"data: [DONE]\n\n")
    assert reply.finished


async def test_a_stream_that_fell_behind_catches_up_in_one_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Chunk k is due k * 20 ms after the first; the second write takes 50 ms to hand over, so
    the next write, 20 ms after it, carries the chunks due at 0.04, 0.06 and 0.08 s."""
    app = Simulator(SimulatorConfig(chunk_delay_ms=20, stream_chunks=5))
    steady = await exchange_with_app(app, "POST", COMPLETIONS, STREAM)
    scope = {"type": "http", "method": "POST", "path": COMPLETIONS,
             "headers": [(b"authorization", f"Bearer {KEY}".encode())]}
    pending = [{"type": "http.request", "body": json.dumps(STREAM).encode()}]
    writes: list[tuple[float, bytes]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await trio.sleep_forever()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            writes.append((round(trio.current_time() - started, 6), message["body"]))
            if len(writes) == 2:
                await trio.sleep(0.05)

    started = trio.current_time()
    await app(scope, receive, send)
    assert [when for when, _ in writes] == [0.0, 0.02, 0.09]
    assert len(steady.writes) == 5  # keeping up, it writes once per chunk

    def events(body: bytes) -> list[object]:
        """The events with the per-answer id and time left out."""
        decoded = [json.loads(block.removeprefix(b"data: ") or b"null")
                   for block in body.split(b"\n\n")[:-2]]
        return [{k: v for k, v in event.items() if k not in ("id", "created")}
                for event in decoded]

    body = b"".join(data for _, data in writes)
    assert body.endswith(b"data: [DONE]\n\n")
    assert events(body) == events(steady.body)
    assert writes[2][1].count(b"data: ") == 5  # three content chunks, the finish, [DONE]
    assert app.stats()["streamed"] == 2


async def test_a_stream_stops_when_its_client_leaves(autojump_clock: trio.abc.Clock) -> None:
    app = Simulator(SimulatorConfig(chunk_delay_ms=20, stream_chunks=5))
    leaves = trio.Event()
    started = trio.current_time()

    async def leave_after(seconds: float) -> None:
        await trio.sleep(seconds)
        leaves.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave_after, 0.05)
        reply = await exchange_with_app(app, "POST", COMPLETIONS, STREAM, client_leaves=leaves)
    assert len(reply.writes) == 3  # at 0, 0.02 and 0.04 s; the client left at 0.05 s
    assert not reply.finished
    assert trio.current_time() - started == pytest.approx(0.05)  # not on to the 0.06 s write
    stats = app.stats()
    assert (stats["client_left"], stats["streamed"], stats["completed"]) == (1, 0, 0)
    assert stats["in_flight"] == 0


async def test_a_client_leaving_mid_stream_is_noticed_over_http(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(stream_chunks=3, chunk_delay_ms=600_000)
    async with httpx.AsyncClient() as http, http.stream(
        "POST", f"{base_url}/chat/completions", headers={"authorization": f"Bearer {KEY}"},
        json=STREAM,
    ) as response:
        first = await anext(response.aiter_lines())
    assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    stats = await settled_stats(base_url)  # the server notices the client leaving at once
    assert (stats["client_left"], stats["streamed"], stats["completed"]) == (1, 0, 0)


# Faults


async def test_a_dropped_stream_breaks_off_after_half_its_chunks(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(rate_drop=1.0, stream_chunks=10, chunk_delay_ms=1)
    async with sdk(base_url) as client:
        with trio.fail_after(5):
            chunks, error = await read_stream(client, messages=HELLO)
    assert isinstance(error, openai.APIConnectionError)
    assert not isinstance(error, openai.APITimeoutError)
    assert len(content_chunks(chunks)) == 5
    full = 'Simulated reply to "hello" (messages received: 1)'
    assert full.startswith(joined(chunks))
    assert all(item.choices[0].finish_reason is None for item in chunks)
    stats = await settled_stats(base_url)
    assert (stats["drop"], stats["streamed"], stats["completed"]) == (1, 0, 0)


async def test_a_stream_error_is_an_error_event_the_sdk_raises(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(rate_stream_error=1.0, stream_chunks=4)
    async with sdk(base_url) as client:
        chunks, error = await read_stream(client, messages=HELLO)
        whole = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert type(error) is openai.APIError  # an error after the 200: no status to map
    assert error.type == "server_error"
    assert "error while processing your request" in error.message
    assert len(content_chunks(chunks)) == 2
    assert whole.choices[0].finish_reason == "stop"  # an unstreamed call is answered in full
    stats = await settled_stats(base_url)
    assert (stats["stream_error"], stats["streamed"], stats["completed"]) == (1, 0, 1)


async def test_a_stream_error_event_ends_the_body_without_done() -> None:
    app = Simulator(SimulatorConfig(rate_stream_error=1.0, stream_chunks=4))
    reply = await exchange_with_app(app, "POST", COMPLETIONS, STREAM)
    events = reply.events()
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert "[DONE]" not in events
    assert len(events) == 1 + 2 + 1  # role, half the pieces, the error
    assert reply.finished


@pytest.mark.parametrize(
    ("settings", "error_class"),
    [
        ({"rate_429": 1.0}, openai.RateLimitError),
        ({"rate_5xx": 1.0}, openai.InternalServerError),
    ],
)
async def test_429s_and_5xx_strike_before_the_first_byte_of_a_stream(
    start_simulator: StartSimulator, settings: dict[str, float], error_class: type[Exception]
) -> None:
    base_url = await start_simulator(**settings)
    async with sdk(base_url) as client:
        with pytest.raises(error_class):
            await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    assert (await settled_stats(base_url))["streamed"] == 0


async def test_a_hanging_stream_sends_nothing_until_the_client_gives_up(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(rate_hang=1.0)
    async with sdk(base_url, timeout=0.3) as client:
        with trio.fail_after(5), pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    assert (await settled_stats(base_url))["hang"] == 1


# Options


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream_options": {}}, "stream_options"),
        ({"stream": True, "stream_options": "usage"}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"stream": 1}, "stream"),
        ({"stream": "true"}, "stream"),
    ],
)
async def test_bad_stream_settings_are_refused_with_400(
    changes: dict[str, Any], param: str
) -> None:
    app = Simulator(SimulatorConfig())
    body = {"model": MODEL, "messages": HELLO, **changes}
    reply = await exchange_with_app(app, "POST", COMPLETIONS, body)
    assert reply.status == 400
    assert json.loads(reply.body)["error"]["param"] == param


async def test_stream_options_without_a_stream_get_openais_message(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator()
    async with sdk(base_url) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=MODEL, messages=HELLO, stream_options={"include_usage": True}
            )
    assert caught.value.body["message"] == (
        "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    )
    assert caught.value.param == "stream_options"


async def test_null_stream_options_and_stream_false_are_an_ordinary_answer() -> None:
    app = Simulator(SimulatorConfig())
    body = {"model": MODEL, "messages": HELLO, "stream": False, "stream_options": None}
    reply = await exchange_with_app(app, "POST", COMPLETIONS, body)
    assert reply.status == 200
    assert json.loads(reply.body)["object"] == "chat.completion"
