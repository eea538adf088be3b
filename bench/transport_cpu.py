"""``python -m bench.transport_cpu``: CPU per SDK call, our transport vs httpx2's default.

The simulator runs in a subprocess (latency 0, so only CPU counts), and this process makes
sequential ``OpenAIUpstream.complete`` calls, first through `TrioHTTP11Transport`, then
through an ``httpx2.AsyncClient`` with its default transport. Printed: this process's CPU
time (``time.process_time``) per call, best of three rounds, so it is the client's cost
alone. The figure quoted in ``actors/upstream/transport.py`` comes from here.
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


async def cpu_per_call(upstream: OpenAIUpstream, calls: int) -> float:
    """Microseconds of this process's CPU per call, best of three rounds."""
    for _ in range(50):
        await upstream.complete(REQUEST)  # warm up: connections, caches
    rounds = []
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            await upstream.complete(REQUEST)
        rounds.append((time.process_time() - started) / calls * 1e6)
    return min(rounds)


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
    ours = OpenAIUpstream(api_key=KEY, base_url=base_url, timeout_s=30)
    try:
        print(f"TrioHTTP11Transport: {await cpu_per_call(ours, calls):,.0f} us CPU/call")
    finally:
        await ours.aclose()
    default = over_default_transport(base_url)
    try:
        print(f"httpx2 default:      {await cpu_per_call(default, calls):,.0f} us CPU/call")
    finally:
        await default.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_cpu", description=__doc__)
    parser.add_argument("--calls", type=int, default=500, help="calls per round (%(default)s)")
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
