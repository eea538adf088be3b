"""The consumer half of the Redis job stream: claim, run, acknowledge, reclaim.

See ``actors/redis_jobs.py`` for the whole design. One :class:`StreamConsumer` per instance
reads new entries while fewer than ``jobs.max_running`` jobs run here, runs each in a
JobActor, and acknowledges (XACK, XDEL) only once the job's record is final, announcing
``done:<trace_id>`` in the same pipeline. Every third of ``jobs.claim_idle_s`` it refreshes
the entries it runs (XCLAIM to itself), then claims entries idle for ``claim_idle_s``
(XAUTOCLAIM): their instance died or left them at shutdown.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from coredis import exceptions as redis_errors

from .errors import ShuttingDown, StoreUnavailable, TooManyActors
from .job import JobActor, RunJob
from .job_queue import RunSlot
from .store.base import JobRecord

if TYPE_CHECKING:
    from .redis_jobs import RedisJobs

log = logging.getLogger("actorchat.jobs.redis")

GROUP = "runners"
# How long one XREADGROUP blocks before asking again: Redis answers at once when a job
# arrives. At most half of store.timeout_s, as coredis applies that to a blocking read too
# (it gave TimeoutError after store.timeout_s when the block was longer).
_BLOCK_MS = 5000
# After a Redis error, a loop waits this long before it tries again.
_ERROR_PAUSE_S = 1.0
# Entries taken in one read or claim at most.
_BATCH = 16
REDIS_ERRORS = (redis_errors.RedisError, OSError, TimeoutError)


class StreamConsumer:
    """This instance's consumer (named by its instance ID) in the group ``runners``.

    ``run`` until cancelled: cancelling leaves the jobs it runs unacknowledged, for
    another instance. ``stop_claiming()`` stops taking new entries; running jobs go on.
    """

    def __init__(self, jobs: RedisJobs) -> None:
        self._jobs = jobs
        self.slots = trio.Semaphore(jobs.settings.jobs.max_running)
        self.claiming = trio.CancelScope()
        self.running: dict[str, str] = {}  # trace_id -> stream entry ID, run here now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Create the group if needed, then consume and reclaim until cancelled."""
        await self.ensure_group()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, nursery)
            nursery.start_soon(self._reclaim, nursery)
            task_status.started()

    def stop_claiming(self) -> None:
        self.claiming.cancel("draining")

    async def ensure_group(self) -> None:
        try:
            await self._jobs.client.xgroup_create(self._jobs.stream, GROUP, identifier="0",
                                                  mkstream=True)
        except redis_errors.StreamDuplicateConsumerGroupError:
            pass
        except REDIS_ERRORS as error:  # Redis down at start: reading retries
            self._jobs.failed("creating the consumer group", error)

    async def _take_slots(self) -> int:
        """Wait for one free running slot, then take every other free one (up to _BATCH)."""
        await self.slots.acquire()
        taken = 1
        while taken < _BATCH and self.slots.value > 0:
            self.slots.acquire_nowait()
            taken += 1
        return taken

    async def _consume(self, nursery: trio.Nursery) -> None:
        jobs = self._jobs
        block_ms = max(50, min(_BLOCK_MS, int(jobs.settings.store.timeout_s * 500)))
        with self.claiming:
            while True:
                taken = await self._take_slots()
                entries: tuple[Any, ...] = ()
                try:
                    found = await jobs.client.xreadgroup(
                        GROUP, jobs.instance_id, streams={jobs.stream: ">"}, count=taken,
                        block=block_ms)
                    entries = found[jobs.stream] if found else ()
                except REDIS_ERRORS as error:
                    self._jobs.failed("reading the job stream", error)
                    await trio.sleep(_ERROR_PAUSE_S)
                    # A Redis that restarted empty has lost the stream and its group (coredis
                    # reports that as an error of its own, not a ResponseError).
                    await self.ensure_group()
                finally:
                    for _ in range(taken - len(entries)):
                        self.slots.release()
                for entry in entries:
                    self._jobs.counts["claims"] += 1
                    nursery.start_soon(self._run_entry, entry.identifier, entry.field_values)

    async def _reclaim(self, nursery: trio.Nursery) -> None:
        """Every third of ``claim_idle_s``: refresh the entries run here, then claim those
        idle for ``claim_idle_s`` (an instance died or left them) while slots are free."""
        jobs = self._jobs
        idle_ms = max(1, int(jobs.settings.jobs.claim_idle_s * 1000))
        while True:
            await trio.sleep(self._jobs.settings.jobs.claim_idle_s / 3)
            try:
                if self.running:
                    await jobs.client.xclaim(jobs.stream, GROUP, jobs.instance_id, 0,
                                             list(self.running.values()), justid=True)
                if self.claiming.cancel_called or self.slots.value == 0:
                    continue
                free = min(self.slots.value, _BATCH)
                found = await jobs.client.xautoclaim(jobs.stream, GROUP, jobs.instance_id,
                                                     idle_ms, "0-0", count=free)
            except REDIS_ERRORS as error:
                self._jobs.failed("reclaiming idle jobs", error)
                continue
            for entry in found[1]:
                if self.slots.value == 0:
                    break  # left pending: claimed again later, here or elsewhere
                self.slots.acquire_nowait()
                self._jobs.counts["reclaims"] += 1
                log.warning("job %s claimed again: its entry was idle for %g s",
                            entry.field_values.get("trace_id"), idle_ms / 1000)
                nursery.start_soon(self._run_entry, entry.identifier, entry.field_values)

    async def _run_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        """Run one claimed job in a JobActor; acknowledge it once its record is final."""
        trace_id = fields.get("trace_id", "")
        self.running[trace_id] = entry_id
        try:
            record = await self._jobs.store.load_job(trace_id)
            if record is not None and not record.finished:
                if not await self._run_job(trace_id, fields, record):
                    return  # cut off by shutdown: left pending for another instance
            await self._acknowledge(entry_id, trace_id)
        except (*REDIS_ERRORS, StoreUnavailable) as error:
            self._jobs.failed(f"running job {trace_id}", error)  # pending: claimed again later
        except (ShuttingDown, TooManyActors) as refused:
            log.warning("job %s left for another instance: %s", trace_id, refused.message)
        finally:
            self.running.pop(trace_id, None)
            self.slots.release()

    async def _run_job(self, trace_id: str, fields: dict[str, str], record: JobRecord,
                       ) -> bool:
        records = self._jobs.records
        job = self._jobs.system.ref("job", trace_id, lambda: JobActor(trace_id, records=records))
        # The actor is findable before the marker is read, so a cancel published after the
        # read reaches it; one published before left the marker. Either way the actor
        # writes the "cancelled" record itself.
        actor = self._jobs.system.find("job", trace_id)
        if await self._jobs.client.exists([self._jobs.cancel_key(trace_id)]) and \
                isinstance(actor, JobActor):
            actor.cancel("cancelled by the client")
        slot = RunSlot()
        slot.granted.set()
        job.tell(RunJob(fields["message"], fields["model"], float(fields["temperature"]),
                        fields["system_prompt"], slot, json.loads(fields.get("params", "{}")),
                        record=record))
        await slot.finished.wait()
        final = await self._jobs.store.load_job(trace_id)
        return final is None or final.finished

    async def _acknowledge(self, entry_id: str, trace_id: str) -> None:
        async with self._jobs.client.pipeline(transaction=False) as pipeline:
            pipeline.xack(self._jobs.stream, GROUP, [entry_id])
            pipeline.xdel(self._jobs.stream, [entry_id])
            pipeline.publish(self._jobs.channel, f"done:{trace_id}")
