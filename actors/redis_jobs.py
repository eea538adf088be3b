"""Trace jobs over Redis: one Stream with a consumer group, shared by every instance.

``POST /chat`` writes the job's ``queued`` record and appends the job to the stream
(``{prefix}jobs``, group ``runners``); it does not run it. Every instance runs a consumer,
named by its instance ID, that reads new jobs (XREADGROUP, blocking) while fewer than
``jobs.max_running`` run here, runs each in a JobActor, and once the job's record is final
acknowledges and deletes its entry (XACK, XDEL) and announces it on ``{prefix}jobs:events``.

At-least-once. An entry read and never acknowledged stays pending: an instance that died, or
that shut down before its jobs ended (they are left as they are, not marked failed), leaves
them there, and after ``jobs.claim_idle_s`` without news any instance claims them again
(XAUTOCLAIM). A live instance keeps its running entries fresh (XCLAIM to itself every third
of ``claim_idle_s``), so a long job is not taken from it. A job can therefore run twice; its
record tells the last outcome.

Completion and cancel travel by pub/sub (``done:<trace_id>``, ``cancel:<trace_id>``), so
``?wait`` and ``DELETE`` work from any instance and nobody polls. A cancel also leaves a
marker key, so a job cancelled before anyone claimed it is never started.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from typing import Any

import coredis
import trio
from coredis import exceptions as redis_errors

from .config import Settings
from .errors import (
    IdempotencyConflict,
    JobNotFound,
    JobQueueFull,
    ShuttingDown,
    StoreUnavailable,
    TooManyActors,
)
from .job import JobActor, JobRecords, RunJob, utc_now
from .job_queue import RunSlot
from .redis_instances import Heartbeat
from .stats import StreamStats
from .store.base import JobRecord
from .store.redis import RedisStore
from .system import ActorSystem

log = logging.getLogger("actorchat.jobs.redis")

GROUP = "runners"
# How long one XREADGROUP blocks before asking again (the only wait with a period: Redis
# answers at once when a job arrives).
_BLOCK_MS = 5000
# How long DELETE waits for the cancelled job's final record.
_CANCEL_WAIT_S = 5.0
# After a Redis error, a loop waits this long before it tries again.
_ERROR_PAUSE_S = 1.0
_REDIS_ERRORS = (redis_errors.RedisError, OSError, TimeoutError, StoreUnavailable)


class RedisJobs:
    """The job methods of ``ChatService`` when ``store.backend = "redis"``.

    Start with ``await nursery.start(jobs.run)``; cancelling that nursery stops the
    consumer and the listener, and leaves the jobs it was running unacknowledged.
    ``stop_claiming()`` (at drain) stops taking new jobs and lets running ones finish.
    """

    def __init__(self, settings: Settings, store: RedisStore, system: ActorSystem,
                 records: JobRecords, instance_id: str) -> None:
        self._settings = settings
        self._store = store
        self._client: coredis.Redis[str] = store.client
        self._system = system
        self._records = records
        self.instance_id = instance_id
        self.stream = f"{store.prefix}jobs"
        self.channel = f"{store.prefix}jobs:events"
        self._slots = trio.Semaphore(settings.jobs.max_running)
        self._claiming = trio.CancelScope()
        self.running: dict[str, str] = {}  # trace_id -> stream entry ID, run here now
        self._waiters: defaultdict[str, set[trio.Event]] = defaultdict(set)
        self.counts: Counter[str] = Counter(claims=0, reclaims=0, redis_errors=0)
        self.heartbeat = Heartbeat(self._client, store.prefix, instance_id,
                                   on_error=self._failed)

    # Lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Listen, consume and reclaim until cancelled; started once the listener listens."""
        await self._ensure_group()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            await nursery.start(self.heartbeat.run)
            nursery.start_soon(self._consume, nursery)
            nursery.start_soon(self._reclaim, nursery)
            task_status.started()

    def stop_claiming(self) -> None:
        """Take no more jobs from the stream (shutdown); the running ones go on."""
        self._claiming.cancel("draining")

    async def _ensure_group(self) -> None:
        try:
            await self._client.xgroup_create(self.stream, GROUP, identifier="0", mkstream=True)
        except redis_errors.StreamDuplicateConsumerGroupError:
            pass
        except _REDIS_ERRORS as error:  # Redis down at start: the consumer retries
            self._failed("creating the consumer group", error)

    def _failed(self, doing: str, error: BaseException) -> None:
        self.counts["redis_errors"] += 1
        log.warning("Redis error while %s: %s", doing, error)

    # The web layer's job methods

    async def submit(self, message: str, model: str, temperature: float, *,
                     idempotency_key: str | None, fingerprint: str) -> tuple[JobRecord, bool]:
        """Write the ``queued`` record and append the job; see ``ChatService.submit_job``.

        Admission counts the stream's entries (queued and running on every instance)
        against ``jobs.max_queued``; concurrent submissions may overshoot it by a few.
        """
        queued = await self._redis(self._client.xlen(self.stream))
        if queued >= self._settings.jobs.max_queued:
            raise JobQueueFull(f"{queued} jobs are running or queued; try again later",
                               retry_after=5.0)
        trace_id = str(uuid.uuid4())
        if idempotency_key is not None:
            bound = await self._store.claim_idempotency_key(
                idempotency_key, fingerprint, trace_id, self._records.result_ttl_s)
            if bound is not None:
                return await self._replay(bound, fingerprint), True
        record = JobRecord(trace_id, "queued", model, utc_now())
        await self._records.save(record)
        fields = {"trace_id": trace_id, "message": message, "model": model,
                  "temperature": repr(temperature),
                  "system_prompt": self._settings.chat.system_prompt}
        await self._redis(self._client.xadd(self.stream, fields))
        log.info("job %s queued on the stream", trace_id)
        return record, False

    async def _replay(self, bound: tuple[str, str], fingerprint: str) -> JobRecord:
        bound_trace_id, bound_fingerprint = bound
        if bound_fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body")
        record = await self._store.load_job(bound_trace_id)
        if record is None:
            raise JobNotFound(f"the job for this Idempotency-Key ({bound_trace_id}) has expired")
        return record

    async def job(self, trace_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s``, first wait up to that long for its end."""
        done = trio.Event()
        self._waiters[trace_id].add(done)
        try:
            record = await self._store.load_job(trace_id)
            if record is None:
                raise JobNotFound(f"no job with trace ID {trace_id}")
            if wait_s <= 0 or record.finished:
                return record
            with trio.move_on_after(wait_s):
                await done.wait()
        finally:
            self._unwait(trace_id, done)
        record = await self._store.load_job(trace_id)
        if record is None:
            raise JobNotFound(f"no job with trace ID {trace_id}")
        return record

    async def cancel(self, trace_id: str) -> JobRecord:
        """Cancel the job wherever it runs or waits; waits up to 5 s for its final record."""
        record = await self.job(trace_id)
        if record.finished:
            return record
        marker = self._cancel_key(trace_id)
        await self._redis(self._client.set(marker, "1", px=int(self._records.result_ttl_s * 1000)))
        if record.status == "queued":  # nobody runs it yet; whoever claims it will skip it
            await self._finish_cancelled(record)
            return record
        await self._redis(self._client.publish(self.channel, f"cancel:{trace_id}"))
        return await self.job(trace_id, wait_s=_CANCEL_WAIT_S)

    async def _finish_cancelled(self, record: JobRecord) -> None:
        record.status, record.timestamp = "cancelled", utc_now()
        record.error = {"type": "cancelled", "message": "cancelled by the client"}
        await self._records.save(record, finished=True)
        await self._redis(self._client.publish(self.channel, f"done:{record.trace_id}"))

    def _cancel_key(self, trace_id: str) -> str:
        return f"{self._store.job_key(trace_id)}:cancel"

    def _unwait(self, trace_id: str, done: trio.Event) -> None:
        waiting = self._waiters.get(trace_id)
        if waiting is not None:
            waiting.discard(done)
            if not waiting:
                del self._waiters[trace_id]

    async def _redis(self, request: Any) -> Any:
        try:
            return await request
        except _REDIS_ERRORS as error:
            self._failed("talking to the job stream", error)
            raise StoreUnavailable("Redis did not answer for the job stream",
                                   retry_after=1.0) from error

    # Pub/sub

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                      ) -> None:
        started = False
        while True:
            try:
                async with self._client.pubsub(channels=[self.channel],
                                               ignore_subscribe_messages=True) as events:
                    if not started:
                        started = True
                        task_status.started()
                    async for event in events:
                        self._on_event(str(event["data"]))
            except _REDIS_ERRORS as error:
                self._failed("listening for job events", error)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(_ERROR_PAUSE_S)

    def _on_event(self, event: str) -> None:
        what, _, trace_id = event.partition(":")
        if what == "done":
            for done in self._waiters.get(trace_id, ()):
                done.set()
        elif what == "cancel":
            actor = self._system.find("job", trace_id)
            if isinstance(actor, JobActor):
                actor.cancel("cancelled by the client")

    # Consuming

    async def _take_slots(self) -> int:
        """Wait for one free running slot, then take every other free one (up to 16)."""
        await self._slots.acquire()
        taken = 1
        while taken < 16 and self._slots.value > 0:
            self._slots.acquire_nowait()
            taken += 1
        return taken

    async def _consume(self, nursery: trio.Nursery) -> None:
        with self._claiming:
            while True:
                taken = await self._take_slots()
                entries: tuple[Any, ...] = ()
                try:
                    found = await self._client.xreadgroup(
                        GROUP, self.instance_id, streams={self.stream: ">"}, count=taken,
                        block=_BLOCK_MS)
                    entries = found[self.stream] if found else ()
                except redis_errors.ResponseError as error:
                    self._failed("reading the job stream", error)
                    await self._ensure_group()  # the stream or its group was deleted
                except _REDIS_ERRORS as error:
                    self._failed("reading the job stream", error)
                    await trio.sleep(_ERROR_PAUSE_S)
                finally:
                    for _ in range(taken - len(entries)):
                        self._slots.release()
                for entry in entries:
                    self.counts["claims"] += 1
                    nursery.start_soon(self._run_entry, entry.identifier, entry.field_values)

    async def _reclaim(self, nursery: trio.Nursery) -> None:
        """Every third of ``claim_idle_s``: refresh the entries run here, then claim those
        idle for ``claim_idle_s`` (an instance died or left them) while slots are free."""
        idle_ms = max(1, int(self._settings.jobs.claim_idle_s * 1000))
        while True:
            await trio.sleep(self._settings.jobs.claim_idle_s / 3)
            try:
                if self.running:
                    await self._client.xclaim(self.stream, GROUP, self.instance_id, 0,
                                              list(self.running.values()), justid=True)
                if self._claiming.cancel_called or self._slots.value == 0:
                    continue
                free = min(self._slots.value, 16)
                found = await self._client.xautoclaim(self.stream, GROUP, self.instance_id,
                                                      idle_ms, "0-0", count=free)
            except _REDIS_ERRORS as error:
                self._failed("reclaiming idle jobs", error)
                continue
            for entry in found[1]:
                if self._slots.value == 0:
                    break  # left pending: claimed again later, here or elsewhere
                self._slots.acquire_nowait()
                self.counts["reclaims"] += 1
                log.warning("job %s claimed again: its entry was idle for %g s",
                            entry.field_values.get("trace_id"), idle_ms / 1000)
                nursery.start_soon(self._run_entry, entry.identifier, entry.field_values)

    async def _run_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        """Run one claimed job in a JobActor; acknowledge it once its record is final."""
        trace_id = fields.get("trace_id", "")
        self.running[trace_id] = entry_id
        try:
            record = await self._store.load_job(trace_id)
            if record is not None and not record.finished:
                if not await self._run_job(trace_id, fields, record):
                    return  # cut off by shutdown: left pending for another instance
            await self._acknowledge(entry_id, trace_id)
        except _REDIS_ERRORS as error:
            self._failed(f"running job {trace_id}", error)  # pending: claimed again later
        except (ShuttingDown, TooManyActors) as refused:
            log.warning("job %s left for another instance: %s", trace_id, refused.message)
        finally:
            self.running.pop(trace_id, None)
            self._slots.release()

    async def _run_job(self, trace_id: str, fields: dict[str, str], record: JobRecord,
                       ) -> bool:
        records = self._records
        job = self._system.ref("job", trace_id, lambda: JobActor(trace_id, records=records))
        # The actor is findable before the marker is read, so a cancel published after the
        # read reaches it.
        if await self._client.exists([self._cancel_key(trace_id)]):
            await self._finish_cancelled(record)
            return True
        slot = RunSlot()
        slot.granted.set()
        job.tell(RunJob(fields["message"], fields["model"], float(fields["temperature"]),
                        fields["system_prompt"], slot, record=record))
        await slot.finished.wait()
        final = await self._store.load_job(trace_id)
        return final is None or final.finished

    async def _acknowledge(self, entry_id: str, trace_id: str) -> None:
        async with self._client.pipeline(transaction=False) as pipeline:
            pipeline.xack(self.stream, GROUP, [entry_id])
            pipeline.xdel(self.stream, [entry_id])
            pipeline.publish(self.channel, f"done:{trace_id}")

    # Observability

    async def stream_stats(self) -> StreamStats:
        """The stream as Redis sees it: entries, pending by consumer; raises StoreUnavailable."""
        length = await self._redis(self._client.xlen(self.stream))
        pending = await self._redis(self._client.xpending(self.stream, GROUP))
        instances = await self._redis(self.heartbeat.alive())
        return StreamStats(
            instance=self.instance_id,
            entries=int(length),
            pending=int(pending.pending),
            pending_by_instance=dict(pending.consumers or {}),
            running_here=len(self.running),
            claims=self.counts["claims"],
            reclaims=self.counts["reclaims"],
            redis_errors=self.counts["redis_errors"],
            instances=instances,
        )
