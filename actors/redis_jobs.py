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

Completion, a job's start and cancel travel by pub/sub (``done:<trace_id>``,
``status:<trace_id>``, ``cancel:<trace_id>``), so ``?wait``, ``DELETE`` and ``/events`` work
from any instance and nobody polls. A cancel also leaves a
marker key, so a job cancelled before anyone claimed it is never started.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import coredis
import trio

from .config import Settings
from .errors import (
    IdempotencyConflict,
    JobNotFound,
    JobQueueFull,
    StoreUnavailable,
)
from .job import JobActor, JobRecords, utc_now
from .job_events import JobWatch
from .rate_gate import RateGate
from .redis_consumer import GROUP, REDIS_ERRORS, StreamConsumer
from .redis_instances import Heartbeat
from .redis_pubsub import listen_forever
from .stats import StreamStats
from .store.base import JobRecord
from .store.redis import RedisStore
from .system import ActorSystem

log = logging.getLogger("actorchat.jobs.redis")

# How long DELETE waits for the cancelled job's final record.
_CANCEL_WAIT_S = 5.0
# After a Redis error, the listener waits this long before it subscribes again.
_REDIS_ERRORS = (*REDIS_ERRORS, StoreUnavailable)


class RedisJobs:
    """The job methods of ``ChatService`` when ``store.backend = "redis"``.

    Start with ``await nursery.start(jobs.run)``; cancelling that nursery stops the
    consumer, the listener and the heartbeat, and leaves the jobs run here unacknowledged.
    ``stop_claiming()`` (at drain) stops taking new jobs and lets running ones finish.
    """

    def __init__(self, settings: Settings, store: RedisStore, system: ActorSystem,
                 records: JobRecords, instance_id: str, gate: RateGate | None = None) -> None:
        self.settings = settings
        self.store = store
        self.client: coredis.Redis[str] = store.client
        self.system = system
        self.records = records
        self.instance_id = instance_id
        self.stream = f"{store.prefix}jobs"
        self.channel = f"{store.prefix}jobs:events"
        self._watches: defaultdict[str, set[JobWatch]] = defaultdict(set)
        records.announce = self._announce
        self.counts: Counter[str] = Counter(claims=0, reclaims=0, redis_errors=0)
        self.heartbeat = Heartbeat(self.client, store.prefix, instance_id, on_error=self.failed)
        self.consumer = StreamConsumer(self)
        self._gate = gate  # whose Redis errors counters() reports too

    @property
    def running(self) -> dict[str, str]:
        """The jobs this instance runs now: trace ID -> stream entry ID."""
        return self.consumer.running

    # Lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Listen, beat and consume until cancelled; started once the listener listens."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            await nursery.start(self.heartbeat.run)
            await nursery.start(self.consumer.run)
            task_status.started()

    def stop_claiming(self) -> None:
        """Take no more jobs from the stream (shutdown); the running ones go on."""
        self.consumer.stop_claiming()

    def failed(self, doing: str, error: BaseException) -> None:
        """Count and log a Redis error of the job stream (the caller decides what follows)."""
        self.counts["redis_errors"] += 1
        log.warning("Redis error while %s: %s", doing, error)

    # The web layer's job methods

    async def submit(self, message: str, model: str, temperature: float,
                     params: Mapping[str, Any], *, idempotency_key: str | None,
                     fingerprint: str) -> tuple[JobRecord, bool]:
        """Write the ``queued`` record and append the job; see ``ChatService.submit_job``.

        Admission counts the stream's entries (queued and running on every instance)
        against ``jobs.max_queued``; concurrent submissions may overshoot it by a few. Once
        admitted, the caller's cancellation waits until key, record and entry are written
        (each Redis call is bounded by ``store.timeout_s``), so no record is left without
        its entry; the job then runs as if the caller had stayed.
        """
        queued = await self._redis(self.client.xlen(self.stream))
        if queued >= self.settings.jobs.max_queued:
            raise JobQueueFull(f"{queued} jobs are running or queued; try again later",
                               retry_after=5.0)
        trace_id = str(uuid.uuid4())
        with trio.CancelScope(shield=True):
            if idempotency_key is not None:
                bound = await self.store.claim_idempotency_key(
                    idempotency_key, fingerprint, trace_id, self.records.result_ttl_s)
                if bound is not None:
                    return await self._replay(bound, fingerprint), True
            record = JobRecord(trace_id, "queued", model, utc_now())
            await self.records.save(record)
            fields = {"trace_id": trace_id, "message": message, "model": model,
                      "temperature": repr(temperature),
                      "system_prompt": self.settings.chat.system_prompt,
                      "params": json.dumps(dict(params))}
            await self._redis(self.client.xadd(self.stream, fields))
        log.info("job %s queued on the stream", trace_id)
        return record, False

    async def _replay(self, bound: tuple[str, str], fingerprint: str) -> JobRecord:
        bound_trace_id, bound_fingerprint = bound
        if bound_fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body")
        record = await self.store.load_job(bound_trace_id)
        if record is None:
            raise JobNotFound(f"the job for this Idempotency-Key ({bound_trace_id}) has expired")
        return record

    async def job(self, trace_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s``, first wait up to that long for its end (read
        again at each notice of a change, from whichever instance runs it)."""
        deadline = trio.current_time() + wait_s
        watch = self.watch(trace_id)  # before reading: no notice is missed
        try:
            while True:
                record = await self.store.load_job(trace_id)
                if record is None:
                    raise JobNotFound(f"no job with trace ID {trace_id}")
                remaining = deadline - trio.current_time()
                if record.finished or remaining <= 0:
                    return record
                await watch.wait(remaining)
        finally:
            watch.close()

    async def cancel(self, trace_id: str) -> JobRecord:
        """Cancel the job wherever it runs or waits; waits up to 5 s for its final record."""
        record = await self.job(trace_id)
        if record.finished:
            return record
        marker = self.cancel_key(trace_id)
        await self._redis(self.client.set(marker, "1", px=int(self.records.result_ttl_s * 1000)))
        # Published in both cases: a runner may have claimed it since it was read as queued.
        await self._redis(self.client.publish(self.channel, f"cancel:{trace_id}"))
        if record.status == "queued":  # whoever claims it later sees the marker
            await self._finish_cancelled(record)
            return record
        return await self.job(trace_id, wait_s=_CANCEL_WAIT_S)

    async def _finish_cancelled(self, record: JobRecord) -> None:
        record.status, record.timestamp = "cancelled", utc_now()
        record.error = {"type": "cancelled", "message": "cancelled by the client"}
        await self.records.save(record, finished=True)
        await self._redis(self.client.publish(self.channel, f"done:{record.trace_id}"))

    def cancel_key(self, trace_id: str) -> str:
        return f"{self.store.job_key(trace_id)}:cancel"

    async def _redis(self, request: Any) -> Any:
        try:
            return await request
        except _REDIS_ERRORS as error:
            self.failed("talking to the job stream", error)
            raise StoreUnavailable("Redis did not answer for the job stream",
                                   retry_after=1.0) from error

    # Pub/sub

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                      ) -> None:
        await listen_forever(self.client, self.channel, self._on_event, self.failed,
                             _REDIS_ERRORS, doing="listening for job events",
                             task_status=task_status)

    def watch(self, trace_id: str) -> JobWatch:
        """Hear of every change of the job's record (its start, its end) until closed."""
        watches = self._watches[trace_id]

        def release() -> None:
            watches.discard(watch)
            if not watches and self._watches.get(trace_id) is watches:
                del self._watches[trace_id]

        watch = JobWatch(release)
        watches.add(watch)
        return watch

    async def _announce(self, record: JobRecord) -> None:
        if record.status == "queued":
            return  # just submitted: nobody can be listening yet
        # Not worth failing the job over: a listener elsewhere reads again within RECHECK_S.
        try:
            await self._redis(self.client.publish(self.channel, f"status:{record.trace_id}"))
        except StoreUnavailable:
            pass

    def _on_event(self, event: str) -> None:
        what, _, trace_id = event.partition(":")
        if what in ("done", "status"):
            for watch in list(self._watches.get(trace_id, ())):
                watch.changed()
        elif what == "cancel":
            actor = self.system.find("job", trace_id)
            if isinstance(actor, JobActor):
                actor.cancel("cancelled by the client")

    # Observability

    def counters(self) -> dict[str, dict[str, int]]:
        """Claims and reclaims of jobs here, and Redis errors by part; never awaits."""
        gate_errors = getattr(self._gate, "redis_errors", 0)
        return {"jobs": {"claims": self.counts["claims"], "reclaims": self.counts["reclaims"]},
                "rate_gate": {"budget_round_trips": getattr(self._gate, "round_trips", 0)},
                "redis_errors": {"jobs": self.counts["redis_errors"], "rate_gate": gate_errors}}

    async def stream_stats(self) -> StreamStats:
        """The stream as Redis sees it: entries, pending by consumer; raises StoreUnavailable."""
        length = await self._redis(self.client.xlen(self.stream))
        pending = await self._redis(self.client.xpending(self.stream, GROUP))
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
