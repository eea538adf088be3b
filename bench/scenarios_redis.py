"""The ``redis`` scenario: the ``throughput`` load (64 conversations x 10 turns, upstream latency
0) against one process over the memory store, one process over Redis, and ``--workers 2`` over
Redis; then the same three at 256 conversations x 5 turns. Targets (issue 10): one process over
Redis >= 0.8x the memory store's turns/s; ``--workers 2`` >= 1.5x one process over Redis, with
0 errors and every history exact (the load tester's history checks).

Redis is ``ACTORCHAT_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), under a fresh key
prefix deleted afterwards. The workers are not pinned (they need both CPUs), so on a two-core
machine they share them with the simulator, the load tester and Redis.
"""

from __future__ import annotations

import os
import secrets

from actors.store.redis import open_redis_store
from web.loadtest import run_loadtest

from .harness import Bench, CpuMeter, Outcome, at_least, load_options
from .procs import BenchError

REDIS_URL = os.environ.get("ACTORCHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

_SETUPS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("memory", (), False),
    ("redis", (), True),
    ("redis --workers 2", ("--workers", "2"), True),
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
    exact: dict[str, bool] = {}
    for label, serve_args, over_redis in _SETUPS:
        settings = {"ACTORCHAT_STORE__BACKEND": "redis", "ACTORCHAT_STORE__REDIS_URL": REDIS_URL,
                    "ACTORCHAT_STORE__PREFIX": prefix} if over_redis else {}
        async with bench.simulator("redis", latency_ms=0) as simulator, \
                bench.server(f"redis-{label.replace(' ', '')}", simulator,
                             serve_args=serve_args, pinned=not serve_args, **settings) as server:
            await run_loadtest(load_options(server.url, conversations=conversations, turns=2,
                                            concurrency=conversations))
            meter = CpuMeter(server=server, simulator=simulator)
            report = await run_loadtest(load_options(server.url, conversations=conversations,
                                                     turns=turns, concurrency=conversations))
            cpu = meter.per_turn_ms(report)
        errors = sum(report.errors.values())
        rates[label] = report.throughput_tps
        exact[label] = errors == 0 and report.checks_failed == 0 and report.passed
        outcome.metrics[f"{load} {label}"] = {
            "turns_per_s": report.throughput_tps, "errors": errors,
            "checks": f"{report.checks_passed}/{report.checks_passed + report.checks_failed}",
            "latency_p50_ms": report.latency_ms and report.latency_ms.p50,
            "latency_p99_ms": report.latency_ms and report.latency_ms.p99,
            "server_cpu_ms_per_turn": None if serve_args else cpu["server"]["cpu_ms_per_turn"],
        }
        outcome.target(f"{load} {label} turns/s", report.throughput_tps,
                       f"{report.throughput_tps:,.0f} ({errors} errors, "
                       f"{report.checks_passed} histories exact)", "0 errors, all exact",
                       exact[label])
    redis_ratio = rates["redis"] / rates["memory"] if rates["memory"] else None
    workers_ratio = rates["redis --workers 2"] / rates["redis"] if rates["redis"] else None
    outcome.target(f"{load} redis / memory", redis_ratio,
                   "-" if redis_ratio is None else f"{redis_ratio:.2f}x", ">= 0.8x",
                   at_least(redis_ratio, 0.8))
    outcome.target(f"{load} --workers 2 / redis", workers_ratio,
                   "-" if workers_ratio is None else f"{workers_ratio:.2f}x", ">= 1.5x",
                   at_least(workers_ratio, 1.5))
