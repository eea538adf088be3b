"""Trace-ID jobs: one JobActor per job, from ``queued`` to a terminal status, always.

A JobActor owns its job and its record. It gets two messages when the job is submitted, in
this order: :class:`AcceptJob` (claim the Idempotency-Key, write the first record) and
:class:`RunJob` (wait for a worker to grant its place in the
:class:`~actors.job_queue.JobQueue`, stream the answer from the upstream under
``jobs.max_duration_s``, write the result). Each status change and each piece of the answer
is published to the job's :class:`~actors.job_events.JobEvents` for its listeners.
Everything after acceptance runs inside the actor's ``CancelScope``, so a job is cancelled by
ID, queued or running, with :meth:`JobActor.cancel`. Results stay readable for
``jobs.result_ttl_s`` after the actor has stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import trio

from .actor import Actor
from .errors import ActorChatError, ActorCrashed, JobCancelled, JobTimedOut, UpstreamError
from .job_events import TERMINAL, JobEvents
from .job_queue import RunSlot
from .ref import Ask
from .store.base import JobRecord, JobStore
from .upstream import ChatRequest, Completion
from .upstream_caller import CallTimings, UpstreamCaller

log = logging.getLogger("actorchat.jobs")

# How long a job cancelled by shutdown may take to write its "failed" record.
_CLEANUP_S = 2.0


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2026-11-21T23:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The answer to :class:`AcceptJob`: the first record, or the job bound to the key."""

    record: JobRecord | None  # None when the Idempotency-Key was bound before
    bound: tuple[str, str] | None  # (trace_id, fingerprint) the key was bound to before


@dataclass(frozen=True, slots=True)
class AcceptJob(Ask[Acceptance]):
    """Claim the Idempotency-Key (if any), then write the job's first record."""

    idempotency_key: str | None
    fingerprint: str
    model: str
    queued: bool  # no worker was free at submission: the first record says "queued"


@dataclass(frozen=True, slots=True)
class RunJob:
    """Run the job once its place is granted (sent with ``tell``, right after AcceptJob)."""

    message: str
    model: str
    temperature: float
    system_prompt: str
    slot: RunSlot
    params: Mapping[str, Any] = field(default_factory=dict)  # further OpenAI parameters
    record: JobRecord | None = None  # a job claimed from elsewhere: its record in the store


class JobRecords:
    """What every JobActor shares: the store, the upstream caller, the limits, the counts."""

    def __init__(self, *, store: JobStore, upstream: UpstreamCaller, max_duration_s: float,
                 result_ttl_s: float, events_buffer: int = 256,
                 leave_on_shutdown: bool = False) -> None:
        self.store = store
        # True with jobs on a shared queue: a job cut off by shutdown is left as it is in the
        # store, for another instance to run again, instead of being recorded as failed.
        self.leave_on_shutdown = leave_on_shutdown
        self.upstream = upstream
        self.max_duration_s = max_duration_s
        self.result_ttl_s = result_ttl_s
        self.events_buffer = events_buffer
        self.finished: Counter[str] = Counter({"completed": 0, "failed": 0, "cancelled": 0})
        # Told of each unfinished record once it is saved (the Redis jobs publish it, so that
        # listeners on other instances hear of the change); the end is announced elsewhere.
        self.announce: Callable[[JobRecord], Awaitable[None]] | None = None

    async def save(self, record: JobRecord, *, finished: bool = False) -> None:
        """Write the record; a finished one expires ``result_ttl_s`` from now."""
        if finished:
            self.finished[record.status] += 1
            ttl = self.result_ttl_s
        else:
            # Bounded even if this process dies mid-job and the store outlives it.
            ttl = self.max_duration_s + self.result_ttl_s
        await self.store.save_job(record, ttl)
        if not finished and self.announce is not None:
            await self.announce(record)


class JobActor(Actor):
    """Runs one trace-ID job and stops when it has reached a terminal status."""

    kind = "job"

    def __init__(self, trace_id: str, *, records: JobRecords) -> None:
        super().__init__(trace_id, mailbox_size=2)
        self._records = records
        self._record: JobRecord | None = None  # set once accepted
        self.done = trio.Event()  # the job has ended (or will never run)
        self._scope = trio.CancelScope()
        self._cancel_reason: str | None = None
        self.events = JobEvents(records.events_buffer)  # for GET /chat/{trace_id}/events

    def evictable(self) -> bool:
        return self.done.is_set()

    def finished(self) -> bool:
        return self.done.is_set()

    def cancel(self, reason: str) -> None:
        """Cancel the job, queued or running, unless it has ended; its status becomes
        ``cancelled`` with ``reason`` as the error message."""
        if not self.done.is_set():
            self._cancel_reason = reason
            self._scope.cancel(reason)

    async def handle(self, message: Any) -> Acceptance | None:
        if isinstance(message, AcceptJob):
            return await self._accept(message)
        if isinstance(message, RunJob):
            if message.record is not None:
                self._record = message.record
            try:
                if self._record is not None:
                    await self._run(message, self._record)
            finally:
                message.slot.finish()
                self.done.set()
                if self._record is not None and self._record.status in TERMINAL:
                    self.events.end(self._record)
                else:
                    self.events.close()
            return None
        raise TypeError(f"JobActor cannot handle {type(message).__name__}")

    async def _accept(self, accept: AcceptJob) -> Acceptance:
        if accept.idempotency_key is not None:
            bound = await self._records.store.claim_idempotency_key(
                accept.idempotency_key, accept.fingerprint, self.key, self._records.result_ttl_s
            )
            if bound is not None:
                return Acceptance(None, bound)
        record = JobRecord(self.key, "queued" if accept.queued else "processing",
                           accept.model, utc_now())
        await self._records.save(record)
        self._record = record
        self.events.status(record)
        log.info("job %s %s", self.key, record.status)
        return Acceptance(replace(record), None)

    async def _run(self, job: RunJob, record: JobRecord) -> None:
        records = self._records
        try:
            with self._scope:
                self.activity = "queued for a running slot"
                await job.slot.granted.wait()
                if record.status == "queued":  # the store says queued, however fast the slot
                    record.status, record.timestamp = "processing", utc_now()
                    await records.save(record)
                    self.events.status(record)
                    log.info("job %s processing", self.key)
                await self._call(job, record)
                return
            error: ActorChatError = JobCancelled(self._cancel_reason or "the job was cancelled")
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
            if records.leave_on_shutdown:
                log.warning("job %s left unfinished for another instance", self.key)
                raise
            record.status, record.timestamp = "failed", utc_now()
            record.error = {"type": "shutting_down",
                            "message": "the server shut down before the job finished"}
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + _CLEANUP_S
                await records.save(record, finished=True)
            log.warning("job %s failed: server shut down", self.key)
            raise
        record.timestamp = utc_now()
        record.error = {"type": error.type, "message": error.message}
        await records.save(record, finished=True)
        log.info("job %s %s: %s", self.key, record.status, error.type)

    async def _call(self, job: RunJob, record: JobRecord) -> None:
        context = [{"role": "system", "content": job.system_prompt}] if job.system_prompt else []
        context.append({"role": "user", "content": job.message})
        timings = CallTimings()
        with trio.move_on_after(self._records.max_duration_s) as limit:
            completion = await self._stream_answer(
                ChatRequest(context, job.model, job.temperature, job.params), timings)
        if limit.cancelled_caught:
            raise JobTimedOut(
                f"the job ran longer than jobs.max_duration_s ({self._records.max_duration_s:g}"
                " s) and was cancelled"
            )
        record.status, record.timestamp = "completed", utc_now()
        record.response, record.model, record.usage = (
            completion.content, completion.model, completion.usage,
        )
        await self._records.save(record, finished=True)
        log.info("job %s completed after %d attempt(s)", self.key, timings.attempts)

    async def _stream_answer(self, request: ChatRequest, timings: CallTimings) -> Completion:
        """Stream the answer to the job's listeners; start it again after a transient failure
        mid-answer, up to ``upstream.max_attempts`` answers in all.

        The caller retries only until the first piece went out, as for a streamed turn. A
        job's client wants the whole answer, so a failure after that (a dropped connection)
        voids the text so far (``event: reset``) and asks again, as an unstreamed call is
        retried. The 429s, backoff and gate of each new answer are the caller's as ever.
        """
        caller = self._records.upstream
        for answer in range(1, caller.config.max_attempts + 1):
            try:
                return await caller.stream(request, self._publish_piece, key=self.key,
                                           on_activity=self._set_activity, timings=timings)
            except UpstreamError as error:
                # The caller marks an error after the first piece not transient (it will not
                # retry it); whether its kind is transient is the class's word.
                if not (type(error).transient and self.events.has_text
                        and answer < caller.config.max_attempts):
                    raise
                log.warning("job %s: the upstream failed mid-answer (%s); asking again",
                            self.key, error.message)
                self.events.reset(f"the upstream failed mid-answer ({error.type}); the answer "
                                  "starts again")
        raise AssertionError("unreachable: the last answer's error is raised")

    async def _publish_piece(self, text: str) -> None:
        self.events.delta(text)  # never waits: a listener that cannot keep up is dropped

    def _set_activity(self, activity: str) -> None:
        self.activity = activity
