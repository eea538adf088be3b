"""Session chat: ``/api/chat`` with the conversation named by a signed cookie."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify, request
from quart_schema import document_request, document_response

from .exchange import note_log_id
from .models import ChatReply, ChatRequest, History
from .openapi import EVENT_STREAM, document_errors, document_media
from .state import app_state, chat_service
from .turn import claimed_session_id, run_turn

blueprint = Blueprint("sessions", __name__)


def _cookie_session_id() -> str | None:
    return claimed_session_id(app_state(), request.scope["headers"])


@blueprint.post("/api/chat")
@document_request(ChatRequest)
@document_response(ChatReply, 200)
@document_media(200, EVENT_STREAM, "the answer: JSON, or with \"stream\": true (or Accept: "
                "text/event-stream) server-sent events: data: {\"delta\": ...} per piece, one "
                "data: {\"response\", \"model\", \"usage\"}, then data: [DONE]; a failure "
                "after the first event is an event: error with {type, message}")
@document_errors(400, 408, 413, 429, 502, 503, 504)
async def chat() -> Response:
    """One turn of the cookie's conversation.

    The first request (no cookie, or a cookie that is tampered or unknown) starts a new session
    and sets the ``sessionId`` cookie. The reply carries a ``Server-Timing`` header. Served
    from ASGI by ``web/api/fast_path.py`` while the edge's ``fast_chat`` is on (the default);
    this view documents the route and serves it otherwise, with the same functions.
    """
    state = app_state()
    raw = await request.get_data(cache=False)
    result = await run_turn(state, raw, _cookie_session_id(), request.headers.get("Accept"))
    note_log_id(request.scope, result.log_id)
    if result.events is not None:
        # Quart closes the body (aclose) when it ends or the client leaves, which cancels
        # a turn still running; a stream may outlast RESPONSE_TIMEOUT.
        response = Response(result.events, status=result.status, headers=result.headers)
        response.timeout = None
        return response
    return Response(result.body, status=result.status, headers=result.headers)


@blueprint.get("/api/chat/history")
@document_response(History, 200)
@document_errors(429, 503)
async def history() -> Response:
    """The cookie's conversation, oldest first, without the system prompt."""
    session_id = _cookie_session_id()
    messages = await chat_service().history(session_id) if session_id else []
    note_log_id(request.scope, session_id)
    return jsonify({"messages": [{"role": role, "content": text} for role, text in messages]})


@blueprint.delete("/api/chat")
@document_media(204, None, "the conversation is forgotten and the cookie cleared")
@document_errors(429, 503)
async def forget() -> Response:
    """Forget the cookie's conversation and clear the cookie (204)."""
    session_id = _cookie_session_id()
    if session_id is not None:
        note_log_id(request.scope, session_id)
        await chat_service().forget(session_id)
    response = Response("", status=204)
    response.delete_cookie(app_state().settings.sessions.cookie_name, path="/")
    return response

