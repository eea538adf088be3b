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
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from web.loadtest import LoadOptions, run_loadtest
from web.loadtest_report import LoadReport

from .procs import (
    CLIENT_CPU,
    REPO,
    SERVER_CPU,
    BenchError,
    Service,
    clean_environment,
    free_port,
    http_get,
    python_command,
    start_service,
)
from .procs import CONFIG as CONFIG_PATH


@dataclass
class Target:
    """One number a scenario is held to; ``passed`` is None when it could not be measured."""

    metric: str
    value: float | None
    shown: str
    goal: str
    passed: bool | None


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    title: str
    targets: list[Target] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    loadtest: dict[str, Any] | None = None
    error: str | None = None

    def target(self, metric: str, value: float | None, shown: str, goal: str,
               passed: bool | None) -> None:
        self.targets.append(Target(metric, value, shown, goal, passed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def below(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


class Bench:
    """Starts the processes of a scenario, pinned as the bench wants them."""

    def __init__(self, log_dir: Path, *, quick: bool, pinned: bool) -> None:
        self.log_dir = log_dir
        self.quick = quick
        self.pinned = pinned

    def _cpu(self, cpu: int) -> int | None:
        return cpu if self.pinned else None

    @asynccontextmanager
    async def simulator(self, name: str, **flags: float) -> AsyncIterator[Service]:
        """``actorchat simulate`` on a free port with the given ``--flag`` values."""
        port = free_port()
        argv = python_command("simulate", "--host", "127.0.0.1", "--port", str(port),
                              "--config", str(CONFIG_PATH))
        for flag, value in flags.items():
            argv += ["--" + flag.replace("_", "-"), f"{value:g}"]
        async with start_service(
            f"{name}-simulator", argv, url=f"http://127.0.0.1:{port}",
            ready_path="/_simulator/stats", env=clean_environment(),
            cpu=self._cpu(CLIENT_CPU), log_dir=self.log_dir,
        ) as service:
            yield service

    @asynccontextmanager
    async def server(
        self, name: str, simulator: Service, **settings: str
    ) -> AsyncIterator[Service]:
        """``actorchat serve`` on a free port, talking to ``simulator``; ``settings`` are
        ``ACTORCHAT_*`` variables, e.g. ``ACTORCHAT_ACTORS__IDLE_TIMEOUT_S="5"``."""
        port = free_port()
        env = clean_environment(
            OPENAI_API_KEY="sim-bench",
            OPENAI_BASE_URL=f"{simulator.url}/v1",
            SESSION_SECRET="bench-session-secret",
            ACTORCHAT_SERVER__ACCESS_LOG="false",
            ACTORCHAT_SERVER__DRAIN_S="2",
            **settings,
        )
        argv = python_command("serve", "--config", str(CONFIG_PATH), "--bind", f"127.0.0.1:{port}")
        async with start_service(
            f"{name}-server", argv, url=f"http://127.0.0.1:{port}", ready_path="/healthz",
            env=env, cpu=self._cpu(SERVER_CPU), log_dir=self.log_dir,
        ) as service, trio.open_nursery() as nursery:
            nursery.start_soon(service.watch_memory)
            yield service
            nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def trivial_server(self) -> AsyncIterator[Service]:
        port = free_port()
        argv = [python_command()[0], str(REPO / "bench" / "trivial.py"), str(port)]
        async with start_service(
            "trivial-server", argv, url=f"http://127.0.0.1:{port}", ready_path="/",
            env=clean_environment(), cpu=self._cpu(SERVER_CPU), log_dir=self.log_dir,
        ) as service:
            yield service


def _record_run(outcome: Outcome, report: LoadReport) -> None:
    """Keep the whole load test report, and a target that the run itself passed."""
    outcome.loadtest = report.to_dict()
    errors = sum(report.errors.values())
    shown = (f"{errors} errors, {report.failed_turns} failed turns, "
             f"{report.checks_passed}/{report.checks_passed + report.checks_failed} checks")
    outcome.target("run passed (errors, checks)", errors + report.checks_failed, shown,
                   "0 errors, all checks", report.passed)


class CpuMeter:
    """CPU seconds used by the server, the simulator and this process over a span, and how
    long the processes waited for a CPU that something else held."""

    def __init__(self, **services: Service) -> None:
        self.services = services
        self.started = {name: service.cpu_s() for name, service in services.items()}
        self.waited = {name: service.runqueue_wait_s() for name, service in services.items()}
        self.started_self = time.process_time()

    def per_turn_ms(self, report: LoadReport) -> dict[str, Any]:
        """CPU per turn and the share of the wall time each was busy, over the whole run:
        the history checks are included (in time and in CPU) when the run made them."""
        turns = report.ok_turns
        duration_s = report.duration_s + report.check_duration_s
        used = {name: service.cpu_s() - self.started[name]
                for name, service in self.services.items()}
        used["loadtest"] = time.process_time() - self.started_self
        waited = {name: service.runqueue_wait_s() - self.waited[name]
                  for name, service in self.services.items()}
        return {
            name: {
                "cpu_s": round(seconds, 2),
                "busy": round(seconds / duration_s, 2) if duration_s else None,
                "cpu_ms_per_turn": round(seconds * 1000 / turns, 3) if turns else None,
                "runqueue_wait_s": round(waited[name], 2) if name in waited else None,
            }
            for name, seconds in used.items()
        }


    def record(self, outcome: Outcome, report: LoadReport) -> None:
        """Put `per_turn_ms` in ``outcome.metrics["cpu"]``, and a note for each process that
        waited over a tenth of the run for its CPU: something else was using it."""
        cpu = outcome.metrics["cpu"] = self.per_turn_ms(report)
        wall_s = report.duration_s + report.check_duration_s
        for name, numbers in cpu.items():
            waited = numbers["runqueue_wait_s"]
            if waited is not None and wall_s and waited > 0.1 * wall_s:
                outcome.notes.append(
                    f"the {name} waited {waited:.1f} s of {wall_s:.1f} s for its CPU: another"
                    " process was using it, so these numbers are pessimistic"
                )


def _options(url: str, **values: Any) -> LoadOptions:
    return LoadOptions(url=url, progress=False, **values)


async def client_ceiling(bench: Bench) -> Outcome:
    """The load tester against `bench/trivial.py`: its own requests per second."""
    outcome = Outcome("client", "load tester alone vs a trivial server")
    turns = 50 if bench.quick else 300
    async with bench.trivial_server() as trivial:
        await run_loadtest(_options(trivial.url, conversations=64, turns=5, concurrency=64,
                                    check=False))
        meter = CpuMeter(trivial=trivial)
        report = await run_loadtest(_options(trivial.url, conversations=64, turns=turns,
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
        await run_loadtest(_options(server.url, conversations=conversations, turns=2,
                                    concurrency=conversations))
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(_options(server.url, conversations=conversations,
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
    _record_run(outcome, report)
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
        report = await run_loadtest(_options(
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
    _record_run(outcome, report)
    return outcome


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
        await run_loadtest(_options(server.url, conversations=concurrency, turns=1,
                                    concurrency=concurrency, check=False))
        await _wait_idle(server, idle_timeout_s)
        before_mb = server.rss_mb()
        meter = CpuMeter(server=server, simulator=simulator)
        report = await run_loadtest(_options(
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
    _record_run(outcome, report)
    return outcome


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
        report = await run_loadtest(_options(
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
    _record_run(outcome, report)
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
        report = await run_loadtest(_options(
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


Scenario = Callable[[Bench], Awaitable[Outcome]]

SCENARIOS: dict[str, Scenario] = {
    "client": client_ceiling,
    "throughput": throughput,
    "many": many,
    "many-burst": many_burst,
    "idle": idle_memory,
    "snapshot": snapshot,
    "429": rate_limited,
}


async def run_scenario(name: str, bench: Bench) -> Outcome:
    """Run one scenario; a crash (e.g. a process that did not start) becomes ``error``."""
    try:
        return await SCENARIOS[name](bench)
    except (BenchError, OSError, KeyError, TypeError, ValueError) as error:
        outcome = Outcome(name, "crashed")
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
