"""Session chat: ``/api/chat`` with the conversation named by a signed cookie."""

from __future__ import annotations

import time

from quart import Blueprint, Response, after_this_request, g, jsonify, request
from quart_schema import document_request, document_response

from .models import ChatReply, ChatRequest, ErrorBody, History, check_length, read_body
from .state import app_state, chat_service

blueprint = Blueprint("sessions", __name__)


def _cookie_session_id() -> str | None:
    state = app_state()
    return state.signer.unsign(request.cookies.get(state.settings.sessions.cookie_name))


def _set_cookie(response: Response, session_id: str) -> None:
    state = app_state()
    response.set_cookie(
        state.settings.sessions.cookie_name,
        state.signer.sign(session_id),
        httponly=True,
        samesite="Lax",
        path="/",
        secure=state.settings.sessions.cookie_secure,
    )


async def _known_session_id() -> str | None:
    session_id = _cookie_session_id()
    if session_id is not None and await chat_service().session_exists(session_id):
        return session_id
    return None


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
    and sets the ``sessionId`` cookie. The reply carries a ``Server-Timing`` header.
    """
    started = time.perf_counter()
    settings = app_state().settings
    body = await read_body(ChatRequest)
    check_length(body.prompt, settings.chat.max_prompt_chars, "prompt")
    service = chat_service()
    session_id = await _known_session_id()
    if session_id is None:
        session_id = await service.new_session()
        new_id = session_id

        # An async hook: Quart would run a plain function in a worker thread.
        @after_this_request
        async def _issue_cookie(response: Response) -> Response:
            _set_cookie(response, new_id)
            return response

    g.log_id = session_id
    reply = await service.chat(
        session_id,
        body.prompt,
        body.model or settings.chat.default_model,
        settings.chat.default_temperature if body.temperature is None else body.temperature,
    )
    response = jsonify({"response": reply.response, "model": reply.model, "usage": reply.usage})
    total_ms = (time.perf_counter() - started) * 1000
    upstream_ms, gate_ms, mailbox_ms = (
        reply.upstream_s * 1000, reply.gate_s * 1000, reply.mailbox_s * 1000
    )
    app_ms = max(0.0, total_ms - upstream_ms - gate_ms - mailbox_ms)
    response.headers["Server-Timing"] = (
        f"upstream;dur={upstream_ms:.1f}, gate;dur={gate_ms:.1f}, "
        f"mailbox;dur={mailbox_ms:.1f}, app;dur={app_ms:.1f}"
    )
    return response


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

