"""Liveness and readiness."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify
from quart_schema import document_response

from .state import app_state
from .status_models import Health, Readiness

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@document_response(Health, 200)
async def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
@document_response(Readiness, 200)
@document_response(Readiness, 503)
async def readyz() -> tuple[Response, int]:
    """Ready when an upstream is configured and the store answers; 503 otherwise, with
    ``reasons`` saying what is missing (empty when ready)."""
    state = app_state()
    service = state.service
    store_ok = service is not None and await service.ping_store()
    stats = service.stats() if service is not None else None
    upstream_ok = stats is not None and stats.upstream.configured
    accepting = stats is not None and stats.accepting
    ready = store_ok and upstream_ok and accepting
    backend = state.settings.store.backend
    reasons = [reason for reason, failed in (
        (f"the {backend} store does not answer", not store_ok),
        ("no upstream is configured", not upstream_ok),
        ("the server is shutting down", not accepting),
    ) if failed]
    body = {
        "status": "ready" if ready else "not ready",
        "reasons": reasons,
        "upstream": stats.upstream.label if stats is not None else "none",
        "upstream_configured": upstream_ok,
        "store": backend,
        "store_reachable": store_ok,
    }
    return jsonify(body), 200 if ready else 503
