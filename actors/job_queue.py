"""The job queue: a bounded channel of places, drained by ``jobs.max_running`` workers.

Admission is a ``send_nowait`` into a channel of ``jobs.max_queued`` places: it succeeds when
a worker is waiting or a place is free, and is refused at once otherwise, with no await
between looking and taking, so concurrent submissions cannot overshoot the limit. The bytes
of the messages admitted and not yet finished are bounded the same way by
``jobs.max_queued_bytes`` (issue 11, finding 3: 10,257 jobs of 200,000 characters each took
the server from 73 MB to 2.4 GB). Workers
take places in arrival order. A worker does not run the job itself: it grants the job's
:class:`RunSlot` and holds it until the job (a JobActor in the actor system) says it has
finished, however it ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .errors import JobQueueFull


@dataclass(frozen=True, slots=True)
class RunSlot:
    """One job's place: ``granted`` by the worker that takes it, ended by the job's
    :meth:`finish`, which also gives back the bytes its message held."""

    size: int = 0  # the bytes of the job's message, counted until the job finishes
    on_finish: Callable[[RunSlot], None] = lambda slot: None
    granted: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)

    def finish(self) -> None:
        """The job has ended, however it ended; idempotent."""
        if not self.finished.is_set():
            self.finished.set()
            self.on_finish(self)


class JobQueue:
    """At most ``max_running`` jobs run and ``max_queued`` wait, and the messages of the jobs
    admitted and not finished hold at most ``max_queued_bytes``; the rest are refused.

    Start the workers with ``await nursery.start(queue.run)``; cancelling that nursery stops
    them (the jobs themselves are cancelled by the actor system's nursery).
    """

    def __init__(self, max_running: int, max_queued: int, retry_after_s: float,
                 max_queued_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0  # bytes of the messages of jobs admitted and not finished
        self._retry_after_s = retry_after_s
        self._send, self._receive = trio.open_memory_channel[RunSlot](max_queued)
        self.running = 0  # places a worker has granted and holds

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run the workers until cancelled; reports started once they all wait for jobs."""
        with self._receive:
            async with trio.open_nursery() as nursery:
                for _ in range(self.max_running):
                    await nursery.start(self._work, self._receive.clone())
                task_status.started()

    @property
    def queued(self) -> int:
        """Places taken and not yet granted (including jobs cancelled while queued)."""
        return self._receive.statistics().current_buffer_used

    def worker_free(self) -> bool:
        """True when a worker waits, so a job entering now runs at once; never awaits."""
        return self._receive.statistics().tasks_waiting_receive > 0

    def check_room(self, size: int = 0) -> None:
        """Raise :class:`JobQueueFull` unless :meth:`enter` would succeed now for a message
        of ``size`` bytes. A message alone over ``max_queued_bytes`` is refused too."""
        if self.queued_bytes + size > self.max_queued_bytes:
            raise JobQueueFull(
                f"the jobs admitted hold {self.queued_bytes} bytes of messages, and this one "
                f"would pass jobs.max_queued_bytes ({self.max_queued_bytes}); try again later",
                retry_after=self._retry_after_s,
            )
        mailbox = self._receive.statistics()
        if mailbox.tasks_waiting_receive == 0 and \
                mailbox.current_buffer_used >= mailbox.max_buffer_size:
            raise JobQueueFull(
                f"{self.running + mailbox.current_buffer_used} jobs are running or queued; "
                "try again later",
                retry_after=self._retry_after_s,
            )

    def enter(self, size: int = 0) -> RunSlot:
        """Take a place now for a message of ``size`` bytes, or raise :class:`JobQueueFull`;
        never awaits. The bytes count until the job calls the slot's ``finish``."""
        self.check_room(size)
        slot = RunSlot(size, self._release)
        self._send.send_nowait(slot)
        self.queued_bytes += size
        return slot

    def _release(self, slot: RunSlot) -> None:
        self.queued_bytes -= slot.size

    async def _work(self, places: trio.MemoryReceiveChannel[RunSlot],
                    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # this task goes on to wait in receive before the starter runs
        with places:
            async for slot in places:
                if slot.finished.is_set():
                    continue  # cancelled while it waited
                self.running += 1
                slot.granted.set()
                try:
                    await slot.finished.wait()
                finally:
                    self.running -= 1
