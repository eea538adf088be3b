"""Talking to an actor: typed messages, the one-shot reply slot, the envelope, the handle.

Callers hold an :class:`ActorRef`, a handle with the actor's kind, its key and the send end of
its mailbox, as pykka's ``ActorRef`` does (``pykka/_ref.py``); the ref never touches the actor
itself. ``ask`` puts an :class:`Envelope` with a :class:`ReplySlot` in the mailbox and waits
for the one answer; ``tell`` sends without one. Closing the mailbox (``ref.close()``, which
the system does through ``Actor.stop()``) is how an actor is told to stop once it has
handled what is queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import outcome
import trio

from .errors import ActorStopped, SessionBusy

Reply = TypeVar("Reply")


class Ask(Generic[Reply]):
    """Base of a message that is answered: ``await ref.ask(message)`` returns a ``Reply``."""

    __slots__ = ()


class ReplySlot(Generic[Reply]):
    """A one-shot answer: set exactly once by the actor, awaited once by the asker."""

    __slots__ = ("_event", "_result")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: outcome.Outcome[Reply] | None = None

    def set(self, result: outcome.Outcome[Reply]) -> None:
        """Deliver the answer. Raises RuntimeError if the slot already has one."""
        if self._result is not None:
            raise RuntimeError("a reply slot takes exactly one answer")
        self._result = result
        self._event.set()

    async def wait(self) -> Reply:
        """Wait for the answer; return it or raise the error the actor sent back.

        Cancelling this only stops waiting: the actor still handles the message.
        """
        await self._event.wait()
        assert self._result is not None
        return self._result.unwrap()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in a mailbox with its reply slot (``None`` for ``tell``)."""

    message: object
    reply: ReplySlot[Any] | None
    sent_at: float  # trio time, for the time spent in the mailbox


class ActorRef:
    """A handle to an actor: ``tell``, ``ask``, ``close``. Sending never blocks.

    A full mailbox is refused at once with :class:`SessionBusy`; a closed one (the actor is
    stopping or gone) with :class:`ActorStopped`.
    """

    __slots__ = ("_mailbox", "key", "kind")

    def __init__(self, kind: str, key: str, mailbox: trio.MemorySendChannel[Envelope]) -> None:
        self.kind = kind
        self.key = key
        self._mailbox = mailbox

    def _post(self, message: object, reply: ReplySlot[Any] | None) -> None:
        try:
            self._mailbox.send_nowait(Envelope(message, reply, trio.current_time()))
        except trio.WouldBlock:
            capacity = self._mailbox.statistics().max_buffer_size
            raise SessionBusy(
                f"{self.kind} is busy: {capacity} requests are already waiting; "
                "try again shortly",
                retry_after=1,
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"{self.kind} actor has stopped") from None

    def tell(self, message: object) -> None:
        """Send without waiting for an answer. Raises SessionBusy or ActorStopped."""
        self._post(message, None)

    def send(self, message: Ask[Reply]) -> ReplySlot[Reply]:
        """Send now and return the slot the answer will arrive in (``await slot.wait()``).

        Raises SessionBusy at once when the mailbox is full, ActorStopped when it is closed.
        """
        reply: ReplySlot[Reply] = ReplySlot()
        self._post(message, reply)
        return reply

    async def ask(self, message: Ask[Reply]) -> Reply:
        """Send and wait for the answer; the actor's error is raised here.

        If the caller is cancelled while waiting, the message is still handled; only its
        answer is dropped.
        """
        return await self.send(message).wait()

    def close(self) -> None:
        """Tell the actor to stop once it has handled what is already queued."""
        self._mailbox.close()
