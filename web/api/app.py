"""The QuartTrio app factory and its serving lifespan.

The chat service (``actors.service.open_chat_service``) lives in one task in the app's
nursery, opened before serving starts. It closes when ``begin_drain`` is called (by
``web.api.server.serve_app`` when its shutdown trigger fires, or at the latest when the
lifespan shutdown begins): it drains for ``server.drain_s``, cancels what is left, then closes
the upstream client, the in-process simulator and the store. Nothing else closes them.
"""

from __future__ import annotations

import logging
import secrets

import trio
from quart_schema import QuartSchema
from quart_trio import QuartTrio

from actors.config import Settings
from actors.lifetime import open_chat_service
from actors.service import ChatService
from actors.store import Store

from . import debug_routes, health_routes, job_routes, models_routes, session_routes
from .cookies import CookieSigner
from .docs import install_docs
from .edge import install_edge
from .errors import register_error_handlers
from .metrics import install_metrics
from .openapi import SECURITY_SCHEMES, ActorChatOpenAPI
from .state import AppState
from .upstreams import open_upstream

log = logging.getLogger("actorchat.web")

# Room past server.drain_s for what closing does after the drain: jobs cut short write their
# final record (at most 2 s), then the upstream and the store close.
CLOSING_MARGIN_S = 5.0


def _session_secret(settings: Settings) -> str:
    if settings.sessions.secret is not None:
        return settings.sessions.secret.get_secret_value()
    log.warning(
        "SESSION_SECRET is not set: using a random secret for this run; "
        "sessions will not survive a restart"
    )
    return secrets.token_urlsafe(32)


def create_app(settings: Settings, store: Store | None = None) -> QuartTrio:
    """Build the app. The chat service opens when serving starts and closes when it ends.

    ``store`` replaces the one ``store.backend`` names (tests use this to inject faults); the
    service closes it too.
    """
    app = QuartTrio("actorchat")
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    QuartSchema(
        app,
        info={"title": "actorchat", "version": "0.1.0",
              "description": "OpenAI chat for many concurrent conversations, on Trio actors."},
        redoc_ui_path=None,
        openapi_provider_class=ActorChatOpenAPI,
        security_schemes=SECURITY_SCHEMES,
        scalar_ui_path=None,
    )
    install_docs(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep fields in documented order
    state = AppState(settings=settings, signer=CookieSigner(_session_secret(settings)))
    app.extensions["actorchat"] = state
    register_error_handlers(app)
    install_metrics(app)
    install_edge(app, state)  # access log, request metrics, POST /api/chat's fast path
    for module in (session_routes, job_routes, models_routes, health_routes, debug_routes):
        app.register_blueprint(module.blueprint)

    # QuartTrio.shutdown puts a deadline of BACKGROUND_TASK_SHUTDOWN_TIMEOUT (Quart's default:
    # 5 s) on app.nursery before after_serving runs, and the service lives in that nursery:
    # the deadline must leave the drain its server.drain_s and the final records their time.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.server.drain_s + CLOSING_MARGIN_S

    @app.before_serving
    async def _start() -> None:
        state.service = await app.nursery.start(_run_service, settings, state, store)

    @app.after_serving
    async def _stop() -> None:
        begin_drain(app)  # if the server's shutdown trigger has not already
        await state.service_closed.wait()

    return app


def begin_drain(app: QuartTrio) -> None:
    """Tell the app's chat service to refuse new work, drain, and close.

    ``web.api.server.serve_app`` calls this the moment its shutdown trigger fires, so work in
    flight gets ``server.drain_s`` while Hypercorn still serves the answers.
    """
    app.extensions["actorchat"].stop_requested.set()


async def _run_service(
    settings: Settings, state: AppState, store: Store | None,
    *, task_status: trio.TaskStatus[ChatService],
) -> None:
    """The chat service's whole life, in the app's nursery: open, serve, drain, close."""
    try:
        async with open_chat_service(settings, open_upstream=open_upstream, store=store) as service:
            task_status.started(service)
            await state.stop_requested.wait()
    finally:
        state.service_closed.set()
