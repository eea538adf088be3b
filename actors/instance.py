"""This process's instance ID: which instance answered, whose consumer claimed a job."""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings
    from .job import JobRecords
    from .rate_gate import RateGate
    from .redis_jobs import RedisJobs
    from .store.base import Store
    from .system import ActorSystem


def new_instance_id() -> str:
    """An ID for this process: host, pid and a random suffix (a reused pid differs)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def jobs_over_redis(settings: Settings, store: Store, system: ActorSystem, records: JobRecords,
                    instance_id: str, gate: RateGate) -> RedisJobs | None:
    """The Redis job stream when ``store.backend = "redis"`` and ``store`` is a Redis store,
    else None (jobs stay in this process). Imports the Redis client only then."""
    if settings.store.backend != "redis" or not hasattr(store, "client"):
        return None
    from .redis_jobs import RedisJobs

    records.leave_on_shutdown = True  # another instance runs them again
    return RedisJobs(settings, store, system, records, instance_id,  # type: ignore[arg-type]
                     gate=gate)


def shared_gate(settings: Settings, store: Store, instance_id: str) -> RateGate | None:
    """A rate gate shared through Redis with every instance, when ``store`` is a Redis
    store under ``store.backend = "redis"``; else None (the process keeps its own)."""
    if settings.store.backend != "redis" or not hasattr(store, "client"):
        return None
    from .redis_gate import SharedRateGate

    return SharedRateGate(store.client, store.prefix, instance_id)  # type: ignore[attr-defined]
