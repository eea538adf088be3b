"""``python -m bench.transport_cpu``: CPU per SDK call, our transport vs httpx2's default.

The simulator runs in a subprocess (latency 0, so only CPU counts), and this process makes
sequential ``OpenAIUpstream.complete`` calls (bodies of 100 different lengths, as a
conversation's turns have, so that nothing can be remembered per body), through
`TrioHTTP11Transport` and through an ``httpx2.AsyncClient`` with its default transport, in
interleaved rounds. Printed: this
process's CPU time (``time.process_time``) per call, best of five rounds, so it is the
client's cost alone. The figure quoted in ``actors/upstream/transport.py`` comes from here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import httpx2
import openai
import trio

from actors.upstream import ChatRequest, OpenAIUpstream

from .procs import REPO, clean_environment, free_port, http_get

KEY = "bench-key"
REQUEST = ChatRequest([{"role": "user", "content": "hello there"}], "gpt-bench", 0.5)
REQUESTS = [
    ChatRequest([{"role": "user", "content": "hello there" + "!" * length}], "gpt-bench", 0.5)
    for length in range(100)
]


async def cpu_per_call(upstreams: dict[str, OpenAIUpstream], calls: int) -> dict[str, float]:
    """Microseconds of this process's CPU per call for each upstream, best of five rounds,
    the rounds interleaved so that a busy machine weighs on both alike."""
    for upstream in upstreams.values():
        for request in REQUESTS[:50]:
            await upstream.complete(request)  # warm up: connections, caches
    best = dict.fromkeys(upstreams, float("inf"))
    for _ in range(5):
        for name, upstream in upstreams.items():
            started = time.process_time()
            for call in range(calls):
                await upstream.complete(REQUESTS[call % len(REQUESTS)])
            best[name] = min(best[name], (time.process_time() - started) / calls * 1e6)
    return best


def over_default_transport(base_url: str) -> OpenAIUpstream:
    """The same adapter over httpx2's default transport (the httpcore2 pool on AnyIO)."""
    upstream = OpenAIUpstream(api_key=KEY, base_url=base_url, timeout_s=30)
    upstream._http = httpx2.AsyncClient(timeout=30)
    upstream._client = openai.AsyncOpenAI(
        api_key=KEY, base_url=base_url, max_retries=0, timeout=30, http_client=upstream._http
    )
    return upstream


async def measure(base_url: str, calls: int) -> None:
    """Wait for the simulator at ``base_url``, then measure both transports."""
    for _ in range(100):
        try:
            await http_get(base_url.removesuffix("/v1"), "/v1/models", timeout_s=1)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            await trio.sleep(0.1)
    upstreams = {
        "TrioHTTP11Transport": OpenAIUpstream(api_key=KEY, base_url=base_url, timeout_s=30),
        "httpx2 default": over_default_transport(base_url),
    }
    try:
        for name, microseconds in (await cpu_per_call(upstreams, calls)).items():
            print(f"{name:20} {microseconds:,.0f} us CPU/call")
    finally:
        for upstream in upstreams.values():
            await upstream.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_cpu", description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="calls per round (%(default)s)")
    calls = parser.parse_args().calls
    port = free_port()
    command = [sys.executable, "-m", "web.cli", "simulate", "--port", str(port),
               "--latency-ms", "0", "--api-key", KEY]
    env = clean_environment(PYTHONPATH=str(REPO))
    with subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL) as simulator:
        try:
            trio.run(measure, f"http://127.0.0.1:{port}/v1", calls)
        finally:
            simulator.terminate()


if __name__ == "__main__":
    main()
