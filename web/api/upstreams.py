"""Which upstream to talk to: OpenAI (or OPENAI_BASE_URL), or the built-in simulator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.config import Settings
from actors.lifetime import UpstreamChoice
from actors.upstream import OpenAIUpstream, Upstream

log = logging.getLogger("actorchat.web")

# The key the server and its in-process simulator agree on; it opens nothing else.
SIMULATOR_KEY = "sim-local-key"
# How long closing the client, or stopping the simulator, may take.
_STOP_S = 5.0


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[UpstreamChoice]:
    """The upstream for ``upstream.provider``, with a label without credentials to show.

    Under ``auto`` without OPENAI_API_KEY, and under ``simulator``, first starts the OpenAI
    simulator on a free loopback port. On exit closes the client, then stops the simulator;
    both shielded and bounded, so a cancelled exit still releases them. Under ``openai``
    without a key the client is None: chat calls then fail with 503.
    """
    config = settings.upstream
    key = config.api_key.get_secret_value() if config.api_key else None
    if config.provider == "openai" or (config.provider == "auto" and key):
        if not key:
            log.error("upstream.provider is 'openai' but OPENAI_API_KEY is not set: "
                      "chat requests will answer 503")
            yield UpstreamChoice(None, "openai (no API key)")
            return
        label = public_label(config.base_url) if config.base_url else "openai"
        log.info("upstream: %s", label)
        client = OpenAIUpstream(api_key=key, base_url=config.base_url, timeout_s=config.timeout_s,
                                max_connections=config.max_concurrency, label=label)
        async with _closing(client):
            yield UpstreamChoice(client, label)
        return
    from ..simulator import serve_simulator  # only a server that runs the simulator loads it

    simulator = settings.simulator
    stop_simulator = trio.Event()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(
            partial(serve_simulator, simulator, "127.0.0.1:0", shutdown_trigger=stop_simulator.wait)
        )
        log.warning(
            "OPENAI_API_KEY is not set: answering from the built-in OpenAI simulator at %s "
            "(replies are simulated; their model names end in -simulated)", base_url,
        )
        client = OpenAIUpstream(api_key=simulator.api_key or SIMULATOR_KEY, base_url=base_url,
                                timeout_s=config.timeout_s,
                                max_connections=config.max_concurrency, label="simulator")
        try:
            async with _closing(client):
                yield UpstreamChoice(client, "simulator")
        finally:
            stop_simulator.set()
            nursery.cancel_scope.deadline = trio.current_time() + _STOP_S


@asynccontextmanager
async def _closing(client: Upstream) -> AsyncIterator[Upstream]:
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True) as cleanup:
            cleanup.deadline = trio.current_time() + _STOP_S
            await client.aclose()


def public_label(label: str) -> str:
    """The upstream label without credentials: ``http://user:pw@host/v1`` -> ``http://host/v1``."""
    parts = urlsplit(label)
    if parts.username is None and parts.password is None:
        return label
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
