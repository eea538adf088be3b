"""Trace-ID jobs over real HTTP. Where a test must see a job in flight, the simulator holds
its answer until the test releases it (`HeldSimulator`), so no test depends on timing."""

from __future__ import annotations

import re
import uuid

import trio
import trio.testing

from .conftest import RunningServer, StartServer, StartSimulator, make_settings
from .held_simulator import open_held_simulator

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def submit(client, message: str, headers=None, **extra):
    return await client.post("/chat", json={"message": message, **extra}, headers=headers)


def watch_requests(server: RunningServer, path_suffix: str) -> trio.Event:
    """An event set when a request whose path ends with ``path_suffix`` reaches the app."""
    arrived = trio.Event()
    inner = server.app.asgi_app

    async def watched(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith(path_suffix):
            arrived.set()
        await inner(scope, receive, send)

    server.app.asgi_app = watched
    return arrived


async def test_the_readme_trace_flow_answers_with_every_field(start_server: StartServer) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            accepted = await submit(client, "What is Trio?", model="gpt-4o-mini", temperature=0.2)
            assert accepted.status_code == 202
            body = accepted.json()
            assert body["status"] == "processing"
            assert body["message"] == "Chat request received and is being processed"
            trace_id = body["traceId"]
            assert uuid.UUID(trace_id).version == 4

            await upstream.wait_until(lambda held: held.held == 1)
            pending = (await client.get(f"/chat/{trace_id}/response")).json()
            assert pending["status"] == "processing"
            assert pending["traceId"] == trace_id
            assert "response" not in pending

            upstream.release()
            done = (await client.get(f"/chat/{trace_id}/response", params={"wait": 30})).json()
    assert done["status"] == "completed"
    assert done["response"] == 'Simulated reply to "What is Trio?" (messages received: 2)'
    assert done["model"] == "gpt-4o-mini-simulated"
    assert done["usage"]["total_tokens"] == (
        done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]
    )
    assert ISO_UTC.match(done["timestamp"]), done["timestamp"]
    assert "error" not in done


WAIT_GUARD_S = 20
"""Far above the milliseconds a released job takes, below the ``wait`` of 30 s asked for: only
a wait that ignored the job's completion and ran out its time reaches it."""


async def test_wait_holds_the_request_until_the_job_completes_then_answers_at_once(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        waiting = watch_requests(server, "/response")
        events: list[str] = []
        async with server.client() as client:
            trace_id = (await submit(client, "hold on")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)

            async def wait_for_the_job() -> None:
                with trio.fail_after(WAIT_GUARD_S):
                    done = await client.get(f"/chat/{trace_id}/response", params={"wait": 30})
                events.append(f"answered {done.json()['status']}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_the_job)
                await waiting.wait()
                # The request is in the app, which needs no I/O until it answers: once every
                # task is blocked, it either answered already or is waiting for the job.
                await trio.testing.wait_all_tasks_blocked()
                events.append("released")
                upstream.release()
    assert events == ["released", "answered completed"]
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
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        async with server.client() as client:
            trace_id = (await submit(client, "slow")).json()["traceId"]
            await upstream.wait_until(lambda held: held.held == 1)
            cancelled = await client.delete(f"/chat/{trace_id}")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            assert cancelled.json()["error"]["type"] == "cancelled"
            # The upstream call was cancelled too: its connection closed while held.
            await upstream.wait_until(lambda held: held.abandoned == 1)
            again = await client.get(f"/chat/{trace_id}/response")
            assert again.json()["status"] == "cancelled"
            assert (await client.delete(f"/chat/{trace_id}")).json()["status"] == "cancelled"
    assert server.service.stats().upstream.in_flight == 0


async def test_jobs_over_max_running_queue_and_over_max_queued_get_503(
    start_server: StartServer,
) -> None:
    async with open_held_simulator() as upstream:
        settings = make_settings(upstream.url, jobs={"max_running": 1, "max_queued": 1})
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
            await upstream.wait_until(lambda held: held.held == 1)
            assert (await client.get(f"/chat/{second_id}/response")).json()["status"] == "queued"
            upstream.release()
            done = await client.get(f"/chat/{second_id}/response", params={"wait": 30})
            assert done.json()["status"] == "completed"
            assert upstream.held == 2  # the third was never sent upstream
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
