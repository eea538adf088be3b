"""Session chat over real HTTP: cookies, history, ordering, errors, crashes, busy mailboxes."""

from __future__ import annotations

import trio

from actors.store import MemoryStore

from .conftest import RunningServer, StartServer, StartSimulator, make_settings


async def chat(client, prompt: str, **extra):
    return await client.post("/api/chat", json={"prompt": prompt, **extra})


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


async def test_session_id_in_the_cookie_has_at_least_128_random_bits(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        response = await chat(client, "hi")
    session_id = response.cookies["sessionId"].split(".")[0]
    assert len(session_id) >= 22  # 16 bytes in URL-safe base64


async def test_two_clients_never_see_each_others_history(server: RunningServer) -> None:
    async with server.client() as alice, server.client() as bob:
        await chat(alice, "alice secret")
        await chat(bob, "bob secret")
        alice_history = (await alice.get("/api/chat/history")).json()["messages"]
        bob_history = (await bob.get("/api/chat/history")).json()["messages"]
    assert [m["content"] for m in alice_history if m["role"] == "user"] == ["alice secret"]
    assert [m["content"] for m in bob_history if m["role"] == "user"] == ["bob secret"]


async def test_a_tampered_cookie_gets_a_fresh_empty_session(server: RunningServer) -> None:
    async with server.client() as client:
        first = await chat(client, "mine")
        value = first.cookies["sessionId"]
    session_id, signature = value.split(".")
    forged = f"{session_id[:-1]}{'A' if session_id[-1] != 'A' else 'B'}.{signature}"
    for bad in (forged, session_id, f"{session_id}.{signature[::-1]}", "garbage"):
        async with server.client(cookies={"sessionId": bad}) as intruder:
            history = (await intruder.get("/api/chat/history")).json()["messages"]
            assert history == []
            response = await chat(intruder, "who am I?")
            assert response.status_code == 200
            assert response.json()["response"].endswith("(messages received: 2)")
            assert response.cookies["sessionId"] != value


async def test_an_unknown_but_signed_cookie_starts_a_new_session(
    server: RunningServer,
) -> None:
    signer = server.app.extensions["actorchat"].signer
    stale = signer.sign("never-created-session-id-0000")
    async with server.client(cookies={"sessionId": stale}) as client:
        response = await chat(client, "hello")
    assert response.status_code == 200
    assert response.cookies["sessionId"] != stale


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


async def test_delete_forgets_the_conversation(server: RunningServer) -> None:
    async with server.client() as client:
        await chat(client, "remember me")
        deleted = await client.delete("/api/chat")
        assert deleted.status_code == 204
        assert (await client.get("/api/chat/history")).json()["messages"] == []
        again = await chat(client, "fresh start")
        assert again.json()["response"].endswith("(messages received: 2)")


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


async def test_a_full_mailbox_answers_429_at_once(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    slow = await start_simulator(latency_ms=1500)
    server = await start_server(make_settings(slow, actors={"mailbox_size": 2}))
    async with server.client() as client:
        first = await chat(client, "one")  # creates the session (1.5 s)
        assert first.status_code == 200
        results: dict[str, int] = {}

        async def send(prompt: str) -> None:
            results[prompt] = (await chat(client, prompt)).status_code

        async with trio.open_nursery() as nursery:
            for prompt in ("a", "b", "c"):  # one handled, two queued: the mailbox is full
                nursery.start_soon(send, prompt)
                await trio.sleep(0.05)
            started = trio.current_time()
            refused = await chat(client, "too many")
            assert trio.current_time() - started < 0.5
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "busy"
    assert results == {"a": 200, "b": 200, "c": 200}


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


async def test_the_quart_view_and_the_fast_path_answer_alike(server: RunningServer) -> None:
    """Real traffic takes web/api/fast_path.py; Quart's test client takes the documented view."""
    async with server.client() as client:
        fast = await chat(client, "same prompt")
        fast_error = await client.post("/api/chat", json={"prompt": ""})
    test_client = server.app.test_client()
    view = await test_client.post("/api/chat", json={"prompt": "same prompt"})
    view_error = await test_client.post("/api/chat", json={"prompt": ""})
    assert view.status_code == fast.status_code == 200
    assert await view.get_json() == fast.json()
    assert view.headers["set-cookie"].split("=")[0] == fast.headers["set-cookie"].split("=")[0]
    assert "upstream;dur=" in view.headers["server-timing"]
    assert view_error.status_code == fast_error.status_code == 400
    assert await view_error.get_json() == fast_error.json()
    again = await test_client.post("/api/chat", json={"prompt": "second"})
    assert (await again.get_json())["response"].endswith("(messages received: 4)")


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


async def test_a_cookie_that_is_not_ascii_gets_a_new_session_not_an_error(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        for method, path in (("POST", "/api/chat"), ("GET", "/api/chat/history"),
                             ("DELETE", "/api/chat")):
            response = await client.request(
                method, path, json={"prompt": "hi"} if method == "POST" else None,
                headers={"cookie": "sessionId=abc.\u00e9".encode()},  # as curl sends it
            )
            assert response.status_code in (200, 204), (method, response.text)


async def test_cookies_split_over_several_headers_keep_the_session(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        first = await chat(client, "one")
        value = first.cookies["sessionId"]
    async with server.client() as raw:
        second = await raw.post(
            "/api/chat", json={"prompt": "two"},
            headers=[("cookie", f"sessionId={value}"), ("cookie", "theme=dark")],
        )
    assert "set-cookie" not in second.headers
    assert second.json()["response"].endswith("(messages received: 4)")
