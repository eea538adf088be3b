"""The Redis store: histories, job records and idempotency keys in Redis, through coredis.

Keys, all under ``store.prefix`` (``actorchat:`` by default), each carrying its ID as a Redis
Cluster hash tag so a session's keys live in one slot and its scripts run unchanged there:

- ``{prefix}session:{<id>}:version``  the session's version (see ``base.py``); its presence is
  the session's existence
- ``{prefix}session:{<id>}:messages`` a list, oldest first, one ``role:content`` per message
- ``{prefix}job:{<trace_id>}``        the job record as JSON
- ``{prefix}idempotency:{<key>}``     ``trace_id`` and fingerprint, newline-separated

Each call is one command: a single Redis command, or a Lua script where it must read and
write (scripts run atomically, so a turn is appended whole or not at all). A coredis round
trip costs 200 to 450 us of CPU on Trio here, about the same for a script as for a bare PING,
so the round trips are what to count (figures in the README); the commands that callers issue
at the same moment share one pipeline (``redis_batch.AutoPipeline``). Session keys expire
``sessions.ttl_s`` after the last create or turn, as in the memory store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import coredis
import trio
from coredis import exceptions as redis_errors
from coredis.retry import NoRetryPolicy

from ..errors import StoreUnavailable
from .base import JobRecord, Message, SessionSnapshot, new_session_version
from .redis_batch import AutoPipeline, Command
from .redis_lua import APPEND, CLAIM, CREATE, LOAD, Lua

# What "Redis is not there" looks like; anything else (a wrong type, a script error) is a bug
# and propagates as itself.
_UNAVAILABLE = (
    redis_errors.ConnectionError,  # refused, reset, still loading its data
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,  # a replica during failover
    redis_errors.AuthenticationError,
    TimeoutError,
    OSError,
)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
    """The ``Store`` interface over one coredis client, which the caller keeps open.

    Use ``open_redis_store`` (or ``open_store``), which opens the client and closes it on exit.
    Every call raises ``StoreUnavailable`` when Redis does not answer within ``store.timeout_s``
    (connect, then reply); coredis's own retries are off, so a write is sent at most once.
    Writes are shielded from the caller's cancellation once started: the caller learns whether
    they happened, and sees the cancellation at its next checkpoint. Reads are not shielded.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        batch: AutoPipeline,
        prefix: str = "actorchat:",
        session_ttl_s: float | None = None,
        location: str = "redis",
        max_history_messages: int = 0,
    ) -> None:
        self._client = client
        self._batch = batch
        self._prefix = prefix
        self._ttl_ms = _milliseconds(session_ttl_s) if session_ttl_s else 0
        self._location = location  # host:port for messages, never the URL's password
        self._closed = False
        self._max_history_messages = max_history_messages  # 0: no limit; see APPEND

    @property
    def client(self) -> coredis.Redis[str]:
        """The coredis client, for other Redis work that shares its connections."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def session_ttl_ms(self) -> int:
        """``sessions.ttl_s`` in milliseconds; 0 when sessions never expire."""
        return self._ttl_ms

    @property
    def max_history_messages(self) -> int:
        """``sessions.max_history_messages``: the most messages kept per session (0: no limit)."""
        return self._max_history_messages

    async def eval_script(self, script: Lua, keys: list[str], args: list[Any], *,
                          write: bool) -> Any:
        """Run ``script`` in one round trip, errors translated as for every call here.

        A ``write`` is shielded from the caller's cancellation once sent (see the class).
        """
        return await self._eval(script, keys, args, write=write)

    # Keys

    def session_keys(self, session_id: str) -> list[str]:
        """The session's keys: its version, then its messages."""
        base = f"{self._prefix}session:{{{session_id}}}"
        return [f"{base}:version", f"{base}:messages"]

    def job_key(self, trace_id: str) -> str:
        return f"{self._prefix}job:{{{trace_id}}}"

    def idempotency_key(self, key: str) -> str:
        return f"{self._prefix}idempotency:{{{key}}}"

    # Lifetime

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(await self._client.ping())
        except _UNAVAILABLE:
            return False

    async def aclose(self) -> None:
        """Refuse later calls (``StoreUnavailable``). Idempotent.

        The connections belong to the client: ``open_redis_store`` closes them on exit.
        """
        self._closed = True

    # Sessions

    async def create_session(self, session_id: str) -> None:
        args = [self._ttl_ms, new_session_version()]
        await self._eval(CREATE, self.session_keys(session_id), args, write=True)

    async def session_exists(self, session_id: str) -> bool:
        key = self.session_keys(session_id)[0]
        return bool(await self._read(lambda redis: redis.exists([key])))

    async def load_history(self, session_id: str) -> list[Message] | None:
        return (await self.load_session(session_id)).history

    async def load_session(self, session_id: str) -> SessionSnapshot:
        found: Any = await self._eval(LOAD, self.session_keys(session_id), [], write=False)
        if not found:
            return SessionSnapshot(None, 0)
        version, encoded = found
        return SessionSnapshot([_decode(message) for message in encoded], int(version))

    async def session_version(self, session_id: str) -> int:
        key = self.session_keys(session_id)[0]
        version = await self._read(lambda redis: redis.get(key))
        return 0 if version is None else int(version)

    async def append_turn(self, session_id: str, user: str, assistant: str) -> int:
        args = [self._ttl_ms, new_session_version(), "user:" + user, "assistant:" + assistant,
                self._max_history_messages]
        version: Any = await self._eval(APPEND, self.session_keys(session_id), args,
                                        write=True)
        return int(version)

    async def delete_session(self, session_id: str) -> bool:
        keys = self.session_keys(session_id)
        return bool(await self._write(lambda redis: redis.delete(keys)))

    # Jobs

    async def save_job(self, record: JobRecord, ttl_s: float | None) -> None:
        encoded = json.dumps(
            {
                "trace_id": record.trace_id,
                "status": record.status,
                "model": record.model,
                "timestamp": record.timestamp,
                "response": record.response,
                "usage": record.usage,
                "error": record.error,
                "extra": record.extra,
            },
            separators=(",", ":"),
        )
        px = None if ttl_s is None else _milliseconds(ttl_s)
        key = self.job_key(record.trace_id)
        await self._write(lambda redis: redis.set(key, encoded, px=px))

    async def load_job(self, trace_id: str) -> JobRecord | None:
        key = self.job_key(trace_id)
        encoded = await self._read(lambda redis: redis.get(key))
        return None if encoded is None else JobRecord(**json.loads(encoded))

    async def claim_idempotency_key(
        self, key: str, fingerprint: str, trace_id: str, ttl_s: float
    ) -> tuple[str, str] | None:
        args = [f"{trace_id}\n{fingerprint}", _milliseconds(ttl_s)]
        bound: Any = await self._eval(CLAIM, [self.idempotency_key(key)], args, write=True)
        if not bound:
            return None
        bound_trace_id, _, bound_fingerprint = bound.partition("\n")
        return bound_trace_id, bound_fingerprint

    # One round trip, errors translated

    async def _eval(self, script: Lua, keys: list[str], args: list[Any], *,
                    write: bool) -> Any:
        # EVALSHA, loading the script when Redis does not know it (first use, a restart, a
        # SCRIPT FLUSH). Not coredis's Script: its per-call retry wrapper measured about 80 us
        # of CPU more per call (400 against 320 us), a fifth of a turn's store cost.
        send = self._write if write else self._read
        try:
            return await send(lambda redis: redis.evalsha(script.sha, keys, args))
        except redis_errors.NoScriptError:
            await self._write(lambda redis: redis.script_load(script.source))
            return await send(lambda redis: redis.evalsha(script.sha, keys, args))

    async def _read(self, command: Command) -> Any:
        if self._closed:
            raise StoreUnavailable("the store is closed", retry_after=1.0)
        try:
            return await self._batch.call(command)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error

    async def _write(self, command: Command) -> Any:
        # Shielded so that a caller who goes away mid-write never leaves the outcome unknown
        # (the memory store's writes cannot be interrupted either). Bounded: coredis gives up
        # after store.timeout_s to connect and as long again for the reply.
        with trio.CancelScope(shield=True):
            return await self._read(command)

    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"Redis at {self._location} did not answer ({type(error).__name__})",
            retry_after=1.0,
        )


def _decode(message: str) -> Message:
    role, _, content = message.partition(":")
    return role, content


def redis_location(url: str) -> str:
    """``host:port`` (or the socket path) of a Redis URL, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


@asynccontextmanager
async def open_redis_store(
    url: str,
    *,
    prefix: str = "actorchat:",
    session_ttl_s: float | None = None,
    timeout_s: float = 2.0,
    max_history_messages: int = 0,
) -> AsyncIterator[RedisStore]:
    """Open a coredis client on ``url`` and yield a ``RedisStore`` over it.

    Connects lazily: entering succeeds even when Redis is down (``ping`` says so, and calls
    raise ``StoreUnavailable`` until it is back). The client's connections run in a task group
    opened here, so enter this in the task that outlives every user of the store. On exit,
    or cancellation, the store is closed and the client's tasks are cancelled and awaited.
    """
    # The pool is built here because Redis.from_url's timeout arguments changed within 6.x.
    pool = coredis.ConnectionPool.from_url(
        url, decode_responses=True, connect_timeout=timeout_s, stream_timeout=timeout_s,
        timeout=timeout_s,  # waiting for a free connection
    )
    client = coredis.Redis(connection_pool=pool, decode_responses=True,
                           retry_policy=NoRetryPolicy())
    batch = AutoPipeline(client, timeout_s=timeout_s)
    async with client, trio.open_nursery() as nursery:
        await nursery.start(batch.run)
        store = RedisStore(
            client, batch=batch, prefix=prefix, session_ttl_s=session_ttl_s,
            location=redis_location(url), max_history_messages=max_history_messages,
        )
        try:
            yield store
        finally:
            await store.aclose()
            nursery.cancel_scope.cancel()
