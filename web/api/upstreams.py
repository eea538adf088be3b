"""Which upstream to talk to: OpenAI (or OPENAI_BASE_URL), or the built-in simulator."""

from __future__ import annotations

import logging
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.config import Settings
from actors.upstream import OpenAIUpstream, Upstream

log = logging.getLogger("actorchat.web")

# The key the server and its in-process simulator agree on; it opens nothing else.
SIMULATOR_KEY = "sim-local-key"


async def open_upstream(
    settings: Settings, nursery: trio.Nursery, closed: trio.Event
) -> tuple[Upstream | None, str]:
    """The upstream for ``upstream.provider`` and a label, without credentials, to show.

    Under ``auto`` without OPENAI_API_KEY, and under ``simulator``, starts the OpenAI
    simulator in ``nursery`` on a free loopback port; it stops when ``closed`` is set.
    Under ``openai`` without a key, returns None: chat calls then fail with 503.
    """
    config = settings.upstream
    key = config.api_key.get_secret_value() if config.api_key else None
    if config.provider == "openai" or (config.provider == "auto" and key):
        if not key:
            log.error("upstream.provider is 'openai' but OPENAI_API_KEY is not set: "
                      "chat requests will answer 503")
            return None, "openai (no API key)"
        label = public_label(config.base_url) if config.base_url else "openai"
        log.info("upstream: %s", label)
        return OpenAIUpstream(api_key=key, base_url=config.base_url, timeout_s=config.timeout_s,
                        max_connections=config.max_concurrency, label=label), label
    from ..simulator import serve_simulator  # only a server that runs the simulator loads it

    simulator = settings.simulator
    base_url = await nursery.start(
        partial(serve_simulator, simulator, "127.0.0.1:0", shutdown_trigger=closed.wait)
    )
    log.warning(
        "OPENAI_API_KEY is not set: answering from the built-in OpenAI simulator at %s "
        "(replies are simulated; their model names end in -simulated)", base_url,
    )
    sim_key = simulator.api_key or SIMULATOR_KEY
    upstream = OpenAIUpstream(api_key=sim_key, base_url=base_url, timeout_s=config.timeout_s,
                        max_connections=config.max_concurrency, label="simulator")
    return upstream, "simulator"


def public_label(label: str) -> str:
    """The upstream label without credentials: ``http://user:pw@host/v1`` -> ``http://host/v1``."""
    parts = urlsplit(label)
    if parts.username is None and parts.password is None:
        return label
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
