"""The QuartTrio app factory and its serving lifespan."""

from __future__ import annotations

import logging
import secrets

import trio
from quart_schema import QuartSchema
from quart_trio import QuartTrio

from actors.config import Settings
from actors.service import ChatService
from actors.store import MemoryStore, Store

from . import debug_routes, health_routes, job_routes, session_routes
from .cookies import CookieSigner
from .edge import install_edge
from .errors import register_error_handlers
from .metrics import install_metrics
from .state import AppState
from .upstreams import open_upstream

log = logging.getLogger("actorchat.web")


def _session_secret(settings: Settings) -> str:
    if settings.sessions.secret is not None:
        return settings.sessions.secret.get_secret_value()
    log.warning(
        "SESSION_SECRET is not set: using a random secret for this run; "
        "sessions will not survive a restart"
    )
    return secrets.token_urlsafe(32)


def create_app(settings: Settings, store: Store | None = None) -> QuartTrio:
    """Build the app. The actor system starts when serving starts and stops when it ends.

    ``store`` replaces the one ``store.backend`` names (tests use this to inject faults).
    """
    app = QuartTrio("actorchat")
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    QuartSchema(
        app,
        info={"title": "actorchat", "version": "0.1.0",
              "description": "OpenAI chat for many concurrent conversations, on Trio actors."},
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep fields in documented order
    state = AppState(settings=settings, signer=CookieSigner(_session_secret(settings)))
    app.extensions["actorchat"] = state
    register_error_handlers(app)
    install_metrics(app)
    install_edge(app, state)  # access log, request metrics, POST /api/chat's fast path
    for module in (session_routes, job_routes, health_routes, debug_routes):
        app.register_blueprint(module.blueprint)

    stop_service = trio.CancelScope()
    given_store = store
    upstream_closed = trio.Event()

    @app.before_serving
    async def _start() -> None:
        # store.backend accepts only "memory" so far.
        ttl = settings.sessions.ttl_s or None
        store = given_store if given_store is not None else MemoryStore(session_ttl_s=ttl)
        upstream, label = await open_upstream(settings, app.nursery, upstream_closed)
        state.upstream_label = label
        service = ChatService(settings, store, upstream, label)

        async def run_service(*, task_status: trio.TaskStatus[ChatService]) -> None:
            with stop_service:
                await service.run(task_status=task_status)

        state.service = await app.nursery.start(run_service)

    @app.after_serving
    async def _stop() -> None:
        service = state.service
        if service is not None:
            drained = await service.drain(settings.server.drain_s)
            if not drained:
                log.warning("drain time over: cancelling %d actors", service.system.live())
            stop_service.cancel()
            if service.supervisor.upstream is not None:
                with trio.CancelScope(shield=True):
                    await service.supervisor.upstream.aclose()
            await service.store.aclose()
        upstream_closed.set()

    return app
