"""Trace-ID jobs: one JobActor per job, from ``queued`` to a terminal status, always.

The JobActor owns its job: it waits for a running slot (FIFO, ``jobs.max_running``), calls
the upstream through the supervisor under ``jobs.max_duration_s``, and writes every status
change to the store; the result stays readable for ``jobs.result_ttl_s`` after the actor
has stopped. Cancelling goes through the job's own ``CancelScope``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from .actor import Actor
from .errors import ActorChatError, ActorCrashed, JobCancelled, JobTimedOut
from .store.base import JobRecord, JobStore
from .supervisor import CallTimings, UpstreamSupervisor
from .upstream import ChatRequest

log = logging.getLogger("actorchat.jobs")

# How long a job cancelled by shutdown may take to write its "failed" record.
_CLEANUP_S = 2.0


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2026-11-21T23:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SlotTicket:
    """A place in the line for a running slot, taken when the job arrives."""

    __slots__ = ("granted", "released")

    def __init__(self) -> None:
        self.granted = trio.Event()
        self.released = False


class FifoSlots:
    """``capacity`` running slots handed out strictly in the order tickets were taken.

    Tickets are taken synchronously when a job is submitted, so arrival order is the order
    of ``POST /chat``, not the order in which actor tasks happen to be scheduled.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._line: deque[SlotTicket] = deque()

    @property
    def running(self) -> int:
        return self.capacity - self.free

    @property
    def queued(self) -> int:
        return len(self._line)

    def take_ticket(self) -> SlotTicket:
        """A ticket, granted at once if a slot is free and nobody waits."""
        ticket = SlotTicket()
        if self.free > 0 and not self._line:
            self.free -= 1
            ticket.granted.set()
        else:
            self._line.append(ticket)
        return ticket

    def release(self, ticket: SlotTicket) -> None:
        """Give the ticket's slot to the next in line, or leave the line if still waiting."""
        if ticket.released:
            return
        ticket.released = True
        if not ticket.granted.is_set():
            self._line.remove(ticket)
            return
        if self._line:
            self._line.popleft().granted.set()
        else:
            self.free += 1


@dataclass(frozen=True, slots=True)
class RunJob:
    """The one message a JobActor gets: what to ask the upstream."""

    message: str
    model: str
    temperature: float
    system_prompt: str
    ticket: SlotTicket
    queued: bool  # the record written at submission says "queued"


class JobActor(Actor):
    """Runs one trace-ID job and stops when it has reached a terminal status."""

    kind = "job"

    def __init__(self, trace_id: str, *, jobs: JobRunner) -> None:
        super().__init__(trace_id, mailbox_size=1)
        self._jobs = jobs
        self.done = trio.Event()
        self.scope = trio.CancelScope()
        self.cancel_reason: str | None = None

    def evictable(self) -> bool:
        return self.done.is_set()

    def finished(self) -> bool:
        return self.done.is_set()

    def cancel(self, reason: str) -> None:
        """Cancel the job if it has not finished; its status becomes ``cancelled``."""
        if not self.done.is_set():
            self.cancel_reason = reason
            self.scope.cancel()

    async def handle(self, message: Any) -> Any:
        if not isinstance(message, RunJob):
            raise TypeError(f"JobActor cannot handle {type(message).__name__}")
        try:
            await self._run(message)
        finally:
            self._jobs.slots.release(message.ticket)
            self.done.set()

    async def _run(self, job: RunJob) -> None:
        jobs = self._jobs
        record = JobRecord(self.key, "queued" if job.queued else "processing", job.model,
                           utc_now())
        try:
            with self.scope:
                self.activity = "queued for a running slot"
                await job.ticket.granted.wait()
                if job.queued:  # the store still says queued, however fast the slot came
                    record.status, record.timestamp = "processing", utc_now()
                    await jobs.save(record)
                log.info("job %s processing", self.key)
                await self._call(job, record)
                return
            error: ActorChatError = JobCancelled(self.cancel_reason or "the job was cancelled")
            record.status = "cancelled"
        except ActorChatError as failure:
            error, record.status = failure, "failed"
        except Exception:
            # A bug, not an upstream failure: the job still ends, and the trace shows why.
            log.exception("job %s failed inside the server", self.key)
            error, record.status = ActorCrashed("the job failed inside the server"), "failed"
        except trio.Cancelled:
            # The server is shutting down past its drain time: record why, then go on
            # cancelling. Shielded and bounded, so the record is written whole or not at all.
            record.status, record.timestamp = "failed", utc_now()
            record.error = {"type": "shutting_down",
                            "message": "the server shut down before the job finished"}
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + _CLEANUP_S
                await jobs.save(record, finished=True)
            log.warning("job %s failed: server shut down", self.key)
            raise
        record.timestamp = utc_now()
        record.error = {"type": error.type, "message": error.message}
        await jobs.save(record, finished=True)
        log.info("job %s %s: %s", self.key, record.status, error.type)

    async def _call(self, job: RunJob, record: JobRecord) -> None:
        context = [{"role": "system", "content": job.system_prompt}] if job.system_prompt else []
        context.append({"role": "user", "content": job.message})
        timings = CallTimings()
        with trio.move_on_after(self._jobs.max_duration_s) as limit:
            completion = await self._jobs.supervisor.complete(
                ChatRequest(context, job.model, job.temperature),
                key=self.key,
                on_activity=self._set_activity,
                timings=timings,
            )
        if limit.cancelled_caught:
            raise JobTimedOut(
                f"the job ran longer than jobs.max_duration_s ({self._jobs.max_duration_s:g} s)"
                " and was cancelled"
            )
        record.status, record.timestamp = "completed", utc_now()
        record.response, record.model, record.usage = (
            completion.content, completion.model, completion.usage,
        )
        await self._jobs.save(record, finished=True)
        log.info("job %s completed after %d attempt(s)", self.key, timings.attempts)

    def _set_activity(self, activity: str) -> None:
        self.activity = activity


class JobRunner:
    """What every JobActor shares: the store, the supervisor, the running slots."""

    def __init__(
        self,
        *,
        store: JobStore,
        supervisor: UpstreamSupervisor,
        max_running: int,
        max_duration_s: float,
        result_ttl_s: float,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.max_duration_s = max_duration_s
        self.result_ttl_s = result_ttl_s
        self.slots = FifoSlots(max_running)
        self.statuses: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}

    @property
    def admitted(self) -> int:
        """Jobs running or queued."""
        return self.slots.running + self.slots.queued

    async def save(self, record: JobRecord, *, finished: bool = False) -> None:
        """Write the record; a finished one expires ``result_ttl_s`` from now."""
        if finished:
            self.statuses[record.status] = self.statuses.get(record.status, 0) + 1
            ttl = self.result_ttl_s
        else:
            # Bounded even if this process dies mid-job and the store outlives it.
            ttl = self.max_duration_s + self.result_ttl_s
        await self.store.save_job(record, ttl)

