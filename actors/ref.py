"""Talking to an actor: typed messages, the one-shot reply slot, the envelope, the handle.

Callers hold an :class:`ActorRef`, a handle with the actor's kind, its key and the send end of
its mailbox, as pykka's ``ActorRef`` does (``pykka/_ref.py``); the ref never touches the actor
itself. ``ask`` puts an :class:`Envelope` with a :class:`ReplySlot` in the mailbox and waits
for the one answer; ``tell`` sends without one. Closing the mailbox (``ref.close()``, which
the system does through ``Actor.stop()``) is how an actor is told to stop once it has
handled what is queued.

A message whose class sets ``cancel_with_caller`` (a chat turn) goes away with its caller
(issue 11, finding 9): a caller cancelled while waiting abandons its slot, and the actor drops
the message if it has not started it, or cancels its handling if it has. A streamed ask
(:meth:`Ask.stream_to`) sends pieces of its answer before the answer over a bounded channel
the slot closes when the answer is set. A mailbox is bounded in bytes too
(:class:`~actors.mailbox_bytes.MailboxBytes`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import outcome
import trio

from .errors import ActorStopped, CallerLeft, SessionBusy
from .mailbox_bytes import MailboxBytes

Reply = TypeVar("Reply")
# An async function that returns when the asker has gone (see ReplySlot.wait).
Gone = Callable[[], Awaitable[object]]


class Ask(Generic[Reply]):
    """Base of a message that is answered: ``await ref.ask(message)`` returns a ``Reply``."""

    __slots__ = ()

    # True: the message goes away with its caller (dropped if queued, cancelled if running).
    cancel_with_caller: ClassVar[bool] = False

    def weight(self) -> int:
        """Bytes the message holds while it waits in a mailbox (0: not counted)."""
        return 0

    def stream_to(self) -> trio.MemorySendChannel[Any] | None:
        """The channel pieces of the answer go to before the answer, for a streamed ask."""
        return None


class ReplySlot(Generic[Reply]):
    """A one-shot answer: set exactly once by the actor, awaited once by the asker.

    With ``cancel_with_caller``, the asker may :meth:`abandon` it (cancelling :meth:`wait`
    does): the actor then drops the message or cancels the scope it handles it in. Setting
    the answer closes ``stream``, the send end of a streamed ask's pieces, whoever sets it.
    """

    __slots__ = ("_event", "_interrupt", "_result", "_scope", "_stream", "abandoned",
                 "cancel_with_caller")

    def __init__(self, *, cancel_with_caller: bool = False,
                 stream: trio.MemorySendChannel[Any] | None = None) -> None:
        self._event = trio.Event()
        self._result: outcome.Outcome[Reply] | None = None
        self._scope: trio.CancelScope | None = None
        self._interrupt: trio.CancelScope | None = None  # an asker's wait on its ``gone``
        self._stream = stream
        self.cancel_with_caller = cancel_with_caller
        self.abandoned = False

    def set(self, result: outcome.Outcome[Reply]) -> None:
        """Deliver the answer. Raises RuntimeError if the slot already has one."""
        if self._result is not None:
            raise RuntimeError("a reply slot takes exactly one answer")
        self._result = result
        if self._stream is not None:
            self._stream.close()
        self._event.set()
        if self._interrupt is not None:
            self._interrupt.cancel()

    def answered(self) -> bool:
        """True once the answer is set."""
        return self._result is not None

    def abandon(self) -> None:
        """The asker has gone: cancel the handling, if the message goes with its caller.

        Never awaits; does nothing once answered or for messages that outlive their caller.
        """
        if self._result is not None or not self.cancel_with_caller:
            return
        self.abandoned = True
        if self._scope is not None:
            self._scope.cancel("the caller went away")

    def handled_in(self, scope: trio.CancelScope) -> None:
        """The actor handles the message in ``scope``: abandoning the slot cancels it."""
        self._scope = scope
        if self.abandoned:
            scope.cancel("the caller went away")

    async def wait(self, gone: Gone | None = None) -> Reply:
        """Wait for the answer; return it or raise the error the actor sent back.

        Cancelling this abandons the slot: a message that goes with its caller is dropped or
        cancelled; any other is still handled, and only its answer is dropped.

        With ``gone``, an async function that returns when the asker has gone (the web
        layer's wait for the client's disconnect), the asker awaits ``gone()`` instead of
        idling: the answer interrupts it (cancels it), and if it returns first the slot is
        abandoned and :class:`CallerLeft` raised. One task watches and waits, where a
        watcher task beside the wait cost a nursery, a task and three task switches: with
        the fake instant upstream under Hypercorn, 3.49 M instructions a server turn with the
        watcher, 3.38 M with ``gone`` (test_a_caller_whose_gone_returns_cancels_... and
        test_the_answer_interrupts_the_callers_wait_on_gone pin it).
        """
        if gone is not None:
            await self._wait_unless(gone)
        else:
            try:
                await self._event.wait()
            except trio.Cancelled:
                self.abandon()
                raise
        assert self._result is not None
        return self._result.unwrap()

    async def _wait_unless(self, gone: Gone) -> None:
        if self._result is not None:
            return
        with trio.CancelScope() as self._interrupt:
            try:
                await gone()
            except BaseException:  # the answer's interrupt, or the asker cancelled
                self.abandon()  # nothing once answered
                raise
            if self._result is None:
                self.abandon()
                raise CallerLeft("the caller went away; the turn was cancelled")
        self._interrupt = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in a mailbox with its reply slot (``None`` for ``tell``)."""

    message: object
    reply: ReplySlot[Any] | None
    sent_at: float  # trio time, for the time spent in the mailbox
    weight: int = 0  # bytes counted against the mailbox's byte bounds while it waits


class ActorRef:
    """A handle to an actor: ``tell``, ``ask``, ``close``. Sending never blocks.

    A full mailbox is refused at once with :class:`SessionBusy`; a closed one (the actor is
    stopping or gone) with :class:`ActorStopped`; one over its bytes as
    :meth:`MailboxBytes.charge` says. ``queued_bytes`` is the mailbox's byte count, shared
    with the actor that releases what it takes, as the channel's buffer is.
    """

    __slots__ = ("_mailbox", "key", "kind", "queued_bytes")

    def __init__(self, kind: str, key: str, mailbox: trio.MemorySendChannel[Envelope]) -> None:
        self.kind = kind
        self.key = key
        self._mailbox = mailbox
        self.queued_bytes: MailboxBytes | None = None  # set by the system; None: not counted

    def _post(self, message: object, reply: ReplySlot[Any] | None) -> None:
        weight = message.weight() if isinstance(message, Ask) else 0
        if weight and self.queued_bytes is not None:
            self.queued_bytes.charge(weight)
        try:
            self._mailbox.send_nowait(Envelope(message, reply, trio.current_time(), weight))
        except trio.WouldBlock:
            self._release(weight)
            capacity = self._mailbox.statistics().max_buffer_size
            raise SessionBusy(
                f"{self.kind} is busy: {capacity} requests are already waiting; "
                "try again shortly",
                retry_after=1,
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._release(weight)
            raise ActorStopped(f"{self.kind} actor has stopped") from None

    def _release(self, weight: int) -> None:
        if weight and self.queued_bytes is not None:
            self.queued_bytes.release(weight)

    def tell(self, message: object) -> None:
        """Send without waiting for an answer. Raises SessionBusy or ActorStopped."""
        self._post(message, None)

    def send(self, message: Ask[Reply]) -> ReplySlot[Reply]:
        """Send now and return the slot the answer will arrive in (``await slot.wait()``).

        Raises SessionBusy at once when the mailbox is full, ActorStopped when it is closed.
        """
        reply: ReplySlot[Reply] = ReplySlot(cancel_with_caller=message.cancel_with_caller,
                                            stream=message.stream_to())
        self._post(message, reply)
        return reply

    async def ask(self, message: Ask[Reply], gone: Gone | None = None) -> Reply:
        """Send and wait for the answer; the actor's error is raised here.

        If the caller is cancelled while waiting, a message that goes with its caller is
        dropped or cancelled; any other is still handled, and only its answer is dropped.
        ``gone`` is :meth:`ReplySlot.wait`'s.
        """
        return await self.send(message).wait(gone)

    def close(self) -> None:
        """Tell the actor to stop once it has handled what is already queued."""
        self._mailbox.close()
