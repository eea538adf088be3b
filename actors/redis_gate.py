"""One rate budget for every instance: the rate gate's closures and pacing shared in Redis.

LiteLLM's documentation warns that per-worker rate limits multiply with the number of
workers; here N instances together stay under the upstream's budget:

* **Closures.** A 429 that closes the gate sets ``{prefix}gate:closed`` with the closure as
  its expiry (never shortening a longer one) and publishes ``close:<instance>:<seconds>`` on
  ``{prefix}gate:events``: every instance closes its own gate at once. An instance that
  starts, or subscribes again, reads the key's remaining time.
* **The budget.** The token bucket lives in one Redis hash (``{prefix}gate:bucket``), refilled
  by Redis's own clock at 97% of the rate the upstream reports, with the remaining count it
  reports as a ceiling (sent at most once a second per instance, so a call costs one round
  trip, not two). The pacer of each instance keeps its in-process FIFO of waiters and
  takes tokens from Redis for the callers waiting now, at most ``_BATCH`` per round trip (a
  script of 250 to 350 us of CPU here), so tokens are never hoarded. When the bucket is empty
  Redis reserves the next token for this instance and says when it is due; the pacer sleeps
  until then. So every round trip yields a token and instances never race for one.

Before the upstream has reported a budget nothing goes to Redis (each instance probes alone,
at 200 calls a second: see ``rate_gate``). If Redis fails, the instance paces alone at the
reported rate until Redis answers again; the failures are counted.
"""

from __future__ import annotations

import logging

import coredis
import trio
from coredis import exceptions as redis_errors

from .rate_gate import _PACING_MARGIN, RateGate
from .redis_pubsub import listen_forever
from .store.redis_lua import Lua

log = logging.getLogger("actorchat.gate")

_BATCH = 16  # tokens asked for in one round trip at most
_BUCKET_TTL_MS = 600_000  # a bucket nobody touched for ten minutes is forgotten
# The budget an answer reports goes to Redis at most this often per instance (the first at
# once): one script per answer would double the Redis cost of a call, and the bucket needs
# only the rate, which seldom changes, and now and then the upstream's count as a ceiling.
_REPORT_EVERY_S = 1.0
_REDIS_ERRORS = (redis_errors.RedisError, OSError, TimeoutError)

# KEYS: bucket. ARGV: wanted, ttl_ms, the caller's rate. Returns {granted, seconds to wait}
# (as strings: Redis truncates Lua numbers): the tokens there are, up to wanted, at once; or,
# when there is none, one token reserved for when it will have refilled (the bucket goes into
# debt by at most one token per instance, as each pacer holds one reservation at a time), so
# instances never race for a token and every round trip gets one. No bucket yet (the first report is
# on its way, or was lost): one is made at the caller's rate with a single token, so a burst
# before the report cannot overrun the budget.
TAKE = Lua("""
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'rate', 'capacity')
if not b[3] then b = {'1', tostring(now), ARGV[3], '1'} end
local rate = tonumber(b[3])
local tokens = math.min(tonumber(b[4]), tonumber(b[1]) + (now - tonumber(b[2])) * rate)
local granted, wait = 1, 0
if tokens >= 1 then
  granted = math.min(tonumber(ARGV[1]), math.floor(tokens))
else
  wait = (1 - tokens) / rate
end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {tostring(granted), tostring(wait)}
""")

# KEYS: bucket. ARGV: rate per second, remaining, ttl_ms. The reported remaining count is a
# ceiling on the tokens (calls other instances sent since are already taken off).
OBSERVE = Lua("""
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, remaining = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'rate', 'capacity')
local tokens = remaining
local capacity = remaining + 1
if b[3] then
  capacity = math.max(tonumber(b[4]), capacity)
  tokens = math.min(capacity, tonumber(b[1]) + (now - tonumber(b[2])) * tonumber(b[3]))
  tokens = math.min(tokens, remaining)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now),
           'rate', tostring(rate), 'capacity', tostring(capacity))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
""")

# KEYS: closed. ARGV: ms, instance. Sets the closure unless a longer one is there.
CLOSE = Lua("""
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
end
""")


class SharedRateGate(RateGate):
    """A :class:`RateGate` whose closures and budget are shared through Redis.

    ``run`` is the pacer plus the listener and the sender of observations; cancelling it
    stops all three (an observation not yet sent is dropped: the next answer brings another).
    """

    def __init__(self, client: coredis.Redis[str], prefix: str, instance_id: str) -> None:
        super().__init__()
        self._client = client
        self._bucket = f"{prefix}gate:bucket"
        self._closed_key = f"{prefix}gate:closed"
        self._channel = f"{prefix}gate:events"
        self._instance_id = instance_id
        self.redis_errors = 0
        self._held_until = 0.0  # a token reserved in Redis becomes ours then (0: none)
        self._report: tuple[float, int] | None = None  # (rate, remaining) not yet sent
        self._close_s = 0.0  # a closure not yet sent
        self._outbox = trio.Event()  # a closure to send
        self._reported = trio.Event()  # a budget to send
        self.round_trips = 0  # token scripts run (one per call at most: see TAKE)

    def _on_error(self, doing: str, error: BaseException) -> None:
        self.redis_errors += 1
        log.warning("Redis error while %s: %s", doing, error)

    # What the upstream said: applied here at once, sent to Redis by the sender task

    def close_for(self, seconds: float) -> None:
        super().close_for(seconds)
        self._close_s = max(self._close_s, seconds)
        self._outbox.set()

    def observe(self, limit: int, remaining: int, ticket: int | None = None) -> None:
        self.answered()
        if limit <= 0:
            return
        if not self.pacing:
            self._tokens = 0.0  # from now on tokens come from the shared bucket
        self._rate = limit / 60 * _PACING_MARGIN
        # Calls this instance let through after the answered one are not in its count yet.
        since = self._starts - ticket if ticket is not None else 0
        self._report = (self._rate, remaining - since)
        self._reported.set()
        self._changed.set()

    def _refill(self) -> None:
        self._refilled_at = trio.current_time()  # the shared bucket refills in Redis

    async def _top_up(self) -> None:
        now = trio.current_time()
        if self._held_until:
            # A token reserved in Redis, ours once its time comes; meanwhile a debt that the
            # base pacer turns into a sleep until then (recomputed if it wakes early).
            if now < self._held_until:
                self._tokens = 1 - (self._held_until - now) * self._rate
                return
            self._held_until, self._tokens = 0.0, 1.0
            return
        if not self.pacing or not self._line or self._tokens >= 1 or not self.is_open():
            return
        wanted = min(len(self._line), _BATCH)
        self.round_trips += 1
        try:
            granted_text, wait_text = await self._eval(
                TAKE, [self._bucket], [wanted, _BUCKET_TTL_MS, repr(self._rate)])
            granted, wait_s = int(granted_text), float(wait_text)
        except _REDIS_ERRORS as error:
            self._on_error("taking rate tokens", error)
            # Pace alone at the reported rate until Redis answers again.
            granted, wait_s = 1, 1 / self._rate
        if wait_s > 0:
            self._held_until = trio.current_time() + wait_s
            self._tokens = 1 - wait_s * self._rate
        else:
            self._tokens = float(granted)

    # Tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The pacer, the listener for other instances' closures and the sender."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            nursery.start_soon(self._send_closures)
            nursery.start_soon(self._send_budget)
            await nursery.start(super().run)
            task_status.started()

    async def _send_closures(self) -> None:
        while True:
            await self._outbox.wait()
            self._outbox = trio.Event()
            close_s, self._close_s = self._close_s, 0.0
            try:
                await self._eval(CLOSE, [self._closed_key],
                                 [max(1, int(close_s * 1000)), self._instance_id])
                await self._client.publish(
                    self._channel, f"close:{self._instance_id}:{close_s!r}")
            except _REDIS_ERRORS as error:
                self._on_error("sharing a rate-gate closure", error)

    async def _send_budget(self) -> None:
        while True:
            await self._reported.wait()
            self._reported = trio.Event()
            report, self._report = self._report, None
            if report is None:
                continue
            try:
                await self._eval(OBSERVE, [self._bucket],
                                 [repr(report[0]), report[1], _BUCKET_TTL_MS])
            except _REDIS_ERRORS as error:
                self._on_error("sharing the rate budget", error)
            await trio.sleep(_REPORT_EVERY_S)

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                      ) -> None:
        await listen_forever(self._client, self._channel, self._on_event, self._on_error,
                             _REDIS_ERRORS, doing="listening for rate-gate closures",
                             on_subscribed=self._read_closure, task_status=task_status)

    async def _read_closure(self) -> None:
        # A closure set before we listened: read once subscribed, so none is missed between.
        closed_ms = await self._client.pttl(self._closed_key)
        if closed_ms > 0:
            super().close_for(closed_ms / 1000)
            self._changed.set()

    def _on_event(self, event: str) -> None:
        what, _, rest = event.partition(":")
        instance, _, seconds = rest.rpartition(":")
        if what == "close" and instance != self._instance_id:
            log.info("rate gate closed for %s s by instance %s", seconds, instance)
            super().close_for(float(seconds))
            self._changed.set()

    async def _eval(self, script: Lua, keys: list[str], args: list[object]) -> list[str]:
        try:
            return await self._client.evalsha(script.sha, keys, args)  # type: ignore[arg-type]
        except redis_errors.NoScriptError:
            await self._client.script_load(script.source)
            return await self._client.evalsha(script.sha, keys, args)  # type: ignore[arg-type]
