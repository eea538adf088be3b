"""What every benchmark scenario stands on: `Bench` starts the processes, `Outcome` holds what
a scenario measured and the targets it is held to, `CpuMeter` charges CPU time to each process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from web.loadtest import LoadOptions
from web.loadtest.report import LoadReport

from .procs import (
    CLIENT_CPU,
    REPO,
    SERVER_CPU,
    Service,
    clean_environment,
    free_port,
    python_command,
    start_service,
    wait_for_workers,
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

    def __init__(self, log_dir: Path, *, quick: bool, pinned: bool,
                 soak_s: float | None = None) -> None:
        self.log_dir = log_dir
        self.quick = quick
        self.pinned = pinned
        self.soak_s = soak_s  # how long `soak` is judged after its warm-up; None: its default

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
        self, name: str, simulator: Service | None, *, serve_args: tuple[str, ...] = (),
        pinned: bool = True, **settings: str
    ) -> AsyncIterator[Service]:
        """``actorchat serve`` on a free port, talking to ``simulator``; ``settings`` are
        ``ACTORCHAT_*`` variables, e.g. ``ACTORCHAT_ACTORS__IDLE_TIMEOUT_S="5"``.

        ``serve_args`` are added to the command (``--workers 2``); ``pinned=False`` leaves the
        server free to use every CPU (its workers are its children: their CPU is not metered).
        ``simulator=None``: each server process runs its own built-in simulator."""
        port = free_port()
        upstream = ({"OPENAI_API_KEY": "sim-bench", "OPENAI_BASE_URL": f"{simulator.url}/v1"}
                    if simulator is not None else {"ACTORCHAT_UPSTREAM__PROVIDER": "simulator"})
        env = clean_environment(
            **upstream,
            SESSION_SECRET="bench-session-secret",
            ACTORCHAT_SERVER__ACCESS_LOG="false",
            ACTORCHAT_SERVER__DRAIN_S="2",
            **settings,
        )
        argv = python_command("serve", "--config", str(CONFIG_PATH), "--bind", f"127.0.0.1:{port}",
                              *serve_args)
        async with start_service(
            f"{name}-server", argv, url=f"http://127.0.0.1:{port}", ready_path="/healthz",
            env=env, cpu=self._cpu(SERVER_CPU) if pinned else None, log_dir=self.log_dir,
        ) as service, trio.open_nursery() as nursery:
            if "--workers" in serve_args:
                await wait_for_workers(service)
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


def record_run(outcome: Outcome, report: LoadReport) -> None:
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


def load_options(url: str, **values: Any) -> LoadOptions:
    return LoadOptions(url=url, progress=False, **values)
