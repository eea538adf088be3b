"""Serve the app under Hypercorn's Trio worker, with graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors.config import Settings

from .app import create_app

log = logging.getLogger("actorchat.web")


def hypercorn_config(bind: str, graceful_s: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind]
    config.graceful_timeout = graceful_s
    config.accesslog = None  # our access log names the session; see web/api/logs.py
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.include_server_header = False  # nothing to gain from naming the server
    config.backlog = 2048
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
    shutdown_trigger: Callable[[], Awaitable[None]] | None = wait_for_signal,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve actorchat until ``shutdown_trigger`` returns; reports the bound URLs."""
    app = create_app(settings)
    config = hypercorn_config(bind or settings.server.bind, settings.server.drain_s)
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
