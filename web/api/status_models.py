"""Response bodies of the operational routes (health, readiness, debug), for
``/openapi.json``. The routes build their bodies as plain dicts; these models document them,
and ``tests/test_openapi.py`` checks the two agree."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether the server can answer chats: an upstream configured and the store reachable."""

    status: Literal["ready", "not ready"]
    upstream: str
    upstream_configured: bool
    store: Literal["memory", "redis"]
    store_reachable: bool


class ActorSummary(BaseModel):
    """One live actor."""

    kind: str
    key: str
    state: Literal["idle", "busy", "stopping"]
    mailbox_depth: int
    mailbox_capacity: int
    handled: int
    errors: int
    restarts: int
    started: str
    last_active: str
    activity: str | None


class ActorDetail(ActorSummary):
    """One live actor, with its last error and, for a session, its conversation's size."""

    last_error: str | None
    history_length: int | None
    last_context_messages: int | None


class ActorTotals(BaseModel):
    live: dict[str, int]
    started: dict[str, int]
    stopped: dict[str, int]
    crashed: dict[str, int]


class GateBody(BaseModel):
    state: Literal["open", "closed"]
    open: bool
    opens_in_s: float
    closures: int
    waiting: int
    pacing: bool
    budget_per_s: float | None
    tokens: int | None


class UpstreamTotals(BaseModel):
    label: str
    in_flight: int
    calls: dict[str, int]
    retries: int
    gate: GateBody


class JobTotals(BaseModel):
    running: int
    queued: int
    by_status: dict[str, int]


class Totals(BaseModel):
    actors: ActorTotals
    upstream: UpstreamTotals
    jobs: JobTotals


class ActorListing(BaseModel):
    """The most recently active live actors, and system-wide totals."""

    actors: list[ActorSummary]
    matched: int
    totals: Totals


class DebugQuery(BaseModel):
    """The filters of ``GET /debug/actors``."""

    kind: str | None = Field(None, description="only actors of this kind: session, job")
    state: Literal["idle", "busy", "stopping"] | None = None
    limit: int = Field(100, ge=0, le=10_000, description="the most actors to list")
