"""``/openapi.json`` documents every status of every route, with its body.

The last test runs schemathesis (a schema-driven fuzzer) against a running server with the
simulator upstream: a bounded number of examples with a fixed seed, every check but
``use_after_free`` (``DELETE /chat/{id}`` cancels a job and its record stays readable, by
design). It must find no undocumented status, no body off its schema and no 5xx. It takes
about 20 s with 10 examples per operation; ``ACTORCHAT_FUZZ_EXAMPLES=100`` runs a longer one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import RunningServer, StartServer, make_settings

# What each operation may answer, as DESIGN.md's HTTP contract and the routes have it.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("post", "/api/chat"): {"200", "400", "408", "413", "429", "502", "503", "504"},
    ("get", "/api/chat/history"): {"200", "429", "503"},
    ("delete", "/api/chat"): {"204", "429", "503"},
    ("post", "/chat"): {"202", "400", "404", "408", "409", "413", "503"},
    ("get", "/chat/{trace_id}/response"): {"200", "400", "404", "503"},
    ("delete", "/chat/{trace_id}"): {"200", "404", "503"},
    ("get", "/api/models"): {"200", "429", "502", "503", "504"},
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200"},
    ("get", "/debug/actors"): {"200", "400", "401", "403"},
    ("get", "/debug/actors/{key}"): {"200", "401", "403", "404"},
    ("get", "/debug"): {"200", "401", "403"},
}


async def _spec(server: RunningServer) -> dict[str, Any]:
    async with server.client() as client:
        reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    return reply.json()


async def test_every_operation_documents_every_status_it_can_return(
    server: RunningServer,
) -> None:
    spec = await _spec(server)
    documented = {
        (method, path): set(operation["responses"])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    for operation, statuses in EXPECTED.items():
        assert documented.get(operation, set()) >= statuses, operation
    for (method, path), responses in (
        ((method, path), operation["responses"])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ):
        for status, response in responses.items():
            assert response["description"], (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"]
            if status >= "400" and path != "/readyz":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"} or \
                    "error" in schema.get("properties", {}), (method, path, status)


async def test_non_json_bodies_have_their_media_types_and_204_has_none(
    server: RunningServer,
) -> None:
    paths = (await _spec(server))["paths"]
    chat = paths["/api/chat"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/debug"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert "content" not in paths["/api/chat"]["delete"]["responses"]["204"]
    assert paths["/api/chat"]["post"]["requestBody"]["required"] is True
    # The job events stream, once its route exists (issue 9): 200 as events, 404 unknown ID.
    events = paths.get("/chat/{trace_id}/events", {}).get("get")
    if events is not None:
        assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
        assert "404" in events["responses"]


async def test_health_readiness_and_debug_bodies_match_their_schemas(
    server: RunningServer,
) -> None:
    from web.api.status_models import ActorDetail, ActorListing, Health, Readiness

    async with server.client() as client:
        turn = await client.post("/api/chat", json={"prompt": "hi"})
        session_id = turn.cookies["sessionId"].split(".")[0]
        Health.model_validate((await client.get("/healthz")).json())
        Readiness.model_validate((await client.get("/readyz")).json())
        ActorListing.model_validate((await client.get("/debug/actors")).json())
        detail = (await client.get(f"/debug/actors/{session_id}")).json()
    assert set(detail) == set(ActorDetail.model_fields)
    ActorDetail.model_validate(detail)


@pytest.mark.slow
async def test_schemathesis_finds_no_undocumented_status_and_no_server_error(
    start_server: StartServer, simulator_url: str, tmp_path: Path,
) -> None:
    server = await start_server(make_settings(simulator_url))
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", f"{server.url}/openapi.json", "--checks", "all",
        "--exclude-checks", "use_after_free", "--seed", "7",
        "--max-examples", os.environ.get("ACTORCHAT_FUZZ_EXAMPLES", "10"),
        "--workers", "1", "--generation-database", "none", "--no-color",
        "--output-sanitize", "false", "--request-timeout", "10",
    ]
    with trio.fail_after(120):
        # In tmp_path: schemathesis keeps a cache of past failures in .schemathesis/ under
        # its working directory and replays them, which would make runs depend on each other.
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False, cwd=tmp_path)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output
