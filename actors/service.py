"""ChatService, the one object the web layer talks to; ``actors/lifetime.py`` opens and closes it.

It wires the store, the retrying upstream caller, the actor system and the job queue (or, over
Redis, the job stream); :meth:`ChatService.run` runs their tasks until cancelled.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from .config import Settings
from .errors import IdempotencyConflict, JobNotFound, ShuttingDown
from .instance import jobs_over_redis, new_instance_id, shared_gate
from .job import AcceptJob, JobActor, JobRecords, RunJob
from .job_events import JobListener, StoredJobListener, listen_to_job
from .job_queue import JobQueue
from .lease import leases_for
from .model_list import ModelList
from .ref import Ask, Gone, Reply
from .session import (
    ChatTurn,
    Forget,
    GetHistory,
    SessionActor,
    TurnReply,
    TurnStream,
    start_turn_stream,
)
from .stats import JobStats, ServiceStats, StreamStats
from .store.base import JobRecord, Message, Store
from .system import ActorSystem
from .upstream import ModelInfo
from .upstream_caller import UpstreamCaller

if TYPE_CHECKING:
    from .lifetime import UpstreamChoice
    from .redis_jobs import RedisJobs

log = logging.getLogger("actorchat.service")

# How long DELETE /chat/{id} waits for a cancelled job to write its final record.
_CANCEL_WAIT_S = 5.0


class ChatService:
    """Session turns and trace-ID jobs on one actor system. Made by ``open_chat_service``.

    Methods raise errors from :mod:`actors.errors`; once the service is draining or closed,
    :class:`ShuttingDown`.
    """

    def __init__(self, settings: Settings, store: Store, upstream: UpstreamChoice) -> None:
        self.settings = settings
        self._store = store
        self._leases = leases_for(store, settings)
        self._label = upstream.label
        self._closing = False
        self._system = ActorSystem(settings.actors)
        self.instance_id = new_instance_id()
        self._caller = UpstreamCaller(upstream.client, settings.upstream,
                                      gate=shared_gate(settings, store, self.instance_id))
        self.model_list = ModelList(upstream.client)
        jobs = settings.jobs
        self._records = JobRecords(store=store, upstream=self._caller,
                                   max_duration_s=jobs.max_duration_s,
                                   result_ttl_s=jobs.result_ttl_s,
                                   events_buffer=jobs.events_buffer)
        self._cluster = jobs_over_redis(settings, store, self._system, self._records,
                                        self.instance_id, self._caller.gate)
        self._queue = JobQueue(jobs.max_running, jobs.max_queued,
                               retry_after_s=max(1.0, min(jobs.max_duration_s, 5.0)),
                               max_queued_bytes=jobs.max_queued_bytes)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run the service's tasks (leases, actors, the gate's pacer, the job workers or the
        job stream's consumer) until cancelled; the service is closed from then on."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._leases.run)
                await nursery.start(self._system.run)
                await nursery.start(self._caller.run)
                await nursery.start(self._queue.run)
                if self._cluster is not None:
                    await nursery.start(self._cluster.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closing = True

    async def drain(self, drain_s: float) -> bool:
        """Refuse new work and let work in flight finish for up to ``drain_s`` seconds.

        Returns True when every actor stopped in time. Cancels nothing itself.
        """
        if self._cluster is not None:
            self._cluster.stop_claiming()
        return await self._system.drain(drain_s)

    def stats(self, *, kind: str | None = None, state: str | None = None,
              key: str | None = None, limit: int = 0) -> ServiceStats:
        """One frozen snapshot of the whole service; never awaits.

        ``listed`` holds the ``limit`` most recently active live actors of ``kind``, in
        ``state``, with ``key`` (each filter only when given); ``matched`` counts them all.
        """
        listed, matched = self._system.listing(kind=kind, state=state, key=key, limit=limit)
        return ServiceStats(
            accepting=self._system.accepting and not self._closing,
            actors=self._system.totals(),
            listed=tuple(listed),
            matched=matched,
            upstream=self._caller.stats(self._label),
            jobs=JobStats(running=len(self._cluster.running) if self._cluster else
                          self._queue.running, queued=self._queue.queued,
                          by_status=dict(self._records.finished),
                          queued_bytes=self._queue.queued_bytes),
            instance=self.instance_id, redis=self._cluster.counters() if self._cluster else None,
            leases=self._leases.counters(),
        )

    async def stream_stats(self) -> StreamStats | None:
        """The Redis job stream and live instances (None with the memory store)."""
        return None if self._cluster is None else await self._cluster.stream_stats()

    async def ping_store(self) -> bool:
        """True when the store answers; False when it fails or the service is closing."""
        if self._closing:
            return False
        try:
            return await self._store.ping()
        except Exception:  # a store that cannot answer is simply not reachable
            return False

    def _jobs_over_redis(self) -> RedisJobs | None:
        if self._cluster is not None:
            self._open_store()  # ShuttingDown once closing
        return self._cluster

    def _open_store(self) -> Store:
        if self._closing:
            raise ShuttingDown("the server is shutting down", retry_after=5)
        return self._store

    async def models(self) -> tuple[ModelInfo, ...]:
        """The upstream's models, cached for a minute; see :class:`ModelList`."""
        return await self.model_list.get()

    # Sessions

    async def new_session(self) -> str:
        """Create an empty session with a random ID of 128 bits and return the ID."""
        session_id = secrets.token_urlsafe(16)
        await self._open_store().create_session(session_id)
        return session_id

    async def session_exists(self, session_id: str) -> bool:
        """True if the session exists; over Redis a session live here is not asked about
        (its turn's lease reads its version; one gone meanwhile raises SessionGone)."""
        actor = self._system.find("session", session_id)
        if isinstance(actor, SessionActor) and actor.shares_store and not actor.finished():
            return True
        return await self._open_store().session_exists(session_id)

    def _session_actor(self, session_id: str) -> SessionActor:
        return SessionActor(
            session_id,
            mailbox_size=self.settings.actors.mailbox_size,
            store=self._store,
            upstream=self._caller,
            system_prompt=self.settings.chat.system_prompt,
            leases=self._leases,
            max_context_chars=self.settings.chat.max_context_chars,
            max_history_messages=self.settings.sessions.max_history_messages,
        )

    async def _ask_session(self, session_id: str, message: Ask[Reply],
                           gone: Gone | None = None) -> Reply:
        return await self._system.ask(
            "session", session_id, lambda: self._session_actor(session_id), message, gone)

    async def chat(self, session_id: str, prompt: str, model: str, temperature: float,
                   params: Mapping[str, Any] | None = None, *, gone: Gone | None = None,
                   ) -> TurnReply:
        """One turn of the session's conversation, in order with its other turns.

        ``params`` are further OpenAI parameters (``max_tokens``, ``stop``...), already
        checked, sent upstream as they are. ``gone``, an async function that returns when
        the caller has gone, cancels the turn when it returns (:class:`CallerLeft` is
        raised): see :meth:`actors.ref.ReplySlot.wait`."""
        return await self._ask_session(
            session_id, ChatTurn(prompt, model, temperature, params or {}), gone)

    def stream_chat(self, session_id: str, prompt: str, model: str, temperature: float,
                    params: Mapping[str, Any] | None = None) -> TurnStream:
        """Start a streamed turn of the session, in order with its other turns; never awaits.

        Raises at once what :meth:`chat` raises at once (busy, too many actors, shutting
        down). See :class:`TurnStream`: closing it early cancels the turn, recording nothing.
        """
        return start_turn_stream(
            lambda turn: self._system.send(
                "session", session_id, lambda: self._session_actor(session_id), turn
            ),
            ChatTurn(prompt, model, temperature, params or {}),
        )

    async def history(self, session_id: str) -> list[Message]:
        """The session's recorded turns, oldest first, after those already queued for it (its
        actor answers, started from the store if it is not live)."""
        return list((await self._ask_session(session_id, GetHistory())).messages)

    async def forget(self, session_id: str) -> bool:
        """Forget the session, after the turns already queued for it; True if it existed."""
        return (await self._ask_session(session_id, Forget())).existed

    # Trace-ID jobs

    async def submit_job(
        self,
        message: str,
        model: str,
        temperature: float,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Start a job; returns its first record and whether it was an idempotent replay.

        Admission is decided before the first await, so it is exact under concurrency:
        raises JobQueueFull over ``jobs.max_running + jobs.max_queued`` or when the message
        would take the jobs admitted past ``jobs.max_queued_bytes``, TooManyActors at
        ``actors.max_actors``, and IdempotencyConflict when the key was used with another
        body. A refused submission has claimed and written nothing. A caller cancelled
        after admission does not cancel the job: it runs, and its record can be read.
        """
        if (cluster := self._jobs_over_redis()) is not None:
            return await cluster.submit(message, model, temperature, params or {},
                                        idempotency_key=idempotency_key, fingerprint=fingerprint)
        size = len(message.encode())
        self._queue.check_room(size)
        trace_id = str(uuid.uuid4())
        records = self._records
        job = self._system.ref("job", trace_id, lambda: JobActor(trace_id, records=records))
        queued = not self._queue.worker_free()
        accepted = job.send(AcceptJob(idempotency_key, fingerprint, model, queued))
        job.tell(RunJob(message, model, temperature, self.settings.chat.system_prompt,
                        self._queue.enter(size), params or {}))
        acceptance = await accepted.wait()
        if acceptance.record is not None:
            return acceptance.record, False
        assert acceptance.bound is not None
        bound_trace_id, bound_fingerprint = acceptance.bound
        if bound_fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        record = await self._open_store().load_job(bound_trace_id)
        if record is None:
            raise JobNotFound(f"the job for this Idempotency-Key ({bound_trace_id}) has expired")
        return record, True

    async def job(self, trace_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s`` first wait up to that long for it to finish."""
        if (cluster := self._jobs_over_redis()) is not None:
            return await cluster.job(trace_id, wait_s)
        actor = self._system.find("job", trace_id)
        if wait_s > 0 and isinstance(actor, JobActor):
            with trio.move_on_after(wait_s):
                await actor.done.wait()
        record = await self._open_store().load_job(trace_id)
        if record is None:
            raise JobNotFound(f"no job with trace ID {trace_id}")
        return record

    async def cancel_job(self, trace_id: str) -> JobRecord:
        """Cancel a job still queued or running (a finished one is left as it is); waits up to
        5 s for the job to write its ``cancelled`` record, then returns the record."""
        if (cluster := self._jobs_over_redis()) is not None:
            return await cluster.cancel(trace_id)
        actor = self._system.find("job", trace_id)
        if isinstance(actor, JobActor):
            actor.cancel("cancelled by the client")
            with trio.move_on_after(_CANCEL_WAIT_S):
                await actor.done.wait()
        return await self.job(trace_id)

    async def job_events(self, trace_id: str) -> JobListener | StoredJobListener:
        """A listener for the job's events; see :func:`actors.job_events.listen_to_job`."""
        cluster = self._jobs_over_redis()
        return await listen_to_job(self._system.find("job", trace_id), self._open_store(),
                                   trace_id, self.settings.jobs.max_duration_s,
                                   watch=cluster.watch if cluster is not None else None)
