"""The actor core with no HTTP at all: mailboxes, ordering, crashes, idling, the cap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing

from actors.actor import Actor
from actors.config import ActorsConfig
from actors.errors import (
    ActorCrashed,
    ActorStopped,
    SessionBusy,
    ShuttingDown,
    TooManyActors,
)
from actors.ref import Ask, ReplySlot
from actors.system import ActorSystem


@dataclass(frozen=True, slots=True)
class Echo(Ask[str]):
    """'boom' raises, 'wait' blocks until the actor's release is set, others echo."""

    value: object


class Recorder(Actor):
    """Records what it handles."""

    kind = "recorder"
    loads: dict[str, int] = {}

    def __init__(self, key: str, mailbox_size: int = 8, fail_load: bool = False) -> None:
        super().__init__(key, mailbox_size)
        self.seen: list[Any] = []
        self.release = trio.Event()
        self.fail_load = fail_load

    async def load(self) -> None:
        if self.fail_load:
            raise OSError("store unreachable")
        Recorder.loads[self.key] = Recorder.loads.get(self.key, 0) + 1

    async def handle(self, message: Echo) -> str:
        if message.value == "boom":
            raise RuntimeError("unexpected")
        if message.value == "wait":
            await self.release.wait()
        await trio.lowlevel.checkpoint()
        self.seen.append(message.value)
        return f"echo {message.value}"


@pytest.fixture
async def system() -> Any:
    async with trio.open_nursery() as nursery:
        actors = ActorSystem(ActorsConfig(mailbox_size=8, idle_timeout_s=30, max_actors=3))
        await nursery.start(actors.run)
        yield actors
        nursery.cancel_scope.cancel()


def ask(system: ActorSystem, actor: Recorder, value: object) -> Any:
    """``system.ask`` for a Recorder made beforehand (its factory hands back ``actor``)."""
    return system.ask("recorder", actor.key, lambda: actor, Echo(value))


async def test_asks_are_answered_one_at_a_time_in_arrival_order(system: ActorSystem) -> None:
    actor = Recorder("a", mailbox_size=64)
    ref = system.ref("recorder", "a", lambda: actor)
    answers: dict[int, str] = {}

    async def one(n: int) -> None:
        answers[n] = await ref.ask(Echo(n))

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(one, n)
            await trio.lowlevel.checkpoint()  # let each ask enqueue before the next
    assert actor.seen == list(range(50))
    assert answers == {n: f"echo {n}" for n in range(50)}


async def test_one_key_has_one_actor_even_when_started_concurrently(system: ActorSystem) -> None:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder("same"))
        return made[-1]

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(system.ask, "recorder", "same", factory, Echo(n))
    assert len(made) == 1
    assert sorted(made[0].seen) == [0, 1, 2, 3, 4]


async def test_a_full_mailbox_is_refused_at_once(system: ActorSystem) -> None:
    actor = Recorder("busy", mailbox_size=2)
    ref = system.ref("recorder", "busy", lambda: actor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.ask, Echo("wait"))
        await trio.testing.wait_all_tasks_blocked()  # "wait" is being handled
        ref.tell(Echo("queued 1"))
        ref.tell(Echo("queued 2"))
        with pytest.raises(SessionBusy) as refused:
            await ref.ask(Echo("one too many"))
        assert refused.value.retry_after == 1
        actor.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.seen == ["wait", "queued 1", "queued 2"]


def test_a_reply_slot_takes_exactly_one_answer() -> None:
    slot: ReplySlot[str] = ReplySlot()
    slot.set(outcome.Value("first"))
    with pytest.raises(RuntimeError, match="exactly one"):
        slot.set(outcome.Value("second"))


async def test_a_crash_answers_the_asker_and_the_actor_restarts_from_the_store(
    system: ActorSystem,
) -> None:
    actor = Recorder("crashy")
    ref = system.ref("recorder", "crashy", lambda: actor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.ask, Echo("wait"))
        await trio.testing.wait_all_tasks_blocked()
        loads_before = Recorder.loads["crashy"]
        failures: list[BaseException] = []

        async def doomed() -> None:
            try:
                await ref.ask(Echo("boom"))
            except ActorCrashed as error:
                failures.append(error)

        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ref.ask, Echo("after the crash"))  # queued behind it: not lost
        await trio.testing.wait_all_tasks_blocked()
        actor.release.set()
    assert len(failures) == 1
    assert actor.seen == ["wait", "after the crash"]
    assert (actor.restarts, actor.errors) == (1, 1)
    assert Recorder.loads["crashy"] == loads_before + 1
    assert system.find("recorder", "crashy") is actor
    assert system.totals().crashed == {"recorder": 1}


async def test_an_actor_that_cannot_load_refuses_its_callers_and_is_not_kept(
    system: ActorSystem,
) -> None:
    with pytest.raises(ActorCrashed, match="could not load"):
        await ask(system, Recorder("broken", fail_load=True), 1)
    await trio.testing.wait_all_tasks_blocked()
    assert system.find("recorder", "broken") is None
    assert await ask(system, Recorder("broken"), 2) == "echo 2"
    assert system.totals().crashed == {"recorder": 1}


async def test_idle_actors_stop_and_start_again_on_the_next_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        system = ActorSystem(ActorsConfig(idle_timeout_s=60))
        await nursery.start(system.run)
        assert await ask(system, Recorder("k"), 1) == "echo 1"
        await trio.sleep(59)
        assert system.live() == 1
        await trio.sleep(7)  # the sweeper looks every tenth of the timeout
        assert system.live() == 0
        assert system.totals().stopped == {"recorder": 1}
        assert await ask(system, Recorder("k"), 2) == "echo 2"
        assert system.totals().started == {"recorder": 2}
        nursery.cancel_scope.cancel()


async def test_the_cap_evicts_an_idle_actor_or_refuses(system: ActorSystem) -> None:
    for key in ("a", "b", "c"):
        await ask(system, Recorder(key), key)
    await ask(system, Recorder("d"), "d")  # evicts "a", the least recently used
    assert system.find("recorder", "a") is None
    assert system.live() == 3
    busy = [system.find("recorder", key) for key in ("b", "c", "d")]
    async with trio.open_nursery() as nursery:
        for actor in busy:
            nursery.start_soon(actor.ref.ask, Echo("wait"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TooManyActors):
            await ask(system, Recorder("e"), "e")
        for actor in busy:
            actor.release.set()


async def test_drain_finishes_queued_work_then_refuses_new_actors(system: ActorSystem) -> None:
    actor = Recorder("draining")
    ref = system.ref("recorder", "draining", lambda: actor)
    answers: list[str] = []
    async with trio.open_nursery() as nursery:

        async def one(value: str) -> None:
            answers.append(await ref.ask(Echo(value)))

        nursery.start_soon(one, "wait")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(one, "queued")
        await trio.testing.wait_all_tasks_blocked()

        async def release_soon() -> None:
            await trio.lowlevel.checkpoint()
            actor.release.set()

        nursery.start_soon(release_soon)
        assert await system.drain(5) is True
    assert answers == ["echo wait", "echo queued"]
    with pytest.raises(ShuttingDown):
        await ask(system, Recorder("new"), 1)
    with pytest.raises(ActorStopped):
        await ref.ask(Echo("too late"))


async def test_cancelling_the_system_answers_every_ask_with_shutting_down() -> None:
    actor = Recorder("cut")
    answers: list[BaseException] = []

    async def one(ref: Any, value: str) -> None:
        try:
            await ref.ask(Echo(value))
        except ShuttingDown as error:
            answers.append(error)

    async with trio.open_nursery() as callers:
        async with trio.open_nursery() as nursery:
            system = ActorSystem(ActorsConfig())
            await nursery.start(system.run)
            ref = system.ref("recorder", "cut", lambda: actor)
            callers.start_soon(one, ref, "wait")
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(one, ref, "queued")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert len(answers) == 2


class SlowLoader(Recorder):
    """Loads only when its gate is set, so callers pile up on a cold key."""

    def __init__(self, key: str, gate: trio.Event) -> None:
        super().__init__(key)
        self.gate = gate

    async def load(self) -> None:
        await self.gate.wait()


async def test_the_first_caller_of_a_cold_key_is_answered_first(system: ActorSystem) -> None:
    actor = SlowLoader("cold", trio.Event())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, system, actor, "first")
        await trio.testing.wait_all_tasks_blocked()  # the first caller waits for the load
        nursery.start_soon(ask, system, actor, "second")
        await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
    assert actor.seen == ["first", "second"]


async def test_a_first_caller_that_leaves_while_the_actor_loads_leaves_the_others_answered(
    system: ActorSystem,
) -> None:
    actor = SlowLoader("cold", trio.Event())
    answers: list[str] = []

    async def second() -> None:
        answers.append(await ask(system, actor, "second"))

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first:
            nursery.start_soon(second)
            first.cancel()
            await ask(system, actor, "first")  # starts the actor, then goes away
        await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
    assert answers == ["echo second"]
    assert actor.seen == ["first", "second"]  # its message is still handled, in its turn


async def test_an_actor_with_a_message_on_its_way_is_not_evicted(system: ActorSystem) -> None:
    # max_actors is 3: two busy actors and one that has just been sent a message
    busy = [Recorder("b1"), Recorder("b2")]
    async with trio.open_nursery() as nursery:
        for actor in busy:
            ref = system.ref("recorder", actor.key, lambda actor=actor: actor)
            nursery.start_soon(ref.ask, Echo("wait"))
        target = Recorder("target")
        ref = system.ref("recorder", "target", lambda: target)
        await trio.testing.wait_all_tasks_blocked()
        reply = ref.send(Echo("in flight"))  # handed to the waiting actor, in no buffer yet
        with pytest.raises(TooManyActors):  # nothing is idle: nothing may be evicted
            await ask(system, Recorder("new"), "x")
        assert await reply.wait() == "echo in flight"
        assert system.find("recorder", "target") is target
        for actor in busy:
            actor.release.set()


async def test_an_actor_still_loading_is_not_evicted(system: ActorSystem) -> None:
    loading = [SlowLoader(key, trio.Event()) for key in ("l1", "l2", "l3")]
    for actor in loading:
        system.ref("recorder", actor.key, lambda actor=actor: actor)
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(TooManyActors):
        await ask(system, Recorder("new"), "x")
    for actor in loading:
        actor.gate.set()


async def test_the_listing_shows_the_most_recently_active_first_and_counts_matches(
    system: ActorSystem,
) -> None:
    for key in ("a", "b", "c"):
        await ask(system, Recorder(key), key)
    listed, matched = system.listing(limit=2)
    assert [stats.key for stats in listed] == ["c", "b"]
    assert matched == 3
    listed, matched = system.listing(key="a")
    assert (listed, matched) == ([], 1)  # limit 0: counted, not described
    listed, _ = system.listing(key="a", kind="recorder", limit=1)
    assert listed[0].handled == 1
    assert listed[0].state == "idle"
    assert system.listing(state="busy", limit=5) == ([], 0)
