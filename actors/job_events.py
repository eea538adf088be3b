"""A job's events for its listeners: status changes, text deltas, then the final record.

A :class:`JobEvents` belongs to one JobActor, which publishes to it; any number of listeners
(``GET /chat/{trace_id}/events``) read it through a :class:`JobListener`. Publishing never
waits: each listener has a bounded buffer of ``jobs.events_buffer`` events, and a listener
whose buffer is full is dropped (its stream ends with :class:`ListenerDropped`), so a slow
reader can neither stall the job nor make it hold unbounded memory.

A listener that joins late first gets the current status and, while the job runs, the text
so far as one delta, then everything after; one that joins after the end gets only the final
record. A job with no live actor here (finished and evicted, or run by another instance) is
read from the store by :class:`StoredJobListener`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from .errors import JobNotFound
from .store.base import JobRecord, JobStore

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The job's status is now ``status`` (since ``timestamp``)."""

    trace_id: str
    status: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer, as the upstream wrote it."""

    text: str


@dataclass(frozen=True, slots=True)
class TextReset:
    """The text so far is void: the upstream failed mid-answer and the job starts it again."""

    reason: str


@dataclass(frozen=True, slots=True)
class JobEnded:
    """The job has ended; ``record`` is its final record. Always the last event."""

    record: JobRecord


@dataclass(frozen=True, slots=True)
class ListenerDropped:
    """The listener fell too far behind (or the job went away unfinished): no more events."""

    reason: str


JobEvent = StatusChanged | TextDelta | TextReset | JobEnded | ListenerDropped


def status_of(record: JobRecord) -> StatusChanged:
    return StatusChanged(record.trace_id, record.status, record.timestamp)


class JobListener:
    """One listener's events, oldest first: ``async for event in listener``.

    Iteration ends after :class:`JobEnded` or :class:`ListenerDropped`. :meth:`close` (never
    awaits; call it in a ``finally``) stops listening; cancelling an iteration loses nothing
    the listener has not yet been given.
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[JobEvent],
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._receive = receive
        self._on_close = on_close
        self._over = False

    def __aiter__(self) -> JobListener:
        return self

    async def __anext__(self) -> JobEvent:
        if self._over:
            raise StopAsyncIteration
        try:
            event = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            event = ListenerDropped("this listener fell too far behind the job and was dropped")
        if isinstance(event, JobEnded | ListenerDropped):
            self._over = True
            self.close()
        return event

    def close(self) -> None:
        """Stop listening; idempotent."""
        self._receive.close()
        self._on_close()


class JobEvents:
    """The publishing side, owned by one JobActor; every method returns at once."""

    def __init__(self, buffer_size: int) -> None:
        self._buffer_size = max(4, buffer_size)  # room for the snapshot a late listener gets
        self._listeners: set[trio.MemorySendChannel[JobEvent]] = set()
        self._status: StatusChanged | None = None
        self._text: list[str] = []
        self._final: JobRecord | None = None
        self.dropped = 0  # listeners dropped for being too slow

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def status(self, record: JobRecord) -> None:
        """Publish the record's status."""
        self._status = status_of(record)
        self._publish(self._status)

    def delta(self, text: str) -> None:
        """Publish a piece of the answer and keep it for listeners that join later."""
        if text:
            self._text.append(text)
            self._publish(TextDelta(text))

    @property
    def has_text(self) -> bool:
        """True once a piece of the answer has been published (and not reset since)."""
        return bool(self._text)

    def reset(self, reason: str) -> None:
        """Void the text published so far: the answer starts again from its first piece."""
        self._text = []
        self._publish(TextReset(reason))

    def end(self, record: JobRecord) -> None:
        """Publish the final record and end every listener's stream."""
        self._final = replace(record)
        self._text = []
        self._publish(JobEnded(self._final))
        self.close()

    def close(self) -> None:
        """End every listener's stream (those that got no JobEnded see ListenerDropped)."""
        for send in self._listeners:
            send.close()
        self._listeners.clear()

    def listen(self) -> JobListener:
        """A new listener, given the snapshot first (see the module docstring)."""
        send, receive = trio.open_memory_channel[JobEvent](self._buffer_size)
        if self._final is not None:
            send.send_nowait(JobEnded(self._final))
        else:
            if self._status is not None:
                send.send_nowait(self._status)
            if self._text:
                self._text = ["".join(self._text)]  # joined once, not once per listener
                send.send_nowait(TextDelta(self._text[0]))
            self._listeners.add(send)
        return JobListener(receive, lambda: self._forget(send))

    def _forget(self, send: trio.MemorySendChannel[JobEvent]) -> None:
        self._listeners.discard(send)
        send.close()

    def _publish(self, event: JobEvent) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                # Drop the listener, not the job: its stream ends with ListenerDropped.
                self.dropped += 1
                self._forget(send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._forget(send)


class JobWatch:
    """News that a job's stored record changed, for a listener reading the store.

    Whoever learns of a change (the Redis jobs' pub/sub listener) calls :meth:`changed`; a
    change that comes while nobody waits is kept for the next :meth:`wait`, so nothing is
    missed between reading the record and waiting. ``close`` unregisters it.
    """

    def __init__(self, release: Callable[[], None] = lambda: None) -> None:
        self._changed = trio.Event()
        self._release = release

    def changed(self) -> None:
        self._changed.set()

    async def wait(self, longest_s: float) -> None:
        """Return at the next change (at once if one came since the last wait), or after
        ``longest_s``."""
        with trio.move_on_after(longest_s):
            await self._changed.wait()
        self._changed = trio.Event()

    def close(self) -> None:
        self._release()


RECHECK_S = 30.0
"""A watched listener reads the record again after this long without news: pub/sub delivers at
most once, so a notice sent while the subscription was reconnecting is made up for."""


class StoredJobListener:
    """Events for a job with no live actor here, read from the store.

    A finished job gives its final record. An unfinished one (run by another instance) gives
    its status, then each status change, until it ends, for at most ``longest_s``; a record
    that disappears ends the stream with :class:`ListenerDropped`. Deltas are not available
    this way. With a ``watch`` the record is read again when the watch says it changed
    (Redis pub/sub: no polling), and every :data:`RECHECK_S` at the least; without one (only
    reachable in one process) every ``poll_s``. Cancelling stops the waiting.
    """

    def __init__(self, record: JobRecord, load: Callable[[], Awaitable[JobRecord | None]],
                 *, watch: JobWatch | None = None, poll_s: float = 1.0,
                 longest_s: float = math.inf) -> None:
        self._record: JobRecord | None = record
        self._load = load
        self._watch = watch
        self._poll_s = poll_s
        self._deadline = trio.current_time() + longest_s
        self._told: str | None = None

    def __aiter__(self) -> StoredJobListener:
        return self

    async def __anext__(self) -> JobEvent:
        while True:
            record = self._record
            if record is None:
                raise StopAsyncIteration
            if record.status in TERMINAL:
                self._record = None
                return JobEnded(record)
            if record.status != self._told:
                self._told = record.status
                return status_of(record)
            remaining = self._deadline - trio.current_time()
            if remaining <= 0:
                self._record = None
                return ListenerDropped("the job did not end in time")
            if self._watch is None:
                await trio.sleep(min(self._poll_s, remaining))
            else:
                await self._watch.wait(min(RECHECK_S, remaining))
            self._record = await self._load()
            if self._record is None:
                return ListenerDropped("the job's record has expired")

    def close(self) -> None:
        """Stop watching the job."""
        if self._watch is not None:
            self._watch.close()


async def listen_to_job(actor: object, store: JobStore, trace_id: str, longest_s: float,
                        watch: Callable[[str], JobWatch] | None = None,
                        ) -> JobListener | StoredJobListener:
    """A listener for the job's events; raises :class:`JobNotFound` for an unknown job. Close
    the listener when done with it.

    A live job's actor (``actor``, a JobActor, or None) gives the events as they happen;
    otherwise the store is read: a finished job gives its final record, an unfinished one (run
    elsewhere) its status changes, for at most ``longest_s``, read again when ``watch`` (which
    starts watching a trace ID; the Redis jobs' :meth:`watch`) says the record changed.
    """
    events = getattr(actor, "events", None)
    if isinstance(events, JobEvents):
        return events.listen()
    watching = watch(trace_id) if watch is not None else None  # before reading: none missed
    try:
        record = await store.load_job(trace_id)
        if record is None:
            raise JobNotFound(f"no job with trace ID {trace_id}")
    except BaseException:
        if watching is not None:
            watching.close()
        raise
    return StoredJobListener(record, lambda: store.load_job(trace_id), watch=watching,
                             longest_s=longest_s)
