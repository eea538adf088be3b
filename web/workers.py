"""``actorchat serve --workers N``: N server processes sharing one port.

The parent starts N copies of ``actorchat serve`` (each with ``--worker-of N``); each binds the
port with SO_REUSEPORT (Hypercorn sets it when ``workers > 1``), so the kernel spreads new
connections over them. The parent serves nothing itself. Shared state lives in Redis, which is
why the memory store refuses N > 1: each worker would hold its own sessions, and a
conversation would lose its history whenever its next request reached another worker.

Shutdown: SIGTERM or SIGINT to the parent sends one SIGTERM to every worker, and each drains
as a single server does (``server.drain_s``); the parent exits once all have. The workers run
in their own process session, so a terminal's Ctrl-C reaches them once, through the parent.
If a worker exits on its own, the parent stops the others and exits non-zero: a supervisor
above it (systemd, a container runtime) restarts the whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
from types import FrameType

from actors.config import Settings

log = logging.getLogger("actorchat")


def refuse_reason(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot run with ``settings``; None when they can."""
    if workers > 1 and settings.store.backend == "memory":
        return (f"--workers {workers} needs store.backend = \"redis\": with the memory store "
                "each worker would keep its own sessions and jobs, and a conversation would "
                "lose its history whenever a request reached another worker "
                "(set ACTORCHAT_STORE__BACKEND=redis, or run one worker)")
    return None


def serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``args.workers`` worker processes until a signal stops them; the exit status."""
    environment = os.environ.copy()
    if settings.sessions.secret is None:
        # Every worker must sign and check cookies with one secret.
        environment["SESSION_SECRET"] = secrets.token_urlsafe(32)
        log.warning("SESSION_SECRET is not set: using a random secret shared by the workers "
                    "for this run; sessions will not survive a restart")
    command = [sys.executable, "-m", "web.cli", "--log-level", args.log_level, "serve",
               "--config", args.config, "--worker-of", str(args.workers)]
    if args.bind:
        command += ["--bind", args.bind]
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name,
                     len(workers))
        stopping = True
        for worker in workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(args.workers):
            worker = subprocess.Popen(command, env=environment, start_new_session=True)
            workers[worker.pid] = worker
        log.info("started %d workers on %s", args.workers, args.bind or settings.server.bind)
        status = 0
        while workers:
            pid, wait_status = os.wait()  # retried after a signal handler runs (PEP 475)
            worker = workers.pop(pid, None)
            if worker is None:
                continue
            worker.returncode = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                log.error("worker %d exited (%s); stopping the others", pid, worker.returncode)
                status = 1
                stop(signal.SIGTERM, None)
        return status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
