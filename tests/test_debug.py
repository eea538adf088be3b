"""The debug endpoints: who may look, what they show, and that no secret shows.

Access rules run over real HTTP from loopback; the non-loopback client goes through Quart's
test client, whose ASGI scope can carry any client address.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
import trio

from web.api.app import create_app
from web.api.debug_routes import _is_loopback
from web.api.upstreams import public_label

from .conftest import SIM_KEY, RunningServer, StartServer, StartSimulator, make_settings

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN = "debug-token-for-tests"
ACTOR_FIELDS = {
    "kind", "key", "state", "mailbox_depth", "mailbox_capacity", "handled", "errors",
    "restarts", "started", "last_active", "activity",
}


def session_id_of(response) -> str:
    return response.cookies["sessionId"].split(".")[0]


async def eventually(check, attempts: int = 1500):
    """Poll ``check()`` (async, over HTTP) every 20 ms until it returns something truthy.

    The bound (30 s) only catches a server that never gets there; nothing is timed.
    """
    for _ in range(attempts):
        if result := await check():
            return result
        await trio.sleep(0.02)
    raise AssertionError(f"{check.__name__} did not come true within {attempts} polls")


# Access


async def test_a_loopback_client_gets_in_when_no_token_is_set(server: RunningServer) -> None:
    async with server.client() as client:
        listing = await client.get("/debug/actors")
        page = await client.get("/debug")
    assert listing.status_code == 200
    assert set(listing.json()) == {"instance", "actors", "matched", "totals", "stream"}
    assert listing.headers["cache-control"] == "no-store"
    assert page.status_code == 200


async def test_with_a_token_only_the_right_bearer_gets_in(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url, debug={"token": TOKEN}))
    async with server.client() as client:
        right = await client.get("/debug/actors", headers={"Authorization": f"Bearer {TOKEN}"})
        lower_scheme = await client.get(
            "/debug/actors", headers={"Authorization": f"bearer {TOKEN}"}
        )
        wrong = await client.get("/debug/actors", headers={"Authorization": "Bearer nope"})
        missing = await client.get("/debug/actors")
        basic = await client.get("/debug/actors", headers={"Authorization": f"Basic {TOKEN}"})
        detail_missing = await client.get("/debug/actors/some-key")
        query_on_api = await client.get("/debug/actors", params={"token": TOKEN})
        page_with_query = await client.get("/debug", params={"token": TOKEN})
        page_wrong_query = await client.get("/debug", params={"token": "nope"})
        page_missing = await client.get("/debug")
    assert right.status_code == 200
    assert lower_scheme.status_code == 200
    for refused in (wrong, missing, basic, detail_missing, query_on_api, page_wrong_query,
                    page_missing):
        assert refused.status_code == 401, refused.request.url
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["type"] == "unauthorized"
    # Only the page takes ?token=: a browser cannot put a header on a page it navigates to.
    assert page_with_query.status_code == 200
    assert page_with_query.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("203.0.113.5", False),
        ("10.0.0.1", False),
        ("::ffff:203.0.113.5", False),
        ("2001:db8::1", False),
        ("localhost", False),  # ASGI servers report addresses, never names
        ("<local>", False),
        (None, False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str | None, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


async def test_a_remote_client_is_forbidden_when_no_token_is_set() -> None:
    app = create_app(make_settings(None))
    client = app.test_client()
    remote = {"client": ("203.0.113.5", 40000)}
    for path in ("/debug/actors", "/debug/actors/some-key", "/debug"):
        response = await client.get(path, scope_base=remote)
        assert response.status_code == 403, path
        body = await response.get_json()
        assert body["error"]["type"] == "forbidden"
        assert "DEBUG_TOKEN" in body["error"]["message"]
    # Headers are the client's word, not its address.
    spoofed = await client.get(
        "/debug/actors",
        scope_base=remote,
        headers={"Remote-Addr": "127.0.0.1", "X-Forwarded-For": "127.0.0.1"},
    )
    assert spoofed.status_code == 403


async def test_a_remote_client_gets_in_with_the_token() -> None:
    app = create_app(make_settings(None, debug={"token": TOKEN}))
    client = app.test_client()
    remote = {"client": ("203.0.113.5", 40000)}
    refused = await client.get("/debug", scope_base=remote)
    allowed = await client.get("/debug", scope_base=remote, query_string={"token": TOKEN})
    assert refused.status_code == 401
    assert allowed.status_code == 200


# Content


async def test_the_actor_list_shows_sessions_and_finished_jobs_with_sane_fields(
    server: RunningServer,
) -> None:
    async with server.client() as alice, server.client() as bob:
        first = await alice.post("/api/chat", json={"prompt": "one"})
        alice_id = session_id_of(first)
        for prompt in ("two", "three"):
            assert (await alice.post("/api/chat", json={"prompt": prompt})).status_code == 200
        bob_id = session_id_of(await bob.post("/api/chat", json={"prompt": "hi"}))
        trace_id = (await bob.post("/chat", json={"message": "a job"})).json()["traceId"]
        done = await bob.get(f"/chat/{trace_id}/response", params={"wait": 10})
        assert done.json()["status"] == "completed"

        async def job_actor_gone():
            body = (await bob.get("/debug/actors")).json()
            return body if body["totals"]["actors"]["stopped"].get("job") == 1 else None

        body = await eventually(job_actor_gone)

    assert [actor["key"] for actor in body["actors"]] == [bob_id, alice_id]
    assert body["matched"] == 2
    alice_stats = body["actors"][1]
    assert set(alice_stats) == ACTOR_FIELDS
    assert alice_stats["kind"] == "session"
    assert alice_stats["state"] == "idle"
    assert alice_stats["activity"] == "idle"
    assert alice_stats["handled"] == 3
    assert (alice_stats["errors"], alice_stats["restarts"]) == (0, 0)
    assert (alice_stats["mailbox_depth"], alice_stats["mailbox_capacity"]) == (0, 64)
    assert ISO_UTC.match(alice_stats["started"]), alice_stats["started"]
    assert ISO_UTC.match(alice_stats["last_active"]), alice_stats["last_active"]
    started = datetime.fromisoformat(alice_stats["started"].replace("Z", "+00:00"))
    last_active = datetime.fromisoformat(alice_stats["last_active"].replace("Z", "+00:00"))
    assert started <= last_active

    totals = body["totals"]
    assert totals["actors"] == {
        "live": {"session": 2},
        "started": {"job": 1, "session": 2},
        "stopped": {"job": 1},
        "crashed": {},
    }
    upstream = totals["upstream"]
    assert upstream["calls"] == {"ok": 5}
    assert (upstream["in_flight"], upstream["retries"]) == (0, 0)
    assert upstream["gate"] == {
        "state": "open", "open": True, "opens_in_s": 0.0, "closures": 0, "waiting": 0,
        "pacing": False, "budget_per_s": None, "tokens": None,
    }
    assert upstream["label"].startswith("http://127.0.0.1:")
    assert totals["jobs"] == {
        "running": 0, "queued": 0,
        "by_status": {"completed": 1, "failed": 0, "cancelled": 0},
    }


async def test_filters_pick_kind_state_and_the_most_recent(server: RunningServer) -> None:
    keys = []
    async with server.client() as client:
        for _ in range(3):
            async with server.client() as user:
                keys.append(session_id_of(await user.post("/api/chat", json={"prompt": "x"})))

        async def listing(**params):
            response = await client.get("/debug/actors", params=params)
            assert response.status_code == 200, response.text
            return response.json()

        newest_first = list(reversed(keys))
        assert [a["key"] for a in (await listing())["actors"]] == newest_first
        limited = await listing(limit=2)
        assert [a["key"] for a in limited["actors"]] == newest_first[:2]
        assert limited["matched"] == 3
        assert (await listing(limit=0))["actors"] == []
        assert len((await listing(limit=10_000))["actors"]) == 3
        assert len((await listing(kind="session"))["actors"]) == 3
        assert (await listing(kind="job"))["actors"] == []
        assert (await listing(kind="nothing-like-this"))["matched"] == 0
        assert len((await listing(state="idle"))["actors"]) == 3
        assert (await listing(state="busy"))["actors"] == []

        for params in ({"limit": "abc"}, {"limit": "-1"}, {"limit": "10001"},
                       {"limit": "1.5"}, {"limit": ""}, {"state": "sleeping"}):
            bad = await client.get("/debug/actors", params=params)
            assert bad.status_code == 400, params
            assert bad.json()["error"]["type"] == "invalid_request"


async def test_a_running_job_shows_as_busy_with_its_upstream_attempt(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    server = await start_server(make_settings(await start_simulator(latency_ms=30_000)))
    async with server.client() as client:
        trace_id = (await client.post("/chat", json={"message": "slow"})).json()["traceId"]

        async def busy_listing():
            body = (await client.get("/debug/actors", params={"state": "busy"})).json()
            return body if body["actors"] and body["totals"]["upstream"]["in_flight"] else None

        body = await eventually(busy_listing)
        [job] = body["actors"]
        assert (job["kind"], job["key"], job["state"]) == ("job", trace_id, "busy")
        assert job["activity"] == "upstream attempt 1"
        assert body["totals"]["jobs"]["running"] == 1
        assert (await client.get("/debug/actors", params={"state": "idle"})).json()[
            "actors"] == []

        detail = (await client.get(f"/debug/actors/{trace_id}")).json()
        assert detail["state"] == "busy"
        assert detail["history_length"] is None
        assert detail["last_error"] is None

        cancelled = await client.delete(f"/chat/{trace_id}")
        assert cancelled.json()["status"] == "cancelled"

        async def gone():
            response = await client.get(f"/debug/actors/{trace_id}")
            return response if response.status_code == 404 else None

        await eventually(gone)
        totals = (await client.get("/debug/actors")).json()["totals"]
    assert totals["jobs"]["by_status"]["cancelled"] == 1
    assert totals["jobs"]["running"] == 0


async def test_one_actor_shows_its_history_length_and_unknown_keys_are_404(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        session_id = session_id_of(await client.post("/api/chat", json={"prompt": "one"}))
        await client.post("/api/chat", json={"prompt": "two"})
        detail = await client.get(f"/debug/actors/{session_id}")
        same_kind = await client.get(f"/debug/actors/{session_id}", params={"kind": "session"})
        other_kind = await client.get(f"/debug/actors/{session_id}", params={"kind": "job"})
        unknown = await client.get("/debug/actors/no-such-actor")
    assert detail.status_code == 200
    body = detail.json()
    assert set(body) == ACTOR_FIELDS | {"history_length", "last_error", "last_context_messages"}
    assert (body["kind"], body["key"], body["handled"]) == ("session", session_id, 2)
    assert body["history_length"] == 4  # two user messages, two answers
    assert body["last_context_messages"] == 4  # system, the first turn, the second prompt
    assert body["last_error"] is None
    assert same_kind.json() == body
    for missing in (other_kind, unknown):
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found"


async def test_a_failed_turn_shows_as_the_actors_last_error(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    simulator_url = await start_simulator(rate_5xx=1.0)
    server = await start_server(make_settings(
        simulator_url, upstream={"max_attempts": 1}
    ))
    async with server.client() as client:
        failed = await client.post("/api/chat", json={"prompt": "doomed"})
        assert failed.status_code == 502
        session_id = session_id_of(failed)
        detail = (await client.get(f"/debug/actors/{session_id}")).json()
    assert detail["errors"] == 1
    assert detail["history_length"] == 0
    assert detail["last_error"].startswith("UpstreamUnavailable: ")


async def test_the_page_is_self_contained_and_renders_as_text(server: RunningServer) -> None:
    async with server.client() as client:
        response = await client.get("/debug")
    page = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<script nonce="{nonce}">' in page
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    # No external script or style, and data goes in as text, never as markup.
    assert "src=" not in page
    assert "http://" not in page
    assert "https://" not in page
    assert "innerHTML" not in page
    assert "document.write" not in page
    assert "textContent" in page
    assert 'fetch("/debug/actors?"' in page
    assert "setTimeout(refresh, 2000)" in page
    assert '"Bearer " + token' in page


# Secrets


def test_the_upstream_label_loses_its_credentials() -> None:
    assert public_label("http://user:pw@example.com:8080/v1") == "http://example.com:8080/v1"
    assert public_label("https://sk-abc@example.com/v1") == "https://example.com/v1"
    assert public_label("http://127.0.0.1:9000/v1") == "http://127.0.0.1:9000/v1"
    assert public_label("simulator") == "simulator"


async def test_no_secret_shows_in_debug_metrics_or_readiness(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    api_key = "sk-DISTINCT-api-key-4f1c9e"
    session_secret = "DISTINCT-session-secret-77ab"
    debug_token = "DISTINCT-debug-token-0d3e"
    simulator_url = await start_simulator(api_key=api_key)
    settings = make_settings(
        simulator_url,
        upstream={"api_key": api_key},
        sessions={"secret": session_secret},
        debug={"token": debug_token},
    )
    assert settings.upstream.api_key.get_secret_value() != SIM_KEY
    server = await start_server(settings)
    bearer = {"Authorization": f"Bearer {debug_token}"}
    async with server.client() as client:
        turn = await client.post("/api/chat", json={"prompt": "hello"})
        assert turn.status_code == 200
        session_id = session_id_of(turn)
        trace_id = (await client.post("/chat", json={"message": "job"})).json()["traceId"]
        await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
        answers = [
            await client.get("/debug/actors", headers=bearer),
            await client.get(f"/debug/actors/{session_id}", headers=bearer),
            await client.get("/debug", params={"token": debug_token}),
            await client.get("/debug/actors", headers={"Authorization": "Bearer wrong"}),
            await client.get("/metrics"),
            await client.get("/readyz"),
            await client.get("/healthz"),
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 401, 200, 200, 200]
    for answer in answers:
        shown = answer.text + str(answer.headers)
        for secret in (api_key, session_secret, debug_token):
            assert secret not in shown, (answer.request.url.path, secret)
