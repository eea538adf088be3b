"""Trace-ID jobs over real HTTP, against the simulator with latency so states are visible."""

from __future__ import annotations

import re
import uuid

import trio

from .conftest import StartServer, StartSimulator, make_settings

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def submit(client, message: str, headers=None, **extra):
    return await client.post("/chat", json={"message": message, **extra}, headers=headers)


async def test_the_readme_trace_flow_answers_with_every_field(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    server = await start_server(make_settings(await start_simulator(latency_ms=300)))
    async with server.client() as client:
        accepted = await submit(client, "What is Trio?", model="gpt-4o-mini", temperature=0.2)
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status"] == "processing"
        assert body["message"] == "Chat request received and is being processed"
        trace_id = body["traceId"]
        assert uuid.UUID(trace_id).version == 4

        pending = (await client.get(f"/chat/{trace_id}/response")).json()
        assert pending["status"] == "processing"
        assert pending["traceId"] == trace_id
        assert "response" not in pending

        for _ in range(100):
            done = (await client.get(f"/chat/{trace_id}/response")).json()
            if done["status"] == "completed":
                break
            await trio.sleep(0.05)
    assert done["response"] == 'Simulated reply to "What is Trio?" (messages received: 2)'
    assert done["model"] == "gpt-4o-mini-simulated"
    assert done["usage"]["total_tokens"] == (
        done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]
    )
    assert ISO_UTC.match(done["timestamp"]), done["timestamp"]
    assert "error" not in done


async def test_wait_returns_as_soon_as_the_job_completes(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    server = await start_server(make_settings(await start_simulator(latency_ms=300)))
    async with server.client() as client:
        trace_id = (await submit(client, "hold on")).json()["traceId"]
        started = trio.current_time()
        done = await client.get(f"/chat/{trace_id}/response", params={"wait": 20})
        elapsed = trio.current_time() - started
    assert done.json()["status"] == "completed"
    assert 0.1 < elapsed < 2.0


async def test_two_hundred_jobs_at_once_each_answer_their_own_message(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    server = await start_server(make_settings(await start_simulator(latency_ms=50)))
    traces: dict[str, str] = {}
    async with server.client() as client:

        async def one(n: int) -> None:
            response = await submit(client, f"question {n}")
            assert response.status_code == 202
            traces[response.json()["traceId"]] = f"question {n}"

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(one, n)
        results: dict[str, dict] = {}

        async def collect(trace_id: str) -> None:
            results[trace_id] = (
                await client.get(f"/chat/{trace_id}/response", params={"wait": 20})
            ).json()

        async with trio.open_nursery() as nursery:
            for trace_id in traces:
                nursery.start_soon(collect, trace_id)
    assert len(traces) == 200
    for trace_id, message in traces.items():
        assert results[trace_id]["status"] == "completed"
        assert results[trace_id]["response"] == (
            f'Simulated reply to "{message}" (messages received: 2)'
        )


async def test_a_refused_key_fails_the_job_with_a_json_error(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    other_key = await start_simulator(api_key="a-different-key")
    server = await start_server(make_settings(other_key))
    async with server.client() as client:
        trace_id = (await submit(client, "hello")).json()["traceId"]
        result = await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "upstream_auth_error"
    assert "refused the API key" in body["error"]["message"]
    assert "sim-test-key" not in result.text


async def test_a_running_job_can_be_cancelled_and_a_finished_one_is_left_alone(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    server = await start_server(make_settings(await start_simulator(latency_ms=5000)))
    async with server.client() as client:
        trace_id = (await submit(client, "slow")).json()["traceId"]
        await trio.sleep(0.1)
        started = trio.current_time()
        cancelled = await client.delete(f"/chat/{trace_id}")
        assert trio.current_time() - started < 1
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["error"]["type"] == "cancelled"
        again = await client.get(f"/chat/{trace_id}/response")
        assert again.json()["status"] == "cancelled"
        assert (await client.delete(f"/chat/{trace_id}")).json()["status"] == "cancelled"
    assert server.service.stats().upstream.in_flight == 0


async def test_jobs_over_max_running_queue_and_over_max_queued_get_503(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    settings = make_settings(
        await start_simulator(latency_ms=400), jobs={"max_running": 1, "max_queued": 1}
    )
    server = await start_server(settings)
    async with server.client() as client:
        first = await submit(client, "first")
        second = await submit(client, "second")
        third = await submit(client, "third")
        assert first.json()["status"] == "processing"
        assert second.json()["status"] == "queued"
        assert third.status_code == 503
        assert int(third.headers["retry-after"]) >= 1
        assert third.json()["error"]["type"] == "overloaded"
        second_id = second.json()["traceId"]
        assert (await client.get(f"/chat/{second_id}/response")).json()["status"] == "queued"
        done = await client.get(f"/chat/{second_id}/response", params={"wait": 10})
        assert done.json()["status"] == "completed"
        assert (await submit(client, "fourth")).status_code == 202


async def test_an_idempotency_key_replays_the_same_job_and_refuses_another_body(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url))
    async with server.client() as client:
        key = {"Idempotency-Key": "order-42"}
        first = await submit(client, "pay once", headers=key)
        replay = await submit(client, "pay once", headers=key)
        assert replay.status_code == 202
        assert replay.json()["traceId"] == first.json()["traceId"]
        assert replay.headers["idempotent-replayed"] == "true"
        conflict = await submit(client, "pay twice", headers=key)
        assert conflict.status_code == 409
        assert conflict.json()["error"]["type"] == "idempotency_conflict"
        other = await submit(client, "pay once", headers={"Idempotency-Key": "order-43"})
        assert other.json()["traceId"] != first.json()["traceId"]
    jobs = server.service.stats().jobs
    assert jobs.by_status["completed"] + jobs.running + jobs.queued == 2


async def test_unknown_and_malformed_trace_ids_are_404_json(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url))
    async with server.client() as client:
        for trace_id in (str(uuid.uuid4()), "not-a-uuid", "1234", "%00"):
            for method, path in (("GET", f"/chat/{trace_id}/response"),
                                 ("DELETE", f"/chat/{trace_id}")):
                response = await client.request(method, path)
                assert response.status_code == 404, (method, trace_id)
                assert response.json()["error"]["type"] == "not_found"


async def test_every_invalid_job_body_is_400_json(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url))
    bodies = [
        b"{}", b'{"message": ""}', b'{"message": 5}', b'{"message": ["a"]}',
        b'{"message": "hi", "temperature": -1}', b'{"message": "hi", "temperature": 2.5}',
        b'{"message": "hi", "temperature": "hot"}', b'{"message": "hi", "model": 1}',
        b"nope", b'"just a string"',
    ]
    async with server.client() as client:
        for body in bodies:
            response = await client.post(
                "/chat", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request"
        trace_id = (await submit(client, "ok")).json()["traceId"]
        for wait in ("-1", "31", "soon", "nan"):
            response = await client.get(f"/chat/{trace_id}/response", params={"wait": wait})
            assert response.status_code == 400, wait
    jobs = server.service.stats().jobs
    assert jobs.running + jobs.queued + sum(jobs.by_status.values()) == 1
