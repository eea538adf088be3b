"""``GET /api/models``: the upstream's list in OpenAI's shape, cached for a minute, errors
mapped as a chat turn's are. The cache's timing runs on the ``autojump_clock``."""

from __future__ import annotations

import pytest
import trio

from actors.errors import UpstreamUnavailable
from actors.model_list import CACHE_S, ModelList
from actors.upstream import ModelInfo

from .conftest import RunningServer, StartServer, StartSimulator, make_settings
from .simulator_support import get_stats

SIMULATOR_MODELS = {"gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1"}


class CountingUpstream:
    """Lists one model per call, numbered; fails the calls listed in ``failing``."""

    def __init__(self, failing: tuple[int, ...] = (), delay_s: float = 0.0) -> None:
        self.calls = 0
        self.failing = failing
        self.delay_s = delay_s

    async def list_models(self) -> list[ModelInfo]:
        self.calls += 1
        await trio.sleep(self.delay_s)
        if self.calls in self.failing:
            raise UpstreamUnavailable("the upstream failed with HTTP 500")
        return [ModelInfo(id=f"model-{self.calls}", owned_by="test", created=1)]


async def test_the_list_is_served_from_the_cache_for_a_minute_then_fetched_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = CountingUpstream()
    models = ModelList(upstream)  # type: ignore[arg-type]
    first = await models.get()
    await trio.sleep(CACHE_S - 1)
    assert await models.get() == first
    assert upstream.calls == 1
    await trio.sleep(1)
    assert [model.id for model in await models.get()] == ["model-2"]
    assert upstream.calls == models.fetches == 2


async def test_concurrent_callers_share_one_fetch(autojump_clock: trio.abc.Clock) -> None:
    upstream = CountingUpstream(delay_s=1.0)
    models = ModelList(upstream)  # type: ignore[arg-type]
    results = []

    async def ask() -> None:
        results.append(await models.get())

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(ask)
    assert upstream.calls == 1
    assert len(results) == 10
    assert all(result == results[0] for result in results)


async def test_a_failed_fetch_is_not_cached(autojump_clock: trio.abc.Clock) -> None:
    upstream = CountingUpstream(failing=(1,))
    models = ModelList(upstream)  # type: ignore[arg-type]
    with pytest.raises(UpstreamUnavailable):
        await models.get()
    assert [model.id for model in await models.get()] == ["model-2"]


async def test_the_simulators_models_are_listed_in_openais_shape_and_cached(
    server: RunningServer, simulator_url: str,
) -> None:
    async with server.client() as client:
        first = await client.get("/api/models")
        second = await client.get("/api/models")
    assert first.status_code == 200
    body = first.json()
    assert body["object"] == "list"
    assert {model["id"] for model in body["data"]} == SIMULATOR_MODELS
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
    assert second.json() == body
    assert server.service.model_list.fetches == 1
    assert (await get_stats(simulator_url))["requests"] == 1


async def test_a_refused_key_is_a_502_as_for_a_chat_turn(
    start_server: StartServer, start_simulator: StartSimulator,
) -> None:
    other = await start_simulator(api_key="the-right-key")
    server = await start_server(make_settings(other))
    async with server.client() as client:
        reply = await client.get("/api/models")
    assert reply.status_code == 502
    assert reply.json()["error"]["type"] == "upstream_auth_error"
    assert "sim-test-key" not in reply.text


async def test_an_unreachable_upstream_is_a_502(start_server: StartServer) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    server = await start_server(make_settings(f"http://127.0.0.1:{closed_port}/v1"))
    async with server.client() as client:
        reply = await client.get("/api/models")
    assert reply.status_code == 502
    assert reply.json()["error"]["type"] == "upstream_unavailable"


async def test_no_configured_upstream_is_a_503_naming_the_variable(
    start_server: StartServer,
) -> None:
    server = await start_server(make_settings(None, upstream={"provider": "openai"}))
    async with server.client() as client:
        reply = await client.get("/api/models")
    assert reply.status_code == 503
    assert "OPENAI_API_KEY" in reply.json()["error"]["message"]
