"""The actor system: a registry of live actors and the supervisor nursery that runs them.

Actors are virtual, as in Orleans: the first message for a key starts its actor from the
store; an actor idle for ``actors.idle_timeout_s`` stops and is forgotten; the next message
starts it again. At most one actor per (kind, key) is live in this process.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import trio

from .actor import Actor, ActorRef, ActorStats
from .config import ActorsConfig
from .errors import ActorStopped, ShuttingDown, TooManyActors

log = logging.getLogger("actorchat.actors")

# How many of the least recently used actors to look at for one to evict at the cap.
_EVICTION_SCAN = 64


class ActorSystem:
    """Finds or starts actors by key and runs them all in one supervisor nursery.

    Open it with ``await nursery.start(system.run)``; cancelling that nursery stops every
    actor. ``ask`` raises what the actor answers with, plus :class:`TooManyActors` at the cap
    and :class:`ShuttingDown` once :meth:`drain` has begun.
    """

    def __init__(self, config: ActorsConfig) -> None:
        self.config = config
        self._actors: OrderedDict[tuple[str, str], Actor] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.accepting = True
        self.started_total: Counter[str] = Counter()
        self.stopped_total: Counter[str] = Counter()
        # Unexpected errors in actors, by kind: restarted from the store, or stopped.
        self.crashed_total: Counter[str] = Counter()
        self._all_stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[ActorSystem] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Open the supervisor nursery and keep it open until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await self._sweep_idle()

    async def _sweep_idle(self) -> None:
        """Stop actors quiet for ``idle_timeout_s``; looks every tenth of that timeout.

        Like Orleans' activation collector: one periodic scan instead of a timer per actor,
        so a message costs no deadline. An actor stops between 1.0 and 1.1 times the timeout
        after its last message. No checkpoint between the idleness check and closing the
        mailbox, so no message can slip in between (trio is cooperative).
        """
        timeout = self.config.idle_timeout_s
        while True:
            await trio.sleep(timeout / 10)
            horizon = trio.current_time() - timeout
            for slot, actor in list(self._actors.items()):
                if actor.quiet_since <= horizon and actor.is_idle():
                    del self._actors[slot]
                    actor.close_mailbox()

    def find(self, kind: str, key: str) -> Actor | None:
        """The live actor for (kind, key), or None."""
        return self._actors.get((kind, key))

    async def get_or_start(self, kind: str, key: str, factory: Callable[[], Actor]) -> ActorRef:
        """The ref of the live actor for (kind, key), starting it with ``factory`` if needed.

        The new actor is registered before it loads, so concurrent callers share it; their
        messages wait in its mailbox until it has loaded. Raises what ``load`` raises.
        """
        actor, new = self._find_or_register(kind, key, factory)
        if new:
            await self._start(actor)
        return actor.ref

    async def ask(self, kind: str, key: str, factory: Callable[[], Actor], message: Any) -> Any:
        """Deliver ``message`` to the actor for (kind, key) and wait for its answer.

        The message is in the mailbox before a new actor starts loading, so the first caller
        of a cold key is answered first, not after callers who came during the load.
        """
        actor, new = self._find_or_register(kind, key, factory)
        try:
            reply = actor.ref.send(message)
        except ActorStopped:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down", retry_after=5) from None
            raise
        if new:
            await self._start(actor)
        return await reply.wait()

    def _find_or_register(
        self, kind: str, key: str, factory: Callable[[], Actor]
    ) -> tuple[Actor, bool]:
        """The live actor for (kind, key) and False, or a new registered one and True."""
        slot = (kind, key)
        actor = self._actors.get(slot)
        if actor is not None:
            self._actors.move_to_end(slot)
            return actor, False
        if not self.accepting or self._nursery is None:
            raise ShuttingDown("the server is shutting down", retry_after=5)
        if len(self._actors) >= self.config.max_actors and not self._evict_one():
            raise TooManyActors(
                f"{len(self._actors)} actors are live, the limit is {self.config.max_actors}",
                retry_after=1,
            )
        actor = factory()
        actor.on_crash = self._count_crash
        self._actors[slot] = actor
        self.started_total[kind] += 1
        self._all_stopped = trio.Event()
        return actor, True

    def _count_crash(self, actor: Actor) -> None:
        self.crashed_total[actor.kind] += 1

    async def _start(self, actor: Actor) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._supervise, actor)

    async def _supervise(self, actor: Actor, *, task_status: trio.TaskStatus[ActorRef]) -> None:
        try:
            await actor.run(task_status=task_status)
        except Exception:
            self.crashed_total[actor.kind] += 1
            if not actor.loaded:
                raise  # goes to whoever started it, not to the nursery
            log.exception("%s actor %s stopped on an error", actor.kind, actor.key[:8])
        finally:
            self._forget(actor)

    def _forget(self, actor: Actor) -> None:
        slot = (actor.kind, actor.key)
        if self._actors.get(slot) is actor:
            del self._actors[slot]
        self.stopped_total[actor.kind] += 1
        if not self._actors:
            self._all_stopped.set()

    def _evict_one(self) -> bool:
        for scanned, (slot, actor) in enumerate(self._actors.items()):
            if scanned >= _EVICTION_SCAN:
                break
            if actor.is_idle() and actor.evictable():
                del self._actors[slot]
                actor.close_mailbox()
                return True
        return False

    async def drain(self, drain_s: float) -> bool:
        """Take no new actors; let every actor finish what it has queued, for ``drain_s`` s.

        Returns True if all actors stopped in time. Does not cancel anyone: the caller
        cancels the supervisor nursery afterwards.
        """
        self.accepting = False
        for actor in list(self._actors.values()):
            actor.close_mailbox()
        if not self._actors:
            return True
        with trio.move_on_after(drain_s):
            await self._all_stopped.wait()
        return not self._actors

    def live(self) -> int:
        return len(self._actors)

    def live_by_kind(self) -> Counter[str]:
        return Counter(kind for kind, _ in self._actors)

    def actors(self, kind: str | None = None) -> list[Actor]:
        """The live actors (of one kind, if given), least recently used first; never awaits.

        Cheaper than :meth:`snapshot` when only some of them will be described.
        """
        return [
            actor for (actor_kind, _), actor in self._actors.items()
            if kind is None or actor_kind == kind
        ]

    def snapshot(self, kind: str | None = None) -> list[ActorStats]:
        """Stats of every live actor (optionally of one kind); never awaits."""
        return [actor.stats() for actor in self.actors(kind)]
