"""The ``redis`` scenario: the ``throughput`` load (64 conversations x 10 turns, upstream latency
0), then 256 conversations x 5 turns, each against:

- one process over the memory store, and one over Redis, both pinned to one CPU and talking to
  the separate simulator: the target is Redis >= 0.8x the memory store's turns/s;
- one process over Redis, and ``--workers 2`` over Redis, each process with its own built-in
  simulator (``upstream.provider = "simulator"``), unpinned: the target is ``--workers 2`` >=
  1.5x one process; 0 errors and every history exact everywhere.

Why the built-in simulator for the second pair. This machine has two CPUs, and the separate
simulator and the load tester need CPU for every turn too (O, about 1 ms a turn between them;
S is the server's). One server process gets a CPU to itself; two share both CPUs with them.
So over the separate simulator two workers can reach at most 2S / (S + O) times one process:
1.2 to 1.4x here, whatever the server does. With the simulator inside each process, the
upstream's work scales with the processes as an upstream on other machines would, and only
the load tester is left on the shared CPUs. The scenario reports that cap, measured, beside
the judged ratio.

Redis is ``ACTORCHAT_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), under a fresh key
prefix deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
from contextlib import AbstractAsyncContextManager, nullcontext

from actors.store.redis import open_redis_store
from web.loadtest import run_loadtest

from .harness import Bench, CpuMeter, Outcome, at_least, load_options
from .procs import BenchError, Service

REDIS_URL = os.environ.get("ACTORCHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# label, serve arguments, over Redis, separate simulator (else built-in, in each process)
_SETUPS: tuple[tuple[str, tuple[str, ...], bool, bool], ...] = (
    ("memory", (), False, True),
    ("redis", (), True, True),
    ("redis, built-in simulator", (), True, False),
    ("redis --workers 2, built-in simulator", ("--workers", "2"), True, False),
)


async def redis(bench: Bench) -> Outcome:
    outcome = Outcome("redis", "throughput load: memory vs Redis vs --workers 2 over Redis")
    prefix = f"actorchat-bench-{secrets.token_hex(4)}:"
    async with open_redis_store(REDIS_URL, prefix=prefix) as store:
        if not await store.ping():
            raise BenchError(f"Redis at {REDIS_URL} does not answer")
        try:
            loads = [(64, 10)] if bench.quick else [(64, 10), (256, 5)]
            for conversations, turns in loads:
                await _compare(bench, outcome, prefix, conversations, turns)
        finally:
            keys = [key async for key in store.client.scan_iter(match=prefix + "*")]
            for start in range(0, len(keys), 1000):
                await store.client.delete(keys[start:start + 1000])
    return outcome


async def _compare(bench: Bench, outcome: Outcome, prefix: str, conversations: int,
                   turns: int) -> None:
    load = f"{conversations}x{turns}"
    rates: dict[str, float] = {}
    cpu_ms: dict[str, dict[str, float]] = {}
    for label, serve_args, over_redis, separate in _SETUPS:
        settings = {"ACTORCHAT_STORE__BACKEND": "redis", "ACTORCHAT_STORE__REDIS_URL": REDIS_URL,
                    "ACTORCHAT_STORE__PREFIX": prefix} if over_redis else {}
        async with _simulator(bench, separate) as simulator, \
                bench.server(f"redis-{label.replace(' ', '').replace(',', '-')}", simulator,
                             serve_args=serve_args, pinned=not serve_args and separate,
                             **settings) as server:
            await run_loadtest(load_options(server.url, conversations=conversations, turns=2,
                                            concurrency=conversations))
            meter = CpuMeter(server=server, **({"simulator": simulator} if simulator else {}))
            report = await run_loadtest(load_options(server.url, conversations=conversations,
                                                     turns=turns, concurrency=conversations))
            cpu_ms[label] = {name: numbers["cpu_ms_per_turn"]
                             for name, numbers in meter.per_turn_ms(report).items()}
        errors = sum(report.errors.values())
        rates[label] = report.throughput_tps
        exact = errors == 0 and report.checks_failed == 0 and report.passed
        outcome.metrics[f"{load} {label}"] = {
            "turns_per_s": report.throughput_tps, "errors": errors,
            "checks": f"{report.checks_passed}/{report.checks_passed + report.checks_failed}",
            "latency_p50_ms": report.latency_ms and report.latency_ms.p50,
            "latency_p99_ms": report.latency_ms and report.latency_ms.p99,
            # A parent's workers are its children: their CPU is not metered.
            "cpu_ms_per_turn": None if serve_args else cpu_ms[label],
        }
        outcome.target(f"{load} {label} turns/s", report.throughput_tps,
                       f"{report.throughput_tps:,.0f} ({errors} errors, "
                       f"{report.checks_passed} histories exact)", "0 errors, all exact", exact)
    _ratio(outcome, f"{load} redis / memory", rates["redis"], rates["memory"], 0.8)
    _ratio(outcome, f"{load} --workers 2 / one process", rates[_SETUPS[3][0]],
           rates[_SETUPS[2][0]], 1.5)
    separate = cpu_ms["redis"]
    server, others = separate["server"], separate["simulator"] + separate["loadtest"]
    cap = 2 * server / (server + others) if server and others else None
    outcome.metrics[f"{load} two-process cap over the separate simulator"] = cap
    outcome.target(f"{load} cap of 2 workers, separate simulator", cap,
                   "-" if cap is None else f"{cap:.2f}x (S {server:.2f}, O {others:.2f} ms)",
                   "(reported)", None)


def _simulator(bench: Bench, separate: bool) -> AbstractAsyncContextManager[Service | None]:
    return bench.simulator("redis", latency_ms=0) if separate else nullcontext(None)


def _ratio(outcome: Outcome, metric: str, value: float, base: float, goal: float) -> None:
    ratio = value / base if base else None
    outcome.target(metric, ratio, "-" if ratio is None else f"{ratio:.2f}x", f">= {goal}x",
                   at_least(ratio, goal))
