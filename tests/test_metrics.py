"""``GET /metrics`` over real HTTP: request counts by route, actor-system numbers, isolation."""

from __future__ import annotations

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from .conftest import RunningServer, StartServer, StartSimulator, make_settings


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    """The server's metrics as {(sample name, labels): value}."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_chat_turns_count_by_route_and_status_and_upstream_outcome(
    server: RunningServer,
) -> None:
    turns = 3
    async with server.client() as client:
        before = await scrape(client)
        for number in range(turns):
            assert (await client.post("/api/chat", json={"prompt": f"{number}"})).status_code == 200
        assert (await client.post("/api/chat", json={"prompt": ""})).status_code == 400
        after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat = {"method": "POST", "route": "/api/chat"}
    assert grew("actorchat_http_requests_total", **chat, status="200") == turns
    assert grew("actorchat_http_requests_total", **chat, status="400") == 1
    assert grew("actorchat_http_request_duration_seconds_count", **chat) == turns + 1
    assert grew("actorchat_http_request_duration_seconds_sum", **chat) > 0
    assert grew("actorchat_upstream_calls_total", outcome="ok") == turns
    # The first scrape is counted by the time of the second.
    assert value(after, "actorchat_http_requests_total",
                 method="GET", route="/metrics", status="200") >= 1


async def test_routes_are_labelled_by_url_rule_never_by_path(server: RunningServer) -> None:
    async with server.client() as client:
        trace_id = (await client.post("/chat", json={"message": "hi"})).json()["traceId"]
        done = await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
        assert done.json()["status"] == "completed"
        assert (await client.get("/no/such/thing-1234")).status_code == 404
        assert (await client.request("BREW", "/api/chat")).status_code == 405
        text = (await client.get("/metrics")).text
        samples = await scrape(client)
    assert value(samples, "actorchat_http_requests_total",
                 method="GET", route="/chat/<trace_id>/response", status="200") == 1
    assert value(samples, "actorchat_http_requests_total",
                 method="POST", route="/chat", status="202") == 1
    assert value(samples, "actorchat_http_requests_total",
                 method="GET", route="unmatched", status="404") == 1
    assert value(samples, "actorchat_http_requests_total",
                 method="OTHER", route="unmatched", status="405") == 1
    assert trace_id not in text
    assert "thing-1234" not in text
    assert "BREW" not in text


async def test_actor_system_numbers_are_read_at_scrape_time(server: RunningServer) -> None:
    async with server.client() as alice, server.client() as bob:
        before = await scrape(alice)
        for user in (alice, bob):
            assert (await user.post("/api/chat", json={"prompt": "hi"})).status_code == 200
        trace_id = (await alice.post("/chat", json={"message": "job"})).json()["traceId"]
        await alice.get(f"/chat/{trace_id}/response", params={"wait": 10})
        after = await scrape(alice)
    assert value(before, "actorchat_actors_live", kind="session") == 0
    assert value(after, "actorchat_actors_live", kind="session") == 2
    assert value(after, "actorchat_actors_started_total", kind="session") == 2
    assert value(after, "actorchat_actors_started_total", kind="job") == 1
    assert value(after, "actorchat_jobs_finished_total", status="completed") == 1
    assert value(after, "actorchat_jobs_running") == 0
    assert value(after, "actorchat_jobs_queued") == 0
    assert value(after, "actorchat_mailbox_depth") == 0
    assert value(after, "actorchat_upstream_in_flight") == 0
    assert value(after, "actorchat_upstream_calls_total", outcome="ok") == 3
    assert value(after, "actorchat_upstream_retries_total") == 0
    assert value(after, "actorchat_rate_gate_open") == 1
    assert value(after, "actorchat_rate_gate_closures_total") == 0
    assert value(after, "actorchat_rate_gate_waiting") == 0
    assert value(after, "actorchat_rate_gate_pacing") == 0
    assert value(after, "actorchat_actors_crashed_total", kind="session") == 0
    upstream = [labels for name, labels in after if name == "actorchat_upstream_info"]
    assert [dict(labels)["upstream"][:17] for labels in upstream] == ["http://127.0.0.1:"]


async def test_a_429_shows_as_retries_and_a_gate_closure(
    start_server: StartServer, start_simulator: StartSimulator
) -> None:
    simulator_url = await start_simulator(rate_429=1.0, retry_after_s=0.05)
    server = await start_server(make_settings(simulator_url, upstream={"max_attempts": 2}))
    async with server.client() as client:
        refused = await client.post("/api/chat", json={"prompt": "hi"})
        assert refused.status_code == 429
        samples = await scrape(client)
    assert value(samples, "actorchat_upstream_calls_total", outcome="rate_limited") == 2
    assert value(samples, "actorchat_upstream_retries_total") == 1
    assert value(samples, "actorchat_rate_gate_closures_total") >= 1
    assert value(samples, "actorchat_http_requests_total",
                 method="POST", route="/api/chat", status="429") == 1


async def test_each_app_has_its_own_registry(
    start_server: StartServer, simulator_url: str
) -> None:
    first = await start_server(make_settings(simulator_url))
    second = await start_server(make_settings(simulator_url))
    async with first.client() as one, second.client() as two:
        for _ in range(2):
            assert (await one.post("/api/chat", json={"prompt": "hi"})).status_code == 200
        first_samples, second_samples = await scrape(one), await scrape(two)
    chat_ok = {"method": "POST", "route": "/api/chat", "status": "200"}
    assert value(first_samples, "actorchat_http_requests_total", **chat_ok) == 2
    assert value(second_samples, "actorchat_http_requests_total", **chat_ok) == 0
    assert value(second_samples, "actorchat_actors_live", kind="session") == 0
    global_text = prometheus_client.generate_latest().decode()
    assert "actorchat_" not in global_text


async def test_metrics_are_open_and_hold_no_ids_or_prompt_text(
    start_server: StartServer, simulator_url: str
) -> None:
    server = await start_server(make_settings(simulator_url, debug={"token": "debug-token"}))
    prompt = "a-distinctive-prompt-5521"
    async with server.client() as client:
        turn = await client.post("/api/chat", json={"prompt": prompt})
        session_id = turn.cookies["sessionId"].split(".")[0]
        trace_id = (await client.post("/chat", json={"message": prompt})).json()["traceId"]
        await client.get(f"/chat/{trace_id}/response", params={"wait": 10})
        response = await client.get("/metrics")
    assert response.status_code == 200
    for private in (prompt, session_id, trace_id, "debug-token", "test-secret", "sim-test-key"):
        assert private not in response.text
