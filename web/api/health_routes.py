"""Liveness and readiness."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from .state import app_state

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
async def readyz() -> tuple[Response, int]:
    """Ready when an upstream is configured and the store answers; 503 otherwise."""
    state = app_state()
    service = state.service
    store_ok = False
    if service is not None:
        try:
            store_ok = await service.store.ping()
        except Exception:  # a store that cannot answer is simply not ready
            store_ok = False
    upstream_ok = service is not None and service.supervisor.upstream is not None
    ready = store_ok and upstream_ok and service is not None and service.system.accepting
    body = {
        "status": "ready" if ready else "not ready",
        "upstream": state.upstream_label,
        "upstream_configured": upstream_ok,
        "store": state.settings.store.backend,
        "store_reachable": store_ok,
    }
    return jsonify(body), 200 if ready else 503
