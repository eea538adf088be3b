"""The actor-state scenarios: ``idle`` (memory per idle session, and actors let go after the
idle timeout) and ``snapshot`` (``/debug/actors`` over many live actors); see `bench.scenarios`.
"""

from __future__ import annotations

import time

import trio

from web.loadtest import run_loadtest

from .harness import Bench, CpuMeter, Outcome, below, load_options, record_run
from .procs import Service, http_get


async def _live_sessions(server: Service) -> int | None:
    """Live session actors per ``/debug/actors``; None if the server has no such route."""
    status, body = await http_get(server.url, "/debug/actors?kind=session&limit=0")
    if status != 200 or not isinstance(body, dict):
        return None
    if isinstance(body.get("matched"), int):
        return int(body["matched"])
    live = body.get("totals", {}).get("actors", {}).get("live", {})
    return int(live.get("session", 0)) if isinstance(live, dict) else None


async def _wait_idle(server: Service, idle_timeout_s: float) -> int | None:
    """Wait until no session actor is live (None: the server cannot tell; waited anyway)."""
    live = await _live_sessions(server)
    if live is None:
        await trio.sleep(idle_timeout_s + 3)
        return None
    with trio.move_on_after(idle_timeout_s + 20):
        while live:
            await trio.sleep(0.5)
            live = await _live_sessions(server)
    return live


async def idle_memory(bench: Bench) -> Outcome:
    """RSS per idle session. A warm-up at the same concurrency goes first, and its actors
    are let go idle, so that the baseline already holds what 200 connections and 200
    requests in flight cost (about 30 MB, which would otherwise be charged to the sessions).
    """
    outcome = Outcome("idle", "20,000 one-turn sessions, then past the idle timeout (5 s)")
    sessions, budget_s = (2000, 15.0) if bench.quick else (20_000, 50.0)
    concurrency, idle_timeout_s = 200, 5.0
    async with bench.simulator("idle", latency_ms=0) as simulator, bench.server(
        "idle", simulator, ACTORCHAT_ACTORS__IDLE_TIMEOUT_S=f"{idle_timeout_s:g}"
    ) as server:
        await run_loadtest(load_options(server.url, conversations=concurrency, turns=1,
                                    concurrency=concurrency, check=False))
        await _wait_idle(server, idle_timeout_s)
        before_mb = server.rss_mb()
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(load_options(
            server.url, conversations=sessions, turns=1, concurrency=concurrency, check=False,
            max_duration_s=budget_s,
        ))
        if report.stopped_early:
            outcome.notes.append(
                f"time budget: {report.conversations_run:,} of {sessions:,} sessions made in"
                f" {budget_s:g} s ({report.throughput_tps:.0f} turns/s); the memory figure is"
                " per session made"
            )
        loaded_mb = server.rss_mb()
        meter.record(outcome, report)
        waited = time.perf_counter()
        live = await _wait_idle(server, idle_timeout_s)
        if live is None:
            outcome.notes.append("no /debug/actors: did not check that session actors stopped")
        outcome.metrics["idle_wait_s"] = round(time.perf_counter() - waited, 1)
        after_mb = server.rss_mb()
        peak_mb = server.peak_rss_mb()
    created = report.ok_turns

    def per_session(mb: float) -> float | None:
        return round((mb - before_mb) * 1024 * 1024 / created) if created else None

    idle_bytes = per_session(after_mb)
    outcome.metrics.update(
        sessions=created, rss_before_mb=before_mb, rss_loaded_mb=loaded_mb,
        rss_after_idle_mb=after_mb, server_peak_rss_mb=peak_mb,
        bytes_per_idle_session=idle_bytes, bytes_per_live_session=per_session(loaded_mb),
        live_session_actors_after=live, turns_per_s=report.throughput_tps,
    )
    outcome.notes.append(
        "bytes per idle session = (RSS after the idle timeout - RSS before) / sessions; RSS,"
        " not the Python heap, so freed memory the allocator keeps still counts"
    )
    outcome.target("bytes per idle session", idle_bytes,
                   "-" if idle_bytes is None else f"{idle_bytes:,.0f} B", "< 5,000 B",
                   below(idle_bytes, 5000))
    outcome.target("session actors live after idle", live, "-" if live is None else str(live),
                   "0", None if live is None else live == 0)
    record_run(outcome, report)
    return outcome


async def snapshot(bench: Bench) -> Outcome:
    """``/debug/actors?limit=100`` with 10,000 live session actors: how long the answer takes.

    Each request is timed by the client on a fresh connection, so the figure includes
    connecting and the JSON; the snapshot itself never waits on the actors.
    """
    outcome = Outcome("snapshot", "/debug/actors?limit=100 with 10,000 live actors")
    sessions = 1000 if bench.quick else 10_000
    async with bench.simulator("snapshot", latency_ms=0) as simulator, \
            bench.server("snapshot", simulator) as server:
        report = await run_loadtest(load_options(
            server.url, conversations=sessions, turns=1, concurrency=200, check=False,
        ))
        live = await _live_sessions(server)
        timings_ms = []
        for _ in range(20):
            started = time.perf_counter()
            status, _ = await http_get(server.url, "/debug/actors?limit=100")
            timings_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                outcome.notes.append(f"/debug/actors answered {status}")
    timings_ms.sort()
    worst, median = timings_ms[-1], timings_ms[len(timings_ms) // 2]
    outcome.metrics.update(live_session_actors=live, snapshot_ms_median=round(median, 1),
                           snapshot_ms_max=round(worst, 1), sessions_made=report.ok_turns)
    outcome.target("live session actors", live, "-" if live is None else f"{live:,}",
                   f">= {sessions:,}", None if live is None else live >= sessions)
    outcome.target("snapshot time (max of 20)", worst,
                   f"{worst:.1f} ms (median {median:.1f})", "< 100 ms", below(worst, 100))
    return outcome
