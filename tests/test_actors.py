"""The actor core with no HTTP at all: mailboxes, ordering, crashes, idling, the cap."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors.actor import Actor
from actors.config import ActorsConfig, UpstreamConfig
from actors.errors import (
    ActorCrashed,
    ActorStopped,
    SessionBusy,
    ShuttingDown,
    TooManyActors,
    UpstreamUnavailable,
)
from actors.session import ChatTurn, GetHistory, SessionActor
from actors.store import MemoryStore
from actors.supervisor import UpstreamSupervisor
from actors.system import ActorSystem

from .fakes import ScriptedUpstream


class Recorder(Actor):
    """Records messages; 'boom' raises, 'wait' blocks until released, others echo."""

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

    async def handle(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("unexpected")
        if message == "wait":
            await self.release.wait()
        await trio.lowlevel.checkpoint()
        self.seen.append(message)
        return f"echo {message}"


@pytest.fixture
async def system() -> Any:
    async with trio.open_nursery() as nursery:
        actors = ActorSystem(ActorsConfig(mailbox_size=8, idle_timeout_s=30, max_actors=3))
        await nursery.start(actors.run)
        yield actors
        nursery.cancel_scope.cancel()


async def test_asks_are_answered_one_at_a_time_in_arrival_order(system: ActorSystem) -> None:
    actor = Recorder("a", mailbox_size=64)
    ref = await system.get_or_start("recorder", "a", lambda: actor)
    answers: dict[int, str] = {}

    async def ask(n: int) -> None:
        answers[n] = await ref.ask(n)

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(ask, n)
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
            nursery.start_soon(system.ask, "recorder", "same", factory, n)
    assert len(made) == 1
    assert sorted(made[0].seen) == [0, 1, 2, 3, 4]


async def test_a_full_mailbox_is_refused_at_once(system: ActorSystem) -> None:
    actor = Recorder("busy", mailbox_size=2)
    ref = await system.get_or_start("recorder", "busy", lambda: actor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.ask, "wait")
        await trio.testing.wait_all_tasks_blocked()  # "wait" is being handled
        ref.tell("queued 1")
        ref.tell("queued 2")
        with pytest.raises(SessionBusy) as refused:
            await ref.ask("one too many")
        assert refused.value.retry_after == 1
        actor.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.seen == ["wait", "queued 1", "queued 2"]


async def test_a_crash_answers_the_asker_and_the_actor_restarts_from_the_store(
    system: ActorSystem,
) -> None:
    actor = Recorder("crashy")
    ref = await system.get_or_start("recorder", "crashy", lambda: actor)
    loads_before = Recorder.loads["crashy"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.ask, "wait")
        await trio.testing.wait_all_tasks_blocked()
        failures: list[BaseException] = []

        async def doomed() -> None:
            try:
                await ref.ask("boom")
            except ActorCrashed as error:
                failures.append(error)

        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ref.ask, "after the crash")  # queued behind the crash: not lost
        await trio.testing.wait_all_tasks_blocked()
        actor.release.set()
    assert len(failures) == 1
    assert actor.seen == ["wait", "after the crash"]
    assert actor.restarts == 1
    assert actor.errors == 1
    assert Recorder.loads["crashy"] == loads_before + 1
    assert system.find("recorder", "crashy") is actor


async def test_an_actor_that_cannot_load_refuses_its_callers_and_is_not_kept(
    system: ActorSystem,
) -> None:
    with pytest.raises(OSError, match="store unreachable"):
        await system.ask("recorder", "broken", lambda: Recorder("broken", fail_load=True), 1)
    assert system.find("recorder", "broken") is None
    assert await system.ask("recorder", "broken", lambda: Recorder("broken"), 2) == "echo 2"


async def test_idle_actors_stop_and_start_again_on_the_next_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        system = ActorSystem(ActorsConfig(idle_timeout_s=60))
        await nursery.start(system.run)
        assert await system.ask("recorder", "k", lambda: Recorder("k"), 1) == "echo 1"
        await trio.sleep(59)
        assert system.live() == 1
        await trio.sleep(7)  # the sweeper looks every tenth of the timeout
        assert system.live() == 0
        assert system.stopped_total["recorder"] == 1
        assert await system.ask("recorder", "k", lambda: Recorder("k"), 2) == "echo 2"
        assert system.started_total["recorder"] == 2
        nursery.cancel_scope.cancel()


async def test_the_cap_evicts_an_idle_actor_or_refuses(system: ActorSystem) -> None:
    for key in ("a", "b", "c"):
        await system.ask("recorder", key, lambda key=key: Recorder(key), key)
    await system.ask("recorder", "d", lambda: Recorder("d"), "d")  # evicts "a", the oldest
    assert system.find("recorder", "a") is None
    assert system.live() == 3
    busy = [system.find("recorder", key) for key in ("b", "c", "d")]
    async with trio.open_nursery() as nursery:
        for actor in busy:
            nursery.start_soon(actor.ref.ask, "wait")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TooManyActors):
            await system.ask("recorder", "e", lambda: Recorder("e"), "e")
        for actor in busy:
            actor.release.set()


async def test_drain_finishes_queued_work_then_refuses_new_actors(system: ActorSystem) -> None:
    actor = Recorder("draining")
    ref = await system.get_or_start("recorder", "draining", lambda: actor)
    answers: list[str] = []
    async with trio.open_nursery() as nursery:

        async def ask(message: str) -> None:
            answers.append(await ref.ask(message))

        nursery.start_soon(ask, "wait")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask, "queued")
        await trio.testing.wait_all_tasks_blocked()
        async def release_soon() -> None:
            await trio.lowlevel.checkpoint()
            actor.release.set()

        nursery.start_soon(release_soon)
        assert await system.drain(5) is True
    assert answers == ["echo wait", "echo queued"]
    with pytest.raises(ShuttingDown):
        await system.ask("recorder", "new", lambda: Recorder("new"), 1)
    with pytest.raises(ActorStopped):
        await ref.ask("too late")


async def test_a_failed_turn_leaves_the_history_as_it_was(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    await store.create_session("s")
    upstream = ScriptedUpstream()
    supervisor = UpstreamSupervisor(upstream, UpstreamConfig(max_attempts=1))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        system = ActorSystem(ActorsConfig())
        await nursery.start(system.run)

        def factory() -> SessionActor:
            return SessionActor("s", mailbox_size=4, store=store, supervisor=supervisor,
                                system_prompt="be brief")

        reply = await system.ask("session", "s", factory, ChatTurn("one", "m", 0.7))
        assert reply.response == "re: one (2)"
        upstream.errors.append(UpstreamUnavailable("upstream 503"))
        with pytest.raises(UpstreamUnavailable):
            await system.ask("session", "s", factory, ChatTurn("lost", "m", 0.7))
        assert await system.ask("session", "s", factory, GetHistory()) == [
            ("user", "one"), ("assistant", "re: one (2)")
        ]
        assert await store.load_history("s") == [("user", "one"), ("assistant", "re: one (2)")]
        reply = await system.ask("session", "s", factory, ChatTurn("two", "m", 0.7))
        assert reply.response == "re: two (4)"
        assert upstream.requests[-1].messages[0] == {"role": "system", "content": "be brief"}
        nursery.cancel_scope.cancel()


async def test_a_restarted_session_actor_reloads_its_history_from_the_store(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    await store.create_session("s")
    await store.append_turn("s", "earlier", "answer")
    supervisor = UpstreamSupervisor(ScriptedUpstream(), UpstreamConfig())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        system = ActorSystem(ActorsConfig(idle_timeout_s=5))
        await nursery.start(system.run)

        def factory() -> SessionActor:
            return SessionActor("s", mailbox_size=4, store=store, supervisor=supervisor,
                                system_prompt="")

        reply = await system.ask("session", "s", factory, ChatTurn("now", "m", 0.7))
        assert reply.response == "re: now (3)"
        await trio.sleep(10)
        assert system.live() == 0
        reply = await system.ask("session", "s", factory, ChatTurn("later", "m", 0.7))
        assert reply.response == "re: later (5)"
        nursery.cancel_scope.cancel()


async def test_memory_store_expires_jobs_and_idempotency_keys(
    autojump_clock: trio.abc.Clock,
) -> None:
    from actors.store import JobRecord

    store = MemoryStore()
    await store.save_job(JobRecord("t", "completed", "m", "now"), ttl_s=10)
    assert await store.claim_idempotency_key("k", "f", "t", ttl_s=10) is None
    assert await store.claim_idempotency_key("k", "g", "u", ttl_s=10) == ("t", "f")
    await trio.sleep(9.9)
    assert (await store.load_job("t")).status == "completed"
    await trio.sleep(0.2)
    assert await store.load_job("t") is None
    assert await store.claim_idempotency_key("k", "g", "u", ttl_s=10) is None


class SlowLoader(Recorder):
    """Loads only when released, so callers pile up on a cold key."""

    loaded_gate = None

    async def load(self) -> None:
        await self.loaded_gate.wait()


async def test_the_first_caller_of_a_cold_key_is_answered_first(system: ActorSystem) -> None:
    gate = trio.Event()
    actor = SlowLoader("cold")
    actor.loaded_gate = gate
    async with trio.open_nursery() as nursery:
        nursery.start_soon(system.ask, "recorder", "cold", lambda: actor, "first")
        await trio.testing.wait_all_tasks_blocked()  # the first caller waits for the load
        nursery.start_soon(system.ask, "recorder", "cold", lambda: actor, "second")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert actor.seen == ["first", "second"]


async def test_an_actor_with_a_message_on_its_way_is_not_evicted(system: ActorSystem) -> None:
    # max_actors is 3: two busy actors and one that has just been sent a message
    busy = [Recorder("b1"), Recorder("b2")]
    async with trio.open_nursery() as nursery:
        for actor in busy:
            ref = await system.get_or_start("recorder", actor.key, lambda actor=actor: actor)
            nursery.start_soon(ref.ask, "wait")
        target = Recorder("target")
        ref = await system.get_or_start("recorder", "target", lambda: target)
        await trio.testing.wait_all_tasks_blocked()
        reply = ref.send("in flight")  # handed to the waiting actor, in no buffer yet
        with pytest.raises(TooManyActors):  # nothing is idle: nothing may be evicted
            await system.ask("recorder", "new", lambda: Recorder("new"), "x")
        assert await reply.wait() == "echo in flight"
        assert system.find("recorder", "target") is target
        for actor in busy:
            actor.release.set()


async def test_a_session_untouched_for_its_ttl_is_forgotten(autojump_clock) -> None:
    store = MemoryStore(session_ttl_s=100)
    await store.create_session("old")
    await store.create_session("busy")
    await trio.sleep(60)
    await store.append_turn("busy", "hi", "hello")  # a turn keeps a session alive
    await trio.sleep(50)
    assert not await store.session_exists("old")
    assert await store.load_history("old") is None
    assert await store.load_history("busy") == [("user", "hi"), ("assistant", "hello")]
    await store.create_session("new")  # a write sweeps what has expired
    await trio.sleep(60)
    await store.create_session("newer")
    assert store.session_count() == 2  # "busy" expired at 160, swept by this write
