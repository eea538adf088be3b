"""Job lifecycles on Trio's mock clock: expiry, max duration, the queue, cancelling, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors.config import build_settings
from actors.errors import JobNotFound, JobQueueFull, TooManyActors
from actors.lifetime import given_upstream, open_chat_service
from actors.service import ChatService
from actors.store import JobRecord, MemoryStore, Store

from .fakes import HangingUpstream, ScriptedUpstream


def settings(actors: dict[str, Any] | None = None, **jobs: Any) -> Any:
    return build_settings({"jobs": jobs, "actors": actors or {}, "server": {"drain_s": 5},
                           "upstream": {"timeout_s": 1000, "max_retry_s": 1000}}, environ={})


@asynccontextmanager
async def service_with(upstream: Any, store: Store | None = None,
                       **jobs: Any) -> AsyncIterator[ChatService]:
    async with open_chat_service(settings(**jobs), open_upstream=given_upstream(upstream),
                                 store=store or MemoryStore()) as service:
        yield service


async def test_a_result_is_readable_for_result_ttl_then_gone(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with service_with(ScriptedUpstream(), result_ttl_s=600) as service:
        record, _ = await service.submit_job("hi", "m", 0.7)
        done = await service.job(record.trace_id, wait_s=5)
        assert done.status == "completed"
        assert done.response == "re: hi (2)"
        await trio.testing.wait_all_tasks_blocked()
        assert service.stats(kind="job").matched == 0  # the actor has stopped
        await trio.sleep(599)
        assert (await service.job(record.trace_id)).status == "completed"
        await trio.sleep(2)
        with pytest.raises(JobNotFound):
            await service.job(record.trace_id)


async def test_a_job_over_max_duration_is_cancelled_and_fails_with_a_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with service_with(HangingUpstream(), max_duration_s=30) as service:
        record, _ = await service.submit_job("hang", "m", 0.7)
        started = trio.current_time()
        processing = await service.job(record.trace_id, wait_s=29)
        assert processing.status == "processing"
        done = await service.job(record.trace_id, wait_s=30)
        assert done.status == "failed"
        assert done.error == {"type": "timeout", "message": done.error["message"]}
        assert "max_duration_s" in done.error["message"]
        assert 30 <= trio.current_time() - started < 31
        assert service.stats().upstream.in_flight == 0


async def test_queued_jobs_start_in_arrival_order(autojump_clock: trio.abc.Clock) -> None:
    upstream = ScriptedUpstream()
    async with service_with(upstream, max_running=1, max_queued=10) as service:
        records = [(await service.submit_job(f"job {n}", "m", 0.7))[0] for n in range(8)]
        assert [r.status for r in records] == ["processing"] + ["queued"] * 7
        assert (service.stats().jobs.running, service.stats().jobs.queued) == (1, 7)
        for record in records:
            assert (await service.job(record.trace_id, wait_s=60)).status == "completed"
    assert [r.messages[-1]["content"] for r in upstream.requests] == [
        f"job {n}" for n in range(8)
    ]


class SlowWritingStore(MemoryStore):
    """Every job write and key claim takes a moment, as over a network."""

    async def save_job(self, record: JobRecord, ttl_s: float | None) -> None:
        await trio.sleep(0.01)
        await super().save_job(record, ttl_s)

    async def claim_idempotency_key(self, *args: Any) -> Any:
        await trio.sleep(0.01)
        return await super().claim_idempotency_key(*args)


async def test_concurrent_submissions_never_admit_more_than_running_plus_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    admitted: list[str] = []
    refused: list[JobQueueFull] = []
    async with service_with(HangingUpstream(), SlowWritingStore(), max_running=2,
                            max_queued=3) as service:

        async def submit(n: int) -> None:
            try:
                record, _ = await service.submit_job(f"job {n}", "m", 0.7,
                                                     idempotency_key=f"k{n}")
                admitted.append(record.status)
            except JobQueueFull as error:
                refused.append(error)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(submit, n)
        assert sorted(admitted) == ["processing"] * 2 + ["queued"] * 3
        assert len(refused) == 15
        assert (service.stats().jobs.running, service.stats().jobs.queued) == (2, 3)


async def test_a_queued_job_can_be_cancelled_before_it_starts(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = HangingUpstream()
    async with service_with(upstream, max_running=1) as service:
        first, _ = await service.submit_job("blocks the slot", "m", 0.7)
        queued, _ = await service.submit_job("waits", "m", 0.7)
        await trio.testing.wait_all_tasks_blocked()
        cancelled = await service.cancel_job(queued.trace_id)
        assert cancelled.status == "cancelled"
        assert cancelled.error == {"type": "cancelled", "message": "cancelled by the client"}
        assert upstream.calls == 1
        assert (await service.cancel_job(first.trace_id)).status == "cancelled"
        third, _ = await service.submit_job("runs once the line is clear", "m", 0.7)
        await trio.sleep(1)
        assert upstream.calls == 2
        assert service.stats().jobs.by_status["cancelled"] == 2
        await service.cancel_job(third.trace_id)


async def test_shutdown_past_the_drain_time_marks_running_jobs_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with service_with(HangingUpstream(), store, max_running=1) as service:
        running, _ = await service.submit_job("never ends", "m", 0.7)
        queued, _ = await service.submit_job("never starts", "m", 0.7)
        await trio.testing.wait_all_tasks_blocked()
    for trace_id in (running.trace_id, queued.trace_id):
        failed = await store.load_job(trace_id)
        assert failed is not None
        assert failed.status == "failed"
        assert failed.error["type"] == "shutting_down"


class BrokenUpstream:
    """Raises a plain bug, not an upstream error."""

    async def complete(self, request: Any) -> Any:
        raise KeyError("choices")


async def test_a_job_that_hits_a_bug_still_ends_failed(autojump_clock: trio.abc.Clock) -> None:
    async with service_with(BrokenUpstream()) as service:
        record, _ = await service.submit_job("hi", "m", 0.7)
        done = await service.job(record.trace_id, wait_s=5)
    assert done.status == "failed"
    assert done.error == {"type": "internal_error",
                          "message": "the job failed inside the server"}
    assert "choices" not in str(done.error)


async def test_a_job_refused_for_lack_of_actors_leaves_no_trace_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_chat_service(settings(actors={"max_actors": 1}),
                                 open_upstream=given_upstream(HangingUpstream())) as service:
        first, _ = await service.submit_job("holds the only actor", "m", 0.7)
        with pytest.raises(TooManyActors):
            await service.submit_job("refused", "m", 0.7, idempotency_key="k", fingerprint="f")
        assert service.stats().jobs.queued == 0
        await service.cancel_job(first.trace_id)
        await trio.testing.wait_all_tasks_blocked()
        retried, replayed = await service.submit_job("refused", "m", 0.7, idempotency_key="k",
                                                     fingerprint="f")
        assert replayed is False  # the refused attempt claimed nothing
        assert retried.status == "processing"
        assert service.stats(kind="job", key=retried.trace_id).matched == 1
        await service.cancel_job(retried.trace_id)


async def test_a_replayed_key_returns_the_first_job_and_runs_nothing_more(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = ScriptedUpstream()
    async with service_with(upstream) as service:
        first, replayed = await service.submit_job("once", "m", 0.7, idempotency_key="k",
                                                   fingerprint="f")
        assert not replayed
        await service.job(first.trace_id, wait_s=5)
        again, replayed = await service.submit_job("once", "m", 0.7, idempotency_key="k",
                                                   fingerprint="f")
        assert replayed
        assert (again.trace_id, again.status) == (first.trace_id, "completed")
        await trio.testing.wait_all_tasks_blocked()
        assert len(upstream.requests) == 1
        assert service.stats().jobs == type(service.stats().jobs)(
            running=0, queued=0, by_status={"completed": 1, "failed": 0, "cancelled": 0}
        )
