"""What the ``soak`` scenario measures besides the load tester: the server's open file
descriptors by kind (`count_fds`), a wave of HTTP/1.0 connections that wait for the server to
close them (`http10_wave`), and RSS sampled over time (`sample_rss`). All read from outside the
server: ``/proc`` and plain sockets, nothing the server offers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import trio

from .procs import Service

HTTP10_REQUEST = b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
_LISTEN = "0A"


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "0B": "CLOSING"}


@dataclass(frozen=True)
class FdCount:
    """A process's open file descriptors: all, TCP sockets accepted on the server's port
    (``clients``, and how many are in each TCP state: ``CLOSE_WAIT`` means the client has
    closed and the server has not), and TCP sockets to the upstream's port (``upstream``, the
    connection pool)."""

    total: int
    clients: int
    upstream: int
    client_states: dict[str, int] = field(default_factory=dict)

    @property
    def own(self) -> int:
        """Every descriptor but the upstream pool's, whose size follows the pool's policy."""
        return self.total - self.upstream


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Socket inode -> (local port, remote port, state) for every TCP socket we can see."""
    sockets: dict[str, tuple[int, int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                    sockets[inode] = (int(local.rsplit(":", 1)[1], 16),
                                      int(remote.rsplit(":", 1)[1], 16), state)
        except OSError:
            continue
    return sockets


def count_fds(pid: int, server_port: int, upstream_port: int) -> FdCount:
    """Count ``/proc/PID/fd``, telling accepted client sockets and upstream sockets apart.

    Raises OSError if the process is gone.
    """
    targets = []
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(f"{fd_dir}/{name}"))
        except OSError:
            continue  # closed between the listing and the read
    sockets = _tcp_sockets()
    clients = upstream = 0
    states: dict[str, int] = {}
    for target in targets:
        if not target.startswith("socket:["):
            continue
        found = sockets.get(target[8:-1])
        if found is None:
            continue
        local_port, remote_port, state = found
        if local_port == server_port and state != _LISTEN:
            clients += 1
            name = TCP_STATES.get(state, state)
            states[name] = states.get(name, 0) + 1
        elif remote_port == upstream_port:
            upstream += 1
    return FdCount(len(targets), clients, upstream, states)


@dataclass
class Http10Wave:
    """What a wave of HTTP/1.0 connections saw. ``answered`` got a 200; ``closed_by_server``
    were closed by the server within ``close_wait_s`` of their answer; ``left_open`` were
    not, and were closed by us; ``failures`` counts the others by kind."""

    connections: int
    concurrency: int
    close_wait_s: float
    answered: int = 0
    closed_by_server: int = 0
    left_open: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


async def _one_http10(host: str, port: int, wave: Http10Wave, answer_timeout_s: float) -> None:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as error:
        wave.fail(f"connect: {type(error).__name__}")
        return
    async with stream:
        try:
            await stream.send_all(HTTP10_REQUEST)
            head = b""
            with trio.move_on_after(answer_timeout_s):
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        wave.fail("closed before answering")
                        return
                    head += chunk
            if b"\r\n\r\n" not in head:
                wave.fail("no answer")
                return
            status = head.split(b" ", 2)[1]
            if status == b"200":
                wave.answered += 1
            else:
                wave.fail(f"HTTP {status.decode(errors='replace')}")
        except (trio.BrokenResourceError, OSError) as error:
            wave.fail(f"before the answer: {type(error).__name__}")
            return
        try:
            with trio.move_on_after(wave.close_wait_s):
                while await stream.receive_some(65536):
                    pass
                wave.closed_by_server += 1
                return
        except (trio.BrokenResourceError, OSError):
            wave.closed_by_server += 1  # a reset closes it too
            return
        wave.left_open += 1


async def http10_wave(
    url_host: str, port: int, *, connections: int, concurrency: int, close_wait_s: float,
    answer_timeout_s: float = 10.0,
) -> Http10Wave:
    """Open ``connections`` connections, ``concurrency`` at a time; each sends
    `HTTP10_REQUEST`, reads the answer, then waits up to ``close_wait_s`` for the server to
    close the connection before closing it itself. Never raises for what the server does;
    on cancel, every connection open is closed."""
    wave = Http10Wave(connections, concurrency, close_wait_s)
    started = trio.current_time()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < connections:
            next_index += 1
            await _one_http10(url_host, port, wave, answer_timeout_s)

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, connections)):
            nursery.start_soon(worker)
    wave.duration_s = round(trio.current_time() - started, 1)
    return wave


async def sample_rss(
    service: Service, every_s: float, samples: list[tuple[float, float]]
) -> None:
    """Append (seconds since the start, RSS in MB) to ``samples`` every ``every_s`` seconds
    until cancelled or the process is gone."""
    started = trio.current_time()
    while True:
        try:
            rss = service.rss_mb()
        except (OSError, KeyError):
            return
        samples.append((round(trio.current_time() - started, 1), rss))
        await trio.sleep(every_s)


async def watch_fds(
    service: Service, server_port: int, upstream_port: int, every_s: float,
    peak: dict[str, int],
) -> None:
    """Keep the largest ``total`` and ``clients`` seen in ``peak`` until cancelled."""
    while True:
        try:
            count = count_fds(service.pid, server_port, upstream_port)
        except OSError:
            return
        peak["total"] = max(peak.get("total", 0), count.total)
        peak["clients"] = max(peak.get("clients", 0), count.clients)
        await trio.sleep(every_s)
