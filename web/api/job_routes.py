"""Trace-ID jobs: ``POST /chat``, ``GET /chat/{trace_id}/response``, ``DELETE /chat/{trace_id}``
and ``GET /chat/{trace_id}/events``."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator

from quart import Blueprint, Response, jsonify, request
from quart_schema import document_querystring, document_request, document_response

from actors.errors import JobNotFound
from actors.job_events import (
    JobEnded,
    JobEvent,
    ListenerDropped,
    StatusChanged,
    TextDelta,
    TextReset,
)
from actors.store import JobRecord

from . import sse
from .errors import BadInput
from .exchange import note_log_id
from .models import (
    JobAccepted,
    JobRequest,
    JobResult,
    WaitQuery,
    check_length,
    read_body,
)
from .openapi import EVENT_STREAM, document_errors, document_media
from .state import app_state, chat_service

blueprint = Blueprint("jobs", __name__)

ACCEPTED_MESSAGE = "Chat request received and is being processed"
# The 202's message fits the status it reports: an idempotent replay may find the job in any
# status (issue 11, finding 10: a cancelled job's replay said "is being processed").
STATUS_MESSAGES = {
    "processing": ACCEPTED_MESSAGE,
    "queued": "Chat request received and is queued until a worker is free",
    "completed": "Chat request already completed; its answer is at the Location",
    "failed": "Chat request already failed; its error is at the Location",
    "cancelled": "Chat request was cancelled; it will not be processed",
}
_MAX_KEY_CHARS = 255


def _result_body(record: JobRecord) -> dict[str, object]:
    body: dict[str, object] = {
        "traceId": record.trace_id,
        "status": record.status,
        "model": record.model,
        "timestamp": record.timestamp,
    }
    if record.response is not None:
        body["response"] = record.response
    if record.usage is not None:
        body["usage"] = record.usage
    if record.error is not None:
        body["error"] = record.error
    return body


def _trace_id(raw: str) -> str:
    """The canonical form of a trace ID; a malformed one is as unknown as a missing one."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise JobNotFound(f"no job with trace ID {raw[:64]!r}") from None


@blueprint.post("/chat")
@document_request(JobRequest)
@document_response(JobAccepted, 202)
@document_errors(400, 404, 408, 409, 413, 503)
async def submit() -> tuple[Response, int]:
    """Start a chat job and answer at once with its trace ID.

    An ``Idempotency-Key`` header makes a retried POST return the first job's trace ID
    instead of starting a second job; the same key with another body is 409.
    """
    settings = app_state().settings
    body = await read_body(JobRequest)
    check_length(body.message, settings.chat.max_prompt_chars, "message")
    model = body.model or settings.chat.default_model
    temperature = (
        settings.chat.default_temperature if body.temperature is None else body.temperature
    )
    params = body.openai_params()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= _MAX_KEY_CHARS:
        raise BadInput(f"Idempotency-Key must have 1 to {_MAX_KEY_CHARS} characters")
    fingerprint = hashlib.sha256(
        json.dumps([body.message, model, temperature, params], sort_keys=True).encode()
    ).hexdigest()
    record, replayed = await chat_service().submit_job(
        body.message, model, temperature, idempotency_key=key, fingerprint=fingerprint,
        params=params,
    )
    note_log_id(request.scope, record.trace_id)
    response = jsonify(
        {"traceId": record.trace_id, "message": STATUS_MESSAGES.get(record.status,
                                                                   ACCEPTED_MESSAGE),
         "status": record.status}
    )
    response.headers["Location"] = f"/chat/{record.trace_id}/response"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 202


@blueprint.get("/chat/<trace_id>/response")
@document_querystring(WaitQuery)
@document_response(JobResult, 200)
@document_errors(400, 404, 503)
async def result(trace_id: str) -> Response:
    """The job's status and, once it has finished, its answer or error.

    ``?wait=N`` (0 to ``jobs.max_wait_s``, 30 s) holds the request until the job finishes
    or N seconds pass.
    """
    trace_id = _trace_id(trace_id)
    note_log_id(request.scope, trace_id)
    longest = app_state().settings.jobs.max_wait_s
    try:
        wait_s = float(request.args.get("wait", "0"))
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= longest:  # also refuses nan
        raise BadInput(f"wait must be a number of seconds from 0 to {longest:g}")
    record = await chat_service().job(trace_id, wait_s)
    return jsonify(_result_body(record))


@blueprint.delete("/chat/<trace_id>")
@document_response(JobResult, 200)
@document_errors(404, 503)
async def cancel(trace_id: str) -> Response:
    """Cancel a job that is still queued or running; a finished job is left as it is."""
    trace_id = _trace_id(trace_id)
    note_log_id(request.scope, trace_id)
    record = await chat_service().cancel_job(trace_id)
    return jsonify(_result_body(record))


def _event_bytes(event: JobEvent) -> bytes:
    if isinstance(event, TextDelta):
        return sse.sse_event({"delta": event.text})
    if isinstance(event, StatusChanged):
        return sse.sse_event({"traceId": event.trace_id, "status": event.status,
                              "timestamp": event.timestamp}, "status")
    if isinstance(event, TextReset):
        return sse.sse_event({"reason": event.reason}, "reset")
    if isinstance(event, JobEnded):
        return sse.sse_event(_result_body(event.record), "result") + sse.DONE
    assert isinstance(event, ListenerDropped)
    return sse.sse_event({"type": "events_dropped", "message": event.reason}, "error")


@blueprint.get("/chat/<trace_id>/events")
@document_media(200, EVENT_STREAM, "the job's events until it ends: `event: status`, "
                "`data: {\"delta\"}` pieces (`event: reset`: the text so far is void, the "
                "answer starts again), `event: result` with the final record, then "
                "`data: [DONE]`")
@document_errors(404, 503)
async def events(trace_id: str) -> Response:
    """Server-sent events of the job until it ends: ``event: status`` for each status,
    ``data: {"delta": ...}`` for each piece of the answer, then ``event: result`` with the
    job's final record (as ``GET /chat/{trace_id}/response``) and ``data: [DONE]``.

    A listener that joins late first gets the current status and the text so far. One that
    falls ``jobs.events_buffer`` events behind is dropped (``event: error``, no ``[DONE]``)
    rather than slowing the job. An unknown trace ID is a 404 JSON error.
    """
    trace_id = _trace_id(trace_id)
    note_log_id(request.scope, trace_id)
    listener = await chat_service().job_events(trace_id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in listener:
                yield _event_bytes(event)
        finally:
            listener.close()  # a client that left stops listening; the job goes on

    response = Response(stream(), status=200, headers=dict(sse.HEADERS))
    response.timeout = None  # the stream lasts as long as the job (jobs.max_duration_s)
    return response
