"""The sampling parameters the simulator accepts, what they do to its answer, and its record of
what it received.

Test policy: the edges of each range are checked on the ASGI app directly (validation is no
matter of the wire, and a hundred servers would cost more than they show); what the SDK sends
and what ``GET /_simulator/received`` serves go over real HTTP.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from actors.config import SimulatorConfig
from web.simulator import Simulator

from .conftest import simulators
from .simulator_support import COMPLETIONS, HELLO, MODEL, exchange_with_app, get_received, sdk

StartSimulator = Callable[..., Awaitable[str]]
ANSWER = 'Simulated reply to "hello" (messages received: 1)'
INT64 = 2**63


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulators that take any non-empty key, unless told one; all stop at teardown."""
    async with simulators() as start:
        yield start


async def post(app: Simulator, **fields: Any) -> tuple[int, dict[str, Any]]:
    reply = await exchange_with_app(
        app, "POST", COMPLETIONS, {"model": MODEL, "messages": HELLO, **fields}
    )
    return reply.status, json.loads(reply.body)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 1},
        {"top_p": 0},
        {"top_p": 1},
        {"top_p": 0.5},
        {"presence_penalty": -2},
        {"presence_penalty": 2.0},
        {"frequency_penalty": -2.0},
        {"frequency_penalty": 2},
        {"stop": "x"},
        {"stop": ["a", "b", "c", "d"]},
        {"stop": []},
        {"seed": -INT64},
        {"seed": INT64 - 1},
        {"seed": 0},
        {"user": ""},
        {"user": "user-1234"},
        {"temperature": 0},
        {"temperature": 2},
        {name: None for name in ("max_tokens", "top_p", "stop", "seed", "user")},
    ],
)
async def test_values_at_the_edges_of_each_range_are_accepted(fields: dict[str, Any]) -> None:
    status, body = await post(Simulator(SimulatorConfig()), **fields)
    assert status == 200, body


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"max_tokens": -1}, "max_tokens", "integer_below_min_value"),
        ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({"max_tokens": True}, "max_tokens", "invalid_type"),
        ({"max_tokens": "10"}, "max_tokens", "invalid_type"),
        ({"top_p": -0.01}, "top_p", "decimal_below_min_value"),
        ({"top_p": 1.01}, "top_p", "decimal_above_max_value"),
        ({"top_p": "high"}, "top_p", "invalid_type"),
        ({"presence_penalty": -2.01}, "presence_penalty", "decimal_below_min_value"),
        ({"presence_penalty": 2.01}, "presence_penalty", "decimal_above_max_value"),
        ({"frequency_penalty": -2.01}, "frequency_penalty", "decimal_below_min_value"),
        ({"frequency_penalty": 2.01}, "frequency_penalty", "decimal_above_max_value"),
        ({"frequency_penalty": False}, "frequency_penalty", "invalid_type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"stop": 7}, "stop", "invalid_type"),
        ({"stop": {"text": "x"}}, "stop", "invalid_type"),
        ({"stop": ["a", 2]}, "stop[1]", "invalid_type"),
        ({"seed": 1.5}, "seed", "invalid_type"),
        ({"seed": "42"}, "seed", "invalid_type"),
        ({"seed": INT64}, "seed", "integer_above_max_value"),
        ({"seed": -INT64 - 1}, "seed", "integer_below_min_value"),
        ({"user": 5}, "user", "invalid_type"),
        ({"user": ["me"]}, "user", "invalid_type"),
        ({"temperature": 2.01}, "temperature", "decimal_above_max_value"),
    ],
)
async def test_values_past_the_edges_are_refused_naming_the_param(
    fields: dict[str, Any], param: str, code: str
) -> None:
    app = Simulator(SimulatorConfig())
    status, body = await post(app, **fields)
    assert status == 400
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "invalid_request_error"
    assert f"'{param}'" in body["error"]["message"]
    assert app.stats()["bad_request"] == 1
    assert not app.received  # a refused request is not recorded


async def test_range_messages_read_like_openais() -> None:
    app = Simulator(SimulatorConfig())
    _, body = await post(app, max_tokens=0)
    assert body["error"]["message"] == (
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0"
        " instead."
    )
    _, body = await post(app, top_p=1.5)
    assert body["error"]["message"] == (
        "Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 1.5"
        " instead."
    )
    _, body = await post(app, stop=list("abcde"))
    assert body["error"]["message"] == (
        "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an"
        " array with length 5 instead."
    )


# What the parameters do to the answer


async def test_max_tokens_cuts_the_answer_at_four_characters_a_token() -> None:
    app = Simulator(SimulatorConfig())
    _, body = await post(app, max_tokens=3)
    choice = body["choices"][0]
    assert choice["message"]["content"] == ANSWER[:12]
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    _, body = await post(app, max_tokens=13)  # the whole answer is 49 characters: 13 tokens
    assert body["choices"][0]["message"]["content"] == ANSWER
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 13
    _, body = await post(app, max_tokens=12)
    assert body["choices"][0]["message"]["content"] == ANSWER[:48]
    assert body["choices"][0]["finish_reason"] == "length"


async def test_a_stop_sequence_ends_the_answer_before_it() -> None:
    app = Simulator(SimulatorConfig())
    _, body = await post(app, stop=["zzz", " (messages", "reply"])
    assert body["choices"][0]["message"]["content"] == "Simulated "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3
    _, body = await post(app, stop="received", max_tokens=2)
    assert body["choices"][0]["message"]["content"] == "Simulate"
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")  # see read_stream
async def test_a_streamed_answer_cut_by_max_tokens_ends_with_length(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(stream_chunks=4)
    async with sdk(base_url) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=3, stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [item async for item in stream]
        del stream
        gc.collect()
    text = "".join(item.choices[0].delta.content or "" for item in chunks if item.choices)
    assert text == ANSWER[:12]
    assert [item.choices[0].finish_reason for item in chunks if item.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3


# What the simulator received


async def test_what_the_sdk_sent_is_recorded_system_prompt_first(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator()
    parts = [{"type": "text", "text": "sec"}, {"type": "text", "text": "o"}]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": parts},
    ]
    async with sdk(base_url) as client:
        await client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0.2, max_tokens=50, top_p=0.9,
            stop=["\n\n"], presence_penalty=0.5, frequency_penalty=-0.5, seed=7, user="u-1",
        )
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    first, second = await get_received(base_url)
    assert first["messages"][0] == {"role": "system", "content": "You are terse."}
    assert [message["content"] for message in first["messages"]] == [
        "You are terse.", "first", "one", "seco"
    ]
    assert first == {
        "model": MODEL,
        "messages": first["messages"],
        "stream": False,
        "include_usage": False,
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "seed": 7,
        "user": "u-1",
    }
    assert second == {"model": "gpt-4o", "messages": HELLO, "stream": False,
                      "include_usage": False}


async def test_the_record_keeps_only_the_last_requests_and_faulted_ones_too() -> None:
    app = Simulator(SimulatorConfig(keep_received=2, rate_5xx=1.0))
    for word in ("one", "two", "three"):
        status, _ = await post(app, messages=[{"role": "user", "content": word}])
        assert status in (500, 503)
    assert [request["messages"][0]["content"] for request in app.received] == ["two", "three"]


async def test_nothing_is_recorded_when_keep_received_is_zero() -> None:
    app = Simulator(SimulatorConfig(keep_received=0))
    assert (await post(app))[0] == 200
    assert list(app.received) == []
    reply = await exchange_with_app(app, "GET", "/_simulator/received")
    assert json.loads(reply.body) == {"requests": []}
