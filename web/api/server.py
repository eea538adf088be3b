"""Serve the app under Hypercorn's Trio worker, with graceful shutdown on SIGINT/SIGTERM.

Shutdown, in order: the trigger fires; the chat service stops taking work and drains for up
to ``server.drain_s`` (``begin_drain``) while Hypercorn stops listening and closes idle
connections; work still running at ``drain_s`` is cancelled, so turns answer 503
``shutting_down`` and jobs are recorded ``failed``. Hypercorn's ``graceful_timeout`` is
``drain_s`` plus a margin, so those answers are still written before it drops connections.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from actors.config import Settings

from ..workers import LISTEN_BACKLOG
from .app import CLOSING_MARGIN_S, begin_drain, create_app

log = logging.getLogger("actorchat.web")


class _Config(HypercornConfig):
    """Hypercorn's config, with its per-response headers made once a second.

    Hypercorn asks for them (``Date``) for every response and formats the date each time
    (``wsgiref.handlers.format_date_time``); the value changes once a second, so the headers
    of the current second are kept and a copy handed out: 6.8-7.3 us -> 1.2 us a response
    here. ``tests/test_server_config.py`` pins that they are Hypercorn's own.
    """

    _headers_second: tuple[int, str] | None = None
    _headers: list[tuple[bytes, bytes]]

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = (int(time.time()), protocol)
        if second != self._headers_second:
            self._headers = super().response_headers(protocol)
            self._headers_second = second
        return list(self._headers)


def hypercorn_config(bind: str, drain_s: float, keep_alive_s: float = 10.0) -> HypercornConfig:
    """Hypercorn's settings; requests in flight at shutdown get ``drain_s`` and a margin.

    ``bind`` is ``fd://N`` in a worker of ``actorchat serve --workers``: the socket its
    parent made (``web/workers.py``).
    """
    config = _Config()
    config.bind = [bind]
    config.graceful_timeout = drain_s + CLOSING_MARGIN_S
    config.accesslog = None  # our access log names the session; see web/api/logs.py
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn's TCPServer.run waits for its keep-alive timer task after the client has
    # closed (its task group holds the timer restarted by the last reply), so the socket
    # stays in CLOSE_WAIT for keep_alive_timeout: at 75 s, 2,000 churning clients held 48 fds
    # past the soak (bench soak). server.keep_alive_s bounds it (tests/test_keep_alive.py).
    config.keep_alive_timeout = keep_alive_s
    config.include_server_header = False  # nothing to gain from naming the server
    config.backlog = LISTEN_BACKLOG
    return config


async def wait_for_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: draining (up to server.drain_s)", signal.Signals(signum).name)
            return


async def serve_app(
    settings: Settings,
    bind: str | None = None,
    *,
    app: QuartTrio | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = wait_for_signal,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve actorchat (``app``, or one built from ``settings``) until ``shutdown_trigger``
    returns and the drain is over; reports the bound URLs through ``task_status``."""
    app = app if app is not None else create_app(settings)
    config = hypercorn_config(bind or settings.server.bind, settings.server.drain_s,
                              settings.server.keep_alive_s)
    trigger = shutdown_trigger

    async def drain_then_stop_listening() -> None:
        assert trigger is not None
        await trigger()
        begin_drain(app)

    await serve(app, config, task_status=task_status,
                shutdown_trigger=drain_then_stop_listening if trigger is not None else None)
