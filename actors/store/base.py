"""The store interface: where session histories and job results live between actors.

An actor loads its state from the store when it starts and writes each change before it
answers, so a stopped or crashed actor loses nothing. ``memory`` is the embedded default;
``redis`` (``actors/store/redis.py``) fills the same interface for several processes and for
state that outlives a restart. ``open_store`` (``actors/store/factory.py``) picks one.

Session versions. Every session has a version, an integer that changes whenever its history
changes: it starts at a random 52-bit number when the session is created, grows by one with each
appended turn, and is gone (0) once the session is deleted or expires. Two equal versions read
from the store therefore mean the same history, even across a delete and a re-creation under the
same ID, so an actor may keep the history it loaded (``load_session``) between turns and re-read
it only when ``session_version`` differs from the version it holds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

# One chat message as stored: (role, content). Tuples keep an idle session small.
Message = tuple[str, str]


def new_session_version() -> int:
    """A fresh session's first version: random, so a re-created session never repeats one.

    52 bits keep it exact in a Lua number (a double) and in JSON.
    """
    return secrets.randbits(52) + 1


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session's history and the version it was read at, both read at one instant."""

    history: list[Message] | None  # oldest first; None for an unknown session
    version: int  # 0 for an unknown session


@dataclass(slots=True)
class JobRecord:
    """The state of one trace-ID job, as ``GET /chat/{trace_id}/response`` shows it."""

    trace_id: str
    status: str  # queued, processing, completed, failed, cancelled
    model: str
    timestamp: str  # ISO 8601 UTC of the last change
    response: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


class SessionStore(Protocol):
    async def create_session(self, session_id: str) -> None:
        """Record a new, empty session (an existing one keeps its history and version)."""

    async def session_exists(self, session_id: str) -> bool: ...

    async def load_history(self, session_id: str) -> list[Message] | None:
        """The session's messages oldest first, or None for an unknown session."""

    async def load_session(self, session_id: str) -> SessionSnapshot:
        """The session's history and its version, read together."""

    async def session_version(self, session_id: str) -> int:
        """The session's version (see the module's docstring); 0 for an unknown session."""

    async def append_turn(self, session_id: str, user: str, assistant: str) -> int:
        """Append one whole turn: the user message and the answer, both or neither.

        Creates the session if it is unknown. Returns the session's new version. A store made
        with ``max_history_messages`` then drops the oldest whole turns past it (the version
        still grows by one). Once started
        the write is not interrupted by the caller's cancellation (the caller sees it at its
        next checkpoint), so a caller that gets no exception knows the turn was recorded.
        """

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session; True if it existed. Its version becomes 0."""


class JobStore(Protocol):
    async def save_job(self, record: JobRecord, ttl_s: float | None) -> None:
        """Write the job's state; with ``ttl_s`` it disappears that many seconds later."""

    async def load_job(self, trace_id: str) -> JobRecord | None: ...

    async def claim_idempotency_key(
        self, key: str, fingerprint: str, trace_id: str, ttl_s: float
    ) -> tuple[str, str] | None:
        """Bind ``key`` to (trace_id, fingerprint) unless bound already.

        Returns None when this call bound it, else the (trace_id, fingerprint) bound before.
        """


class Store(SessionStore, JobStore, Protocol):
    """Sessions and jobs. Every call may raise ``StoreUnavailable``."""

    async def ping(self) -> bool:
        """True when the store answers; never raises."""

    async def aclose(self) -> None:
        """Close the store; later calls may raise ``StoreUnavailable``. Idempotent."""
