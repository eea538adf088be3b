"""The actor system: a registry of live actors and the one nursery that runs them.

Actors are virtual, as in Orleans: the first message for a key starts its actor, which loads
its state from the store; an actor quiet for ``actors.idle_timeout_s`` stops and is
forgotten; the next message starts it again. At most one actor per (kind, key) is live in
this process. Every actor runs in the system's nursery, never in a caller's task, so a caller
that goes away cancels only its own wait.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from heapq import nlargest
from operator import attrgetter
from typing import TypeVar

import trio

from .actor import Actor, ActorStats
from .config import ActorsConfig
from .errors import ActorStopped, ShuttingDown, TooManyActors
from .mailbox_bytes import MailboxBytes, QueuedBytes
from .ref import ActorRef, Ask, Gone, ReplySlot
from .stats import ActorTotals

log = logging.getLogger("actorchat.actors")

Reply = TypeVar("Reply")

# How many of the least recently used actors to look at for one to evict at the cap.
_EVICTION_SCAN = 64


class ActorSystem:
    """Finds or starts actors by key and runs them all in one nursery.

    Open it with ``await nursery.start(system.run)``; cancelling that nursery cancels every
    actor (each answers what it was asked with :class:`ShuttingDown`). ``ask`` raises what
    the actor answers with, plus :class:`TooManyActors` at the cap and :class:`ShuttingDown`
    once :meth:`drain` has begun.
    """

    def __init__(self, config: ActorsConfig) -> None:
        self.config = config
        self._actors: OrderedDict[tuple[str, str], Actor] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.accepting = True
        self._live: Counter[str] = Counter()
        self._started: Counter[str] = Counter()
        self._stopped: Counter[str] = Counter()
        # Crashes of actors that have stopped; live actors count their own restarts.
        self._crashed_before: Counter[str] = Counter()
        self._abandoned_before: Counter[str] = Counter()  # by actors that have stopped
        self.queued_bytes = QueuedBytes(config.max_queued_bytes)
        self._all_stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Open the actors' nursery and sweep idle actors until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._sweep_idle()

    async def _sweep_idle(self) -> None:
        """Stop actors quiet for ``idle_timeout_s``; looks every tenth of that timeout.

        Like Orleans' activation collector: one periodic scan instead of a timer per actor,
        so a message costs no deadline. An actor stops between 1.0 and 1.1 times the timeout
        after its last message. No checkpoint between the idleness check and closing the
        mailbox, so no message can slip in between (Trio is cooperative).
        """
        timeout = self.config.idle_timeout_s
        while True:
            await trio.sleep(timeout / 10)
            horizon = trio.current_time() - timeout
            for slot, actor in list(self._actors.items()):
                if actor.quiet_since <= horizon and actor.evictable() and actor.is_idle():
                    self._retire(slot, actor)

    def ref(self, kind: str, key: str, factory: Callable[[], Actor]) -> ActorRef:
        """The handle of the live actor for (kind, key), starting one with ``factory``.

        Never awaits: a new actor is registered and started in the system's nursery at once;
        messages sent to it wait in its mailbox while it loads. Raises :class:`ShuttingDown`
        once draining began and :class:`TooManyActors` at ``actors.max_actors`` when no
        idle actor can be evicted.
        """
        slot = (kind, key)
        actor = self._actors.get(slot)
        if actor is not None:
            self._actors.move_to_end(slot)
            return actor.ref
        if not self.accepting or self._nursery is None:
            raise ShuttingDown("the server is shutting down", retry_after=5)
        if len(self._actors) >= self.config.max_actors and not self._evict_one():
            raise TooManyActors(
                f"{len(self._actors)} actors are live, the limit is {self.config.max_actors}",
                retry_after=1,
            )
        actor = factory()
        actor.ref.queued_bytes = MailboxBytes(self.config.max_mailbox_bytes, self.queued_bytes)
        self._actors[slot] = actor
        self._live[kind] += 1
        self._started[kind] += 1
        self._all_stopped = trio.Event()
        self._nursery.start_soon(self._supervise, actor)
        return actor.ref

    async def ask(self, kind: str, key: str, factory: Callable[[], Actor],
                  message: Ask[Reply], gone: Gone | None = None) -> Reply:
        """Deliver ``message`` to the actor for (kind, key) and wait for its answer.

        The message is in the mailbox before a new actor starts loading, so the first caller
        of a cold key is answered first. Cancelling the caller only drops its answer.
        ``gone`` is :meth:`~actors.ref.ReplySlot.wait`'s.
        """
        try:
            return await self.ref(kind, key, factory).ask(message, gone)
        except ActorStopped:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down", retry_after=5) from None
            raise

    def send(self, kind: str, key: str, factory: Callable[[], Actor],
             message: Ask[Reply]) -> ReplySlot[Reply]:
        """Deliver ``message`` as :meth:`ask` does and return its reply slot at once.

        For a streamed ask, whose caller reads the pieces before awaiting the slot. Raises
        what :meth:`ref` and :meth:`ActorRef.send` raise, a stopped actor as ShuttingDown
        once draining began.
        """
        try:
            return self.ref(kind, key, factory).send(message)
        except ActorStopped:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down", retry_after=5) from None
            raise

    def find(self, kind: str, key: str) -> Actor | None:
        """The live actor for (kind, key), or None; for the service's own bookkeeping."""
        return self._actors.get((kind, key))

    async def _supervise(self, actor: Actor) -> None:
        try:
            await actor.run()
        except Exception:
            self._crashed_before[actor.kind] += 1
            log.exception("%s actor %s stopped on an error", actor.kind, actor.key[:8])
        finally:
            self._forget(actor)

    def _retire(self, slot: tuple[str, str], actor: Actor) -> None:
        """Forget the actor now and close its mailbox: it stops after what is queued."""
        del self._actors[slot]
        self._live[actor.kind] -= 1
        actor.stop()

    def _forget(self, actor: Actor) -> None:
        slot = (actor.kind, actor.key)
        if self._actors.get(slot) is actor:
            del self._actors[slot]
            self._live[actor.kind] -= 1
        self._stopped[actor.kind] += 1
        self._crashed_before[actor.kind] += actor.restarts
        self._abandoned_before[actor.kind] += actor.abandoned
        if not self._actors:
            self._all_stopped.set()

    def _evict_one(self) -> bool:
        for scanned, (slot, actor) in enumerate(self._actors.items()):
            if scanned >= _EVICTION_SCAN:
                break
            if actor.evictable() and actor.is_idle():
                self._retire(slot, actor)
                return True
        return False

    async def drain(self, drain_s: float) -> bool:
        """Take no new actors; let every actor finish what it has queued, for ``drain_s`` s.

        Returns True if all actors stopped in time. Cancels no one: the owner of the
        system's nursery cancels it afterwards.
        """
        self.accepting = False
        for actor in list(self._actors.values()):
            actor.stop()
        if not self._actors:
            return True
        with trio.move_on_after(drain_s):
            await self._all_stopped.wait()
        return not self._actors

    def live(self) -> int:
        """How many actors are live; never awaits."""
        return len(self._actors)

    def totals(self) -> ActorTotals:
        """Counts by kind, and the messages waiting in all mailboxes; never awaits.

        Walks the live actors once, reading two fields each (about 1 ms per 10,000); only
        busy actors are asked for their mailbox depth (a channel's ``statistics()`` costs
        some 2 us): an actor that is not busy waits for mail with an empty mailbox, or has
        just taken a message and not yet started it (so the total may lag by a moment).
        """
        crashed = Counter(self._crashed_before)
        abandoned = Counter(self._abandoned_before)
        depth = 0
        for actor in self._actors.values():
            if actor.busy:
                depth += actor.mailbox_depth()
            if actor.restarts:
                crashed[actor.kind] += actor.restarts
            if actor.abandoned:
                abandoned[actor.kind] += actor.abandoned
        return ActorTotals(
            live={kind: count for kind, count in sorted(self._live.items()) if count},
            started=dict(sorted(self._started.items())),
            stopped=dict(sorted(self._stopped.items())),
            crashed={kind: count for kind, count in sorted(crashed.items()) if count},
            mailbox_depth=depth,
            abandoned={kind: count for kind, count in sorted(abandoned.items()) if count},
            mailbox_bytes=self.queued_bytes.total,
        )

    def listing(self, *, kind: str | None = None, state: str | None = None,
                key: str | None = None, limit: int = 0) -> tuple[list[ActorStats], int]:
        """The ``limit`` most recently active actors that match, and how many matched.

        Stats are taken only of the actors shown, so ``limit=100`` over 10,000 actors stays
        a few milliseconds (an :class:`ActorStats` costs about 10 us). Never awaits.
        """
        if key is not None:
            kinds = [kind] if kind is not None else list(self._started)
            matching = [actor for name in kinds if (actor := self._actors.get((name, key)))]
        elif kind is not None:
            matching = [actor for (name, _), actor in self._actors.items() if name == kind]
        else:
            matching = list(self._actors.values())
        if state is not None:
            matching = [actor for actor in matching if actor.state == state]
        shown = nlargest(limit, matching, key=attrgetter("last_active_order")) if limit else []
        return [actor.stats() for actor in shown], len(matching)
