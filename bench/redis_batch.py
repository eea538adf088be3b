"""``python -m bench.redis_batch``: CPU per Redis command, alone and in pipelines, and per
store turn with and without auto-pipelining (``actors/store/redis_batch.py`` quotes these).

Needs the Redis of ``ACTORCHAT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); uses
keys under a fresh prefix and deletes them. Figures are this process's CPU time
(``time.process_time``), best of three rounds.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable

import coredis
import trio

from actors.store.redis import open_redis_store

URL = os.environ.get("ACTORCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = 3


async def best_us(run: Callable[[], Awaitable[None]], operations: int) -> float:
    """Best of ``ROUNDS`` rounds of ``run()``, in microseconds of CPU per operation."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        await run()
        best = min(best, (time.process_time() - started) / operations * 1e6)
    return best


async def pipelines(client: coredis.Redis[str], key: str) -> None:
    await client.set(key, "v")
    sha = await client.script_load("return redis.call('GET', KEYS[1])")

    async def direct() -> None:
        for _ in range(1000):
            await client.evalsha(sha, [key], [])

    print(f"EVALSHA alone          {await best_us(direct, 1000):6.0f} us")
    for size in (1, 4, 8, 16):
        async def batched(size: int = size) -> None:
            for _ in range(1000 // size):
                async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    for _ in range(size):
                        pipe.evalsha(sha, [key], [])

        print(f"pipeline of {size:2}         {await best_us(batched, 1000 // size):6.0f} us")
    await client.delete([key])


async def turns(concurrency: int, max_batch: int) -> float:
    """CPU per turn's store work (append_turn) for ``concurrency`` sessions at once."""
    prefix = f"bench-{secrets.token_hex(4)}:"
    async with open_redis_store(URL, prefix=prefix) as store:
        store._batch._max_batch = max_batch  # 1: one command per round trip, as without batching
        sessions = [f"s{index}" for index in range(concurrency)]
        for session in sessions:
            await store.create_session(session)

        async def one_round() -> None:
            async def session_turns(session: str) -> None:
                for _ in range(10):
                    await store.append_turn(session, "question", "answer")

            async with trio.open_nursery() as nursery:
                for session in sessions:
                    nursery.start_soon(session_turns, session)

        result = await best_us(one_round, concurrency * 10)
        keys = [key async for key in store.client.scan_iter(match=prefix + "*")]
        await store.client.delete(keys)
        return result


async def main() -> None:
    client = coredis.Redis.from_url(URL, decode_responses=True)
    async with client:
        await pipelines(client, f"bench-{secrets.token_hex(4)}:k")
    for concurrency in (1, 64):
        alone, batched = await turns(concurrency, 1), await turns(concurrency, 64)
        print(f"append_turn, {concurrency:2} sessions at once: {alone:4.0f} us one per round "
              f"trip, {batched:4.0f} us auto-pipelined")


if __name__ == "__main__":
    trio.run(main)
