"""Job lifecycles on Trio's mock clock: expiry, max duration, FIFO queueing, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from actors.config import build_settings
from actors.errors import JobNotFound
from actors.service import ChatService
from actors.store import MemoryStore

from .fakes import HangingUpstream, ScriptedUpstream


def settings(**jobs: Any):
    return build_settings({"jobs": jobs, "upstream": {"timeout_s": 1000, "max_retry_s": 1000}},
                          environ={})


async def running(service: ChatService, nursery: trio.Nursery) -> ChatService:
    return await nursery.start(service.run)


@pytest.fixture
async def nursery_() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_a_result_is_readable_for_result_ttl_then_gone(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    service = await running(
        ChatService(settings(result_ttl_s=600), MemoryStore(), ScriptedUpstream(), "fake"),
        nursery_,
    )
    record, _ = await service.submit_job("hi", "m", 0.7)
    done = await service.job(record.trace_id, wait_s=5)
    assert done.status == "completed"
    assert done.response == "re: hi (2)"
    await trio.testing.wait_all_tasks_blocked()
    assert service.system.find("job", record.trace_id) is None  # the actor has stopped
    await trio.sleep(599)
    assert (await service.job(record.trace_id)).status == "completed"
    await trio.sleep(2)
    with pytest.raises(JobNotFound):
        await service.job(record.trace_id)


async def test_a_job_over_max_duration_is_cancelled_and_fails_with_a_timeout(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    upstream = HangingUpstream()
    service = await running(
        ChatService(settings(max_duration_s=30), MemoryStore(), upstream, "fake"), nursery_
    )
    record, _ = await service.submit_job("hang", "m", 0.7)
    started = trio.current_time()
    processing = await service.job(record.trace_id, wait_s=29)
    assert processing.status == "processing"
    done = await service.job(record.trace_id, wait_s=30)
    assert done.status == "failed"
    assert done.error == {"type": "timeout", "message": done.error["message"]}
    assert "max_duration_s" in done.error["message"]
    assert 30 <= trio.current_time() - started < 31
    assert service.supervisor.in_flight == 0


async def test_queued_jobs_start_in_arrival_order(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    upstream = ScriptedUpstream()
    service = await running(
        ChatService(settings(max_running=1, max_queued=10), MemoryStore(), upstream, "fake"),
        nursery_,
    )
    records = [(await service.submit_job(f"job {n}", "m", 0.7))[0] for n in range(8)]
    assert [r.status for r in records] == ["processing"] + ["queued"] * 7
    for record in records:
        assert (await service.job(record.trace_id, wait_s=60)).status == "completed"
    assert [r.messages[-1]["content"] for r in upstream.requests] == [
        f"job {n}" for n in range(8)
    ]


async def test_a_queued_job_can_be_cancelled_before_it_starts(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    upstream = HangingUpstream()
    service = await running(
        ChatService(settings(max_running=1), MemoryStore(), upstream, "fake"), nursery_
    )
    first, _ = await service.submit_job("blocks the slot", "m", 0.7)
    queued, _ = await service.submit_job("waits", "m", 0.7)
    await trio.testing.wait_all_tasks_blocked()
    assert (await service.cancel_job(queued.trace_id)).status == "cancelled"
    assert upstream.calls == 1
    assert (await service.cancel_job(first.trace_id)).status == "cancelled"


async def test_shutdown_past_the_drain_time_marks_running_jobs_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        service = await running(ChatService(settings(), store, HangingUpstream(), "fake"),
                                nursery)
        record, _ = await service.submit_job("never ends", "m", 0.7)
        await trio.testing.wait_all_tasks_blocked()
        assert await service.drain(5) is False
        nursery.cancel_scope.cancel()
    failed = await store.load_job(record.trace_id)
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error["type"] == "shutting_down"


class BrokenUpstream:
    """Raises a plain bug, not an upstream error."""

    async def complete(self, request):
        raise KeyError("choices")


async def test_a_job_that_hits_a_bug_still_ends_failed(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    service = await running(ChatService(settings(), MemoryStore(), BrokenUpstream(), "fake"),
                            nursery_)
    record, _ = await service.submit_job("hi", "m", 0.7)
    done = await service.job(record.trace_id, wait_s=5)
    assert done.status == "failed"
    assert done.error == {"type": "internal_error",
                          "message": "the job failed inside the server"}
    assert "choices" not in str(done.error)


async def test_a_job_refused_for_lack_of_actors_leaves_no_trace_behind(
    autojump_clock: trio.abc.Clock, nursery_: trio.Nursery
) -> None:
    from actors.errors import TooManyActors

    tight = build_settings({"actors": {"max_actors": 1}}, environ={})
    service = await running(ChatService(tight, MemoryStore(), HangingUpstream(), "fake"),
                            nursery_)
    first, _ = await service.submit_job("holds the only actor", "m", 0.7)
    with pytest.raises(TooManyActors):
        await service.submit_job("refused", "m", 0.7, idempotency_key="k", fingerprint="f")
    await service.cancel_job(first.trace_id)
    await trio.testing.wait_all_tasks_blocked()
    retried, replayed = await service.submit_job("refused", "m", 0.7, idempotency_key="k",
                                                 fingerprint="f")
    assert replayed is False  # the refused attempt claimed nothing
    assert retried.status == "processing"
    assert service.system.find("job", retried.trace_id) is not None
