"""Session leases in Redis: set-if-absent with expiry, a fencing token, compare-and-delete.

Keys, beside the session's own and with its hash tag (so Redis Cluster keeps them in one slot):

- ``{prefix}session:{<id>}:lease``  the holder's fencing token, expiring ``sessions.lease_ttl_s``
  after it was taken or last renewed
- ``{prefix}session:{<id>}:fence``  the last token handed out (INCR); never reused, so a holder
  whose lease expired and was taken by another finds its token stale at the write

A turn costs two round trips: ACQUIRE (take the lease, read the version) and APPEND_FENCED
(check the token, append, release). Only a turn that outlives a third of the lease's TTL pays a
RENEW, done by one task per process for every held lease rather than a task per turn.

Waiting for a held lease backs off (5 ms doubling to 100 ms, jittered) rather than waiting for a
pub/sub notice of release: a notice would cost every release a PUBLISH and every instance a
subscriber connection, paid on the common, uncontended path for the rare case of one session's
turns arriving at two instances at once; the backoff costs nothing until there is contention.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..errors import SessionBusy, StoreUnavailable
from .base import new_session_version
from .redis import RedisStore
from .redis_lua import APPEND_TURN, Lua

log = logging.getLogger("actorchat.lease")

# KEYS: lease, fence, version. ARGV: lease_ms, session_ttl_ms (0: none).
# Returns {token, version} when taken, {0, remaining_ms} when held by another.
ACQUIRE = Lua("""
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('PTTL', KEYS[1])} end
local token = redis.call('INCR', KEYS[2])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return {token, redis.call('GET', KEYS[3]) or '0'}
""")

# KEYS: version, messages, lease, fence. ARGV: those of APPEND_TURN (ttl_ms, first version,
# user, assistant, the most messages to keep), then the lease's token. Returns -1 (nothing
# written) when another holder took the lease since, else the new version; releases the lease.
APPEND_FENCED = Lua(
    "if redis.call('GET', KEYS[4]) ~= ARGV[6] then return -1 end\n"
    + APPEND_TURN
    + "if redis.call('GET', KEYS[3]) == ARGV[6] then redis.call('DEL', KEYS[3]) end\n"
    + "return version\n"
)


# KEYS: lease. ARGV: token. Deletes it only for its holder; returns 1 if it did.
RELEASE = Lua("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: lease. ARGV: token, lease_ms. Extends it only for its holder; returns 1 if it did.
RENEW = Lua("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

_FIRST_BACKOFF_S = 0.005
_MAX_BACKOFF_S = 0.1


class RedisTurnLease:
    """A held session lease; see ``actors.lease.TurnLease``."""

    def __init__(self, leases: RedisLeases, session_id: str, token: str, version: int) -> None:
        self._leases = leases
        self.session_id = session_id
        self.token = token
        self._version = version
        self.renewed_at = trio.current_time()
        self.released = False
        self.lost = False

    @property
    def version(self) -> int:
        return self._version

    async def record(self, user: str, assistant: str) -> int:
        store = self._leases.store
        version_key, messages_key = store.session_keys(self.session_id)
        lease_key, fence_key = self._leases.keys(self.session_id)
        args = [store.session_ttl_ms, new_session_version(), "user:" + user,
                "assistant:" + assistant, store.max_history_messages, self.token]
        written: Any = await store.eval_script(
            APPEND_FENCED, [version_key, messages_key, lease_key, fence_key], args, write=True)
        self.released = True  # by the script, or taken by another holder already
        if int(written) < 0:
            self.lost = True
            raise SessionBusy("this turn's session lease expired and another instance took "
                              "the session; the turn was not recorded", retry_after=1.0)
        return int(written)


class RedisLeases:
    """Session leases over a ``RedisStore``; ``run`` renews the held ones (start it first)."""

    def __init__(self, store: RedisStore, *, ttl_s: float, wait_s: float) -> None:
        self.store = store
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._renew_every_s = ttl_s / 3
        self._wait_s = wait_s
        self._held: dict[int, RedisTurnLease] = {}
        self.waits = 0  # acquisitions that found the lease held and waited
        self.refused = 0  # acquisitions that gave up after lease_wait_s
        self.renewals = 0

    def counters(self) -> dict[str, int]:
        return {"waits": self.waits, "refused": self.refused, "renewals": self.renewals}

    def keys(self, session_id: str) -> list[str]:
        """The session's lease key and fence key."""
        base = f"{self.store.prefix}session:{{{session_id}}}"
        return [f"{base}:lease", f"{base}:fence"]

    async def is_current(self, session_id: str, version: int) -> bool:
        return await self.store.session_version(session_id) == version

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[RedisTurnLease]:
        lease = await self._acquire(session_id)
        self._held[id(lease)] = lease
        try:
            yield lease
        finally:
            del self._held[id(lease)]
            if not lease.released:
                await self._release(lease)

    async def _acquire(self, session_id: str) -> RedisTurnLease:
        keys = [*self.keys(session_id), self.store.session_keys(session_id)[0]]
        args = [self._ttl_ms, self.store.session_ttl_ms]
        deadline = trio.current_time() + self._wait_s
        backoff = _FIRST_BACKOFF_S
        while True:
            taken: Any = await self.store.eval_script(ACQUIRE, keys, args, write=True)
            token, detail = int(taken[0]), int(taken[1])
            if token:
                return RedisTurnLease(self, session_id, str(token), detail)
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                self.refused += 1
                raise SessionBusy("another instance is running a turn of this session",
                                  retry_after=1.0)
            if backoff == _FIRST_BACKOFF_S:
                self.waits += 1
            await trio.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(_MAX_BACKOFF_S, backoff * 2)

    async def _release(self, lease: RedisTurnLease) -> None:
        # Shielded and bounded by the store's timeout; a release that cannot reach Redis is
        # left to the lease's expiry (sessions.lease_ttl_s).
        lease.released = True
        try:
            await self.store.eval_script(RELEASE, self.keys(lease.session_id)[:1],
                                         [lease.token], write=True)
        except StoreUnavailable as error:
            log.warning("session lease not released (%s); it expires by itself", error.message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Renew every lease held longer than a third of its TTL, until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self._renew_every_s / 2)
            now = trio.current_time()
            for lease in list(self._held.values()):
                if now - lease.renewed_at >= self._renew_every_s and not lease.released:
                    await self._renew(lease, now)

    async def _renew(self, lease: RedisTurnLease, now: float) -> None:
        try:
            renewed: Any = await self.store.eval_script(
                RENEW, self.keys(lease.session_id)[:1], [lease.token, self._ttl_ms], write=False)
        except StoreUnavailable as error:
            log.warning("session lease not renewed (%s)", error.message)
            return
        self.renewals += 1
        if renewed:
            lease.renewed_at = now
        else:
            lease.lost = True  # its write will be refused by the fence
