"""One session turn, framework-free: body bytes and a session ID in, status, body and headers
out.

Both doors to ``POST /api/chat`` run this: the ASGI fast path (``web/api/fast_path.py``) that
real traffic takes, and the Quart view (documented by quart-schema, served when the edge's
``fast_chat`` is off). Both find the session with :func:`claimed_session_id`.

A streamed turn (``"stream": true`` or ``Accept: text/event-stream``) is a :class:`TurnResult`
too, with ``events``: its head is sent once the first piece of the answer is in hand, so an
error before it is the usual JSON error with its status (see :mod:`web.api.turn_events`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from werkzeug.http import dump_cookie

from actors.errors import ActorChatError, CallerLeft, SessionGone
from actors.ref import Gone

from .cookies import session_id_in
from .errors import error_parts
from .models import ChatRequest, check_length, parse_body
from .sse import wants_event_stream
from .state import AppState
from .turn_events import open_event_stream

# json.dumps with separators builds an encoder per call; one made once: 13.5 -> 11.3 us here.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(slots=True)
class TurnResult:
    """What to answer: status, JSON body, headers; ``log_id`` names the session in logs.

    ``events``, when set, is the body of a streamed answer, sent piece by piece instead of
    ``body``; the sender must close it (``aclose``), which cancels a turn still running.
    """

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    log_id: str | None = None
    events: AsyncIterator[bytes] | None = None


def session_cookie(state: AppState, session_id: str) -> str:
    """The ``Set-Cookie`` value for a session: signed ID, HttpOnly, SameSite=Lax, Path=/."""
    sessions = state.settings.sessions
    return dump_cookie(
        sessions.cookie_name, state.signer.sign(session_id), httponly=True, samesite="Lax",
        path="/", secure=sessions.cookie_secure,
    )


def claimed_session_id(state: AppState, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session ID the request's cookies name (signed by us), existing or not; the rule
    for several cookies is :func:`web.api.cookies.session_id_in`'s."""
    return session_id_in(headers, state.settings.sessions.cookie_name, state.signer)


async def known_session_id(state: AppState, claimed: str | None) -> str | None:
    """``claimed`` if that session exists, else None."""
    if claimed is not None and state.service is not None and \
            await state.service.session_exists(claimed):
        return claimed
    return None


@dataclass(slots=True)
class Turn:
    """A turn checked and its session found or started, ready for :func:`answer_turn`.

    ``result`` holds what the answer carries already: the new session's cookie, the log ID.
    """

    body: ChatRequest
    session_id: str
    streamed: bool
    result: TurnResult
    started: float


async def open_turn(state: AppState, raw_body: bytes, claimed: str | None,
                    accept: str | None = None) -> Turn | TurnResult:
    """Validate the body and find or start the session: the first half of :func:`run_turn`.

    Returns the :class:`Turn`, or the error answer (a :class:`TurnResult`) for a domain
    error. Other exceptions propagate.
    """
    started = time.perf_counter()
    result = TurnResult(200, b"")
    try:
        body = parse_body(raw_body, ChatRequest)
        check_length(body.prompt, state.settings.chat.max_prompt_chars, "prompt")
        if state.service is None:
            raise RuntimeError("the chat service is not running")
        session_id = await known_session_id(state, claimed) or \
            await _new_session(state, result)
    except ActorChatError as error:
        return _error_result(result, error)
    result.log_id = session_id
    return Turn(body, session_id, bool(body.stream or wants_event_stream(accept)), result,
                started)


async def answer_turn(state: AppState, turn: Turn, gone: Gone | None = None) -> TurnResult:
    """Run an opened turn and build the reply: the second half of :func:`run_turn`.

    ``gone`` (unstreamed turns only) is :meth:`actors.service.ChatService.chat`'s: when it
    returns first, the turn is cancelled and :class:`~actors.errors.CallerLeft` raised.
    """
    settings = state.settings
    body, result = turn.body, turn.result
    service = state.service
    try:
        if service is None:
            raise RuntimeError("the chat service is not running")
        model = body.model or settings.chat.default_model
        temperature = (settings.chat.default_temperature if body.temperature is None
                       else body.temperature)
        for attempt in (1, 2):
            try:
                if turn.streamed:
                    result.events, headers = await open_event_stream(
                        service.stream_chat(turn.session_id, body.prompt, model, temperature,
                                            params=body.openai_params())
                    )
                    result.headers.extend(headers)
                    return result
                reply = await service.chat(turn.session_id, body.prompt, model, temperature,
                                           params=body.openai_params(), gone=gone)
                break
            except SessionGone:
                if attempt == 2:
                    raise
                # Deleted or expired elsewhere since this instance saw it: a new one, as
                # for a cookie naming no session.
                turn.session_id = result.log_id = await _new_session(state, result)
    except CallerLeft:
        raise  # nobody to answer
    except ActorChatError as error:
        return _error_result(result, error)
    result.body = _COMPACT_JSON.encode(
        {"response": reply.response, "model": reply.model, "usage": reply.usage}
    ).encode()
    total_ms = (time.perf_counter() - turn.started) * 1000
    upstream_ms, gate_ms, mailbox_ms = (
        reply.upstream_s * 1000, reply.gate_s * 1000, reply.mailbox_s * 1000
    )
    app_ms = max(0.0, total_ms - upstream_ms - gate_ms - mailbox_ms)
    result.headers += [
        ("Content-Type", "application/json"),
        ("Server-Timing", f"upstream;dur={upstream_ms:.1f}, gate;dur={gate_ms:.1f}, "
                          f"mailbox;dur={mailbox_ms:.1f}, app;dur={app_ms:.1f}"),
    ]
    return result


async def run_turn(state: AppState, raw_body: bytes, claimed: str | None,
                   accept: str | None = None) -> TurnResult:
    """Validate the body, find or start the session, run the turn, build the reply.

    ``claimed`` is :func:`claimed_session_id`'s answer; an unknown session starts a new one.
    Domain errors become their JSON error response; a new session's cookie is set on errors
    too, so a client that retries continues the same session. Other exceptions propagate.
    With ``"stream": true`` or an ``accept`` header asking for ``text/event-stream``, the
    result carries ``events`` once the first piece is in hand (errors before it are JSON).
    Cancelling this cancels the turn; nothing is recorded.
    """
    opened = await open_turn(state, raw_body, claimed, accept)
    if isinstance(opened, TurnResult):
        return opened
    return await answer_turn(state, opened)


async def _new_session(state: AppState, result: TurnResult) -> str:
    """Start a session and put its cookie on the answer."""
    assert state.service is not None
    session_id = await state.service.new_session()
    result.headers.append(("Set-Cookie", session_cookie(state, session_id)))
    return session_id


def _error_result(result: TurnResult, error: ActorChatError) -> TurnResult:
    result.status, result.body, headers = error_parts(error)
    result.headers.extend(headers)
    return result
