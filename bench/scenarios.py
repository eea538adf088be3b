"""The benchmark scenarios: each starts its own simulator and server, drives them, and returns
its numbers and targets as an `Outcome`.

- ``client``: the load tester alone against a trivial server: how many requests per second it
  can drive, so the other numbers are known not to be the tester's limit.
- ``throughput``: 64 conversations x 10 turns, no upstream latency: turns per second.
- ``many``: 1,000 concurrent conversations starting over 5 s, 1 s upstream latency, 2-6 s
  think time: errors, history checks, overhead (reply time minus the simulated 1 s), the
  server's peak memory. ``many-burst``: the same with all first turns sent at once, reported.
- ``idle``: 20,000 one-turn sessions (as many as 50 s allow), then past the actors' idle
  timeout: memory per idle session, and no session actor left live.
- ``snapshot``: 10,000 live session actors, then ``/debug/actors?limit=100`` timed.
- ``429``: 500 trace jobs against an upstream that rate-limits: failures, upstream calls per
  job, time against the ideal set by the rpm limit.
- ``soak``: mixed session and job traffic (5 minutes judged, after a warm-up; ``--soak-s``),
  with 2,000 HTTP/1.0 connections that wait for the server to close them: the server's open
  file descriptors back to their baseline afterwards, RSS flat (within 10%).
- ``redis``: the ``throughput`` load (and 256 conversations x 5 turns) on the memory store,
  one process over Redis, and ``--workers 2`` over Redis: turns/s ratios, errors, histories.
- ``streaming``: 500 concurrent streamed conversations (3 turns, think 2-6 s, starting over
  5 s), 20 chunks 20 ms apart: time to first byte above the simulator's own, delivered chunks
  per second, errors, histories, RSS. ``streaming-burst``: 500 streams at once, reported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .harness import Bench, Outcome
from .procs import BenchError
from .scenarios_load import client_ceiling, many, many_burst, throughput
from .scenarios_redis import redis
from .scenarios_soak import soak
from .scenarios_state import idle_memory, snapshot
from .scenarios_stream import streaming, streaming_burst
from .scenarios_upstream import rate_limited

__all__ = ["SCENARIOS", "Bench", "Outcome", "Scenario", "run_scenario"]


Scenario = Callable[[Bench], Awaitable[Outcome]]

SCENARIOS: dict[str, Scenario] = {
    "client": client_ceiling,
    "throughput": throughput,
    "many": many,
    "many-burst": many_burst,
    "idle": idle_memory,
    "snapshot": snapshot,
    "429": rate_limited,
    "soak": soak,
    "redis": redis,
    "streaming": streaming,
    "streaming-burst": streaming_burst,
}


async def run_scenario(name: str, bench: Bench) -> Outcome:
    """Run one scenario; a crash (e.g. a process that did not start) becomes ``error``."""
    try:
        return await SCENARIOS[name](bench)
    except (BenchError, OSError, KeyError, TypeError, ValueError) as error:
        outcome = Outcome(name, "crashed")
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
