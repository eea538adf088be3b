"""Session leases over a real Redis: one turn of a session at a time across services sharing
it, the fencing token refusing a stale holder's write, release only by the holder, renewal,
and the two round trips of a turn. Each test has its own key prefix, deleted afterwards.

Lease expiry and renewal run on Redis's clock, so those tests use short real TTLs and assert
outcomes (held or not, written or not), never durations.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from actors.config import Settings, build_settings
from actors.errors import SessionBusy
from actors.lifetime import given_upstream, open_chat_service
from actors.service import ChatService
from actors.store.redis import RedisStore, open_redis_store
from actors.store.redis_lease import RedisLeases

from .fakes import ScriptedUpstream
from .redis_servers import SHARED_REDIS_URL, fresh_prefix, own_redis_server, shared_redis_store


def settings(**sessions: float) -> Settings:
    return build_settings({"chat": {"system_prompt": "be brief"},
                           "sessions": sessions}, environ={})


@asynccontextmanager
async def service_on(store: RedisStore, **sessions: float) -> AsyncIterator[ChatService]:
    async with open_chat_service(settings(**sessions),
                                 open_upstream=given_upstream(ScriptedUpstream(), "fake"),
                                 store=store) as service:
        yield service


async def test_concurrent_turns_of_one_session_on_two_services_are_serialised_and_all_kept(
) -> None:
    prefix = fresh_prefix()
    async with shared_redis_store(prefix) as first_store, \
            open_redis_store(SHARED_REDIS_URL, prefix=prefix) as second_store, \
            service_on(first_store) as first, service_on(second_store) as second:
        await first_store.create_session("s")
        replies: dict[int, str] = {}

        async def turn(number: int) -> None:
            service = first if number % 2 else second
            replies[number] = (await service.chat("s", f"p{number}", "m", 0.7)).response

        async with trio.open_nursery() as nursery:
            for number in range(40):
                nursery.start_soon(turn, number)
        history = await first.history("s")
        assert history == await second.history("s")
    # Each turn saw the whole history before it: system, 2k earlier messages, its prompt.
    seen = sorted(int(re.search(r"\((\d+)\)$", reply).group(1)) for reply in replies.values())
    assert seen == [2 * k + 2 for k in range(40)]
    assert [role for role, _ in history] == ["user", "assistant"] * 40
    prompts = [text for role, text in history if role == "user"]
    assert sorted(prompts) == sorted(f"p{number}" for number in range(40))
    for index in range(0, 80, 2):
        assert history[index + 1][1].startswith(f"re: {history[index][1]} (")


async def test_a_turn_that_cannot_take_the_lease_in_time_is_refused_busy() -> None:
    async with shared_redis_store() as store, service_on(store, lease_wait_s=0.2) as service:
        await store.create_session("s")
        other = RedisLeases(store, ttl_s=10, wait_s=0)
        async with other.hold("s"):
            with pytest.raises(SessionBusy, match="another instance") as refused:
                await service.chat("s", "hello", "m", 0.7)
            assert refused.value.retry_after == 1.0
        assert (await service.chat("s", "hello", "m", 0.7)).response == "re: hello (2)"
        leases = service.stats().leases  # what /metrics shows as actorchat_session_leases
    assert (leases["waits"], leases["refused"]) == (1, 1)


async def test_a_holder_whose_lease_was_taken_over_cannot_write_nor_release_the_new_one(
) -> None:
    async with shared_redis_store() as store:
        leases = RedisLeases(store, ttl_s=10, wait_s=0)
        lease_key = leases.keys("s")[0]
        async with leases.hold("s") as stale:
            await store.client.delete([lease_key])  # as if it had expired
            async with leases.hold("s") as current:
                with pytest.raises(SessionBusy, match="not recorded"):
                    await stale.record("late", "answer")
                assert await store.load_history("s") is None
                assert await store.client.get(lease_key) == current.token
                assert await current.record("q", "a") > 0
        assert await store.load_history("s") == [("user", "q"), ("assistant", "a")]
        assert await store.client.get(lease_key) is None


async def test_leaving_the_block_releases_only_the_holders_own_lease() -> None:
    async with shared_redis_store() as store:
        leases = RedisLeases(store, ttl_s=10, wait_s=0)
        lease_key = leases.keys("s")[0]
        async with leases.hold("s"):
            assert await store.client.get(lease_key) is not None
        assert await store.client.get(lease_key) is None
        async with leases.hold("s"):
            await store.client.set(lease_key, "someone else")
        assert await store.client.get(lease_key) == "someone else"


async def test_a_lease_held_past_its_ttl_is_renewed_and_its_write_accepted() -> None:
    async with shared_redis_store() as store:
        leases = RedisLeases(store, ttl_s=0.3, wait_s=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(leases.run)
            async with leases.hold("s") as lease:
                await trio.sleep(1.0)  # three TTLs: only renewal keeps it
                assert await store.client.get(leases.keys("s")[0]) == lease.token
                await lease.record("q", "a")
            nursery.cancel_scope.cancel()
        assert leases.renewals >= 2


async def commands_sent_during(port: int, action: Callable[[], Awaitable[object]]) -> list[str]:
    """The commands clients sent Redis while ``action`` ran (MONITOR; not those of scripts)."""
    monitor = await trio.open_tcp_stream("127.0.0.1", port)
    async with monitor:
        await monitor.send_all(b"MONITOR\r\n")
        assert (await monitor.receive_some(64)).startswith(b"+OK")
        await action()
        seen = b""
        with trio.move_on_after(0.3):  # collecting what MONITOR already sent
            while True:
                seen += await monitor.receive_some(65536)
    lines = seen.decode().splitlines()
    return [line.split("] ", 1)[1].split(" ")[0] for line in lines if "lua]" not in line]


async def test_a_turn_of_a_cached_session_costs_two_redis_round_trips() -> None:
    async with own_redis_server() as redis, \
            open_redis_store(redis.url, prefix="t:") as store, service_on(store) as service:
        await store.create_session("s")
        await service.chat("s", "one", "m", 0.7)  # starts the actor: loads, loads scripts
        sent = await commands_sent_during(
            redis.port, lambda: service.chat("s", "two", "m", 0.7))
        assert sent == ['"EVALSHA"', '"EVALSHA"']


async def test_a_turn_waiting_for_a_held_lease_backs_off_instead_of_polling_tightly() -> None:
    async with own_redis_server() as redis, open_redis_store(redis.url, prefix="t:") as store:
        holder = RedisLeases(store, ttl_s=10, wait_s=0)
        waiter = RedisLeases(store, ttl_s=10, wait_s=10)

        async def hold_then_wait() -> None:
            async with trio.open_nursery() as nursery:
                async with holder.hold("s"):
                    nursery.start_soon(take_when_free)
                    await trio.sleep(0.5)

        async def take_when_free() -> None:
            async with waiter.hold("s") as lease:
                await lease.record("q", "a")

        sent = await commands_sent_during(redis.port, hold_then_wait)
        # 0.5 s of waiting: 5, 10, 20, 40, 80, then 100 ms apart (jittered) -- about a dozen
        # tries at most, where a tight loop would make thousands.
        assert 3 <= sent.count('"EVALSHA"') <= 20
        assert waiter.waits == 1
        assert await store.load_history("s") == [("user", "q"), ("assistant", "a")]


async def test_a_fenced_turn_caps_the_stored_history_as_the_plain_append_does() -> None:
    async with shared_redis_store(max_history_messages=4) as store, \
            service_on(store, max_history_messages=4) as service:
        await store.create_session("s")
        for number in range(3):
            await service.chat("s", f"p{number}", "m", 0.7)
        stored = (await store.load_session("s")).history
    # The oldest whole turn went: two turns of two messages are kept, the newest last.
    assert [text for role, text in stored if role == "user"] == ["p1", "p2"]
    assert [role for role, _ in stored] == ["user", "assistant"] * 2
