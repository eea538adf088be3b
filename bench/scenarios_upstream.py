"""The upstream scenario ``429``: trace jobs against a simulator that rate-limits, so the
retries and the rate gate are what is measured; see `bench.scenarios`."""

from __future__ import annotations

from web.loadtest import run_loadtest

from .harness import Bench, CpuMeter, Outcome, at_most, load_options, record_run
from .procs import http_get


async def rate_limited(bench: Bench) -> Outcome:
    outcome = Outcome("429", "500 trace jobs, upstream 20% 429 (Retry-After 1 s), rpm limit")
    jobs, rpm = (100, 1200) if bench.quick else (500, 1200)
    ideal_s = jobs / (rpm / 60)
    async with bench.simulator(
        "429", latency_ms=0, rate_429=0.2, retry_after_s=1, rpm_limit=rpm, seed=42
    ) as simulator, bench.server(
        "429", simulator, ACTORCHAT_UPSTREAM__MAX_ATTEMPTS="10",
        ACTORCHAT_UPSTREAM__MAX_RETRY_S="120",
    ) as server:
        _, stats_before = await http_get(simulator.url, "/_simulator/stats")
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(load_options(
            server.url, mode="trace", conversations=jobs, turns=1, concurrency=jobs,
            wait_s=30, timeout_s=60,
        ))
        meter.record(outcome, report)
        _, stats_after = await http_get(simulator.url, "/_simulator/stats")
        _, debug = await http_get(server.url, "/debug/actors?limit=0")
    calls = stats_after["requests"] - stats_before["requests"]
    completed = report.ok_turns
    per_job = round(calls / completed, 3) if completed else None
    duration = report.duration_s
    failures = report.failed_turns + (jobs - report.requests)
    outcome.metrics.update(
        jobs=jobs, completed=completed, client_failures=failures, upstream_calls=calls,
        upstream_calls_per_job=per_job, duration_s=duration, ideal_s=ideal_s,
        time_vs_ideal=round(duration / ideal_s, 3), rpm_limit=rpm,
        simulator={name: stats_after[name] - stats_before.get(name, 0)
                   for name, value in stats_after.items() if isinstance(value, int)},
        server_totals=debug.get("totals") if isinstance(debug, dict) else None,
    )
    outcome.target("client-visible failures", failures, str(failures), "0", failures == 0)
    outcome.target("upstream calls per job", per_job, "-" if per_job is None else f"{per_job:.2f}",
                   "<= 1.3", at_most(per_job, 1.3))
    outcome.target("time vs ideal", duration / ideal_s,
                   f"{duration:.1f} s / {ideal_s:.0f} s = {duration / ideal_s:.2f}x", "<= 1.2x",
                   at_most(duration / ideal_s, 1.2))
    record_run(outcome, report)
    return outcome
