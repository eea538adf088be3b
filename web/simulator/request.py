"""A chat completion body as the simulator checks it: OpenAI's 400s, naming the param.

`parse_chat_request` turns a body into a `ChatRequest` or raises `ApiError` with OpenAI's
message, ``param`` and ``code`` for the first thing wrong. The sampling parameters the server
passes through (``max_tokens``, ``top_p``, ``stop``, the penalties, ``seed``, ``user``) are
checked against OpenAI's ranges; ``null`` means "not given", as it does for OpenAI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .exchange import ApiError

ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_STOP_SEQUENCES = 4
_INT64 = 2**63

_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using"
    " your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was"
    " not valid JSON.)"
)

_DECIMAL_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
"""The decimal parameters and their inclusive ranges, as OpenAI documents them."""
_INTEGER_RANGES = {"max_tokens": (1, None), "seed": (-_INT64, _INT64 - 1)}


@dataclass(frozen=True)
class ChatRequest:
    """What the simulator uses of a chat completion body.

    ``messages`` are (role, text) pairs in the order sent; ``params`` holds the sampling
    parameters that were given and not null (``temperature``, ``max_tokens``, ``top_p``,
    ``stop`` as a list, ``presence_penalty``, ``frequency_penalty``, ``seed``, ``user``).
    """

    model: str
    messages: list[tuple[str, str]]
    stream: bool = False
    include_usage: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def max_tokens(self) -> int | None:
        """The ``max_tokens`` asked for, or None."""
        return self.params.get("max_tokens")

    @property
    def stop(self) -> list[str]:
        """The stop sequences asked for (none: an empty list)."""
        return self.params.get("stop", [])

    def record(self) -> dict[str, Any]:
        """The request as JSON for ``GET /_simulator/received``: messages in order, system first
        if it was sent first."""
        messages = [{"role": role, "content": text} for role, text in self.messages]
        return {
            "model": self.model,
            "messages": messages,
            "stream": self.stream,
            "include_usage": self.include_usage,
            **self.params,
        }


def json_type(value: object) -> str:
    """How OpenAI's messages name the JSON type of ``value`` ("an integer", "a decimal", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _invalid_type(param: str, expected: str, value: object) -> ApiError:
    got = json_type(value)
    message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
    return ApiError(400, message, param=param, code="invalid_type")


def _missing(param: str) -> ApiError:
    message = f"Missing required parameter: '{param}'."
    return ApiError(400, message, param=param, code="missing_required_parameter")


def _out_of_range(
    param: str, kind: str, value: float, low: float | None, high: float | None
) -> ApiError | None:
    if low is not None and value < low:
        side, bound, op = "below minimum", low, ">="
    elif high is not None and value > high:
        side, bound, op = "above maximum", high, "<="
    else:
        return None
    shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
    message = (
        f"Invalid '{param}': {kind} {side} value. Expected a value {op} {shown}, but got"
        f" {value} instead."
    )
    code = f"{kind}_{side.split()[0]}_{'min' if op == '>=' else 'max'}_value"
    return ApiError(400, message, param=param, code=code)


def _decimal(body: dict[str, Any], param: str) -> float | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type(param, "a decimal", value)
    error = _out_of_range(param, "decimal", value, *_DECIMAL_RANGES[param])
    if error is not None:
        raise error
    return value


def _integer(body: dict[str, Any], param: str) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(param, "an integer", value)
    error = _out_of_range(param, "integer", value, *_INTEGER_RANGES[param])
    if error is not None:
        raise error
    return value


def _stop(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _invalid_type("stop", "one of a string or array of strings", value)
    if len(value) > MAX_STOP_SEQUENCES:
        message = (
            f"Invalid 'stop': array too long. Expected an array with maximum length"
            f" {MAX_STOP_SEQUENCES}, but got an array with length {len(value)} instead."
        )
        raise ApiError(400, message, param="stop", code="array_above_max_length")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid_type(f"stop[{index}]", "a string", item)
    return value


def _message_text(index: int, message: object) -> tuple[str, str]:
    """The role and text of ``messages[index]``; content may be a string or text parts."""
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(param, "an object", message)
    if "role" not in message:
        raise _missing(f"{param}.role")
    role = message["role"]
    if role not in ROLES:
        supported = ", ".join(f"'{name}'" for name in ROLES)
        raise ApiError(
            400,
            f"Invalid value: {json.dumps(role)}. Supported values are: {supported}.",
            param=f"{param}.role",
            code="invalid_value",
        )
    if "content" not in message:
        raise _missing(f"{param}.content")
    content = message["content"]
    if isinstance(content, str):
        return role, content
    expected = "one of a string or array of text parts"
    if not isinstance(content, list):
        raise _invalid_type(f"{param}.content", expected, content)
    texts = []
    for part_index, part in enumerate(content):
        if not (isinstance(part, dict) and isinstance(part.get("text"), str)):
            raise _invalid_type(f"{param}.content[{part_index}]", "a text part", part)
        texts.append(part["text"])
    return role, "".join(texts)


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got"
            " an empty array instead.",
            param="messages",
            code="empty_array",
        )
    return [_message_text(index, message) for index, message in enumerate(messages)]


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage``; options without a stream are a 400."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    if not stream:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise ApiError(400, message, param="stream_options")
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _invalid_type("stream_options.include_usage", "a boolean", include_usage)
    return True, include_usage is True


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {name: _decimal(body, name) for name in _DECIMAL_RANGES}
    params |= {name: _integer(body, name) for name in _INTEGER_RANGES}
    params["stop"] = _stop(body.get("stop"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)
    params["user"] = user
    return {name: value for name, value in params.items() if value is not None}


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Check a chat completion body as OpenAI does; raise `ApiError` (400) naming the param."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, _BAD_JSON_MESSAGE) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"Invalid body: expected an object, but got {json_type(body)}.")
    if "model" not in body:
        raise ApiError(400, "you must provide a model parameter", param="model")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise _invalid_type("model", "a non-empty string", model)
    messages = _messages(body)
    params = _params(body)
    stream, include_usage = _streaming(body)
    return ChatRequest(model, messages, stream, include_usage, params)
