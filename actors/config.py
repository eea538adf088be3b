"""One typed configuration: `config.toml`, then `.env`, then the environment.

Every section is a pydantic model with ``extra="forbid"``, so an unknown key or a bad value is
refused with the key's dotted name in the message. Environment variables win over the file:
``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``SESSION_SECRET``, ``DEBUG_TOKEN`` and
``ACTORCHAT_<SECTION>__<KEY>`` for everything else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    bind: str = "0.0.0.0:3000"
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    drain_s: float = Field(10.0, ge=0)
    access_log: bool = True
    # An idle keep-alive connection is closed after this long. Hypercorn (0.18) also keeps a
    # connection its client closed open (CLOSE_WAIT) until this timer ends, so it bounds how
    # long closed clients hold file descriptors.
    keep_alive_s: float = Field(10.0, gt=0)


class UpstreamConfig(_Section):
    provider: Literal["auto", "openai", "simulator"] = "auto"
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(4, ge=1)
    max_retry_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(1024, ge=1)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(8.0, gt=0)


class SimulatorConfig(_Section):
    latency_ms: float = Field(0.0, ge=0)
    api_key: str | None = None
    rate_429: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0)
    rate_5xx: float = Field(0.0, ge=0, le=1)
    rate_hang: float = Field(0.0, ge=0, le=1)
    rate_drop: float = Field(0.0, ge=0, le=1)
    rate_stream_error: float = Field(0.0, ge=0, le=1)
    rpm_limit: int = Field(0, ge=0)
    rpm_burst: int = Field(0, ge=0)
    seed: int | None = None
    stream_chunks: int = Field(20, ge=1)
    chunk_delay_ms: float = Field(0.0, ge=0)
    keep_received: int = Field(100, ge=0)


class ActorsConfig(_Section):
    mailbox_size: int = Field(64, ge=1)
    idle_timeout_s: float = Field(300.0, gt=0)
    max_actors: int = Field(100_000, ge=1)
    max_mailbox_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_queued_bytes: int = Field(64 * 1024 * 1024, gt=0)


class SessionsConfig(_Section):
    secret: SecretStr | None = None
    cookie_name: str = "sessionId"
    cookie_secure: bool = False
    ttl_s: float = Field(7 * 24 * 3600.0, ge=0)  # 0: sessions never expire
    lease_ttl_s: float = Field(10.0, gt=0)  # a turn's lease on its session, renewed while it runs
    lease_wait_s: float = Field(5.0, ge=0)  # waiting longer for a held lease answers 429
    # stored messages per session; past it the oldest whole turns are dropped (0: no limit)
    max_history_messages: int = Field(1000, ge=0)


class JobsConfig(_Section):
    result_ttl_s: float = Field(3600.0, gt=0)
    max_running: int = Field(256, ge=1)
    max_queued: int = Field(10_000, ge=0)
    max_duration_s: float = Field(300.0, gt=0)
    max_wait_s: float = Field(30.0, ge=0)
    max_queued_bytes: int = Field(64 * 1024 * 1024, ge=1)
    events_buffer: int = Field(256, ge=4)
    claim_idle_s: float = Field(30.0, gt=0)  # Redis: a job left idle this long is run again


class ChatConfig(_Section):
    default_model: str = "gpt-3.5-turbo"
    default_temperature: float = Field(0.7, ge=0, le=2)
    max_prompt_chars: int = Field(200_000, gt=0)
    # characters of content sent upstream per turn: the system prompt, then the newest whole
    # turns that fit; the new message is sent even if it alone is over
    max_context_chars: int = Field(100_000, gt=0)
    system_prompt: str = "You are a helpful assistant."


class StoreConfig(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "actorchat:"
    timeout_s: float = Field(2.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        # Checked here rather than by coredis, so the message names the key at startup and
        # never repeats a password.
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket's path")
        if parts.scheme != "unix":
            if not parts.hostname:
                raise ValueError("needs a host, as in redis://127.0.0.1:6379/0")
            try:
                parts.port  # noqa: B018  # urllib checks the port only when asked
            except ValueError:
                raise ValueError("has a bad port") from None
            database = parts.path.strip("/")
            if database and not database.isdigit():
                raise ValueError("the path must be a database number, as in /0")
        return url

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        # Redis Cluster hashes the first {...} of a key; the IDs carry the tags, not the prefix.
        if "{" in prefix or "}" in prefix:
            raise ValueError("must not contain { or }")
        return prefix


class DebugConfig(_Section):
    token: SecretStr | None = None


class Settings(_Section):
    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    actors: ActorsConfig = ActorsConfig()
    sessions: SessionsConfig = SessionsConfig()
    jobs: JobsConfig = JobsConfig()
    chat: ChatConfig = ChatConfig()
    store: StoreConfig = StoreConfig()
    debug: DebugConfig = DebugConfig()

    @model_validator(mode="after")
    def _sessions_outlive_their_actors(self) -> Settings:
        # A live actor holds its session's history; the store must not expire it meanwhile.
        if self.sessions.ttl_s and self.sessions.ttl_s <= self.actors.idle_timeout_s:
            raise ValueError(
                "sessions.ttl_s must be 0 or longer than actors.idle_timeout_s "
                f"({self.sessions.ttl_s:g} <= {self.actors.idle_timeout_s:g})"
            )
        return self


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


_NAMED_VARIABLES = {
    "OPENAI_API_KEY": ("upstream", "api_key"),
    "OPENAI_BASE_URL": ("upstream", "base_url"),
    "SESSION_SECRET": ("sessions", "secret"),
    "DEBUG_TOKEN": ("debug", "token"),
}
_PREFIX = "ACTORCHAT_"


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, (section, key) in _NAMED_VARIABLES.items():
        if environ.get(name):
            overrides.setdefault(section, {})[key] = environ[name]
    for name, value in environ.items():
        if not name.startswith(_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(_PREFIX) :].lower().partition("__")
        if value.lower() in ("", "none", "null"):
            value = None  # type: ignore[assignment]
        overrides.setdefault(section, {})[key] = value
    return overrides


def build_settings(
    data: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from a parsed TOML mapping and an environment mapping.

    Raises ConfigError naming the first bad key, as ``section.key: reason``.
    """
    merged: dict[str, dict[str, Any]] = {
        section: dict(values) for section, values in (data or {}).items()
    }
    for section, values in _environment_overrides(environ or {}).items():
        merged.setdefault(section, {}).update(values)
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise ConfigError(f"bad configuration: {problems}") from None


def load_settings(
    path: str | Path | None = "config.toml", environ: Mapping[str, str] | None = None
) -> Settings:
    """Load ``path`` (if it exists) and apply the environment (``os.environ`` by default)."""
    data: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        with open(path, "rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ConfigError(f"{path}: {error}") from None
    return build_settings(data, os.environ if environ is None else environ)
