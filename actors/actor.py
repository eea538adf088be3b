"""The actor base: a bounded mailbox, one message at a time, a handle to talk to it.

An actor owns the receive end of a bounded ``trio.open_memory_channel``; the
:class:`~actors.system.ActorSystem` registry holds the send end, and closing it is how an actor
is told to stop. Callers hold an :class:`ActorRef` with ``tell`` and ``ask``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import outcome
import trio

from .errors import ActorChatError, ActorCrashed, ActorStopped, SessionBusy

log = logging.getLogger("actorchat.actors")


class ReplySlot:
    """A one-shot reply: set once by the actor, awaited once by the asker."""

    __slots__ = ("_event", "_result")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: outcome.Outcome | None = None

    def set(self, result: outcome.Outcome) -> None:
        if self._result is None:
            self._result = result
            self._event.set()

    async def wait(self) -> Any:
        """Wait for the reply; return it or raise the error the actor sent back."""
        await self._event.wait()
        assert self._result is not None
        return self._result.unwrap()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in a mailbox, with its reply slot (``None`` for ``tell``)."""

    message: Any
    reply: ReplySlot | None
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class ActorStats:
    """A snapshot of one actor for the debug endpoint. Taken without awaiting."""

    kind: str
    key: str
    state: str  # "idle", "busy" or "stopping"
    mailbox_depth: int  # messages waiting, not counting the one being handled
    mailbox_capacity: int
    handled: int  # messages handled since the actor started
    errors: int  # messages answered with an error
    restarts: int  # crashes after which the actor reloaded its state from the store
    started_at: float  # wall clock, seconds since the epoch
    last_active: float  # wall clock of the last message received or finished
    activity: str  # what it does now: "idle", "upstream attempt 2", "waiting at rate gate"
    last_error: str | None


class ActorRef:
    """A handle to a live actor. Sending never blocks: a full mailbox is refused at once."""

    __slots__ = ("_actor", "_send")

    def __init__(self, actor: Actor, send: trio.MemorySendChannel[Envelope]) -> None:
        self._actor = actor
        self._send = send

    @property
    def key(self) -> str:
        return self._actor.key

    def _post(self, message: Any, reply: ReplySlot | None) -> None:
        try:
            self._send.send_nowait(Envelope(message, reply, trio.current_time()))
            self._actor.posted += 1
        except trio.WouldBlock:
            raise SessionBusy(
                f"{self._actor.kind} is busy: {self._actor.mailbox_capacity} requests are "
                "already waiting; try again shortly",
                retry_after=1,
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"{self._actor.kind} actor has stopped") from None

    def tell(self, message: Any) -> None:
        """Send without waiting for an answer. Raises SessionBusy or ActorStopped."""
        self._post(message, None)

    def send(self, message: Any) -> ReplySlot:
        """Send now and return the slot the answer will arrive in (``await slot.wait()``).

        Raises SessionBusy at once when the mailbox is full, ActorStopped when it is closed.
        """
        reply = ReplySlot()
        self._post(message, reply)
        return reply

    async def ask(self, message: Any) -> Any:
        """Send and wait for the answer; the actor's error is raised here.

        Raises SessionBusy at once when the mailbox is full. If the caller is cancelled while
        waiting, the message is still handled; only its answer is dropped.
        """
        return await self.send(message).wait()


class Actor(ABC):
    """Base of every actor: override ``load`` and ``handle``.

    ``run`` is started by the actor system in its supervisor nursery. It handles one message
    at a time, in arrival order, until the system closes its mailbox (idle too long, evicted,
    draining) and what was queued has been handled. An :class:`ActorChatError` from
    ``handle`` goes back to the asker and the actor lives on. Any other exception is logged
    and counted, goes back to the asker as :class:`ActorCrashed`, and the actor restarts: it
    reloads its state from the store and goes on with the next message, so nothing queued
    behind the crash is lost.
    """

    kind: ClassVar[str] = "actor"

    def __init__(self, key: str, mailbox_size: int) -> None:
        self.key = key
        self.mailbox_capacity = mailbox_size
        self._send, self._receive = trio.open_memory_channel[Envelope](mailbox_size)
        self.ref = ActorRef(self, self._send)
        self.handled = 0
        # Counted when sent: a message Trio hands straight to a waiting receiver is in no
        # buffer, so the mailbox alone cannot tell an actor about to work from an idle one.
        self.posted = 0
        self.errors = 0
        self.restarts = 0
        self.started_at = time.time()
        self.last_active = self.started_at
        self.activity = "starting"
        self.last_error: str | None = None
        self.stopping = False
        self.busy = False
        self.loaded = False
        self.on_crash: Callable[[Actor], None] | None = None  # the system's counter
        self.current_enqueued_at = 0.0  # trio time the message being handled was sent
        self.quiet_since = trio.current_time()  # trio time it last finished a message

    async def load(self) -> None:  # noqa: B027 - optional hook; most actors load state
        """Load the actor's state from the store before the first message. May raise."""

    @abstractmethod
    async def handle(self, message: Any) -> Any:
        """Handle one message and return the answer for ``ask``."""

    def is_idle(self) -> bool:
        """True when the actor has loaded, handles nothing and has nothing on its way."""
        return self.loaded and not self.busy and self.posted == self.handled

    def close_mailbox(self) -> None:
        """Tell the actor to stop once it has handled what is already queued."""
        self.stopping = True
        self._send.close()

    @property
    def state(self) -> str:
        """"idle", "busy" or "stopping", as in :class:`ActorStats`; never awaits."""
        return "stopping" if self.stopping else ("busy" if self.busy else "idle")

    def mailbox_depth(self) -> int:
        """Messages waiting, not counting the one being handled; never awaits."""
        return self._receive.statistics().current_buffer_used

    def stats(self) -> ActorStats:
        """A snapshot for the debug endpoint; never awaits."""
        return ActorStats(
            kind=self.kind,
            key=self.key,
            state=self.state,
            mailbox_depth=self.mailbox_depth(),
            mailbox_capacity=self.mailbox_capacity,
            handled=self.handled,
            errors=self.errors,
            restarts=self.restarts,
            started_at=self.started_at,
            last_active=self.last_active,
            activity=self.activity,
            last_error=self.last_error,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load state, report the ref through ``task_status``, then serve the mailbox.

        Returns when the mailbox is closed and drained (the system closes it to stop the
        actor, e.g. when it has been idle too long) or when :meth:`finished` says so. Raises
        whatever ``load`` raises, before ``task_status.started``; on cancel, queued asks get
        :class:`ActorStopped`.
        """
        try:
            await self.load()
        except BaseException:
            self.stopping = True
            self._refuse_queued()
            raise
        self.loaded = True
        self.activity = "idle"
        task_status.started(self.ref)
        with self._receive:
            try:
                await self._serve()
            finally:
                self.stopping = True
                self._refuse_queued()

    async def _serve(self) -> None:
        # No idle timer here: a per-message cancel scope would cost every message a deadline;
        # the system's sweeper closes the mailboxes of actors quiet for too long instead.
        while True:
            try:
                envelope = await self._receive.receive()
            except trio.EndOfChannel:
                return
            await self._deliver(envelope)
            if self.finished():
                return

    def evictable(self) -> bool:
        """True when the system may stop this actor early to make room at the cap."""
        return True

    def finished(self) -> bool:
        """True when the actor has done its whole work and should stop now (jobs)."""
        return False

    async def _deliver(self, envelope: Envelope) -> None:
        self.busy = True
        self.current_enqueued_at = envelope.enqueued_at
        self.last_active = time.time()
        try:
            result = outcome.Value(await self.handle(envelope.message))
        except trio.Cancelled:
            if envelope.reply is not None:
                envelope.reply.set(outcome.Error(ActorStopped(f"{self.kind} actor was stopped")))
            raise
        except ActorChatError as error:
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error.message}"
            result = outcome.Error(error)
        except Exception as error:
            self.errors += 1
            self.restarts += 1
            self.last_error = f"{type(error).__name__}: {error}"
            if self.on_crash is not None:
                self.on_crash(self)
            log.exception("%s actor %s crashed; restarting it from the store", self.kind,
                          _short(self.key))
            crash = ActorCrashed(f"the {self.kind} actor failed while handling this request")
            result = outcome.Error(crash)
            if envelope.reply is not None:
                envelope.reply.set(result)
            await self.load()
        finally:
            self.busy = False
            self.handled += 1
            self.last_active = time.time()
            self.quiet_since = trio.current_time()
            self.activity = "idle"
        if envelope.reply is not None:
            envelope.reply.set(result)

    def _refuse_queued(self) -> None:
        while True:
            try:
                envelope = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if envelope.reply is not None:
                envelope.reply.set(outcome.Error(ActorStopped(f"{self.kind} actor stopped")))


def _short(key: str) -> str:
    return key[:8]
