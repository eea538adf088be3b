"""The load scenarios: ``client`` (the load tester's own ceiling), ``throughput``, ``many`` and
``many-burst``; see `bench.scenarios`."""

from __future__ import annotations

from dataclasses import asdict

from web.loadtest import run_loadtest

from .harness import Bench, CpuMeter, Outcome, at_least, below, load_options, record_run


async def client_ceiling(bench: Bench) -> Outcome:
    """The load tester against `bench/trivial.py`: its own requests per second."""
    outcome = Outcome("client", "load tester alone vs a trivial server")
    turns = 50 if bench.quick else 300
    async with bench.trivial_server() as trivial:
        await run_loadtest(load_options(trivial.url, conversations=64, turns=5, concurrency=64,
                                    check=False))
        meter = CpuMeter(trivial=trivial)
        report = await run_loadtest(load_options(trivial.url, conversations=64, turns=turns,
                                             concurrency=64, check=False))
        meter.record(outcome, report)
    outcome.loadtest = report.to_dict()
    outcome.metrics["requests_per_s"] = report.throughput_tps
    outcome.target("load tester req/s", report.throughput_tps, f"{report.throughput_tps:,.0f}",
                   ">= 1,000 (2x the throughput target)", at_least(report.throughput_tps, 1000))
    return outcome


async def throughput(bench: Bench) -> Outcome:
    outcome = Outcome("throughput", "64 conversations x 10 turns, upstream latency 0")
    conversations, turns = (32, 5) if bench.quick else (64, 10)
    async with bench.simulator("throughput", latency_ms=0) as simulator, \
            bench.server("throughput", simulator) as server:
        await run_loadtest(load_options(server.url, conversations=conversations, turns=2,
                                    concurrency=conversations))
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(load_options(server.url, conversations=conversations,
                                             turns=turns, concurrency=conversations))
        meter.record(outcome, report)
        outcome.metrics["server_peak_rss_mb"] = server.peak_rss_mb()
    tps = report.throughput_tps
    latency = report.latency_ms
    outcome.metrics.update(turns_per_s=tps, latency_ms=latency and asdict(latency))
    outcome.target("turns/s", tps, f"{tps:,.0f}", ">= 500", at_least(tps, 500))
    if latency is not None:
        shown = f"{latency.p50:.0f} / {latency.p99:.0f} ms"
        outcome.target("latency p50 / p99", latency.p99, shown, "(reported)", None)
    record_run(outcome, report)
    return outcome


async def many(bench: Bench) -> Outcome:
    """1,000 users arriving over 5 s (not one synchronized click), then held concurrently."""
    return await _many(bench, "many", "1,000 concurrent conversations x 3 turns, latency 1 s,"
                       " think 2-6 s, starting over 5 s", ramp_s=5.0, judged=True)


async def many_burst(bench: Bench) -> Outcome:
    """As `many` with all 1,000 first turns sent at the same instant: the start-up burst.

    1,000 first turns at ~3 ms of CPU each are ~3 s of one core's work, so the burst's tail
    is reported, not judged against the 200 ms target.
    """
    return await _many(bench, "many-burst", "as many, all 1,000 first turns at once",
                       ramp_s=0.0, judged=False)


async def _many(bench: Bench, name: str, title: str, ramp_s: float, judged: bool) -> Outcome:
    outcome = Outcome(name, title)
    if bench.quick:
        conversations, latency_ms, think = 200, 300, (500.0, 1500.0)
    else:
        conversations, latency_ms, think = 1000, 1000, (2000.0, 6000.0)
    async with bench.simulator(name, latency_ms=latency_ms) as simulator, \
            bench.server(name, simulator) as server:
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(load_options(
            server.url, conversations=conversations, turns=3, concurrency=conversations,
            think_ms=think, ramp_s=ramp_s,
        ))
        meter.record(outcome, report)
        peak_mb = server.peak_rss_mb()
    overhead = report.overhead_ms
    errors = sum(report.errors.values())
    outcome.metrics.update(
        errors=errors, server_peak_rss_mb=peak_mb, overhead_ms=overhead and asdict(overhead),
        latency_ms=report.latency_ms and asdict(report.latency_ms),
    )
    outcome.target("errors", errors, str(errors), "0", errors == 0)
    checked = report.checks_passed + report.checks_failed
    outcome.target("history checks", report.checks_failed,
                   f"{report.checks_passed}/{checked} passed", "all pass",
                   report.checks_failed == 0 and report.checks_passed == conversations)
    # The target's overhead is the issue's: reply time minus the simulated latency. The
    # Server-Timing view (reply time minus the upstream time the server measured) is shown
    # beside it; it leaves out the server's delay in picking up the upstream's answer.
    latency = report.latency_ms
    p99 = latency.p99 - latency_ms if latency else None
    outcome.metrics["overhead_vs_simulated_latency_p99_ms"] = p99
    outcome.target("overhead p99 (latency - simulated 1 s)", p99,
                   "-" if p99 is None else f"{p99:.0f} ms",
                   "< 200 ms" if judged else "(reported)", below(p99, 200) if judged else None)
    server_p99 = overhead.p99 if overhead else None
    outcome.target("overhead p99 (latency - upstream)", server_p99,
                   "-" if server_p99 is None else f"{server_p99:.0f} ms", "(reported)", None)
    outcome.target("server peak RSS", peak_mb, f"{peak_mb:.0f} MB", "< 300 MB", below(peak_mb, 300))
    record_run(outcome, report)
    return outcome
