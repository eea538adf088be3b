"""Listening on one Redis pub/sub channel for as long as the service runs, Redis outages included.

The shared rate gate (closures) and the job stream (done, cancel) both listen this way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

ERROR_PAUSE_S = 1.0
"""How long to wait after a Redis error before subscribing again."""


async def listen_forever(
    client: Any,
    channel: str,
    on_message: Callable[[str], None],
    on_error: Callable[[str, BaseException], None],
    errors: tuple[type[BaseException], ...],
    *,
    doing: str,
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand the data of every message on ``channel`` to ``on_message`` until cancelled.

    ``on_subscribed`` runs after each subscription, before any message: the place to read
    state set before listening, so that nothing falls between. Reports started once
    subscribed, or once the first attempt failed (the service starts while Redis is down). An
    error of ``errors`` goes to ``on_error(doing, error)``; listening resumes
    ``ERROR_PAUSE_S`` later. Cancelling it unsubscribes.
    """
    started = False
    while True:
        try:
            async with client.pubsub(channels=[channel], ignore_subscribe_messages=True) as events:
                if on_subscribed is not None:
                    await on_subscribed()
                if not started:
                    started = True
                    task_status.started()
                async for event in events:
                    on_message(str(event["data"]))
        except errors as error:
            on_error(doing, error)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(ERROR_PAUSE_S)
