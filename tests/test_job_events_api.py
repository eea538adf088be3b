"""``GET /chat/{trace_id}/events`` and the jobs' byte bound, over real HTTP with the streaming
simulator. Where a test must see a job in flight, the simulator holds the job's request until
the test releases it (`HeldSimulator`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from .conftest import StartServer, StartSimulator, make_settings
from .held_simulator import open_held_simulator


class EventReader:
    """Reads one event stream event by event: ``(name, data)``, data parsed unless [DONE]."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str | None, object]:
        name: str | None = None
        async for line in self._lines:
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
                return name, data if data == "[DONE]" else json.loads(data)
        raise EOFError("the stream ended")

    async def aclose(self) -> None:
        """Stop reading (closes the line iterator, so a stream left early is cleaned up)."""
        await self._lines.aclose()  # type: ignore[attr-defined]

    async def rest(self) -> list[tuple[str | None, object]]:
        """Every event up to the end of the stream."""
        events = []
        while True:
            try:
                events.append(await self.next())
            except EOFError:
                return events


@asynccontextmanager
async def listen(client: httpx.AsyncClient, trace_id: str) -> AsyncIterator[EventReader]:
    async with client.stream("GET", f"/chat/{trace_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        try:
            yield reader
        finally:
            await reader.aclose()


def deltas(events: list[tuple[str | None, object]]) -> str:
    return "".join(data["delta"] for name, data in events  # type: ignore[index]
                   if name is None and isinstance(data, dict) and "delta" in data)


async def submit(client: httpx.AsyncClient, message: str, **headers: str) -> httpx.Response:
    return await client.post("/chat", json={"message": message}, headers=headers)


async def test_job_events_carry_the_text_in_pieces_and_end_with_the_final_record(
    start_server: StartServer,
) -> None:
    async with open_held_simulator(stream_chunks=5) as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            trace_id = (await submit(client, "What is Trio?")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)
            async with listen(client, trace_id) as reader:
                assert await reader.next() == ("status", {
                    "traceId": trace_id, "status": "processing",
                    "timestamp": (await client.get(f"/chat/{trace_id}/response")).json()[
                        "timestamp"],
                })
                upstream.release()
                events = await reader.rest()
            final = (await client.get(f"/chat/{trace_id}/response")).json()
    assert events[-1] == (None, "[DONE]")
    assert events[-2] == ("result", final)
    assert final["status"] == "completed"
    pieces = [data for name, data in events[:-2]]
    assert len(pieces) >= 2  # the text arrived in several events, not at the end
    assert all(set(piece) == {"delta"} for piece in pieces)  # type: ignore[arg-type]
    assert deltas(events) == final["response"]


async def test_a_queued_job_shows_queued_then_processing_then_its_result(
    start_server: StartServer,
) -> None:
    async with open_held_simulator(stream_chunks=3) as upstream:
        server = await start_server(make_settings(upstream.url, jobs={"max_running": 1}))
        async with server.client() as client:
            await submit(client, "first")
            second = (await submit(client, "second")).json()
            assert second["status"] == "queued"
            await upstream.wait_until(lambda held: held.held == 1)
            async with listen(client, second["traceId"]) as reader:
                upstream.release()
                events = await reader.rest()
    statuses = [data["status"] for name, data in events  # type: ignore[index]
                if name in ("status", "result")]
    assert statuses == ["queued", "processing", "completed"]


async def test_a_late_listener_gets_the_status_and_the_text_so_far_then_the_rest(
    start_server: StartServer,
) -> None:
    # 40 pieces 100 ms apart: the second listener joins after the first piece, seconds before
    # the end. Nothing asserts on the clock: only on what each listener received.
    async with open_held_simulator(stream_chunks=40, chunk_delay_ms=100) as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            trace_id = (await submit(client, "tell me a long story")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)
            async with listen(client, trace_id) as early:
                assert (await early.next())[0] == "status"
                upstream.release()
                first_piece = await early.next()
                assert first_piece[0] is None
                async with listen(client, trace_id) as late:
                    joined = [await late.next(), await late.next()]
                    late_events = joined + await late.rest()
                early_events = [first_piece, *await early.rest()]
    final = late_events[-2][1]
    assert isinstance(final, dict)
    assert final["status"] == "completed"
    assert joined[0][0] == "status"
    assert joined[0][1]["status"] == "processing"  # type: ignore[index]
    so_far = joined[1][1]["delta"]  # type: ignore[index]
    assert final["response"].startswith(so_far)
    assert len(so_far) >= len(first_piece[1]["delta"])  # type: ignore[index]
    assert deltas(late_events) == final["response"]
    assert deltas(early_events) == final["response"]


async def test_cancelling_a_job_ends_its_events_with_cancelled(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            trace_id = (await submit(client, "never mind")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)
            async with listen(client, trace_id) as reader:
                assert (await reader.next())[1]["status"] == "processing"  # type: ignore[index]
                cancelled = await client.delete(f"/chat/{trace_id}")
                assert cancelled.json()["status"] == "cancelled"
                events = await reader.rest()
    assert events[-1] == (None, "[DONE]")
    name, final = events[-2]
    assert name == "result"
    assert final["status"] == "cancelled"  # type: ignore[index]
    assert final["error"]["type"] == "cancelled"  # type: ignore[index]
    assert server.service.stats().jobs.queued_bytes == 0


async def test_a_finished_jobs_events_are_its_final_record_and_done(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url))
    async with server.client() as client:
        trace_id = (await submit(client, "quick")).json()["traceId"]
        final = (await client.get(f"/chat/{trace_id}/response", params={"wait": 10})).json()
        assert final["status"] == "completed"
        async with listen(client, trace_id) as reader:
            events = await reader.rest()
    assert events == [("result", final), (None, "[DONE]")]


async def test_events_of_an_unknown_or_malformed_trace_id_are_404_json(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url))
    async with server.client() as client:
        for trace_id in ("0b3c1a2e-8f1d-4c4e-9a51-3d2f00000000", "not-a-uuid"):
            response = await client.get(f"/chat/{trace_id}/events")
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["type"] == "not_found"


async def test_a_failure_mid_stream_restarts_the_answer_then_ends_with_the_failed_record(
    start_server: StartServer, start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(rate_stream_error=1.0, stream_chunks=4)
    server = await start_server(make_settings(simulator, upstream={"max_attempts": 3}))
    async with server.client() as client:
        trace_id = (await submit(client, "break please")).json()["traceId"]
        async with listen(client, trace_id) as reader:
            events = await reader.rest()
        final = (await client.get(f"/chat/{trace_id}/response")).json()
        stats = (await client.get(simulator.removesuffix("/v1") + "/_simulator/stats")).json()
    assert events[-2] == ("result", final)
    assert all(name in (None, "status", "reset", "result") for name, _ in events)
    assert final["status"] == "failed"
    assert "response" not in final
    # Each answer broke after its first pieces: the job asked again, max_attempts answers in
    # all (a listener that joined late sees fewer of the resets in between).
    assert stats["requests"] == 3


async def test_jobs_past_max_queued_bytes_are_503_with_retry_after_until_one_ends(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        settings = make_settings(upstream.url, jobs={"max_queued_bytes": 1000})
        server = await start_server(settings)
        async with server.client() as client:
            first = await submit(client, "a" * 600)
            assert first.status_code == 202
            refused = await submit(client, "b" * 600)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "overloaded"
            assert "max_queued_bytes" in refused.json()["error"]["message"]
            assert (await submit(client, "c" * 1001)).status_code == 503  # alone over it
            assert (await submit(client, "d" * 400)).status_code == 202  # exactly at it
            assert server.service.stats().jobs.queued_bytes == 1000
            upstream.release()
            trace_id = first.json()["traceId"]
            done = await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
            assert done.json()["status"] == "completed"
            assert (await submit(client, "e" * 600)).status_code == 202


async def test_concurrent_submissions_are_admitted_exactly_up_to_max_queued_bytes(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        settings = make_settings(upstream.url, jobs={"max_queued_bytes": 10 * 1000})
        server = await start_server(settings)
        statuses: list[int] = []
        async with server.client() as client:

            async def one(number: int) -> None:
                statuses.append((await submit(client, f"{number:03d}" + "x" * 997)).status_code)

            async with trio.open_nursery() as nursery:
                for number in range(40):
                    nursery.start_soon(one, number)
            assert sorted(statuses) == [202] * 10 + [503] * 30
            assert server.service.stats().jobs.queued_bytes == 10 * 1000
            upstream.release()


async def test_a_replayed_key_for_a_cancelled_job_does_not_say_it_is_being_processed(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            first = (await submit(client, "cancel me", **{"Idempotency-Key": "k-1"})).json()
            assert first["message"] == "Chat request received and is being processed"
            await client.delete(f"/chat/{first['traceId']}")
            replay = await submit(client, "cancel me", **{"Idempotency-Key": "k-1"})
    body = replay.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert body["status"] == "cancelled"
    assert "being processed" not in body["message"]
    assert "cancelled" in body["message"]


# httpx closes a response left early without closing httpcore's body generator, which Trio
# then warns about when it is collected.
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_a_listener_that_disconnects_is_forgotten_and_the_job_goes_on(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            trace_id = (await submit(client, "keep going")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)
            job = server.service._system.find("job", trace_id)
            async with listen(client, trace_id) as reader:
                assert (await reader.next())[0] == "status"
                assert job.events.listeners == 1
            for _ in range(500):  # the server sees the disconnect within milliseconds
                if job.events.listeners == 0:
                    break
                await trio.sleep(0.01)
            assert job.events.listeners == 0
            upstream.release()
            done = await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
    assert done.json()["status"] == "completed"
