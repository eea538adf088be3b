"""The processes a benchmark runs: the simulator, the server, a trivial HTTP server.

Each runs as a subprocess from a scratch directory (so no ``.env`` there changes it), pinned
with ``taskset`` to a CPU when the machine has the tool and two CPUs, with its output in a log
file that is quoted when it fails to start. `Service` reads its memory and CPU time from
``/proc``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from web.loadtest.http import RawConnection, TransportFailure

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.toml"
SERVER_CPU = 1
"""The server runs alone on this CPU; the simulator and the load tester share `CLIENT_CPU`."""
CLIENT_CPU = 0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class BenchError(Exception):
    """A benchmark could not run: a process did not start, or answered nonsense."""


_STARTING_CPUS = os.sched_getaffinity(0)  # on import: before bench.run pins itself


def can_pin() -> bool:
    """True when ``taskset`` exists and both bench CPUs are ours to use."""
    cpus = os.sched_getaffinity(0)
    return shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= cpus


def _cpu_ticks() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU from ``/proc/stat``."""
    ticks = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(value) for value in values[:8]]
                idle = numbers[3] + numbers[4]
                ticks[name] = (sum(numbers) - idle, sum(numbers))
    return ticks


def steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from ``/proc/stat``: the time the hypervisor gave
    to other guests while ours wanted to run."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:9]]
    return values[7], sum(values)


def background_busy(seconds: float = 1.0) -> dict[str, float]:
    """How busy each CPU is over ``seconds`` before the bench starts: others' load skews it."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    return {
        name: round((after[name][0] - busy) / max(1, after[name][1] - total), 2)
        for name, (busy, total) in before.items()
        if name in after
    }


def free_port() -> int:
    """A TCP port free on the loopback right now (another process could still take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without actorchat settings, plus ``extra``.

    ``DEBUG_TOKEN`` is set empty so that a ``.env`` cannot close ``/debug`` to the bench.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ACTORCHAT_", "OPENAI_")) and name != "SESSION_SECRET"
    }
    env.update({"DEBUG_TOKEN": "", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


async def http_get(url: str, path: str, timeout_s: float = 10.0) -> tuple[int, Any]:
    """``GET url+path`` on a fresh connection: the status and the JSON body (None if not JSON).

    Raises TransportFailure or trio.TooSlowError when there is no answer.
    """
    connection = RawConnection(url)
    try:
        with trio.fail_after(timeout_s):
            reply = await connection.request("GET", path, "", None)
    finally:
        await connection.aclose()
    try:
        return reply.status, json.loads(reply.body)
    except ValueError:
        return reply.status, None


@dataclass
class Service:
    """A running subprocess: its name, base URL, process and log file."""

    name: str
    url: str
    process: trio.Process
    log_path: Path
    peak_rss_kb: int = 0
    rss_samples_kb: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_kb(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (the kernel's peak RSS) from ``/proc/PID/status``, in KiB."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values

    def children(self) -> set[int]:
        """The PIDs of its child processes (its workers, for ``serve --workers``)."""
        with open(f"/proc/{self.pid}/task/{self.pid}/children") as children:
            return {int(pid) for pid in children.read().split()}

    def rss_mb(self) -> float:
        return round(self.memory_kb()["VmRSS"] / 1024, 1)

    def peak_rss_mb(self) -> float:
        """The largest RSS seen: the kernel's ``VmHWM`` or our own polling, whichever is more."""
        return round(max(self.peak_rss_kb, self.memory_kb().get("VmHWM", 0)) / 1024, 1)

    def cpu_s(self) -> float:
        """User plus system CPU seconds used so far, from ``/proc/PID/stat``."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def runqueue_wait_s(self) -> float:
        """Seconds its threads were ready to run but waited for a CPU (``/proc/PID/schedstat``).

        Only the main thread's: the threads of Trio's thread cache are idle in a benchmark.
        """
        with open(f"/proc/{self.pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9

    async def watch_memory(self, every_s: float = 0.1) -> None:
        """Poll ``VmRSS`` into `peak_rss_kb` and `rss_samples_kb` until cancelled."""
        while self.process.returncode is None:
            try:
                rss = self.memory_kb()["VmRSS"]
            except (OSError, KeyError):
                return
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.rss_samples_kb.append(rss)
            await trio.sleep(every_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@asynccontextmanager
async def start_service(
    name: str,
    argv: list[str],
    *,
    url: str,
    ready_path: str,
    env: dict[str, str],
    cpu: int | None,
    log_dir: Path,
) -> AsyncIterator[Service]:
    """Start ``argv`` (on ``cpu`` when given), wait until ``GET url+ready_path`` is 200.

    On exit the process gets SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`. Raises BenchError,
    with the end of its log, if it exits or is not ready within `START_TIMEOUT_S`.
    """
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    elif shutil.which("taskset") is not None:
        # A child inherits its parent's CPUs, and the bench runs pinned to the load tester's:
        # an unpinned service gets back every CPU the bench started with.
        argv = ["taskset", "-c", ",".join(map(str, sorted(_STARTING_CPUS))), *argv]
    log_path = log_dir / f"{name}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await trio.lowlevel.open_process(
            argv, env=env, cwd=log_dir, stdout=log_fd, stderr=subprocess.STDOUT
        )
    finally:
        os.close(log_fd)  # the child has its own copy
    service = Service(name, url, process, log_path)
    try:
        await _wait_ready(service, ready_path)
        yield service
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def _wait_ready(service: Service, ready_path: str) -> None:
    with trio.move_on_after(START_TIMEOUT_S):
        while service.process.returncode is None:
            try:
                status, _ = await http_get(service.url, ready_path, timeout_s=2)
                if status == 200:
                    return
            except (TransportFailure, trio.TooSlowError):
                pass
            await trio.sleep(0.1)
    state = (
        f"exited with {service.process.returncode}"
        if service.process.returncode is not None
        else f"not ready after {START_TIMEOUT_S:g} s"
    )
    raise BenchError(f"{service.name} {state}; end of {service.log_path}:\n{service.log_tail()}")


async def wait_for_workers(service: Service) -> None:
    """Return once every worker process of ``actorchat serve --workers`` (``service``'s
    children) has announced itself in Redis (``/debug/actors``: ``stream.instances``).

    The first worker up answers the readiness check while the others may still be starting;
    connections opened then would all go to it (the workers share one listening socket).
    """
    workers = service.children()
    with trio.move_on_after(START_TIMEOUT_S):
        while True:
            _, debug = await http_get(service.url, "/debug/actors")
            instances = ((debug or {}).get("stream") or {}).get("instances") or {}
            if workers <= {about.get("pid") for about in instances.values()}:
                return
            await trio.sleep(0.1)
    raise BenchError(f"{service.name}: not every worker started within {START_TIMEOUT_S:g} s; "
                     f"end of {service.log_path}:\n{service.log_tail()}")


def python_command(*args: str) -> list[str]:
    """``python -m web.cli ...`` with this interpreter (the venv's, under ``make bench``)."""
    return [sys.executable, "-m", "web.cli", "--log-level", "WARNING", *args]
