"""Which instances are alive: one heartbeat key per instance, with an expiry, in Redis.

Each instance sets ``{prefix}instance:<instance_id>`` (its pid, host and start time as JSON)
every ``interval_s`` with an expiry of three intervals, so an instance that died disappears
from the list within three intervals. Read only for ``/debug``: listing scans the keys.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import coredis
import trio
from coredis import exceptions as redis_errors

log = logging.getLogger("actorchat.instances")

_REDIS_ERRORS = (redis_errors.RedisError, OSError, TimeoutError)


class Heartbeat:
    """Announces this instance in Redis until cancelled; lists the instances alive."""

    def __init__(self, client: coredis.Redis[str], prefix: str, instance_id: str, *,
                 interval_s: float = 2.0, on_error: Callable[[str, BaseException], None]
                 | None = None) -> None:
        self._client = client
        self._prefix = f"{prefix}instance:"
        self.instance_id = instance_id
        self._interval_s = interval_s
        self._on_error = on_error or (lambda doing, error: None)
        self._about = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": round(time.time(), 3)})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Beat every ``interval_s`` until cancelled; a failed beat is counted and retried.

        On cancel the key is left to expire (deleting it would need Redis while closing).
        """
        task_status.started()
        expiry_ms = int(self._interval_s * 3000)
        while True:
            try:
                await self._client.set(self._prefix + self.instance_id, self._about,
                                       px=expiry_ms)
            except _REDIS_ERRORS as error:
                self._on_error("sending a heartbeat", error)
            await trio.sleep(self._interval_s)

    async def alive(self) -> dict[str, Any]:
        """The instances whose heartbeat has not expired, by ID; raises Redis errors."""
        keys: list[str] = [key async for key in self._client.scan_iter(
            match=self._prefix + "*", count=500)]
        if not keys:
            return {}
        values = await self._client.mget(keys)
        return {key[len(self._prefix):]: json.loads(value)
                for key, value in zip(keys, values, strict=True) if value is not None}
