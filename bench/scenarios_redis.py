"""The ``redis`` scenario: the ``throughput`` load (64 conversations x 10 turns, upstream latency
0), then 256 conversations x 5 turns, each against:

- one process over the memory store, and one over Redis, both pinned to one CPU and talking to
  the separate simulator: the target is Redis >= 0.8x the memory store's turns/s;
- one process over Redis, and ``--workers 2`` over Redis, each process with its own built-in
  simulator (``upstream.provider = "simulator"``), unpinned, both up at once with their runs
  alternating three times: the target is the median of ``--workers 2`` >= 1.5x the median of
  one process; 0 errors and every history exact everywhere.

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
import statistics

from actors.store.redis import open_redis_store
from web.loadtest import run_loadtest
from web.loadtest.report import LoadReport

from .harness import Bench, CpuMeter, Outcome, at_least, load_options
from .procs import BenchError, Service

REDIS_URL = os.environ.get("ACTORCHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# The one-process and --workers 2 runs alternate this many times; each is judged by its median.
ROUNDS = 3


async def redis(bench: Bench) -> Outcome:
    outcome = Outcome("redis", "throughput load: memory vs Redis vs --workers 2 over Redis")
    prefix = f"actorchat-bench-{secrets.token_hex(4)}:"
    async with open_redis_store(REDIS_URL, prefix=prefix) as store:
        if not await store.ping():
            raise BenchError(f"Redis at {REDIS_URL} does not answer")
        try:
            loads = [(64, 10)] if bench.quick else [(64, 10), (256, 5)]
            for conversations, turns in loads:
                await _memory_against_redis(bench, outcome, prefix, conversations, turns)
                await _one_against_two(bench, outcome, prefix, conversations, turns)
        finally:
            keys = [key async for key in store.client.scan_iter(match=prefix + "*")]
            for start in range(0, len(keys), 1000):
                await store.client.delete(keys[start:start + 1000])
    return outcome


def _over_redis(prefix: str) -> dict[str, str]:
    return {"ACTORCHAT_STORE__BACKEND": "redis", "ACTORCHAT_STORE__REDIS_URL": REDIS_URL,
            "ACTORCHAT_STORE__PREFIX": prefix}


async def _memory_against_redis(bench: Bench, outcome: Outcome, prefix: str,
                                conversations: int, turns: int) -> None:
    """One pinned process over each store, with the separate simulator; the cap it implies."""
    load = f"{conversations}x{turns}"
    rates: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    for label, settings in (("memory", {}), ("redis", _over_redis(prefix))):
        async with bench.simulator("redis", latency_ms=0) as simulator, \
                bench.server(f"redis-{label}", simulator, **settings) as server:
            await _warm_up(server, conversations)
            meter = CpuMeter(server=server, simulator=simulator)
            report = await _run(server, conversations, turns)
            cpu_ms = {name: numbers["cpu_ms_per_turn"]
                      for name, numbers in meter.per_turn_ms(report).items()}
        rates[label] = _record(outcome, f"{load} {label}", report, cpu_ms)
    _ratio(outcome, f"{load} redis / memory", rates["redis"], rates["memory"], 0.8)
    server, others = cpu_ms["server"], cpu_ms["simulator"] + cpu_ms["loadtest"]
    cap = 2 * server / (server + others) if server and others else None
    outcome.metrics[f"{load} two-process cap over the separate simulator"] = cap
    outcome.target(f"{load} cap of 2 workers, separate simulator", cap,
                   "-" if cap is None else f"{cap:.2f}x (S {server:.2f}, O {others:.2f} ms)",
                   "(reported)", None)


async def _one_against_two(bench: Bench, outcome: Outcome, prefix: str,
                           conversations: int, turns: int) -> None:
    """One process and ``--workers 2`` over Redis, built-in simulators, unpinned; both run at
    once, and their loads alternate `ROUNDS` times, so a machine that slows down for a while
    (here one process's CPU per turn varied from 2.9 to 4.0 ms between bench runs) slows
    both alike."""
    load = f"{conversations}x{turns}"
    settings = _over_redis(prefix)  # simulator=None below: the built-in simulator
    labels = ("redis, built-in simulator", "redis --workers 2, built-in simulator")
    rates: dict[str, list[float]] = {label: [] for label in labels}
    async with bench.server("redis-one", None, pinned=False, **settings) as one, \
            bench.server("redis-workers2", None, serve_args=("--workers", "2"), pinned=False,
                         **settings) as two:
        servers = dict(zip(labels, (one, two), strict=True))
        for server in servers.values():
            await _warm_up(server, conversations)
        for round_ in range(1, ROUNDS + 1):
            for label, server in servers.items():
                report = await _run(server, conversations, turns)
                rates[label].append(_record(outcome, f"{load} {label} #{round_}", report))
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label, median in medians.items():
        outcome.target(f"{load} {label}, median of {ROUNDS}", median,
                       f"{median:,.0f} turns/s ({', '.join(f'{v:,.0f}' for v in rates[label])})",
                       "(reported)", None)
    _ratio(outcome, f"{load} --workers 2 / one process", medians[labels[1]],
           medians[labels[0]], 1.5)


async def _warm_up(server: Service, conversations: int) -> None:
    await run_loadtest(load_options(server.url, conversations=conversations, turns=2,
                                    concurrency=conversations))


async def _run(server: Service, conversations: int, turns: int) -> LoadReport:
    return await run_loadtest(load_options(server.url, conversations=conversations,
                                           turns=turns, concurrency=conversations))


def _record(outcome: Outcome, name: str, report: LoadReport,
            cpu_ms: dict[str, float] | None = None) -> float:
    """Keep one run's figures, with a target that it had 0 errors and every history exact;
    its turns a second."""
    errors = sum(report.errors.values())
    exact = errors == 0 and report.checks_failed == 0 and report.passed
    outcome.metrics[name] = {
        "turns_per_s": report.throughput_tps, "errors": errors,
        "checks": f"{report.checks_passed}/{report.checks_passed + report.checks_failed}",
        "latency_p50_ms": report.latency_ms and report.latency_ms.p50,
        "latency_p99_ms": report.latency_ms and report.latency_ms.p99,
        "cpu_ms_per_turn": cpu_ms,
    }
    outcome.target(f"{name} turns/s", report.throughput_tps,
                   f"{report.throughput_tps:,.0f} ({errors} errors, "
                   f"{report.checks_passed} histories exact)", "0 errors, all exact", exact)
    return report.throughput_tps


def _ratio(outcome: Outcome, metric: str, value: float, base: float, goal: float) -> None:
    ratio = value / base if base else None
    outcome.target(metric, ratio, "-" if ratio is None else f"{ratio:.2f}x", f">= {goal}x",
                   at_least(ratio, goal))
