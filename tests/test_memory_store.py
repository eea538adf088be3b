"""The in-process store on Trio's mock clock: expiry of jobs, idempotency keys and sessions."""

from __future__ import annotations

import trio

from actors.store import JobRecord, MemoryStore


async def test_memory_store_expires_jobs_and_idempotency_keys(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    await store.save_job(JobRecord("t", "completed", "m", "now"), ttl_s=10)
    assert await store.claim_idempotency_key("k", "f", "t", ttl_s=10) is None
    assert await store.claim_idempotency_key("k", "g", "u", ttl_s=10) == ("t", "f")
    await trio.sleep(9.9)
    assert (await store.load_job("t")).status == "completed"
    await trio.sleep(0.2)
    assert await store.load_job("t") is None
    assert await store.claim_idempotency_key("k", "g", "u", ttl_s=10) is None


async def test_a_session_untouched_for_its_ttl_is_forgotten(
    autojump_clock: trio.abc.Clock,
) -> None:
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
