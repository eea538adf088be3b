"""The in-process store: dicts, expiry by ``trio.current_time()`` so MockClock drives it."""

from __future__ import annotations

import heapq
from dataclasses import replace

import trio

from ..context import turns_to_drop
from .base import JobRecord, Message, SessionSnapshot, new_session_version


class MemoryStore:
    """Sessions and jobs in this process's memory; lost on restart.

    Expired jobs and idempotency keys are dropped when read and swept on each write. With
    ``session_ttl_s``, a session untouched (no turn) for that long is gone; expired sessions
    are swept on writes, at most every tenth of the TTL. With ``max_history_messages``, an
    append past it drops the oldest whole turns. No call awaits anything, so none is
    ever interrupted half-way by cancellation.
    """

    def __init__(
        self, session_ttl_s: float | None = None, max_history_messages: int = 0
    ) -> None:
        self._max_history_messages = max_history_messages  # 0: no limit
        self._sessions: dict[str, list[Message]] = {}
        self._versions: dict[str, int] = {}  # the same keys as _sessions
        self._session_ttl_s = session_ttl_s
        self._touched: dict[str, float] = {}  # session -> trio time of its last write
        self._next_session_sweep = 0.0
        self._jobs: dict[str, tuple[JobRecord, float]] = {}
        self._keys: dict[str, tuple[str, str, float]] = {}
        self._expiry: list[tuple[float, str, str]] = []  # (deadline, "job"|"key", name)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    async def create_session(self, session_id: str) -> None:
        if session_id not in self._sessions:
            self._sessions[session_id] = []
            self._versions[session_id] = new_session_version()
        self._touch(session_id)

    async def session_exists(self, session_id: str) -> bool:
        return self._live_history(session_id) is not None

    async def load_history(self, session_id: str) -> list[Message] | None:
        history = self._live_history(session_id)
        return None if history is None else list(history)

    async def load_session(self, session_id: str) -> SessionSnapshot:
        history = self._live_history(session_id)
        if history is None:
            return SessionSnapshot(None, 0)
        return SessionSnapshot(list(history), self._versions[session_id])

    async def session_version(self, session_id: str) -> int:
        return 0 if self._live_history(session_id) is None else self._versions[session_id]

    async def append_turn(self, session_id: str, user: str, assistant: str) -> int:
        history = self._live_history(session_id)
        if history is None:
            history = self._sessions[session_id] = []
            self._versions[session_id] = new_session_version()
        history.extend((("user", user), ("assistant", assistant)))
        drop = turns_to_drop(len(history), self._max_history_messages)
        if drop:
            del history[:drop]
        self._versions[session_id] += 1
        self._touch(session_id)
        return self._versions[session_id]

    async def delete_session(self, session_id: str) -> bool:
        self._touched.pop(session_id, None)
        self._versions.pop(session_id, None)
        return self._sessions.pop(session_id, None) is not None

    def _live_history(self, session_id: str) -> list[Message] | None:
        history = self._sessions.get(session_id)
        if history is not None and self._session_ttl_s is not None and \
                trio.current_time() - self._touched[session_id] >= self._session_ttl_s:
            self._forget(session_id)
            return None
        return history

    def _touch(self, session_id: str) -> None:
        if self._session_ttl_s is None:
            return
        now = trio.current_time()
        self._touched[session_id] = now
        if now < self._next_session_sweep:
            return
        self._next_session_sweep = now + self._session_ttl_s / 10
        horizon = now - self._session_ttl_s
        for stale in [key for key, touched in self._touched.items() if touched <= horizon]:
            self._forget(stale)

    def _forget(self, session_id: str) -> None:
        del self._sessions[session_id], self._versions[session_id], self._touched[session_id]

    def session_count(self) -> int:
        return len(self._sessions)

    async def save_job(self, record: JobRecord, ttl_s: float | None) -> None:
        now = trio.current_time()
        self._sweep(now)
        deadline = float("inf") if ttl_s is None else now + ttl_s
        self._jobs[record.trace_id] = (replace(record), deadline)
        if ttl_s is not None:
            heapq.heappush(self._expiry, (deadline, "job", record.trace_id))

    async def load_job(self, trace_id: str) -> JobRecord | None:
        entry = self._jobs.get(trace_id)
        if entry is None:
            return None
        record, deadline = entry
        if trio.current_time() >= deadline:
            del self._jobs[trace_id]
            return None
        return replace(record)

    async def claim_idempotency_key(
        self, key: str, fingerprint: str, trace_id: str, ttl_s: float
    ) -> tuple[str, str] | None:
        now = trio.current_time()
        self._sweep(now)
        bound = self._keys.get(key)
        if bound is not None and now < bound[2]:
            return bound[0], bound[1]
        self._keys[key] = (trace_id, fingerprint, now + ttl_s)
        heapq.heappush(self._expiry, (now + ttl_s, "key", key))
        return None

    def _sweep(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            deadline, what, name = heapq.heappop(self._expiry)
            table = self._jobs if what == "job" else self._keys
            entry = table.get(name)
            if entry is not None and entry[-1] <= deadline:
                del table[name]
