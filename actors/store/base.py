"""The store interface: where session histories and job results live between actors.

An actor loads its state from the store when it starts and writes each change before it
answers, so a stopped or crashed actor loses nothing. ``memory`` is the default; a Redis
store fills the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# One chat message as stored: (role, content). Tuples keep an idle session small.
Message = tuple[str, str]


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
        """Record a new, empty session."""

    async def session_exists(self, session_id: str) -> bool: ...

    async def load_history(self, session_id: str) -> list[Message] | None:
        """The session's messages oldest first, or None for an unknown session."""

    async def append_turn(self, session_id: str, user: str, assistant: str) -> None:
        """Append one whole turn: the user message and the answer, both or neither."""

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session; True if it existed."""


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
    async def ping(self) -> bool:
        """True when the store answers."""

    async def aclose(self) -> None: ...
