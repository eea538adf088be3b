"""The ``soak`` scenario: mixed session and job traffic for a while, with a wave of 2,000
HTTP/1.0 connections in it; the server's file descriptors and RSS are watched from ``/proc``.

Timeline: the fd baseline of the fresh server; then traffic for ``warm-up + judged`` seconds,
the HTTP/1.0 wave starting with it; RSS is judged on the samples after the warm-up and after
the wave; when the traffic has ended and every client has closed its connections, the server's
fds must be back to the baseline within `SETTLE_S` (the upstream connection pool aside: its
size follows the pool's own policy). The server runs with short TTLs (a fraction of the warm-up)
so that what it keeps on purpose (sessions, job results, idle actors) reaches a steady state
within the warm-up; with the defaults (sessions kept 7 days) RSS grows with every session,
by design. Session histories are not checked for the same reason: they expire.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import trio

from web.loadtest import LoadReport, run_loadtest

from .harness import Bench, Outcome, load_options
from .soak_probes import FdCount, Http10Wave, count_fds, http10_wave, sample_rss, watch_fds

LATENCY_MS = 200
THINK_MS = (200.0, 800.0)
SESSION_CONCURRENCY, SESSION_TURNS = 32, 5
TRACE_CONCURRENCY, TRACE_TURNS = 16, 3
HTTP10_CONNECTIONS, HTTP10_CONCURRENCY, HTTP10_CLOSE_WAIT_S = 2000, 250, 2.0
QUIET_S, SETTLE_S = 1.0, 15.0
RSS_TOLERANCE = 0.10


def _loads(url: str, seconds: float) -> dict[str, Any]:
    """The session and trace load tests of the soak, starting conversations for ``seconds``."""
    common: dict[str, Any] = {"think_ms": THINK_MS, "max_duration_s": seconds, "timeout_s": 30}
    return {
        "session": load_options(
            url, conversations=int(seconds * SESSION_CONCURRENCY) + SESSION_CONCURRENCY,
            turns=SESSION_TURNS, concurrency=SESSION_CONCURRENCY, check=False, **common),
        "trace": load_options(
            url, mode="trace", conversations=int(seconds * TRACE_CONCURRENCY) + TRACE_CONCURRENCY,
            turns=TRACE_TURNS, concurrency=TRACE_CONCURRENCY, wait_s=10, **common),
    }


async def _run_loads(url: str, seconds: float, reports: dict[str, LoadReport]) -> None:
    async def one(name: str, options: Any) -> None:
        reports[name] = await run_loadtest(options)

    async with trio.open_nursery() as nursery:
        for name, options in _loads(url, seconds).items():
            nursery.start_soon(one, name, options)


async def _settled_fds(pid: int, ports: tuple[int, int], baseline: FdCount,
                       ) -> tuple[FdCount, float]:
    """The fd count once it is back to ``baseline`` (or after `SETTLE_S`), and how long that
    took."""
    started = trio.current_time()
    with trio.move_on_after(SETTLE_S):
        while True:
            after = count_fds(pid, *ports)
            if after.own <= baseline.own and after.clients <= baseline.clients:
                break
            await trio.sleep(0.5)
    return count_fds(pid, *ports), round(trio.current_time() - started, 1)


async def soak(bench: Bench) -> Outcome:
    judged_s = bench.soak_s or (30.0 if bench.quick else 300.0)
    warmup_s = 30.0 if bench.quick else 60.0
    ttl_s = warmup_s / 2.5
    outcome = Outcome("soak", f"{judged_s:g} s of sessions + jobs after a {warmup_s:g} s warm-up,"
                              f" {HTTP10_CONNECTIONS:,} HTTP/1.0 connections in it")
    async with bench.simulator("soak", latency_ms=LATENCY_MS) as simulator, bench.server(
        "soak", simulator,
        ACTORCHAT_ACTORS__IDLE_TIMEOUT_S=f"{ttl_s / 3:g}",
        ACTORCHAT_SESSIONS__TTL_S=f"{ttl_s:g}",
        ACTORCHAT_JOBS__RESULT_TTL_S=f"{ttl_s:g}",
    ) as server:
        ports = (urlsplit(server.url).port or 80, urlsplit(simulator.url).port or 80)
        await trio.sleep(QUIET_S)  # the readiness probe's connection closes
        baseline = count_fds(server.pid, *ports)
        samples: list[tuple[float, float]] = []
        peak: dict[str, int] = {}
        reports: dict[str, LoadReport] = {}
        async with trio.open_nursery() as watchers:
            started = trio.current_time()
            watchers.start_soon(sample_rss, server, 2.0 if bench.quick else 5.0, samples)
            watchers.start_soon(watch_fds, server, *ports, 0.5, peak)
            async with trio.open_nursery() as traffic:
                traffic.start_soon(_run_loads, server.url, warmup_s + judged_s, reports)
                wave = await http10_wave("127.0.0.1", ports[0], connections=HTTP10_CONNECTIONS,
                                         concurrency=HTTP10_CONCURRENCY,
                                         close_wait_s=HTTP10_CLOSE_WAIT_S)
                wave_end_s = trio.current_time() - started
            watchers.cancel_scope.cancel()
        after, settle_s = await _settled_fds(server.pid, ports, baseline)
    judge_from = max(warmup_s, wave_end_s)
    judged = [rss for at, rss in samples if judge_from <= at <= warmup_s + judged_s]
    _record_wave(outcome, wave)
    _record_fds(outcome, baseline, peak, after, settle_s)
    _record_rss(outcome, judged, samples, judge_from, warmup_s + judged_s)
    _record_traffic(outcome, reports)
    outcome.metrics.update(judged_s=judged_s, warmup_s=warmup_s, ttl_s=ttl_s,
                           wave_end_s=round(wave_end_s, 1))
    return outcome


def _record_wave(outcome: Outcome, wave: Http10Wave) -> None:
    outcome.metrics["http10"] = asdict(wave)
    total = wave.connections
    failures = f" {wave.failures}" if wave.failures else ""
    outcome.target("HTTP/1.0 answered 200", wave.answered,
                   f"{wave.answered:,} / {total:,}{failures}",
                   f"{total:,} / {total:,}", wave.answered == total)
    outcome.target(f"HTTP/1.0 closed by the server within {wave.close_wait_s:g} s",
                   wave.closed_by_server,
                   f"{wave.closed_by_server:,} / {total:,} ({wave.left_open:,} left open;"
                   f" wave {wave.duration_s:g} s)",
                   f"{total:,} / {total:,}", wave.closed_by_server == total)


def _record_fds(outcome: Outcome, baseline: FdCount, peak: dict[str, int], after: FdCount,
                settle_s: float) -> None:
    outcome.metrics["fds"] = {"baseline": asdict(baseline), "peak": peak, "after": asdict(after),
                              "settle_s": settle_s}
    back = after.own <= baseline.own and after.clients <= baseline.clients
    outcome.target(
        "server fds after the soak", after.total,
        f"{baseline.total} -> peak {peak.get('total', '-')} -> {after.total}"
        f" (upstream pool {baseline.upstream} -> {after.upstream})",
        "back to baseline (upstream pool aside)", back)
    if not back:
        outcome.notes.append(
            f"fds not back {settle_s:g} s after the clients closed: {after.clients} client"
            f" sockets open {after.client_states}, {after.own} fds besides the upstream pool"
            f" against {baseline.own} before")


def _record_rss(outcome: Outcome, judged: list[float], samples: list[tuple[float, float]],
                judge_from: float, judge_to: float) -> None:
    outcome.metrics["rss_samples_mb"] = samples
    if not judged:
        outcome.target("RSS flat after warm-up", None, "no samples", "within ±10%", None)
        return
    first, last, highest, lowest = judged[0], judged[-1], max(judged), min(judged)
    drift = max(highest - first, first - lowest) / first
    outcome.metrics["rss_mb"] = {"first": first, "last": last, "max": highest, "min": lowest,
                                 "drift": round(drift, 3), "samples": len(judged),
                                 "from_s": round(judge_from, 1), "to_s": round(judge_to, 1)}
    outcome.target(f"RSS over {judge_to - judge_from:.0f} s after warm-up", drift,
                   f"first {first:.0f} / last {last:.0f} / max {highest:.0f} MB"
                   f" ({drift:+.1%} at most)", "within ±10% of first", drift <= RSS_TOLERANCE)


def _record_traffic(outcome: Outcome, reports: dict[str, LoadReport]) -> None:
    outcome.loadtest = {name: report.to_dict() for name, report in reports.items()}
    shown, errors = [], 0
    for name, report in reports.items():
        failed = sum(report.errors.values()) + report.failed_turns + report.checks_failed
        errors += failed
        shown.append(f"{name} {report.ok_turns:,} ok / {failed} failed"
                     f" ({report.throughput_tps:.0f}/s)")
    outcome.target("mixed traffic", errors, ", ".join(shown), "0 failed", errors == 0)
