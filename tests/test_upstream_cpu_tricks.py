"""What the upstream client's CPU savings rely on: the request on the wire is the one the SDK
and a plain ``httpx2.AsyncClient`` would send, however often the same URL and headers recur."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from actors.upstream import ChatRequest, OpenAIUpstream
from actors.upstream.client import UpstreamHTTPClient
from actors.upstream.openai_sdk import _absolute

KEY = "cpu-test-key"
ANSWER = {"model": "m", "choices": [{"message": {"content": "hi"}}], "usage": None}


def _recorder(sent: list[httpx2.Request]) -> httpx2.MockTransport:
    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=ANSWER)

    return httpx2.MockTransport(answer)


def _wire(request: httpx2.Request) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    return request.method, str(request.url), request.headers.raw, request.content


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/", "https://api.example.com",
     "http://bob:pw@host:8080/a/b/", "http://host/v1?api-version=2024"],
)
def test_the_absolute_url_is_the_one_the_sdk_builds_from_the_relative_path(base_url) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url)
    assert _absolute(client.base_url, "chat/completions") == \
        str(client._prepare_url("/chat/completions"))


async def test_repeated_calls_send_what_the_sdk_sends_over_a_plain_httpx2_client() -> None:
    """Same URL, headers (names, case, order) and body as ``post("/chat/completions")`` over
    ``httpx2.AsyncClient``, on the first call and on later ones with other bodies."""
    base_url = "http://127.0.0.1:9/v1"
    upstream = OpenAIUpstream(api_key=KEY, base_url=base_url, timeout_s=7)
    sent: list[httpx2.Request] = []
    upstream._http._transport = _recorder(sent)
    expected: list[httpx2.Request] = []
    plain = openai.AsyncOpenAI(
        api_key=KEY, base_url=base_url, max_retries=0, timeout=7,
        http_client=httpx2.AsyncClient(transport=_recorder(expected), timeout=7),
    )
    for content in ("hello", "a longer message", "hello"):
        request = ChatRequest([{"role": "user", "content": content}], "m", 0.5)
        assert (await upstream.complete(request)).content == "hi"
        body = {"model": "m", "messages": request.messages, "temperature": 0.5}
        await plain.post("/chat/completions", cast_to=httpx2.Response,
                         content=json.dumps(body).encode(),
                         options={"security": {"bearer_auth": True},
                                  "headers": {"Content-Type": "application/json"}})
    assert [_wire(request) for request in sent] == [_wire(request) for request in expected]
    assert sent[0].url.path == "/v1/chat/completions"
    await upstream.aclose()
    await plain.close()


def test_a_request_changing_its_headers_leaves_the_next_request_alone() -> None:
    client = UpstreamHTTPClient()
    headers = [("Authorization", "Bearer one"), ("X-Thing", "1")]
    first = client.build_request("POST", "http://h/x", headers=list(headers), content=b"{}")
    first.headers["Authorization"] = "Bearer changed"
    first.headers["X-Extra"] = "2"
    second = client.build_request("POST", "http://h/x", headers=list(headers), content=b"{}")
    assert second.headers["Authorization"] == "Bearer one"
    assert "X-Extra" not in second.headers


def test_the_client_headers_changing_are_seen_by_the_next_request() -> None:
    client = UpstreamHTTPClient(headers={"X-Client": "a"})
    headers = [("Accept", "application/json")]
    assert client.build_request("GET", "http://h/", headers=headers).headers["X-Client"] == "a"
    client.headers["X-Client"] = "b"
    assert client.build_request("GET", "http://h/", headers=headers).headers["X-Client"] == "b"
    client.headers = {"X-Other": "c"}
    request = client.build_request("GET", "http://h/", headers=headers)
    assert "X-Client" not in request.headers
    assert request.headers["X-Other"] == "c"


def test_urls_and_header_sets_are_remembered_up_to_a_bound() -> None:
    client = UpstreamHTTPClient()
    for number in range(100):
        request = client.build_request("GET", f"http://h/{number}",
                                       headers=[("X-N", str(number))])
        assert request.url == httpx2.URL(f"http://h/{number}")
        assert request.headers["X-N"] == str(number)
    assert len(client._urls) <= 32
    assert len(client._merged_headers) <= 32


def test_header_pairs_given_as_lists_are_merged_as_httpx2_merges_them() -> None:
    client = UpstreamHTTPClient(headers={"Accept": "*/*"})
    for _ in range(2):
        request = client.build_request("GET", "http://h/", headers=[["Accept", "text/plain"]])
        assert request.headers.get_list("Accept") == ["text/plain"]


def test_relative_urls_still_join_the_client_base_url() -> None:
    client = UpstreamHTTPClient(base_url="http://h/v1/")
    for _ in range(2):
        assert str(client.build_request("GET", "models").url) == "http://h/v1/models"
