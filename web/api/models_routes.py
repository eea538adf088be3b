"""``GET /api/models``: the upstream's model list (the simulator's when simulated)."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify
from quart_schema import document_response

from .models import ModelListBody
from .openapi import document_errors
from .state import chat_service

blueprint = Blueprint("models", __name__)


@blueprint.get("/api/models")
@document_response(ModelListBody, 200)
@document_errors(429, 502, 503, 504)
async def models() -> Response:
    """The models the upstream offers, in OpenAI's list shape, cached for a minute.

    Upstream failures are the errors a chat turn gets (429, 502, 503, 504); one is never
    cached, so the next request asks the upstream again.
    """
    listed = await chat_service().models()
    return jsonify({
        "object": "list",
        "data": [
            {"id": model.id, "object": "model", "created": model.created,
             "owned_by": model.owned_by}
            for model in listed
        ],
    })
