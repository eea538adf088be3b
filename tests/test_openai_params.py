"""OpenAI parameters over real HTTP: checked at the edges of OpenAI's ranges on both
``POST /api/chat`` and ``POST /chat``, and passed through to the simulator as given."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RunningServer
from .simulator_support import get_received

INT64 = 2**63

# At the edges of each range, and inside it: every one is accepted and sent as it is.
ACCEPTED: list[dict[str, Any]] = [
    {"max_tokens": 1},
    {"max_tokens": 100_000},
    {"top_p": 0},
    {"top_p": 1},
    {"top_p": 0.5},
    {"stop": "END"},
    {"stop": ["a"]},
    {"stop": ["a", "b", "c", "d"]},
    {"presence_penalty": -2},
    {"presence_penalty": 2},
    {"frequency_penalty": -2.0},
    {"frequency_penalty": 2.0},
    {"seed": -INT64},
    {"seed": INT64 - 1},
    {"seed": 0},
    {"user": "user-1234"},
    {"max_tokens": 16.0, "seed": -3.0},  # JSON Schema's integers include 16.0; sent as 16
    {"max_tokens": 7, "top_p": 0.9, "stop": ["x", "y"], "presence_penalty": 0.5,
     "frequency_penalty": -0.5, "seed": 42, "user": "u"},
]

# Just past the edges, and wrong types: each is a 400 naming the field.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"top_p": -0.001}, "top_p"),
    ({"top_p": 1.001}, "top_p"),
    ({"top_p": "1"}, "top_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": []}, "stop"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 5]}, "stop"),
    ({"presence_penalty": -2.001}, "presence_penalty"),
    ({"presence_penalty": 2.001}, "presence_penalty"),
    ({"frequency_penalty": -2.001}, "frequency_penalty"),
    ({"frequency_penalty": 2.001}, "frequency_penalty"),
    ({"seed": -INT64 - 1}, "seed"),
    ({"seed": INT64}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"user": 5}, "user"),
    ({"max_token": 5}, "max_token"),  # misspelt: an unknown field
    ({"logit_bias": {}}, "logit_bias"),
    ({"stream": 0}, "stream"),  # schemathesis found 0 taken as false
]


def _sent(params: dict[str, Any]) -> dict[str, Any]:
    """What the simulator records for ``params``: ``stop`` always as a list."""
    expected = {name: int(value) if isinstance(value, float) and name in ("max_tokens", "seed")
                else value for name, value in params.items()}
    if isinstance(expected.get("stop"), str):
        expected["stop"] = [expected["stop"]]
    return expected


async def _last_received(simulator_url: str) -> dict[str, Any]:
    received = await get_received(simulator_url)
    assert received, "the simulator received nothing"
    return received[-1]


def _without_fixed_fields(record: dict[str, Any]) -> dict[str, Any]:
    fixed = {"model", "messages", "stream", "include_usage", "temperature"}
    return {name: value for name, value in record.items() if name not in fixed}


@pytest.mark.parametrize("params", ACCEPTED)
async def test_parameters_at_the_edges_of_their_ranges_reach_the_upstream_from_a_session_turn(
    server: RunningServer, simulator_url: str, params: dict[str, Any]
) -> None:
    async with server.client() as client:
        reply = await client.post("/api/chat", json={"prompt": "hi", **params})
    assert reply.status_code == 200, reply.text
    received = _without_fixed_fields(await _last_received(simulator_url))
    assert received == _sent(params)
    for name in ("max_tokens", "seed"):
        if name in received:
            assert type(received[name]) is int


@pytest.mark.parametrize("params", ACCEPTED[::4] + ACCEPTED[-1:])
async def test_parameters_reach_the_upstream_from_a_trace_job(
    server: RunningServer, simulator_url: str, params: dict[str, Any]
) -> None:
    async with server.client() as client:
        accepted = await client.post("/chat", json={"message": "hi", **params})
        assert accepted.status_code == 202, accepted.text
        trace_id = accepted.json()["traceId"]
        done = await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
    assert done.json()["status"] == "completed"
    assert _without_fixed_fields(await _last_received(simulator_url)) == _sent(params)


@pytest.mark.parametrize(("params", "field"), REFUSED)
@pytest.mark.parametrize(("path", "text_field"), [("/api/chat", "prompt"), ("/chat", "message")])
async def test_a_parameter_out_of_range_or_unknown_is_a_json_400_naming_the_field(
    server: RunningServer, simulator_url: str, params: dict[str, Any], field: str, path: str,
    text_field: str,
) -> None:
    async with server.client() as client:
        reply = await client.post(path, json={text_field: "hi", **params})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["message"].startswith(f"{field}:"), error["message"]
    assert await get_received(simulator_url) == []


async def test_parameters_not_given_are_not_sent_and_null_means_not_given(
    server: RunningServer, simulator_url: str
) -> None:
    async with server.client() as client:
        plain = await client.post("/api/chat", json={"prompt": "hi"})
        nulls = await client.post("/api/chat", json={"prompt": "hi", "seed": None, "stop": None})
    assert plain.status_code == nulls.status_code == 200
    for record in await get_received(simulator_url):
        assert _without_fixed_fields(record) == {}


async def test_the_same_idempotency_key_with_other_parameters_is_a_conflict(
    server: RunningServer,
) -> None:
    headers = {"Idempotency-Key": "params-key"}
    async with server.client() as client:
        first = await client.post("/chat", json={"message": "hi", "seed": 1}, headers=headers)
        again = await client.post("/chat", json={"message": "hi", "seed": 1}, headers=headers)
        other = await client.post("/chat", json={"message": "hi", "seed": 2}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["traceId"] == first.json()["traceId"]
    assert other.status_code == 409
