"""Auto-pipelining (``actors/store/redis_batch.py``) on the shared Redis: commands issued at
the same moment share one pipeline, each keeps its own reply or error, and a lone command is
not held back."""

from __future__ import annotations

import coredis
import pytest
import trio
from coredis.exceptions import ResponseError

from actors.store.redis_batch import AutoPipeline

from .redis_servers import SHARED_REDIS_URL, fresh_prefix


async def open_client() -> coredis.Redis[str]:
    return coredis.Redis.from_url(SHARED_REDIS_URL, decode_responses=True)


async def test_commands_issued_together_share_one_pipeline_and_keep_their_own_replies(
) -> None:
    prefix = fresh_prefix()
    client = await open_client()
    async with client, trio.open_nursery() as nursery:
        batch = AutoPipeline(client, timeout_s=2, max_in_flight=1)
        await nursery.start(batch.run)
        await client.set(prefix + "text", "hello")
        replies: dict[int, object] = {}

        async def incr(index: int) -> None:
            replies[index] = await batch.call(lambda redis: redis.incr(prefix + "count"))

        async with trio.open_nursery() as callers:
            for index in range(20):
                callers.start_soon(incr, index)
        # The 20 callers ran in one scheduling round, before the sender woke: one pipeline.
        assert (batch.batches, batch.commands) == (1, 20)
        assert sorted(replies.values()) == list(range(1, 21))  # type: ignore[type-var]

        async def wrong_type() -> None:
            with pytest.raises(ResponseError, match="wrong kind of value"):
                await batch.call(lambda redis: redis.incr(prefix + "list"))

        await client.rpush(prefix + "list", ["x"])
        got: list[object] = []

        async def read() -> None:
            got.append(await batch.call(lambda redis: redis.get(prefix + "text")))

        async with trio.open_nursery() as callers:
            callers.start_soon(wrong_type)
            callers.start_soon(read)
            callers.start_soon(read)
        assert got == ["hello", "hello"]  # the failing command's neighbours are answered

        await client.delete([prefix + "text", prefix + "count", prefix + "list"])
        nursery.cancel_scope.cancel()


async def test_a_lone_command_goes_at_once_and_a_cancelled_caller_leaves_the_rest() -> None:
    prefix = fresh_prefix()
    client = await open_client()
    async with client, trio.open_nursery() as nursery:
        batch = AutoPipeline(client, timeout_s=2, max_in_flight=1)  # batches in order
        await nursery.start(batch.run)
        with trio.fail_after(5):
            assert await batch.call(lambda redis: redis.set(prefix + "k", "v"))
        assert (batch.batches, batch.commands) == (1, 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await batch.call(lambda redis: redis.set(prefix + "k", "w"))
        # Cancelled while waiting: the command was still sent; the next one sees it.
        assert await batch.call(lambda redis: redis.get(prefix + "k")) == "w"
        await client.delete([prefix + "k"])
        nursery.cancel_scope.cancel()


async def test_calls_fail_when_the_pipeline_is_not_running() -> None:
    client = await open_client()
    async with client:
        with pytest.raises(RuntimeError, match="not running"):
            await AutoPipeline(client, timeout_s=1).call(lambda redis: redis.ping())
