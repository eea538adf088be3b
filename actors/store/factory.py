"""``open_store``: the store ``store.backend`` names, open for the length of a block."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..config import Settings
from .base import Store
from .memory import MemoryStore

log = logging.getLogger("actorchat.store")


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """Yield the store that ``settings.store.backend`` names; close it on exit.

    ``memory`` (the default) needs nothing outside this process. ``redis`` opens a coredis
    client on ``store.redis_url`` whose connections run in a task group opened here: enter this
    in a task that outlives every user of the store (``open_chat_service`` does). A Redis that is
    down at startup is logged, not fatal: calls raise ``StoreUnavailable`` until it answers.
    On exit, or cancellation, the store is closed after the block has finished with it.
    """
    config = settings.store
    session_ttl_s = settings.sessions.ttl_s or None
    if config.backend == "memory":
        store = MemoryStore(session_ttl_s=session_ttl_s,
                            max_history_messages=settings.sessions.max_history_messages)
        try:
            yield store
        finally:
            await store.aclose()
        return
    # Imported here so the embedded default never loads the Redis client.
    from .redis import open_redis_store, redis_location

    async with open_redis_store(
        config.redis_url, prefix=config.prefix, session_ttl_s=session_ttl_s,
        timeout_s=config.timeout_s,
        max_history_messages=settings.sessions.max_history_messages,
    ) as redis_store:
        if not await redis_store.ping():
            log.warning("store.redis_url: Redis at %s does not answer yet; store calls fail "
                        "until it does", redis_location(config.redis_url))
        yield redis_store
