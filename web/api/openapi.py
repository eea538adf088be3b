"""The OpenAPI description: every status a route can return, each with its body.

quart-schema documents a route's JSON bodies (``@document_request``, ``@document_response``),
one per status, always as ``application/json``, with an empty description. This module adds
what it cannot say, through `OpenAPIProvider`, the hook quart-schema offers for that:

- `document_media`: a body of another media type (``text/plain`` for ``/metrics``,
  ``text/html`` for ``/debug``, ``text/event-stream`` for the streams), alone or beside the
  JSON body of the same status, or no body at all (the 204 of ``DELETE /api/chat``);
- `document_errors`: the JSON error body (``{"error": {type, message}}``) for each status;
- every response gets a description from its status, and 429 and 503 the ``Retry-After``
  header they carry; a documented request body is required (quart-schema leaves it optional,
  and a POST without a body is a 400).

``tests/test_openapi.py`` runs schemathesis against ``/openapi.json`` of a running server.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from quart_schema import OpenAPIProvider, document_response
from werkzeug.routing import Rule

from .models import ErrorBody

Handler = TypeVar("Handler", bound=Callable[..., Any])

_MEDIA_ATTRIBUTE = "_actorchat_media"

RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}

EVENT_STREAM = "text/event-stream"
EVENT_SCHEMA: dict[str, Any] = {
    "description": "one server-sent event; `data` is compact JSON, or `[DONE]` at the end",
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}
"""One event of an event stream, as schema-driven clients (schemathesis) read it."""

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "debugToken": {"type": "http", "scheme": "bearer"},  # DEBUG_TOKEN
}
DEBUG_SECURITY: list[dict[str, list[str]]] = [{"debugToken": []}, {}]
"""The debug routes take the bearer token, or nothing from loopback when no token is set."""


def document_media(
    status: int, media_type: str | None, description: str = "",
    schema: dict[str, Any] | None = None,
) -> Callable[[Handler], Handler]:
    """Document a ``status`` answer whose body is ``media_type`` (None: no body).

    ``schema`` is the body's JSON schema (a string by default). A JSON body documented for the
    same status with ``@document_response`` is kept beside it.
    """

    default = EVENT_SCHEMA if media_type == EVENT_STREAM else {"type": "string"}

    def decorator(handler: Handler) -> Handler:
        bodies = getattr(handler, _MEDIA_ATTRIBUTE, [])
        bodies.append((status, media_type, description, schema or default))
        setattr(handler, _MEDIA_ATTRIBUTE, bodies)
        return handler

    return decorator


def document_errors(*statuses: int) -> Callable[[Handler], Handler]:
    """Document the JSON error body for each of ``statuses``."""

    def decorator(handler: Handler) -> Handler:
        for status in statuses:
            handler = document_response(ErrorBody, status)(handler)
        return handler

    return decorator


class ActorChatOpenAPI(OpenAPIProvider):
    """quart-schema's provider, plus `document_media` bodies, descriptions, Retry-After."""

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        handler = self._app.view_functions[rule.endpoint]
        media = getattr(handler, _MEDIA_ATTRIBUTE, [])
        for operations in paths.values():
            for method, operation in list(operations.items()):
                # quart-schema shares one responses dict among a rule's methods.
                operation = operations[method] = {
                    **operation, "responses": _responses(operation.get("responses", {}), media)
                }
                if "requestBody" in operation:  # every documented body is required
                    operation["requestBody"] = {**operation["requestBody"], "required": True}
        return paths, components


def _responses(
    documented: dict[Any, Any], media: list[tuple[int, str | None, str, dict[str, Any]]],
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {**response, "content": dict(response.get("content", {}))}
        for status, response in documented.items()
    }
    for status, media_type, description, schema in media:
        response = responses.setdefault(str(status), {"description": description})
        if description:
            response["description"] = description
        if media_type is None:
            response.pop("content", None)
        else:
            response.setdefault("content", {})[media_type] = {"schema": schema}
    for status, response in responses.items():
        if not response.get("content"):
            response.pop("content", None)
        if not response.get("description"):
            response["description"] = HTTPStatus(int(status)).phrase
        if status in ("429", "503"):
            response["headers"] = RETRY_AFTER
    return dict(sorted(responses.items()))
