"""Session cookies over real HTTP: random IDs, tampering, DELETE, and one rule for every route
when a request carries several cookies or a quoted one (issue 11, finding 6).

Every test here runs twice, once per door to ``POST /api/chat`` (``tests/doors.py``).
"""

from __future__ import annotations

import base64

import pytest

from .conftest import RunningServer
from .doors import chat_door_fixture, start_server_through_a_door  # noqa: F401 - fixtures


async def chat(client, prompt: str, **extra):
    return await client.post("/api/chat", json={"prompt": prompt, **extra})


def session_id_of(cookie_value: str) -> str:
    return cookie_value.split(".")[0]


async def test_session_ids_in_cookies_are_distinct_and_carry_at_least_128_random_bits(
    server: RunningServer,
) -> None:
    """64 new sessions: every ID distinct, and each of the first 128 bits both set and clear
    somewhere among them (a fixed bit in 64 random IDs has odds of 2**-63; a counter, a
    clock or a short random part leaves many bits fixed)."""
    ids: list[bytes] = []
    for _ in range(64):
        async with server.client() as client:
            response = await chat(client, "hi")
        session_id = session_id_of(response.cookies["sessionId"])
        ids.append(base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4)))
    assert len(set(ids)) == 64
    assert min(len(raw) for raw in ids) >= 16
    numbers = [int.from_bytes(raw[:16], "big") for raw in ids]
    for bit in range(128):
        assert len({(number >> bit) & 1 for number in numbers}) == 2, f"bit {bit} never varies"


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


async def test_delete_forgets_the_conversation_and_the_next_turn_starts_a_new_session(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        first = await chat(client, "remember me")
        old_cookie = first.cookies["sessionId"]
        deleted = await client.delete("/api/chat")
        assert deleted.status_code == 204
        assert deleted.content == b""
        cleared = deleted.headers["set-cookie"]
        assert cleared.startswith("sessionId=")
        assert "Max-Age=0" in cleared or "1970" in cleared
        assert "sessionId" not in client.cookies
        assert (await client.get("/api/chat/history")).json()["messages"] == []
        again = await chat(client, "fresh start")
        assert again.status_code == 200
        assert again.json()["response"].endswith("(messages received: 2)")
        new_cookie = again.cookies["sessionId"]
        assert session_id_of(new_cookie) != session_id_of(old_cookie)
        history = (await client.get("/api/chat/history")).json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["fresh start"]
    # A client that ignores the cleared cookie and sends the old one gets a new session too.
    async with server.client(cookies={"sessionId": old_cookie}) as stubborn:
        assert (await stubborn.get("/api/chat/history")).json()["messages"] == []
        revived = await chat(stubborn, "is anyone there?")
    assert revived.json()["response"].endswith("(messages received: 2)")
    assert session_id_of(revived.cookies["sessionId"]) not in (
        session_id_of(old_cookie), session_id_of(new_cookie)
    )


async def test_a_cookie_that_is_not_ascii_gets_a_new_session_not_an_error(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        for method, path, status in (("POST", "/api/chat", 200), ("GET", "/api/chat/history", 200),
                                     ("DELETE", "/api/chat", 204)):
            response = await client.request(
                method, path, json={"prompt": "hi"} if method == "POST" else None,
                headers={"cookie": "sessionId=abc.\u00e9".encode()},  # as curl sends it
            )
            assert response.status_code == status, (method, response.text)
            if method == "POST":
                assert response.json()["response"].endswith("(messages received: 2)")
                assert response.cookies["sessionId"]
            if method == "GET":
                assert response.json() == {"messages": []}


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


async def _two_sessions(server: RunningServer) -> tuple[str, str]:
    """Two sessions with one turn each ("alice", "bob"); their signed cookie values."""
    values = []
    for prompt in ("alice", "bob"):
        async with server.client() as client:
            values.append((await chat(client, prompt)).cookies["sessionId"])
    return values[0], values[1]


async def _user_turns(server: RunningServer, cookie_value: str) -> list[str]:
    async with server.client(cookies={"sessionId": cookie_value}) as client:
        messages = (await client.get("/api/chat/history")).json()["messages"]
    return [m["content"] for m in messages if m["role"] == "user"]


@pytest.mark.parametrize("split", [True, False], ids=["two headers", "one header"])
async def test_two_different_session_cookies_name_no_session_on_any_route(
    server: RunningServer, split: bool,
) -> None:
    """Ambiguity is refused the same way everywhere: history is empty, a turn starts a new
    session, DELETE forgets neither (the rule is in web/api/cookies.py)."""
    alice, bob = await _two_sessions(server)
    if split:  # as HTTP/2 sends cookies: one header each
        cookies = [("cookie", f"sessionId={alice}"), ("cookie", f"sessionId={bob}")]
    else:
        cookies = [("cookie", f"sessionId={alice}; sessionId={bob}")]
    async with server.client() as client:
        history = await client.get("/api/chat/history", headers=cookies)
        assert history.json() == {"messages": []}
        turn = await client.post("/api/chat", json={"prompt": "who am I?"}, headers=cookies)
        assert turn.status_code == 200
        assert turn.json()["response"].endswith("(messages received: 2)")
        assert session_id_of(turn.cookies["sessionId"]) not in (
            session_id_of(alice), session_id_of(bob)
        )
        assert (await client.delete("/api/chat", headers=cookies)).status_code == 204
    assert await _user_turns(server, alice) == ["alice"]
    assert await _user_turns(server, bob) == ["bob"]


@pytest.mark.parametrize(
    "header",
    [
        'sessionId="{alice}"',
        "sessionId={alice}; sessionId={alice}",
        "sessionId=not-ours; sessionId={alice}",
        "theme=dark;sessionId={alice} ; lang=en",
    ],
    ids=["quoted", "sent twice", "with an unsigned one", "among others"],
)
async def test_one_signed_session_cookie_names_that_session_on_every_route(
    server: RunningServer, header: str,
) -> None:
    alice, _ = await _two_sessions(server)
    cookies = [("cookie", header.format(alice=alice))]
    async with server.client() as client:
        history = (await client.get("/api/chat/history", headers=cookies)).json()["messages"]
        assert [m["content"] for m in history if m["role"] == "user"] == ["alice"]
        turn = await client.post("/api/chat", json={"prompt": "again"}, headers=cookies)
        assert "set-cookie" not in turn.headers
        assert turn.json()["response"].endswith("(messages received: 4)")
        assert (await client.delete("/api/chat", headers=cookies)).status_code == 204
    assert await _user_turns(server, alice) == []


def test_a_cookie_is_the_id_and_its_hmac_sha256_so_issued_cookies_stay_valid() -> None:
    """The signature's bytes are fixed: cookies issued before a change must still unsign."""
    import hashlib
    import hmac

    from web.api.cookies import CookieSigner

    key = hashlib.sha256(b"actorchat-session-cookie:secret").digest()
    digest = hmac.new(key, b"abc", hashlib.sha256).digest()
    expected = "abc." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    signer = CookieSigner("secret")
    assert signer.sign("abc") == expected
    assert signer.unsign(expected) == "abc"
