"""The one frozen snapshot the service gives of itself: ``ChatService.stats()``.

``/debug`` and ``/metrics`` read only this. Every part is taken without awaiting, in one go,
so the numbers agree with each other. Counters count since the service started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .actor import ActorStats


@dataclass(frozen=True, slots=True)
class ActorTotals:
    """The actors, by kind."""

    live: Mapping[str, int]  # live now
    started: Mapping[str, int]  # started since boot
    stopped: Mapping[str, int]  # stopped since boot (idle, evicted, finished, drained)
    crashed: Mapping[str, int]  # unexpected errors in actors, restarted from or stopped
    mailbox_depth: int  # messages waiting in all mailboxes, not counting those handled now
    abandoned: Mapping[str, int] = field(default_factory=dict)  # asks whose caller left:
    # dropped while queued or cancelled while handled (issue 11, finding 9)
    mailbox_bytes: int = 0  # bytes held by the messages waiting in all mailboxes


@dataclass(frozen=True, slots=True)
class GateStats:
    """The shared rate gate."""

    open: bool  # no 429 holds it closed
    opens_in_s: float  # seconds until it opens (0 when open)
    closures: int  # times a 429 closed it
    waiting: int  # calls waiting in its line
    pacing: bool  # the upstream reported a budget and calls are paced to it
    budget_per_s: float | None  # the pace, when pacing
    tokens: int | None  # calls that may start at once, when pacing


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """The retrying upstream caller."""

    label: str  # which upstream, without credentials
    configured: bool  # False: every call fails with upstream_not_configured
    in_flight: int  # attempts waiting for the upstream now
    calls: Mapping[str, int]  # attempts by outcome: "ok", "rate_limited", error types
    retries: int  # attempts that failed and were tried again
    gate: GateStats


@dataclass(frozen=True, slots=True)
class JobStats:
    """The trace-ID jobs."""

    running: int  # jobs a worker is running
    queued: int  # jobs admitted and waiting for a worker
    by_status: Mapping[str, int]  # finished jobs by final status
    queued_bytes: int = 0  # bytes of the messages of jobs admitted and not finished


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """Everything ``/debug`` and ``/metrics`` show, in one snapshot."""

    accepting: bool  # False once shutdown has begun
    actors: ActorTotals
    listed: tuple[ActorStats, ...]  # the actors asked for, most recently active first
    matched: int  # live actors that matched the filters, before the limit cut them
    upstream: UpstreamStats
    jobs: JobStats
    instance: str = ""  # this instance's ID (host-pid-random)
    # With Redis: jobs claimed and claimed again here, the shared rate gate's scripts run,
    # Redis errors by part ("jobs", "rate_gate"); None with the memory store.
    redis: Mapping[str, Mapping[str, int]] | None = None
    # Session leases (over Redis; all 0 with the memory store): waits (found held by another
    # turn), refused (not free within sessions.lease_wait_s), renewals.
    leases: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Trace jobs over Redis (``store.backend = "redis"``), read from Redis when asked."""

    instance: str  # this instance's ID: its consumer name and its heartbeat
    entries: int  # jobs on the stream: queued or running, on any instance
    pending: int  # jobs claimed by some instance and not yet acknowledged
    pending_by_instance: Mapping[str, int]  # claimed jobs by consumer (instance ID)
    running_here: int  # jobs this instance runs now
    claims: int  # jobs this instance took from the stream since it started
    reclaims: int  # jobs this instance claimed again after another left them idle
    redis_errors: int  # Redis commands of the job stream that failed here
    instances: Mapping[str, Mapping[str, object]]  # live instances (heartbeats) by ID
