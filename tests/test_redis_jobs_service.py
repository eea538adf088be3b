"""The Redis job stream inside one process: ChatService over a RedisStore on the shared
Redis (a fresh prefix per test), with fake upstreams. Real Redis means the real clock: the
only waits on it are guards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actors.config import build_settings
from actors.errors import IdempotencyConflict, StoreUnavailable
from actors.lifetime import given_upstream, open_chat_service
from actors.service import ChatService
from actors.store.redis import RedisStore, open_redis_store

from .fakes import HangingUpstream, ScriptedUpstream
from .redis_servers import SHARED_REDIS_URL, own_redis_server, shared_redis_store


def settings(prefix: str, **jobs: Any) -> Any:
    return build_settings({"jobs": jobs, "server": {"drain_s": 0.2},
                           "store": {"backend": "redis", "prefix": prefix},
                           "upstream": {"timeout_s": 1000, "max_retry_s": 1000}}, environ={})


@asynccontextmanager
async def service_over(store: RedisStore, upstream: Any, **jobs: Any,
                       ) -> AsyncIterator[ChatService]:
    async with open_chat_service(settings(store.prefix, **jobs),
                                 open_upstream=given_upstream(upstream), store=store) as service:
        yield service


async def test_an_idempotency_key_replays_the_job_and_refuses_another_body() -> None:
    async with shared_redis_store() as store, service_over(store, ScriptedUpstream()) as service:
        first, replayed = await service.submit_job("hi", "m", 0.7, idempotency_key="k",
                                                   fingerprint="body-1")
        assert (first.status, replayed) == ("queued", False)
        again, replayed = await service.submit_job("hi", "m", 0.7, idempotency_key="k",
                                                   fingerprint="body-1")
        assert (again.trace_id, replayed) == (first.trace_id, True)
        with pytest.raises(IdempotencyConflict):
            await service.submit_job("other", "m", 0.7, idempotency_key="k",
                                     fingerprint="body-2")
        done = await service.job(first.trace_id, wait_s=10)
        assert (done.status, done.response) == ("completed", "re: hi (2)")


async def test_a_job_cancelled_while_running_ends_cancelled_and_leaves_the_stream() -> None:
    async with shared_redis_store() as store, service_over(store, HangingUpstream()) as service:
        record, _ = await service.submit_job("hang", "m", 0.7)
        for _ in range(500):  # the consumer's claim, in another task: 5 s at most
            if (await service.job(record.trace_id)).status == "processing":
                break
            await trio.sleep(0.01)
        cancelled = await service.cancel_job(record.trace_id)
        assert cancelled.status == "cancelled"
        stream = await service.stream_stats()
        assert stream is not None
        assert (stream.entries, stream.pending, stream.running_here) == (0, 0, 0)


async def test_a_job_cut_off_by_shutdown_stays_processing_and_pending() -> None:
    async with shared_redis_store() as store:  # the test's view; each service closes its own
        async with open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own, \
                service_over(own, HangingUpstream()) as service:
            record, _ = await service.submit_job("hang", "m", 0.7)
            for _ in range(500):  # the consumer's claim, in another task: 5 s at most
                if (await service.job(record.trace_id)).status == "processing":
                    break
                await trio.sleep(0.01)
            instance = service.instance_id
        # drain_s passed: the job was cancelled without a "failed" record, unacknowledged.
        left = await store.load_job(record.trace_id)
        assert left is not None
        assert left.status == "processing"
        pending = await store.client.xpending(f"{store.prefix}jobs", "runners")
        assert dict(pending.consumers) == {instance: 1}
        # Another instance with a short claim_idle_s finishes it.
        async with open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own, \
                service_over(own, ScriptedUpstream(), claim_idle_s=0.3) as heir:
            done = await heir.job(record.trace_id, wait_s=10)
            assert (done.status, done.response) == ("completed", "re: hang (2)")
            assert heir.stats().redis == {"jobs": {"claims": 0, "reclaims": 1},
                                          "rate_gate": {"budget_round_trips": 0},
                                          "redis_errors": {"jobs": 0, "rate_gate": 0}}


async def test_jobs_fail_fast_while_redis_is_down_and_run_again_once_it_is_back() -> None:
    async with own_redis_server() as redis, \
            open_redis_store(redis.url, prefix="down:", timeout_s=0.5) as store, \
            service_over(store, ScriptedUpstream()) as service:
        before, _ = await service.submit_job("before", "m", 0.7)
        assert (await service.job(before.trace_id, wait_s=10)).status == "completed"
        await redis.kill()
        with pytest.raises(StoreUnavailable):
            await service.submit_job("while down", "m", 0.7)
        await trio.sleep(1.5)  # the consumer meets the outage (a guard, nothing measured)
        await redis.start()  # empty: no persistence, so the stream and its group are gone
        for _ in range(100):  # the client reconnects on its next command: 5 s at most
            try:
                after, _ = await service.submit_job("after", "m", 0.7)
                break
            except StoreUnavailable:
                await trio.sleep(0.05)
        done = await service.job(after.trace_id, wait_s=10)
        assert (done.status, done.response) == ("completed", "re: after (2)")
        assert service.stats().redis["redis_errors"]["jobs"] > 0


async def test_a_submitter_cancelled_after_admission_still_gets_its_job_run() -> None:
    async with shared_redis_store() as store, service_over(store, ScriptedUpstream()) as service:
        records = service._cluster.records  # type: ignore[union-attr]
        save = records.save
        leaving = trio.CancelScope()
        written: list[str] = []

        async def save_then_leave(record: Any, **options: Any) -> None:
            records.save = save  # only the submission's first write
            await save(record, **options)
            written.append(record.trace_id)
            leaving.cancel("the client went away")

        records.save = save_then_leave
        with leaving:
            await service.submit_job("bye", "m", 0.7)
        done = await service.job(written[0], wait_s=10)
        assert (done.status, done.response) == ("completed", "re: bye (2)")


async def test_a_job_cancelled_while_queued_never_calls_the_upstream() -> None:
    upstream = HangingUpstream()
    async with shared_redis_store() as store, \
            service_over(store, upstream, max_running=1) as service:
        running, _ = await service.submit_job("first", "m", 0.7)
        waiting, _ = await service.submit_job("second", "m", 0.7)
        for _ in range(500):  # the consumer's claim, in another task: 5 s at most
            if upstream.calls == 1:
                break
            await trio.sleep(0.01)
        assert (await service.cancel_job(waiting.trace_id)).status == "cancelled"
        assert (await service.cancel_job(running.trace_id)).status == "cancelled"
        for _ in range(500):  # the freed slot takes the cancelled entry and drops it
            stream = await service.stream_stats()
            assert stream is not None
            if stream.entries == 0:
                break
            await trio.sleep(0.01)
        assert stream.entries == 0
        assert upstream.calls == 1
        assert (await service.job(waiting.trace_id)).status == "cancelled"


class _GatedUpstream(ScriptedUpstream):
    """Answers once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def complete(self, request: Any) -> Any:
        await self.release.wait()
        return await super().complete(request)


async def test_events_of_a_job_run_elsewhere_follow_its_notices_not_a_poll() -> None:
    async with shared_redis_store() as store:
        upstream = _GatedUpstream()
        async with open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own_a, \
                service_over(own_a, upstream) as runner:
            record, _ = await runner.submit_job("hello", "m", 0.7)
            for _ in range(500):  # the consumer's claim, in another task: 5 s at most
                if (await runner.job(record.trace_id)).status == "processing":
                    break
                await trio.sleep(0.01)
            async with open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own_b, \
                    service_over(own_b, ScriptedUpstream()) as other:
                loads = 0
                load_job = own_b.load_job

                async def counted_load(trace_id: str) -> Any:
                    nonlocal loads
                    loads += 1
                    return await load_job(trace_id)

                own_b.load_job = counted_load  # type: ignore[method-assign]
                listener = await other.job_events(record.trace_id)
                events = []
                loads_while_unchanged = -1

                async def release_later() -> None:
                    # Nothing changes for 1.5 s while the listener waits: one that polled (as
                    # it did, every second) would have read the record again meanwhile.
                    nonlocal loads_while_unchanged
                    await trio.sleep(1.5)
                    loads_while_unchanged = loads
                    upstream.release.set()

                with trio.fail_after(10):  # a guard: the notice comes in milliseconds
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(release_later)
                        async for event in listener:
                            events.append(event)
                listener.close()
        statuses = [getattr(event, "status", None) or event.record.status for event in events]
        assert statuses == ["processing", "completed"]
        assert (loads_while_unchanged, loads) == (1, 2)  # at the start, at the notice of the end
