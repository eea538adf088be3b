"""The store contract, run on both backends: memory, and Redis under a fresh key prefix.

Redis-only matters (TTLs as Redis reports them, key names, Redis going away, restarts) are in
``test_store_redis.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from actors.store import JobRecord, MemoryStore, SessionSnapshot, Store

from .redis_servers import shared_redis_store


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(session_ttl_s=3600)
        return
    async with shared_redis_store(session_ttl_s=3600) as redis_store:
        yield redis_store


async def test_a_created_session_exists_with_an_empty_history(store: Store) -> None:
    await store.create_session("s1")
    assert await store.session_exists("s1")
    assert await store.load_history("s1") == []
    snapshot = await store.load_session("s1")
    assert snapshot.history == []
    assert snapshot.version == await store.session_version("s1") != 0


async def test_an_unknown_session_has_no_history_and_version_zero(store: Store) -> None:
    assert not await store.session_exists("nobody")
    assert await store.load_history("nobody") is None
    snapshot = await store.load_session("nobody")
    assert (snapshot.history, snapshot.version) == (None, 0)
    assert await store.session_version("nobody") == 0


async def test_turns_come_back_oldest_first_with_roles_and_exact_text(store: Store) -> None:
    await store.create_session("s1")
    turns = [("first: a colon", "line one\nline two"), ("", "ünïcødé ✓"), ("user:x", ":")]
    for user, assistant in turns:
        await store.append_turn("s1", user, assistant)
    expected = [message for user, assistant in turns
                for message in (("user", user), ("assistant", assistant))]
    assert await store.load_history("s1") == expected


async def test_an_append_to_an_unknown_session_creates_it(store: Store) -> None:
    version = await store.append_turn("new", "hi", "hello")
    assert await store.session_exists("new")
    assert await store.load_session("new") == SessionSnapshot(
        [("user", "hi"), ("assistant", "hello")], version)


async def test_concurrent_turns_on_one_session_are_each_kept_whole(store: Store) -> None:
    await store.create_session("s1")
    async with trio.open_nursery() as nursery:
        for number in range(30):
            nursery.start_soon(store.append_turn, "s1", f"q{number}", f"a{number}")
    history = await store.load_history("s1")
    assert history is not None
    assert len(history) == 60
    pairs = list(zip(history[::2], history[1::2], strict=True))
    assert all(user == ("user", "q" + answer[1][1:]) and answer[0] == "assistant"
               for user, answer in pairs)
    assert sorted(user[1] for user, _ in pairs) == sorted(f"q{n}" for n in range(30))


async def test_a_turn_whose_caller_is_cancelled_is_still_recorded_whole(store: Store) -> None:
    await store.create_session("s1")
    version = None
    with trio.CancelScope() as scope:
        scope.cancel()
        version = await store.append_turn("s1", "asked", "answered")
        await trio.lowlevel.checkpoint()  # where the caller sees its cancellation
    assert scope.cancelled_caught
    assert version == await store.session_version("s1")
    assert await store.load_history("s1") == [("user", "asked"), ("assistant", "answered")]


async def test_each_turn_changes_the_version_and_reads_agree_on_it(store: Store) -> None:
    await store.create_session("s1")
    versions = [await store.session_version("s1")]
    for number in range(3):
        versions.append(await store.append_turn("s1", f"q{number}", f"a{number}"))
        assert await store.session_version("s1") == versions[-1]
        assert (await store.load_session("s1")).version == versions[-1]
    assert versions == sorted(set(versions))


async def test_creating_an_existing_session_keeps_its_history_and_version(store: Store) -> None:
    version = await store.append_turn("s1", "q", "a")
    await store.create_session("s1")
    assert await store.load_session("s1") == SessionSnapshot(
        [("user", "q"), ("assistant", "a")], version)


async def test_delete_forgets_a_session_once_and_zeroes_its_version(store: Store) -> None:
    await store.append_turn("s1", "q", "a")
    assert await store.delete_session("s1") is True
    assert await store.delete_session("s1") is False
    assert not await store.session_exists("s1")
    assert await store.load_history("s1") is None
    assert await store.session_version("s1") == 0


async def test_a_session_deleted_and_recreated_does_not_repeat_its_versions(store: Store) -> None:
    await store.create_session("s1")
    before = [await store.session_version("s1"), await store.append_turn("s1", "q", "a")]
    await store.delete_session("s1")
    await store.create_session("s1")
    after = [await store.session_version("s1"), await store.append_turn("s1", "q", "a")]
    # the same history as before the delete, but a reader holding the old version must reload
    assert not set(before) & set(after)


async def test_a_job_record_round_trips_every_field(store: Store) -> None:
    full = JobRecord(
        trace_id="t1", status="completed", model="gpt-x", timestamp="2024-05-01T12:00:00Z",
        response="the answer: 42\nand more",
        usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        error={"type": "none", "message": "ünïcødé"},
        extra={"message": "question", "nested": {"list": [1, 2.5, None, True]}},
    )
    await store.save_job(full, ttl_s=60)
    assert await store.load_job("t1") == full
    bare = JobRecord(trace_id="t2", status="queued", model="m", timestamp="now")
    await store.save_job(bare, ttl_s=None)
    assert await store.load_job("t2") == bare
    assert await store.load_job("unknown") is None


async def test_a_saved_job_replaces_its_earlier_state(store: Store) -> None:
    await store.save_job(JobRecord("t1", "processing", "m", "t0"), ttl_s=60)
    await store.save_job(JobRecord("t1", "failed", "m", "t1", error={"type": "x"}), ttl_s=60)
    loaded = await store.load_job("t1")
    assert loaded is not None
    assert (loaded.status, loaded.error) == ("failed", {"type": "x"})


async def test_the_first_claim_of_an_idempotency_key_wins(store: Store) -> None:
    answers: dict[int, tuple[str, str] | None] = {}

    async def claim(number: int) -> None:
        answers[number] = await store.claim_idempotency_key(
            "key-1", f"fingerprint-{number}", f"trace-{number}", ttl_s=60)

    async with trio.open_nursery() as nursery:
        for number in range(20):
            nursery.start_soon(claim, number)
    winners = [number for number, answer in answers.items() if answer is None]
    assert len(winners) == 1
    winner = (f"trace-{winners[0]}", f"fingerprint-{winners[0]}")
    assert all(answer == winner for answer in answers.values() if answer is not None)
    assert await store.claim_idempotency_key("key-1", "other", "trace-x", ttl_s=60) == winner
    assert await store.claim_idempotency_key("key-2", "other", "trace-x", ttl_s=60) is None


async def test_ping_answers_true_while_the_store_is_up(store: Store) -> None:
    assert await store.ping() is True


async def test_a_turn_on_an_expired_memory_session_starts_a_new_history(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Redis drops expired keys itself; the memory store must not bring an old history back.
    store = MemoryStore(session_ttl_s=100)
    old_version = await store.append_turn("s1", "old", "turn")
    await trio.sleep(150)
    new_version = await store.append_turn("s1", "new", "turn")
    assert await store.load_history("s1") == [("user", "new"), ("assistant", "turn")]
    assert new_version != old_version
