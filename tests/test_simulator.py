"""The OpenAI simulator, as the official SDK sees it over real HTTP.

Test policy: anything about the wire (status, body, headers, dropped and hanging connections)
goes through a real Hypercorn server on a free port and the official ``openai`` SDK, or plain
``httpx`` where the SDK would refuse to send the request. Anything about time (the rpm bucket,
latency, the periodic log) calls the ASGI app directly under ``autojump_clock``, so nothing
really sleeps. The only real waits are the 0.3 s client timeout of the hang test and a short
poll for the server to notice that client going away.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import openai
import pytest
import trio

from actors.config import SimulatorConfig
from web.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD
from web.simulator import (
    Fault,
    FaultPicker,
    Simulator,
    TokenBucket,
    format_duration,
    mask_key,
    register_cli,
    run_simulate,
    serve_simulator,
)
from web.simulator import serve as simulator_serve

from .conftest import simulators
from .simulator_support import HELLO, KEY, MODEL, call_app, get_stats, sdk

StartSimulator = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulators that take any non-empty key, unless told one; all stop at teardown."""
    async with simulators() as start:
        yield start


# The happy path


async def test_a_completion_quotes_the_last_user_message_and_counts_messages(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    async with sdk(base_url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, temperature=0.7
        )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-3.5-turbo-simulated"
    choice = completion.choices[0]
    assert choice.message.content == 'Simulated reply to "second question" (messages received: 4)'
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert completion.system_fingerprint
    usage = completion.usage
    assert usage.prompt_tokens >= 1
    assert usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert "x-ratelimit-limit-requests" not in raw.headers


async def test_the_same_messages_always_get_the_same_reply_and_usage(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator()
    async with sdk(base_url) as client:
        first = await client.chat.completions.create(model=MODEL, messages=HELLO)
        second = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    assert first.id != second.id


async def test_models_are_listed_in_openai_shape(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator()
    async with sdk(base_url) as client:
        page = await client.models.list()
    assert MODEL in [model.id for model in page.data]
    assert all(model.object == "model" for model in page.data)


# Auth and validation


async def test_a_missing_key_is_refused_with_openais_401(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/chat/completions", json={"model": MODEL})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"].startswith("You didn't provide an API key.")
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["code"] is None
    async with httpx.AsyncClient(headers={"authorization": "Bearer"}) as http:
        empty = await http.get(f"{base_url}/models")
    assert empty.status_code == 401
    assert empty.json()["error"]["message"].startswith("You didn't provide an API key.")


async def test_a_wrong_key_is_refused_and_masked(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(api_key=KEY)
    wrong = "sk-test-not-a-real-key-wxyz"  # long enough to be masked, not key-shaped
    async with sdk(base_url, api_key=wrong) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    assert caught.value.code == "invalid_api_key"
    assert "sk-te****wxyz" in caught.value.message
    assert wrong not in caught.value.message
    assert KEY not in caught.value.response.text
    async with sdk(base_url) as client:
        await client.chat.completions.create(model=MODEL, messages=HELLO)


def test_short_keys_are_masked_completely() -> None:
    assert mask_key("sk-short") == "****"
    assert mask_key("sk-test-not-a-real-key-wxyz") == "sk-te****wxyz"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"messages": []}, "messages"),
        ({"model": None}, "model"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
async def test_bad_bodies_are_refused_with_400_naming_the_param(
    start_simulator: StartSimulator, changes: dict[str, Any], param: str
) -> None:
    base_url = await start_simulator()
    arguments = {"model": MODEL, "messages": HELLO, **changes}
    async with sdk(base_url) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(**arguments)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": HELLO}).encode(), "model"),
        (json.dumps({"model": MODEL}).encode(), "messages"),
    ],
)
async def test_unparseable_and_incomplete_bodies_are_refused_with_400(
    start_simulator: StartSimulator, content: bytes, param: str | None
) -> None:
    base_url = await start_simulator()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base_url}/chat/completions",
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
            content=content,
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_unknown_routes_and_methods_get_json_errors(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator()
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}) as http:
        missing = await http.get(f"{base_url}/embeddings")
        wrong_method = await http.get(f"{base_url}/chat/completions")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/embeddings)"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


# Faults


async def test_an_injected_429_carries_retry_after(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(rate_429=1.0, retry_after_s=2.5)
    async with sdk(base_url) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"
    assert "Rate limit reached for requests" in caught.value.message
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers["retry-after-ms"] == "2500"


async def test_injected_server_errors_are_500s_and_503s(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(rate_5xx=1.0, seed=7)
    statuses = set()
    async with sdk(base_url) as client:
        for _ in range(12):
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model=MODEL, messages=HELLO)
            assert caught.value.type == "server_error"
            statuses.add(caught.value.status_code)
    assert statuses == {500, 503}


async def test_a_dropped_connection_is_a_connection_error(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(rate_drop=1.0)
    async with sdk(base_url) as client:
        with trio.fail_after(5), pytest.raises(openai.APIConnectionError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert (await get_stats(base_url))["drop"] == 1


async def test_a_hang_times_out_and_ends_when_the_client_leaves(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(rate_hang=1.0)
    async with sdk(base_url, timeout=0.3) as client:
        with trio.fail_after(5), pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    for _ in range(250):  # the server notices the closed connection within a few ms
        stats = await get_stats(base_url)
        if not stats["in_flight"]:
            break
        await trio.sleep(0.02)
    assert stats["hang"] == 1
    assert stats["completed"] == 0


async def test_the_fourth_call_with_an_rpm_limit_and_burst_of_three_is_429(
    start_simulator: StartSimulator,
) -> None:
    base_url = await start_simulator(rpm_limit=3, rpm_burst=3)
    async with sdk(base_url) as client:
        for remaining in (2, 1, 0):
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    headers = caught.value.response.headers
    # 3 a minute is one token every 20 s: the wait is for that one token, not a whole minute
    assert 1 <= int(headers["retry-after"]) <= 20
    assert 1 <= int(headers["retry-after-ms"]) <= 20_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"
    assert (await get_stats(base_url))["rate_limited_rpm"] == 1


async def test_the_rpm_bucket_refills_at_the_rate_on_the_trio_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Simulator(SimulatorConfig(rpm_limit=120, rpm_burst=2))
    body = {"model": MODEL, "messages": HELLO}
    first = await call_app(app, "POST", "/v1/chat/completions", body)
    assert first[0] == 200
    assert first[1]["x-ratelimit-remaining-requests"] == "1"
    assert first[1]["x-ratelimit-reset-requests"] == "500ms"
    assert (await call_app(app, "POST", "/v1/chat/completions", body))[0] == 200
    status, headers, _ = await call_app(app, "POST", "/v1/chat/completions", body)
    assert status == 429
    assert headers["retry-after-ms"] == "500"
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    await trio.sleep(0.5)
    assert (await call_app(app, "POST", "/v1/chat/completions", body))[0] == 200
    assert (await call_app(app, "POST", "/v1/chat/completions", body))[0] == 429
    await trio.sleep(60)
    status, headers, _ = await call_app(app, "POST", "/v1/chat/completions", body)
    assert status == 200
    assert headers["x-ratelimit-remaining-requests"] == "1"  # refills stop at the burst


async def test_an_injected_429_spends_no_token_and_shows_the_budget_left(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Simulator(SimulatorConfig(rpm_limit=60, rpm_burst=3, rate_429=0.5, seed=3))
    body = {"model": MODEL, "messages": HELLO}
    remaining = 3
    seen = []
    for _ in range(7):
        status, headers, content = await call_app(app, "POST", "/v1/chat/completions", body)
        shown = int(headers["x-ratelimit-remaining-requests"])
        if status == 200:
            remaining -= 1
            seen.append("ok")
            assert shown == remaining
        elif "simulated fault" in json.loads(content)["error"]["message"]:
            seen.append("injected")
            assert shown == remaining > 0
        else:
            seen.append("exhausted")
            assert remaining == shown == 0
    # seed 3 draws injected, ok, injected, ok, ok; no draw is made once the bucket is empty
    assert seen == ["injected", "ok", "injected", "ok", "ok", "exhausted", "exhausted"]
    stats = app.stats()
    assert stats["rate_limited_injected"] == seen.count("injected")
    assert stats["rate_limited_rpm"] == seen.count("exhausted")


async def test_injected_server_errors_spend_a_token(autojump_clock: trio.abc.Clock) -> None:
    app = Simulator(SimulatorConfig(rpm_limit=60, rpm_burst=2, rate_5xx=1.0))
    body = {"model": MODEL, "messages": HELLO}
    first = await call_app(app, "POST", "/v1/chat/completions", body)
    assert first[0] in (500, 503)
    assert first[1]["x-ratelimit-remaining-requests"] == "1"
    assert (await call_app(app, "POST", "/v1/chat/completions", body))[0] in (500, 503)
    status, headers, _ = await call_app(app, "POST", "/v1/chat/completions", body)
    assert status == 429
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_the_token_bucket_holds_one_seconds_worth_unless_told_otherwise() -> None:
    assert Simulator(SimulatorConfig(rpm_limit=3)).rate_gate.capacity == 1
    assert Simulator(SimulatorConfig(rpm_limit=60_000)).rate_gate.capacity == 1000
    assert Simulator(SimulatorConfig(rpm_limit=61)).rate_gate.capacity == 2
    assert Simulator(SimulatorConfig(rpm_limit=61, rpm_burst=7)).rate_gate.capacity == 7
    assert Simulator(SimulatorConfig(rpm_burst=7)).rate_gate is None


def test_the_token_bucket_refills_continuously_up_to_its_capacity() -> None:
    bucket = TokenBucket(3, burst=1)  # one token every 20 s
    assert bucket.take(0.0).remaining == 0
    refused = bucket.peek(5.0)
    assert not refused.has_token
    assert refused.next_token_s == pytest.approx(15.0)
    assert refused.full_s == pytest.approx(15.0)
    with pytest.raises(ValueError, match="peek"):
        bucket.take(5.0)
    assert bucket.peek(20.0).has_token  # 20 s at 0.05 token/s is a whole token despite floats
    assert bucket.peek(1000.0).remaining == 1
    assert format_duration(0.0172) == "18ms"
    assert format_duration(61.5) == "1m1.5s"


def test_the_same_seed_makes_the_same_fault_choices() -> None:
    config = SimulatorConfig(rate_429=0.5, seed=42)
    first, second = Simulator(config), Simulator(config)
    choices = [first.faults.pick() for _ in range(50)]
    assert choices == [second.faults.pick() for _ in range(50)]
    assert set(choices) == {Fault.RATE_LIMITED, Fault.NONE}
    other = FaultPicker(rate_429=0.5, seed=43)
    assert choices != [other.pick() for _ in range(50)]


def test_fault_rates_split_the_draws_in_proportion() -> None:
    picker = FaultPicker(rate_429=0.1, rate_5xx=0.2, rate_hang=0.1, rate_drop=0.1, seed=1)
    choices = [picker.pick() for _ in range(4000)]
    share = {fault: choices.count(fault) / len(choices) for fault in Fault}
    assert share[Fault.RATE_LIMITED] == pytest.approx(0.1, abs=0.03)
    assert share[Fault.SERVER_ERROR_500] + share[Fault.SERVER_ERROR_503] == pytest.approx(
        0.2, abs=0.03
    )
    assert share[Fault.HANG] == pytest.approx(0.1, abs=0.03)
    assert share[Fault.DROP] == pytest.approx(0.1, abs=0.03)
    assert share[Fault.NONE] == pytest.approx(0.5, abs=0.03)


def test_the_stream_error_band_comes_after_the_others_and_moves_none_of_them() -> None:
    rates = {"rate_429": 0.1, "rate_5xx": 0.2, "rate_hang": 0.1, "rate_drop": 0.1, "seed": 5}
    plain = FaultPicker(**rates)
    with_errors = FaultPicker(**rates, rate_stream_error=0.3)
    pairs = [(plain.pick(), with_errors.pick()) for _ in range(4000)]
    assert all(ours == theirs for ours, theirs in pairs if ours is not Fault.NONE)
    errors = [theirs for ours, theirs in pairs if theirs is Fault.STREAM_ERROR]
    assert len(errors) / len(pairs) == pytest.approx(0.3, abs=0.03)


async def test_latency_delays_the_answer(autojump_clock: trio.abc.Clock) -> None:
    app = Simulator(SimulatorConfig(latency_ms=1500))
    started = trio.current_time()
    status, _, _ = await call_app(
        app, "POST", "/v1/chat/completions", {"model": MODEL, "messages": HELLO}
    )
    assert status == 200
    assert trio.current_time() - started == pytest.approx(1.5)


# Counters and logs


async def test_stats_count_each_outcome_without_the_key(start_simulator: StartSimulator) -> None:
    base_url = await start_simulator(api_key=KEY)
    async with sdk(base_url) as client:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=MODEL, messages=[])
    async with sdk(base_url, api_key="sk-wrong-key-0123456789") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    async with httpx.AsyncClient() as http:
        await http.get(f"{base_url}/nowhere")
        text = (await http.get(base_url.removesuffix("/v1") + "/_simulator/stats")).text
    stats = json.loads(text)
    assert stats["requests"] == 4
    assert stats["completed"] == 1
    assert stats["bad_request"] == 1
    assert stats["unauthorized"] == 1
    assert stats["not_found"] == 1
    assert stats["rate_limited_injected"] == stats["server_error"] == stats["drop"] == 0
    assert stats["config"]["api_key_required"] is True
    assert KEY not in text


async def test_counts_are_logged_while_traffic_flows_without_keys_or_text(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorchat.simulator")
    app = Simulator(SimulatorConfig(rate_429=0.5, seed=3))
    secret = {"model": MODEL, "messages": [{"role": "user", "content": "my secret plan"}]}
    for _ in range(25):
        await call_app(app, "POST", "/v1/chat/completions", secret)
        await trio.sleep(1)
    summaries = [r.getMessage() for r in caplog.records if r.name == "actorchat.simulator"]
    assert len(summaries) == 2
    assert "requests=11" in summaries[0]
    assert "rate_limited_injected=" in summaries[0]
    assert not any("secret" in line or KEY in line for line in summaries)


async def test_serve_returns_on_its_shutdown_trigger_and_logs_the_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="actorchat.simulator")
    stop = trio.Event()
    serve = partial(serve_simulator, SimulatorConfig(api_key=KEY), shutdown_trigger=stop.wait)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            base_url = await nursery.start(serve)
            async with sdk(base_url) as client:
                await client.chat.completions.create(model=MODEL, messages=HELLO)
            stop.set()
    lines = [r.getMessage() for r in caplog.records if r.name == "actorchat.simulator"]
    assert "at shutdown" in lines[-1]
    assert "completed=1" in lines[-1]
    assert not any(KEY in line or "hello" in line for line in lines)


# Command line


def parse_simulate(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="actorchat")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_the_simulate_command_takes_every_setting_as_a_flag() -> None:
    flags = "--port 9001 --rate-429 0.25 --rpm-limit 5 --rpm-burst 2 --seed 9"
    args = parse_simulate(*flags.split())
    assert args.port == 9001
    assert args.rpm_burst == 2
    assert args.host == "127.0.0.1"
    assert args.config == "config.toml"
    assert (args.rate_429, args.rpm_limit, args.seed, args.latency_ms) == (0.25, 5, 9, None)
    assert args.func is run_simulate
    defaults = parse_simulate()
    assert defaults.port == 8001
    streaming = parse_simulate("--stream-chunks", "20", "--chunk-delay-ms", "2.5")
    assert (streaming.stream_chunks, streaming.chunk_delay_ms) == (20, 2.5)
    for name in SimulatorConfig.model_fields:
        flag = "--" + name.replace("_", "-")
        assert getattr(parse_simulate(flag, "1"), name) is not None, flag


def test_the_simulate_command_refuses_a_bad_setting(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse_simulate("--config", str(tmp_path / "absent.toml"), "--rate-429", "1.5")
    assert run_simulate(args) == 2
    assert "simulator.rate_429" in capsys.readouterr().err


def test_the_simulate_command_serves_with_a_lazier_gc(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []

    async def serve(*args: Any, **kwargs: Any) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr(simulator_serve, "serve_simulator", serve)
    before = gc.get_threshold(), gc.get_freeze_count()
    assert run_simulate(parse_simulate("--config", str(tmp_path / "absent.toml"))) == 0
    assert seen == [(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)]
    assert (gc.get_threshold(), gc.get_freeze_count()) == before

