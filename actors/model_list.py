"""The upstream's model list, cached: `ModelList`, behind ``GET /api/models``."""

from __future__ import annotations

import trio

from .errors import UpstreamNotConfigured
from .upstream import ModelInfo, Upstream

CACHE_S = 60.0
"""How long a fetched list is served before the upstream is asked again."""


class ModelList:
    """The models the upstream offers, fetched at most once per `CACHE_S` seconds.

    One attempt per fetch, without retries or the rate gate: a client asking for the list can
    simply ask again, and a failed fetch is not cached. Concurrent callers while a fetch runs
    wait for that fetch (a ``trio.Lock``, first come first served) instead of sending their
    own. Expiry follows ``trio.current_time()``, so MockClock drives it in tests. A caller
    cancelled mid-fetch cancels the HTTP request; nothing is cached and the next caller
    fetches again.
    """

    def __init__(self, upstream: Upstream | None, cache_s: float = CACHE_S) -> None:
        self._upstream = upstream
        self._cache_s = cache_s
        self._models: tuple[ModelInfo, ...] | None = None
        self._expires = 0.0
        self._lock = trio.Lock()
        self.fetches = 0  # fetches sent to the upstream, for tests and stats

    async def get(self) -> tuple[ModelInfo, ...]:
        """The models, oldest fetch at most `CACHE_S` seconds old.

        Raises :class:`UpstreamNotConfigured` without an upstream, and the upstream's
        :class:`~actors.errors.UpstreamError` when a fetch fails.
        """
        if self._upstream is None:
            raise UpstreamNotConfigured(
                "no upstream is configured: set OPENAI_API_KEY (upstream.provider is 'openai')"
            )
        async with self._lock:
            if self._models is None or trio.current_time() >= self._expires:
                self.fetches += 1
                models = tuple(await self._upstream.list_models())
                self._models, self._expires = models, trio.current_time() + self._cache_s
            return self._models
