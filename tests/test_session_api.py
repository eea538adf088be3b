"""Session chat over real HTTP: cookies, history, ordering, errors, crashes, busy mailboxes.

Every test here runs twice, once per door to ``POST /api/chat``: the ASGI fast path
(``web/api/fast_path.py``) and the Quart view (the edge's ``fast_chat`` off). Both must
behave alike in everything these tests see.
"""

from __future__ import annotations

from typing import Any

import trio

from actors.store import MemoryStore

from .conftest import RunningServer, StartServer, make_settings
from .doors import chat_door_fixture, start_server_through_a_door  # noqa: F401 - fixtures
from .held_simulator import open_held_simulator


async def chat(client, prompt: str, **extra):
    return await client.post("/api/chat", json={"prompt": prompt, **extra})


def session_id_of(cookie_value: str) -> str:
    return cookie_value.split(".")[0]


async def test_the_readme_conversation_keeps_history_through_the_cookie(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        first = await chat(client, "Hello, who are you?")
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("sessionId=")
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Path=/" in cookie
        body = first.json()
        assert body["response"] == 'Simulated reply to "Hello, who are you?" (messages received: 2)'
        assert body["model"] == "gpt-3.5-turbo-simulated"
        assert body["usage"]["total_tokens"] > 0
        assert set(body) == {"response", "model", "usage"}
        assert int(first.headers["content-length"]) == len(first.content)

        second = await chat(client, "What did I just ask?")
        assert second.status_code == 200
        assert "set-cookie" not in second.headers
        # system + first turn (2) + new prompt: the upstream saw the history
        assert second.json()["response"].endswith("(messages received: 4)")

        history = (await client.get("/api/chat/history")).json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        assert history[0]["content"] == "Hello, who are you?"
        assert history[2]["content"] == "What did I just ask?"


async def test_two_clients_never_see_each_others_history(server: RunningServer) -> None:
    async with server.client() as alice, server.client() as bob:
        await chat(alice, "alice secret")
        await chat(bob, "bob secret")
        alice_history = (await alice.get("/api/chat/history")).json()["messages"]
        bob_history = (await bob.get("/api/chat/history")).json()["messages"]
    assert [m["content"] for m in alice_history if m["role"] == "user"] == ["alice secret"]
    assert [m["content"] for m in bob_history if m["role"] == "user"] == ["bob secret"]


async def test_fifty_concurrent_turns_on_one_session_are_all_kept_in_order(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        await chat(client, "turn 0")
        prompts = [f"turn {n}" for n in range(1, 51)]
        statuses: list[int] = []

        async def send(prompt: str) -> None:
            statuses.append((await chat(client, prompt)).status_code)

        async with trio.open_nursery() as nursery:
            for prompt in prompts:
                nursery.start_soon(send, prompt)
        assert statuses == [200] * 50
        messages = (await client.get("/api/chat/history")).json()["messages"]
    assert len(messages) == 102
    assert [m["role"] for m in messages] == ["user", "assistant"] * 51
    users = [m["content"] for m in messages[::2]]
    assert sorted(users[1:]) == sorted(prompts)
    assert len(set(users)) == 51
    for position, (user, assistant) in enumerate(zip(messages[::2], messages[1::2], strict=False)):
        # each answer follows its own question, and saw every turn before it
        assert assistant["content"] == (
            f'Simulated reply to "{user["content"]}" (messages received: {2 * position + 2})'
        )


async def test_every_bad_input_gets_its_status_and_a_json_error(
    start_server: StartServer, simulator_url: str
) -> None:
    settings = make_settings(
        simulator_url, server={"max_body_bytes": 4096}, chat={"max_prompt_chars": 100}
    )
    server = await start_server(settings)
    cases = [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b"{}", 400),
        (b'{"prompt": ""}', 400),
        (b'{"prompt": "   "}', 400),
        (b'{"prompt": 42}', 400),
        (b'{"prompt": null}', 400),
        (b'{"prompt": "hi", "temperature": -1}', 400),
        (b'{"prompt": "hi", "temperature": 2.5}', 400),
        (b'{"prompt": "hi", "temperature": "hot"}', 400),
        (b'{"prompt": "hi", "model": 7}', 400),
        (b'{"prompt": "hi", "model": ""}', 400),
        (b'{"prompt": "' + b"x" * 101 + b'"}', 413),
        (b'{"prompt": "' + b"x" * 5000 + b'"}', 413),
    ]
    async with server.client() as client:
        for body, status in cases:
            response = await client.post(
                "/api/chat", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == status, body[:40]
            assert response.headers["content-type"] == "application/json"
            error = response.json()["error"]
            assert error["type"], body[:40]
            assert error["message"], body[:40]
        assert (await client.get("/api/chat/history")).json() == {"messages": []}
        for method, path, status in [("GET", "/nope", 404), ("PUT", "/api/chat", 405)]:
            response = await client.request(method, path)
            assert response.status_code == status
            assert response.json()["error"]["type"]


async def test_temperature_at_its_bounds_is_accepted(server: RunningServer) -> None:
    async with server.client() as client:
        for temperature in (0, 2, 1.3):
            response = await chat(client, "hi", temperature=temperature)
            assert response.status_code == 200


class ExplodingStore(MemoryStore):
    """Raises an unexpected error while saving the turn whose prompt is 'explode'."""

    async def append_turn(self, session_id: str, user: str, assistant: str) -> None:
        if user == "explode":
            raise RuntimeError("disk on fire")
        await super().append_turn(session_id, user, assistant)


async def test_an_actor_that_raises_does_not_stop_the_server_and_its_session_goes_on(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url), store=ExplodingStore())
    async with server.client() as client:
        assert (await chat(client, "before")).status_code == 200
        crashed = await chat(client, "explode")
        assert crashed.status_code == 500
        assert crashed.json()["error"]["type"] == "internal_error"
        assert "disk on fire" not in crashed.text
        after = await chat(client, "after")
        assert after.status_code == 200
        # the failed turn is not in the history and the context the upstream saw
        assert after.json()["response"].endswith("(messages received: 4)")
        history = (await client.get("/api/chat/history")).json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["before", "after"]
    stats = server.service.stats(kind="session", key=client.cookies["sessionId"].split(".")[0],
                                 limit=1)
    [actor] = stats.listed
    assert actor.restarts == 1
    assert stats.actors.crashed["session"] == 1


async def test_a_full_mailbox_answers_429_at_once(start_server: StartServer) -> None:
    """One turn held upstream, then three more on a mailbox of 2: the first answer to come
    back is the refusal, while every other turn still waits (it did not wait for the mailbox
    to drain)."""
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url, actors={"mailbox_size": 2}))
        state = server.app.extensions["actorchat"]
        cookies = {"sessionId": state.signer.sign(await server.service.new_session())}
        responses: dict[str, Any] = {}
        first_answer = trio.Event()

        async def send(client, prompt: str) -> None:
            responses[prompt] = await chat(client, prompt)
            first_answer.set()

        async with server.client(cookies=cookies) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, client, "a")
                with trio.fail_after(10):
                    await upstream.wait_until(lambda held: held.held == 1)  # "a" is handled
                    for prompt in ("b", "c", "d"):
                        nursery.start_soon(send, client, prompt)
                    await first_answer.wait()
                (refused,) = responses.values()
                assert upstream.held == 1
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"]["type"] == "busy"
                upstream.release()
            history = (await client.get("/api/chat/history")).json()["messages"]
    assert sorted(response.status_code for response in responses.values()) == [200, 200, 200, 429]
    kept = [prompt for prompt, response in responses.items() if response.status_code == 200]
    users = [m["content"] for m in history if m["role"] == "user"]
    assert users[0] == "a"
    assert sorted(users) == sorted(kept)


async def test_health_and_openapi_describe_the_service(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["store_reachable"] is True
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    for path in ("/api/chat", "/api/chat/history", "/chat", "/chat/{trace_id}/response"):
        assert path in spec["paths"], path
    post = spec["paths"]["/api/chat"]["post"]
    assert "requestBody" in post
    assert {"200", "400", "413", "429"} <= set(post["responses"])


async def test_one_access_line_per_request_names_the_session_not_the_text(
    start_server: StartServer, simulator_url: str, caplog
) -> None:
    caplog.set_level("INFO", logger="actorchat.access")
    server = await start_server(make_settings(simulator_url, server={"access_log": True}))
    async with server.client() as client:
        response = await chat(client, "a very private prompt")
        await client.get("/api/chat/history")
    session_prefix = response.cookies["sessionId"][:8]
    lines = [record.getMessage() for record in caplog.records
             if record.name == "actorchat.access"]
    assert len(lines) == 2
    assert lines[0].startswith("POST /api/chat 200 ")
    assert lines[0].endswith(session_prefix)
    assert lines[1].startswith("GET /api/chat/history 200 ")
    assert all("private" not in record.getMessage() for record in caplog.records)


