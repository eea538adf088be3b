"""Session chat: ``/api/chat`` with the conversation named by a signed cookie."""

from __future__ import annotations

from quart import Blueprint, Response, g, jsonify, request
from quart_schema import document_request, document_response

from .models import ChatReply, ChatRequest, ErrorBody, History
from .state import app_state, chat_service
from .turn import run_turn

blueprint = Blueprint("sessions", __name__)


def _cookie_session_id() -> str | None:
    state = app_state()
    return state.signer.unsign(request.cookies.get(state.settings.sessions.cookie_name))


@blueprint.post("/api/chat")
@document_request(ChatRequest)
@document_response(ChatReply, 200)
@document_response(ErrorBody, 400)
@document_response(ErrorBody, 413)
@document_response(ErrorBody, 429)
@document_response(ErrorBody, 502)
@document_response(ErrorBody, 503)
@document_response(ErrorBody, 504)
async def chat() -> Response:
    """One turn of the cookie's conversation.

    The first request (no cookie, or a cookie that is tampered or unknown) starts a new session
    and sets the ``sessionId`` cookie. The reply carries a ``Server-Timing`` header. Served
    from ASGI by ``web/api/fast_path.py`` when the app runs under a server; this view documents the
    route and serves Quart's test client, with the same handler.
    """
    state = app_state()
    raw = await request.get_data(cache=False)
    result = await run_turn(state, raw, request.cookies.get(state.settings.sessions.cookie_name))
    g.log_id = result.log_id
    return Response(result.body, status=result.status, headers=result.headers)


@blueprint.get("/api/chat/history")
@document_response(History, 200)
async def history() -> Response:
    """The cookie's conversation, oldest first, without the system prompt."""
    session_id = _cookie_session_id()
    messages = await chat_service().history(session_id) if session_id else []
    g.log_id = session_id
    return jsonify({"messages": [{"role": role, "content": text} for role, text in messages]})


@blueprint.delete("/api/chat")
@document_response(ErrorBody, 503)
async def forget() -> Response:
    """Forget the cookie's conversation and clear the cookie (204)."""
    session_id = _cookie_session_id()
    if session_id is not None:
        g.log_id = session_id
        await chat_service().forget(session_id)
    response = Response("", status=204)
    response.delete_cookie(app_state().settings.sessions.cookie_name, path="/")
    return response

