"""Auto-pipelining: the store's Redis commands that are issued while a batch is on the wire go
out together, as one pipeline, in the next batch.

Why (issue 10: Redis must keep 0.8x the memory store's turns/s). A coredis command costs
about 225 us of CPU on Trio here, and a pipeline 232 us for 1 command, 275 us for 4, 334 us
for 8, 456 us for 16 (``python -m bench.redis_batch``): the cost is per round trip, hardly per
command. Under load many session actors make their round trips at the same moment (each turn
takes its lease, then appends), so sending what has queued up as one pipeline, as ioredis's
``enableAutoPipelining`` does, makes each command cost a fraction of a round trip: the
store's ``append_turn`` for 64 sessions at once went from 311 to 39 us of CPU a turn.
When only one command is waiting it goes out at once, alone: nothing waits for a batch to
fill. ``tests/test_redis_batch.py`` pins that commands issued together share one pipeline
and that each still gets its own reply or error.

Each command keeps its own outcome: pipelines run with ``raise_on_error=False``, so one
command's error (a missing script, a wrong type) is raised to its caller only. A connection
failure or timeout fails every command of that batch with the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import coredis
import trio

Command = Callable[[Any], Any]
"""Issues one command on a client or pipeline and returns its request:
``lambda redis: redis.get(key)``."""

_NOTHING = object()


class _Call:
    __slots__ = ("command", "done", "error", "result")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.result: Any = _NOTHING
        self.error: BaseException | None = None


class AutoPipeline:
    """Sends commands in pipelines of whatever has queued, at most ``max_in_flight`` at once.

    Start :meth:`run` in a nursery that outlives every caller; :meth:`call` then sends a
    command and returns its reply. A caller cancelled while waiting only drops the reply: the
    command is sent regardless (the store shields its writes' waits, so it learns their
    outcome). Each pipeline is bounded by ``timeout_s`` (coredis's own reply timeout).
    """

    def __init__(self, client: coredis.Redis[str], *, timeout_s: float,
                 max_batch: int = 64, max_in_flight: int = 2) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._slots = trio.Semaphore(max_in_flight)
        self._queue: list[_Call] = []
        self._queued = trio.Event()
        self._running = False
        self.batches = 0
        self.commands = 0

    async def call(self, command: Command) -> Any:
        """Send ``command`` in the next batch and return its reply, or raise its error."""
        if not self._running:
            raise RuntimeError("AutoPipeline.run is not running")
        call = _Call(command)
        self._queue.append(call)
        self._queued.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Send the queued commands until cancelled; calls waiting then fail (Cancelled is
        not theirs to see, so they get ``ConnectionError``)."""
        async with trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            try:
                while True:
                    if not self._queue:
                        self._queued = trio.Event()
                        await self._queued.wait()
                    await self._slots.acquire()
                    batch = self._queue[:self._max_batch]
                    del self._queue[:self._max_batch]
                    nursery.start_soon(self._send, batch)
            finally:
                self._running = False
                for call in self._queue:
                    call.error = coredis.exceptions.ConnectionError("the store is closing")
                    call.done.set()
                self._queue.clear()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self._client.pipeline(transaction=False, raise_on_error=False,
                                             timeout=self._timeout_s) as pipe:
                requests = [call.command(pipe) for call in batch]
            for call, request in zip(batch, requests, strict=True):
                try:
                    call.result = await request
                except Exception as error:  # noqa: BLE001 - the command's own error, its caller's
                    call.error = error
        except BaseException as error:
            for call in batch:
                if call.result is _NOTHING and call.error is None:
                    call.error = (error if isinstance(error, Exception)
                                  else coredis.exceptions.ConnectionError("the store is closing"))
            if not isinstance(error, Exception):
                raise
        finally:
            self.batches += 1
            self.commands += len(batch)
            for call in batch:
                call.done.set()
            self._slots.release()
