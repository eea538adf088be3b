"""Session leases: one turn of a session at a time across every instance sharing a store.

Inside one process the session's actor already runs its turns one by one. Across processes,
a turn holds its session's lease, taken with ``async with leases.hold(session_id) as lease``:

- ``lease.version`` is the session's version when the lease was taken (None: not known, and
  nothing to check, as with the memory store, which no other process shares). An actor whose
  cached history has another version reloads it before the turn.
- ``await lease.record(user, assistant)`` appends the turn, fenced: the write is refused
  (:class:`~actors.errors.SessionBusy`) when another holder took the lease since, and
  releases the lease in the same round trip. It returns the session's new version.
- Leaving the block without recording releases the lease (bounded, shielded from cancel; a
  release that cannot reach the store is left to the lease's expiry).

``LocalLeases`` is the memory store's: no lease, no check, the plain append. The Redis one is
``actors.store.redis_lease.RedisLeases``; ``leases_for(store, settings)`` picks.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio

from .config import Settings
from .store.base import SessionStore, Store


class TurnLease(Protocol):
    """A held lease on one session, for the length of one turn."""

    @property
    def version(self) -> int | None:
        """The session's version when the lease was taken; None when not known."""

    async def record(self, user: str, assistant: str) -> int:
        """Append the turn (fenced) and release the lease; returns the new version.

        Raises SessionBusy when the lease was lost to another holder (nothing is written),
        StoreUnavailable when the store does not answer. Not interrupted by cancellation.
        """


class SessionLeases(Protocol):
    """Hands out turn leases on sessions."""

    def hold(self, session_id: str) -> AbstractAsyncContextManager[TurnLease]:
        """Take the session's lease for the block; see the module docstring.

        Raises SessionBusy when it is not free within ``sessions.lease_wait_s``, and
        StoreUnavailable when the store does not answer. On cancel while waiting, nothing is
        held; on cancel inside the block, the lease is released on the way out.
        """

    async def is_current(self, session_id: str, version: int) -> bool:
        """True when the session is still at ``version`` (always True where nothing is shared)."""

    def counters(self) -> dict[str, int]:
        """Lease ``waits`` (found held), ``refused`` (gave up) and ``renewals``; never awaits."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Keep the held leases alive until cancelled (returns at once if nothing needs it)."""


class _LocalLease:
    def __init__(self, store: SessionStore, session_id: str) -> None:
        self._store = store
        self._session_id = session_id

    @property
    def version(self) -> int | None:
        return None

    async def record(self, user: str, assistant: str) -> int:
        return await self._store.append_turn(self._session_id, user, assistant)


class LocalLeases:
    """Leases for a store no other process shares: the session's actor is its only writer."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[TurnLease]:
        yield _LocalLease(self._store, session_id)

    async def is_current(self, session_id: str, version: int) -> bool:
        return True

    def counters(self) -> dict[str, int]:
        return {"waits": 0, "refused": 0, "renewals": 0}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()


def leases_for(store: Store, settings: Settings) -> SessionLeases:
    """Redis leases over a Redis store, local ones over anything else."""
    # Looked up, not imported: the embedded default never loads the Redis client.
    redis_module = sys.modules.get("actors.store.redis")
    if redis_module is not None and isinstance(store, redis_module.RedisStore):
        from .store.redis_lease import RedisLeases

        return RedisLeases(store, ttl_s=settings.sessions.lease_ttl_s,
                           wait_s=settings.sessions.lease_wait_s)
    return LocalLeases(store)
