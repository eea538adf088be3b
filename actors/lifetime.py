"""``open_chat_service``: the lifetime of a ChatService and of everything it owns.

``async with open_chat_service(settings, open_upstream=...) as service:`` owns the store, the
upstream client (and whatever its opener started, such as an in-process simulator) and the
nursery every actor, the rate gate's pacer and the job workers run in. On a normal exit it
drains for ``server.drain_s``, cancels what is left, waits for that nursery to end, and only
then closes the upstream and the store. On an exit by error or cancellation it skips the
drain. Nothing else opens or closes those resources.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import trio

from .config import Settings
from .service import ChatService
from .store import open_store
from .store.base import Store
from .upstream import Upstream

log = logging.getLogger("actorchat.service")

# How long closing the store may take once everything else has stopped.
_CLOSE_STORE_S = 5.0


@dataclass(frozen=True, slots=True)
class UpstreamChoice:
    """The upstream client to call (None: none is configured) and its label, no secrets."""

    client: Upstream | None
    label: str


UpstreamOpener = Callable[[Settings], AbstractAsyncContextManager[UpstreamChoice]]


def given_upstream(client: Upstream | None, label: str = "given") -> UpstreamOpener:
    """An opener for an upstream client made elsewhere; the service does not close it."""

    @asynccontextmanager
    async def opener(settings: Settings) -> AsyncIterator[UpstreamChoice]:
        yield UpstreamChoice(client, label)

    return opener


@asynccontextmanager
async def open_chat_service(
    settings: Settings, *, open_upstream: UpstreamOpener, store: Store | None = None
) -> AsyncIterator[ChatService]:
    """Run a ChatService for the body of the ``async with``; see the module docstring.

    ``store`` (when None: the one ``store.backend`` names, opened by ``open_store``) is
    entered first and closed last, whoever made it. ``open_upstream(settings)`` is entered
    next and exited after the actors have stopped. Closing is shielded and bounded, so a
    cancelled exit still closes what was opened.
    """
    if store is None:
        async with open_store(settings) as opened:
            async with _open_service(settings, open_upstream, opened) as service:
                yield service
        return
    async with _open_service(settings, open_upstream, store) as service:
        yield service


@asynccontextmanager
async def _open_service(settings: Settings, open_upstream: UpstreamOpener, store: Store,
                        ) -> AsyncIterator[ChatService]:
    try:
        async with open_upstream(settings) as choice:
            service = ChatService(settings, store, choice)
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                try:
                    yield service
                    if not await service.drain(settings.server.drain_s):
                        log.warning("drain time over: cancelling %d actors",
                                    sum(service.stats().actors.live.values()))
                finally:
                    nursery.cancel_scope.cancel("the chat service is closing")
    finally:
        with trio.CancelScope(shield=True) as cleanup:
            cleanup.deadline = trio.current_time() + _CLOSE_STORE_S
            await store.aclose()
