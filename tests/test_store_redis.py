"""The Redis store beyond the shared contract: TTLs as Redis reports them, key names and hash
tags, Redis stopping, hanging and restarting, and ``open_store`` choosing the backend.

TTLs are read with PTTL, never waited for. Tests that stop Redis run their own redis-server.
"""

from __future__ import annotations

import re

import pytest
import trio

from actors.config import ConfigError, build_settings
from actors.store import JobRecord, MemoryStore, SessionSnapshot, StoreUnavailable, open_store
from actors.store.redis import RedisStore, open_redis_store

from .redis_servers import (
    SHARED_REDIS_URL,
    delete_prefix,
    fresh_prefix,
    own_redis_server,
    shared_redis_store,
)

HOUR_MS = 3_600_000


async def pttl(store: RedisStore, key: str) -> int:
    return await store.client.pttl(key)


async def test_session_keys_get_the_session_ttl_and_each_turn_refreshes_it() -> None:
    async with shared_redis_store(session_ttl_s=3600) as store:
        version_key, messages_key = store.session_keys("s1")
        await store.create_session("s1")
        assert HOUR_MS - 60_000 < await pttl(store, version_key) <= HOUR_MS
        await store.append_turn("s1", "q", "a")
        for key in (version_key, messages_key):
            await store.client.pexpire(key, 5_000)  # as if most of the hour had gone by
        await store.append_turn("s1", "q2", "a2")
        for key in (version_key, messages_key):
            assert HOUR_MS - 60_000 < await pttl(store, key) <= HOUR_MS
        await store.client.pexpire(version_key, 5_000)
        await store.create_session("s1")  # creating it again counts as use too
        assert await pttl(store, version_key) > HOUR_MS - 60_000


async def test_sessions_without_a_ttl_never_expire() -> None:
    async with shared_redis_store(session_ttl_s=None) as store:
        await store.append_turn("s1", "q", "a")
        assert [await pttl(store, key) for key in store.session_keys("s1")] == [-1, -1]


async def test_a_job_expires_after_its_ttl_and_none_means_never() -> None:
    async with shared_redis_store() as store:
        await store.save_job(JobRecord("t1", "processing", "m", "now"), ttl_s=90)
        assert 89_000 < await pttl(store, store.job_key("t1")) <= 90_000
        await store.save_job(JobRecord("t1", "completed", "m", "later"), ttl_s=None)
        assert await pttl(store, store.job_key("t1")) == -1


async def test_an_idempotency_key_expires_after_its_ttl_and_a_losing_claim_keeps_it() -> None:
    async with shared_redis_store() as store:
        assert await store.claim_idempotency_key("k", "f", "t1", ttl_s=30) is None
        assert 29_000 < await pttl(store, store.idempotency_key("k")) <= 30_000
        await store.client.pexpire(store.idempotency_key("k"), 5_000)
        assert await store.claim_idempotency_key("k", "g", "t2", ttl_s=30) == ("t1", "f")
        assert await pttl(store, store.idempotency_key("k")) <= 5_000


async def test_every_key_is_under_the_prefix_and_carries_its_ids_hash_tag() -> None:
    async with shared_redis_store(session_ttl_s=3600) as store:
        await store.create_session("s-1")
        await store.append_turn("s-1", "q", "a")
        await store.append_turn("s-2", "q", "a")
        await store.save_job(JobRecord("t-1", "queued", "m", "now"), ttl_s=60)
        await store.claim_idempotency_key("idem-1", "f", "t-1", ttl_s=60)
        keys = {key async for key in store.client.scan_iter(match=store.prefix + "*")}
    pattern = re.compile(re.escape(store.prefix) + r"(session|job|idempotency):\{([^{}]+)\}(.*)")
    tags = {}
    for key in keys:
        match = pattern.fullmatch(key)
        assert match is not None, key
        tags[key] = (match[1], match[2], match[3])
    assert sorted(tags.values()) == [
        ("idempotency", "idem-1", ""), ("job", "t-1", ""),
        ("session", "s-1", ":messages"), ("session", "s-1", ":version"),
        ("session", "s-2", ":messages"), ("session", "s-2", ":version"),
    ]


async def test_a_reopened_store_sees_the_sessions_jobs_and_keys_written_before() -> None:
    prefix = fresh_prefix()
    async with shared_redis_store(prefix=prefix):  # only deletes the prefix at the end
        async with open_redis_store(SHARED_REDIS_URL, prefix=prefix, session_ttl_s=3600) as first:
            version = await first.append_turn("s1", "q", "a")
            await first.save_job(JobRecord("t1", "completed", "m", "now", response="r"), ttl_s=60)
            await first.claim_idempotency_key("k", "f", "t1", ttl_s=60)
        assert await first.ping() is False  # closed on exit
        async with open_redis_store(SHARED_REDIS_URL, prefix=prefix, session_ttl_s=3600) as second:
            assert await second.load_session("s1") == SessionSnapshot(
                [("user", "q"), ("assistant", "a")], version)
            job = await second.load_job("t1")
            assert job is not None
            assert job.response == "r"
            assert await second.claim_idempotency_key("k", "g", "t2", ttl_s=60) == ("t1", "f")


async def test_ping_is_false_while_redis_is_down_and_the_store_recovers_when_it_is_back(
) -> None:
    async with own_redis_server() as server, \
            open_redis_store(server.url, session_ttl_s=3600, timeout_s=1) as store:
        await store.append_turn("s1", "q", "a")
        assert await store.ping() is True
        await server.kill()
        with trio.fail_after(5):
            assert await store.ping() is False
            with pytest.raises(StoreUnavailable, match=r"Redis at 127\.0\.0\.1:\d+"):
                await store.append_turn("s1", "lost", "lost")
            with pytest.raises(StoreUnavailable):
                await store.load_history("s1")
        await server.start()  # an empty Redis again: nothing was persisted
        assert await store.ping() is True
        await store.append_turn("s1", "after", "restart")
        assert await store.load_history("s1") == [("user", "after"), ("assistant", "restart")]


async def test_a_redis_that_forgot_the_stores_scripts_is_taught_them_again() -> None:
    async with own_redis_server() as server, open_redis_store(server.url) as store:
        await store.append_turn("s1", "q", "a")
        await store.claim_idempotency_key("k", "f", "t1", ttl_s=60)
        await store.client.script_flush()
        await store.create_session("s2")
        version = await store.append_turn("s1", "q2", "a2")
        assert (await store.load_session("s1")).version == version
        assert await store.claim_idempotency_key("k", "g", "t2", ttl_s=60) == ("t1", "f")


async def test_a_store_opened_while_redis_is_down_starts_and_connects_later() -> None:
    async with own_redis_server() as server:
        await server.kill()
        async with open_redis_store(server.url, timeout_s=1) as store:
            assert await store.ping() is False
            await server.start()
            assert await store.ping() is True
            await store.create_session("s1")
            assert await store.session_exists("s1")


async def test_a_redis_that_hangs_makes_calls_fail_within_the_timeout() -> None:
    async with own_redis_server() as server, \
            open_redis_store(server.url, timeout_s=0.3) as store:
        await store.create_session("s1")
        server.pause()
        try:
            with trio.fail_after(5):  # a guard: without timeouts the call would hang here
                with pytest.raises(StoreUnavailable, match="TimeoutError"):
                    await store.load_history("s1")
                assert await store.ping() is False
        finally:
            server.resume()
        assert await store.ping() is True


async def test_calls_after_close_raise_store_unavailable() -> None:
    async with shared_redis_store() as store:
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.load_job("t1")
        assert await store.ping() is False


# open_store and the [store] settings


async def test_open_store_gives_the_memory_store_by_default() -> None:
    async with open_store(build_settings({}, environ={})) as store:
        assert isinstance(store, MemoryStore)


async def test_open_store_gives_a_redis_store_with_the_configured_prefix_and_ttl() -> None:
    prefix = fresh_prefix()
    settings = build_settings(
        {"store": {"backend": "redis", "redis_url": SHARED_REDIS_URL, "prefix": prefix},
         "sessions": {"ttl_s": 1000}},
        environ={},
    )
    async with open_store(settings) as store:
        assert isinstance(store, RedisStore)
        try:
            await store.create_session("s1")
            assert store.session_keys("s1")[0].startswith(prefix + "session:{s1}")
            assert 990_000 < await pttl(store, store.session_keys("s1")[0]) <= 1_000_000
        finally:
            await delete_prefix(store, prefix)
    assert await store.ping() is False


async def test_open_store_starts_even_when_redis_is_down(caplog: pytest.LogCaptureFixture,
                                                         ) -> None:
    async with own_redis_server() as server:
        await server.kill()
        settings = build_settings(
            {"store": {"backend": "redis", "redis_url": server.url, "timeout_s": 1}}, environ={})
        async with open_store(settings) as store:
            assert await store.ping() is False
    assert "store.redis_url: Redis at 127.0.0.1" in caplog.text


def test_the_store_backend_can_be_chosen_from_the_environment() -> None:
    settings = build_settings({}, environ={"ACTORCHAT_STORE__BACKEND": "redis",
                                           "ACTORCHAT_STORE__PREFIX": "app1:"})
    assert (settings.store.backend, settings.store.prefix) == ("redis", "app1:")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379", "127.0.0.1:6379", "redis://", "redis://host:port/0",
    "redis://host/name", "unix://",
])
def test_a_bad_redis_url_is_refused_naming_the_key(url: str) -> None:
    with pytest.raises(ConfigError, match=r"store\.redis_url: "):
        build_settings({"store": {"redis_url": url}}, environ={})


def test_a_redis_url_password_never_appears_in_the_refusal() -> None:
    with pytest.raises(ConfigError) as refused:
        build_settings({"store": {"redis_url": "redis://:s3cret@host:bad/0"}}, environ={})
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "rediss://user:pw@redis.example:6380/2", "redis://localhost",
    "unix:///run/redis.sock?db=1",
])
def test_good_redis_urls_are_accepted(url: str) -> None:
    assert build_settings({"store": {"redis_url": url}}, environ={}).store.redis_url == url


def test_a_prefix_with_braces_is_refused_as_it_would_break_the_hash_tags() -> None:
    with pytest.raises(ConfigError, match=r"store\.prefix: .*\{"):
        build_settings({"store": {"prefix": "app{1}:"}}, environ={})


def test_an_unknown_backend_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"store\.backend: "):
        build_settings({"store": {"backend": "postgres"}}, environ={})
