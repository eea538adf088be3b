"""``actorchat serve --workers N``: N server processes sharing one port.

The parent binds and listens on the port, as Hypercorn's own ``--workers`` does, and starts N
copies of ``actorchat serve`` (each with ``--worker-of N``) that inherit that one socket
(``--bind fd://N``) and accept from it; then it closes its own copy and serves nothing itself.
A worker busy with its requests is slower to accept, so new connections go mostly to the
idle ones. With a socket per worker and SO_REUSEPORT instead, the kernel hashed each
connection to a worker whatever its load: 64 keep-alive connections split 60/40 at times,
and the busier worker set the pace. Measured, ``--workers 2`` with built-in simulators, 64
conversations x 10 turns from a load tester on CPU 0, six runs each: 498-582 turns/s
(median 502) with SO_REUSEPORT, 535-657 (median 604) with the shared socket
(``tests/test_multi_instance.py`` pins the one socket). Shared state lives in Redis, which is
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
import socket
import subprocess
import sys
from types import FrameType

from hypercorn.config import Config as HypercornConfig

from actors.config import Settings

log = logging.getLogger("actorchat")

LISTEN_BACKLOG = 2048
"""The listen backlog of the server's socket, with one process or several."""


def refuse_reason(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot run with ``settings``; None when they can."""
    if workers > 1 and settings.store.backend == "memory":
        return (f"--workers {workers} needs store.backend = \"redis\": with the memory store "
                "each worker would keep its own sessions and jobs, and a conversation would "
                "lose its history whenever a request reached another worker "
                "(set ACTORCHAT_STORE__BACKEND=redis, or run one worker)")
    return None


def serve_workers(args: argparse.Namespace, settings: Settings, listener: socket.socket) -> int:
    """Run ``args.workers`` worker processes on ``listener`` until a signal stops them; the
    exit status."""
    environment = os.environ.copy()
    if settings.sessions.secret is None:
        # Every worker must sign and check cookies with one secret.
        environment["SESSION_SECRET"] = secrets.token_urlsafe(32)
        log.warning("SESSION_SECRET is not set: using a random secret shared by the workers "
                    "for this run; sessions will not survive a restart")
    command = [sys.executable, "-m", "web.cli", "--log-level", args.log_level, "serve",
               "--config", args.config, "--worker-of", str(args.workers),
               "--bind", f"fd://{listener.fileno()}"]
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
        with listener:  # closed once the workers have it: the last worker out closes the port
            for _ in range(args.workers):
                worker = subprocess.Popen(command, env=environment, start_new_session=True,
                                          pass_fds=(listener.fileno(),))
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


def listening_socket(bind: str) -> socket.socket:
    """The socket for ``bind`` (``HOST:PORT``, ``[V6]:PORT`` or ``unix:PATH``) as Hypercorn
    makes it, listening with the server's backlog. Without SO_REUSEPORT: a second server on
    the port fails to start instead of sharing it unseen."""
    config = HypercornConfig()
    config.bind = [bind]
    (listener,) = config.create_sockets().insecure_sockets
    listener.listen(LISTEN_BACKLOG)
    return listener
