"""The Actor base: a bounded mailbox, one message at a time, crash and restart rules.

An actor owns the receive end of a bounded ``trio.open_memory_channel`` and handles one
message at a time; callers talk to it through its :class:`~actors.ref.ActorRef`. Its fields
are touched only by the actor itself; everyone else reads a frozen :class:`ActorStats`.
"""

from __future__ import annotations

import itertools
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import outcome
import trio

from .errors import ActorChatError, ActorCrashed, ActorStopped, CallerLeft, ShuttingDown
from .ref import ActorRef, Envelope, ReplySlot

log = logging.getLogger("actorchat.actors")

# Orders actors by their last activity, strictly: two wall-clock readings may be equal.
_activity_order = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ActorStats:
    """A snapshot of one actor for ``/debug``. Taken without awaiting."""

    kind: str
    key: str
    state: str  # "idle", "busy" or "stopping"
    mailbox_depth: int  # messages waiting, not counting the one being handled
    mailbox_capacity: int
    senders_waiting: int  # always 0: sending never waits (from receive.statistics())
    handled: int  # messages handled since the actor started
    errors: int  # messages answered with an error
    restarts: int  # crashes after which the actor reloaded its state from the store
    started_at: float  # wall clock, seconds since the epoch
    last_active: float  # wall clock of the last message received or finished
    activity: str  # what it does now: "idle", "upstream attempt 2", "waiting at rate gate"
    last_error: str | None
    history_length: int | None  # messages a session holds; None for other kinds
    # messages the last turn sent upstream, system prompt included; None before one (or for
    # other kinds)
    last_context_messages: int | None = None
    abandoned: int = 0  # messages dropped or cancelled because their caller went away
    mailbox_bytes: int = 0  # bytes the waiting messages hold (those that count them)


class Actor(ABC):
    """Base of every actor: override ``load`` and ``handle``.

    ``run`` is started by the actor system in its nursery. It handles one message at a time,
    in arrival order, until its mailbox is closed and drained, or :meth:`finished` says so.
    An :class:`ActorChatError` from ``handle`` goes back to the asker and the actor lives
    on. Any other exception is logged, goes back to the asker as :class:`ActorCrashed`, and
    the actor restarts: it reloads its state from the store and goes on with the next
    message, so nothing queued behind the crash is lost. Only the actor touches its fields;
    others read them through :meth:`stats`.
    """

    kind: ClassVar[str] = "actor"

    def __init__(self, key: str, mailbox_size: int) -> None:
        self.key = key
        send, self._receive = trio.open_memory_channel[Envelope](mailbox_size)
        self.ref = ActorRef(self.kind, key, send)
        self.handled = 0
        self.errors = 0
        self.restarts = 0
        self.abandoned = 0  # asks dropped or cancelled because their caller went away
        self.started_at = time.time()
        self.last_active = self.started_at
        self.last_active_order = next(_activity_order)  # larger: active more recently
        self.activity = "starting"
        self.last_error: str | None = None
        self.busy = True  # loading or handling a message: its mailbox may fill meanwhile
        self.stopping = False  # told to stop, or stopped; set by stop() or by the actor
        self.current_sent_at = 0.0  # trio time the message being handled was sent
        self.quiet_since = trio.current_time()  # trio time it last finished a message

    async def load(self) -> None:  # noqa: B027 - optional hook; most actors load state
        """Load the actor's state from the store before the first message. May raise."""

    @abstractmethod
    async def handle(self, message: Any) -> Any:
        """Handle one message and return the answer for ``ask``."""

    def finished(self) -> bool:
        """True when the actor has done its whole work and should stop now (jobs)."""
        return False

    def evictable(self) -> bool:
        """True when the system may stop this actor while idle, to make room or when quiet."""
        return True

    def history_length(self) -> int | None:
        """How many messages of conversation the actor holds, if it holds any."""
        return None

    def last_context_length(self) -> int | None:
        """How many messages the actor's last upstream call sent, if it keeps count."""
        return None

    def is_idle(self) -> bool:
        """True when the actor waits for mail with an empty mailbox; never awaits.

        An actor still loading or handling a message is not waiting; nor is one a message
        was just handed to (Trio hands it straight to a waiting receiver, in no buffer, and
        takes the receiver off the waiting list).
        """
        return self._receive.statistics().tasks_waiting_receive > 0

    def stop(self) -> None:
        """Close the mailbox: the actor stops once it has handled what is already queued."""
        self.stopping = True
        self.ref.close()

    @property
    def state(self) -> str:
        """"idle", "busy" or "stopping", as in :class:`ActorStats`; never awaits."""
        return "stopping" if self.stopping else ("busy" if self.busy else "idle")

    def mailbox_depth(self) -> int:
        """Messages waiting, not counting the one being handled; never awaits."""
        return self._receive.statistics().current_buffer_used

    def stats(self) -> ActorStats:
        """A snapshot for ``/debug``; never awaits."""
        mailbox = self._receive.statistics()
        return ActorStats(
            kind=self.kind,
            key=self.key,
            state=self.state,
            mailbox_depth=mailbox.current_buffer_used,
            mailbox_capacity=int(mailbox.max_buffer_size),
            senders_waiting=mailbox.tasks_waiting_send,
            handled=self.handled,
            errors=self.errors,
            restarts=self.restarts,
            started_at=self.started_at,
            last_active=self.last_active,
            activity=self.activity,
            last_error=self.last_error,
            history_length=self.history_length(),
            last_context_messages=self.last_context_length(),
            abandoned=self.abandoned,
            mailbox_bytes=self.ref.queued_bytes.total if self.ref.queued_bytes else 0,
        )

    async def run(self) -> None:
        """Load state, then serve the mailbox until it is closed and drained or finished.

        If ``load`` fails (first or after a crash), every queued ask gets the error (an
        :class:`ActorChatError` as it is, anything else as :class:`ActorCrashed`) and the
        error is raised. On cancel (the system shutting down), the ask being handled and
        every queued ask get :class:`ShuttingDown`. Asks that arrive once it has stopped get
        :class:`ActorStopped`.
        """
        with self._receive:
            try:
                await self.load()
                self.busy = False
                self.activity = "idle"
                await self._serve()
            except trio.Cancelled:
                self.stopping = True
                self._refuse_queued(ShuttingDown("the server shut down", retry_after=5))
                raise
            except Exception as error:
                self.stopping = True
                self._refuse_queued(error if isinstance(error, ActorChatError) else ActorCrashed(
                    f"the {self.kind} actor failed and could not load its state again"
                ))
                raise
            self.stopping = True
            self._refuse_queued(ActorStopped(f"{self.kind} actor stopped"))

    async def _serve(self) -> None:
        # No idle timer here: a per-message cancel scope would cost every message a deadline;
        # the system's sweeper closes the mailboxes of actors quiet for too long instead.
        async for envelope in self._receive:
            await self._deliver(envelope)
            if self.finished():
                self.stopping = True
                return

    async def _deliver(self, envelope: Envelope) -> None:
        reply = envelope.reply
        if envelope.weight:
            self._release(envelope.weight)
        if reply is not None and reply.abandoned:  # its caller left while it was queued
            self.abandoned += 1
            reply.set(outcome.Error(CallerLeft("the caller went away before the turn began")))
            return
        self.busy = True
        self.current_sent_at = envelope.sent_at
        self.last_active = time.time()
        self.last_active_order = next(_activity_order)
        crashed = False
        result: outcome.Outcome[Any] = outcome.Error(ActorStopped(f"{self.kind} actor stopped"))
        try:
            if reply is not None and reply.cancel_with_caller:
                result = await self._handle_for_caller(envelope.message, reply)
            else:
                result = outcome.Value(await self.handle(envelope.message))
        except trio.Cancelled:
            result = outcome.Error(ShuttingDown(
                "the server shut down before this request finished", retry_after=5
            ))
            raise
        except ActorChatError as error:
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error.message}"
            result = outcome.Error(error)
        except Exception as error:
            self.errors += 1
            self.restarts += 1
            self.last_error = f"{type(error).__name__}: {error}"
            log.exception("%s actor %s crashed; restarting it from the store", self.kind,
                          self.key[:8])
            result = outcome.Error(ActorCrashed(
                f"the {self.kind} actor failed while handling this request"
            ))
            crashed = True
        finally:
            self.busy = False
            self.handled += 1
            self.last_active = time.time()
            self.last_active_order = next(_activity_order)
            self.quiet_since = trio.current_time()
            self.activity = "idle"
            if reply is not None:
                reply.set(result)
        if crashed:
            self.busy, self.activity = True, "reloading after a crash"
            await self.load()
            self.busy, self.activity = False, "idle"

    async def _handle_for_caller(self, message: Any, reply: ReplySlot[Any],
                                 ) -> outcome.Outcome[Any]:
        """Handle ``message`` in a scope its caller cancels by going away (finding 9).

        Only the caller's cancellation is caught here; the system's passes through.
        """
        with trio.CancelScope() as scope:
            reply.handled_in(scope)
            return outcome.Value(await self.handle(message))
        self.abandoned += 1
        return outcome.Error(CallerLeft("the caller went away; the turn was cancelled"))

    def _release(self, weight: int) -> None:
        if self.ref.queued_bytes is not None:
            self.ref.queued_bytes.release(weight)

    def _refuse_queued(self, error: ActorChatError) -> None:
        while True:
            try:
                envelope = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if envelope.weight:
                self._release(envelope.weight)
            if envelope.reply is not None:
                envelope.reply.set(outcome.Error(error))
