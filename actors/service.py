"""ChatService: the one object the web layer talks to. It wires store, supervisor and actors."""

from __future__ import annotations

import logging
import secrets
import uuid

import trio

from .config import Settings
from .errors import IdempotencyConflict, JobNotFound, JobQueueFull
from .job import JobActor, JobRunner, RunJob, utc_now
from .session import ChatTurn, Forget, SessionActor, TurnReply
from .store.base import JobRecord, Message, Store
from .supervisor import UpstreamSupervisor
from .system import ActorSystem
from .upstream import Upstream

log = logging.getLogger("actorchat.jobs")

# How long DELETE /chat/{id} waits for a cancelled job to write its final record.
_CANCEL_WAIT_S = 5.0


class ChatService:
    """Session turns and trace-ID jobs on one actor system.

    Start it with ``await nursery.start(service.run)``; it owns the supervisor nursery until
    that nursery is cancelled. Methods raise errors from :mod:`actors.errors`.
    """

    def __init__(
        self, settings: Settings, store: Store, upstream: Upstream | None, upstream_label: str
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream_label = upstream_label
        self.system = ActorSystem(settings.actors)
        self.supervisor = UpstreamSupervisor(upstream, settings.upstream)
        self.jobs = JobRunner(
            store=store,
            supervisor=self.supervisor,
            max_running=settings.jobs.max_running,
            max_duration_s=settings.jobs.max_duration_s,
            result_ttl_s=settings.jobs.result_ttl_s,
        )

    async def run(self, *, task_status: trio.TaskStatus[ChatService] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run the actor system until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.system.run)
            task_status.started(self)

    async def drain(self, drain_s: float) -> bool:
        """Refuse new work and let work in flight finish for up to ``drain_s`` seconds."""
        return await self.system.drain(drain_s)

    # Sessions

    async def new_session(self) -> str:
        """Create an empty session with a random ID of 128 bits and return the ID."""
        session_id = secrets.token_urlsafe(16)
        await self.store.create_session(session_id)
        return session_id

    async def session_exists(self, session_id: str) -> bool:
        return await self.store.session_exists(session_id)

    def _session_actor(self, session_id: str) -> SessionActor:
        return SessionActor(
            session_id,
            mailbox_size=self.settings.actors.mailbox_size,
            store=self.store,
            supervisor=self.supervisor,
            system_prompt=self.settings.chat.system_prompt,
        )

    async def chat(self, session_id: str, prompt: str, model: str, temperature: float,
                   ) -> TurnReply:
        """One turn of the session's conversation, in order with its other turns."""
        return await self.system.ask(
            "session", session_id, lambda: self._session_actor(session_id),
            ChatTurn(prompt, model, temperature),
        )

    async def history(self, session_id: str) -> list[Message]:
        """The session's recorded turns, oldest first; empty for an unknown session."""
        return await self.store.load_history(session_id) or []

    async def forget(self, session_id: str) -> bool:
        """Forget the session, after the turns already queued for it."""
        if self.system.find("session", session_id) is not None:
            return await self.system.ask(
                "session", session_id, lambda: self._session_actor(session_id), Forget()
            )
        return await self.store.delete_session(session_id)

    # Trace-ID jobs

    async def submit_job(
        self,
        message: str,
        model: str,
        temperature: float,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> tuple[JobRecord, bool]:
        """Start a job; returns its first record and whether it was an idempotent replay.

        Raises JobQueueFull over ``jobs.max_running + jobs.max_queued`` and
        IdempotencyConflict when the key was used with another body.
        """
        limits = self.settings.jobs
        if self.jobs.admitted >= limits.max_running + limits.max_queued:
            raise JobQueueFull(
                f"{self.jobs.admitted} jobs are running or queued; try again later",
                retry_after=max(1.0, min(limits.max_duration_s, 5.0)),
            )
        trace_id = str(uuid.uuid4())
        # The actor first: if it cannot start (too many actors, shutting down), nothing has
        # been written or claimed, so a retry with the same Idempotency-Key starts afresh.
        actor = JobActor(trace_id, jobs=self.jobs)
        await self.system.get_or_start("job", trace_id, lambda: actor)
        try:
            if idempotency_key is not None:
                bound = await self.store.claim_idempotency_key(
                    idempotency_key, fingerprint, trace_id, limits.result_ttl_s
                )
                if bound is not None:
                    return await self._replay(idempotency_key, fingerprint, *bound), True
            return await self._start_job(actor, message, model, temperature), False
        finally:
            if not actor.posted:  # no work was sent: the actor stops now
                actor.close_mailbox()

    async def _start_job(
        self, actor: JobActor, message: str, model: str, temperature: float
    ) -> JobRecord:
        ticket = self.jobs.slots.take_ticket()
        queued = not ticket.granted.is_set()
        record = JobRecord(actor.key, "queued" if queued else "processing", model, utc_now())
        try:
            await self.jobs.save(record)
            actor.ref.tell(RunJob(message, model, temperature, self.settings.chat.system_prompt,
                                  ticket, queued))
        except BaseException:
            self.jobs.slots.release(ticket)
            raise
        log.info("job %s %s", actor.key, record.status)
        return record

    async def _replay(self, key: str, fingerprint: str, trace_id: str, bound_fingerprint: str,
                      ) -> JobRecord:
        if bound_fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        record = await self.store.load_job(trace_id)
        if record is None:
            raise JobNotFound(f"the job for this Idempotency-Key ({trace_id}) has expired")
        return record

    async def job(self, trace_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s`` first wait up to that long for it to finish."""
        actor = self.system.find("job", trace_id)
        if wait_s > 0 and isinstance(actor, JobActor):
            with trio.move_on_after(wait_s):
                await actor.done.wait()
        record = await self.store.load_job(trace_id)
        if record is None:
            raise JobNotFound(f"no job with trace ID {trace_id}")
        return record

    async def cancel_job(self, trace_id: str) -> JobRecord:
        """Cancel a job still running; a finished job is left as it is."""
        actor = self.system.find("job", trace_id)
        if isinstance(actor, JobActor):
            actor.cancel("cancelled by the client")
            with trio.move_on_after(_CANCEL_WAIT_S):
                await actor.done.wait()
        return await self.job(trace_id)
