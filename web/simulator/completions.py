"""Chat completions as the simulator does them: check the body, build the reply, stream it.

`parse_chat_request` refuses a body as OpenAI would (400, naming the param); `completion` is the
deterministic answer, ``Simulated reply to "<last user message>" (messages received: N)``, for
model ``<model>-simulated``; `send_stream` sends it as ``chat.completion.chunk`` SSE events.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .exchange import ApiError, Exchange

ROLES = ("system", "user", "assistant", "developer", "tool")
SYSTEM_FINGERPRINT = "fp_simulated"

_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using"
    " your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was"
    " not valid JSON.)"
)


@dataclass(frozen=True)
class ChatRequest:
    """What the simulator uses of a chat completion body; ``messages`` as (role, text)."""

    model: str
    messages: list[tuple[str, str]]
    stream: bool
    include_usage: bool


def _json_type(value: object) -> str:
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
    message = (
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead."
    )
    return ApiError(400, message, param=param, code="invalid_type")


def _missing(param: str) -> ApiError:
    message = f"Missing required parameter: '{param}'."
    return ApiError(400, message, param=param, code="missing_required_parameter")


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


def _check_temperature(temperature: object) -> None:
    if temperature is None:
        return
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _invalid_type("temperature", "a decimal", temperature)
    if not 0 <= temperature <= 2:
        low = temperature < 0
        raise ApiError(
            400,
            f"Invalid 'temperature': decimal {'below minimum' if low else 'above maximum'}"
            f" value. Expected a value {'>= 0' if low else '<= 2'}, but got {temperature}"
            " instead.",
            param="temperature",
            code="decimal_below_min_value" if low else "decimal_above_max_value",
        )


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Check a chat completion body as OpenAI does; raise `ApiError` (400) naming the param."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, _BAD_JSON_MESSAGE) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"Invalid body: expected an object, but got {_json_type(body)}.")
    if "model" not in body:
        raise ApiError(400, "you must provide a model parameter", param="model")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise _invalid_type("model", "a non-empty string", model)
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
    texts = [_message_text(index, message) for index, message in enumerate(messages)]
    _check_temperature(body.get("temperature"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    return ChatRequest(model, texts, bool(stream), include_usage)


def completion(request: ChatRequest) -> dict[str, Any]:
    """The deterministic ``chat.completion`` answer to ``request`` (id and time aside)."""
    last_user = next((text for role, text in reversed(request.messages) if role == "user"), "")
    content = f'Simulated reply to "{last_user}" (messages received: {len(request.messages)})'
    prompt_tokens = max(1, math.ceil(sum(len(text) for _, text in request.messages) / 4))
    completion_tokens = max(1, math.ceil(len(content) / 4))
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"{request.model}-simulated",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _sse(data: object) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def send_stream(exchange: Exchange, whole: dict[str, Any], include_usage: bool) -> None:
    """Send the completion ``whole`` as ``chat.completion.chunk`` SSE events, then ``[DONE]``."""
    base = {
        "id": whole["id"],
        "object": "chat.completion.chunk",
        "created": whole["created"],
        "model": whole["model"],
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

    words = re.findall(r"\S+\s*", whole["choices"][0]["message"]["content"])
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": "".join(words[at : at + 4])}) for at in range(0, len(words), 4)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(_sse({**base, "choices": [], "usage": whole["usage"]}))
    await exchange.start(200, "text/event-stream; charset=utf-8", [("cache-control", "no-cache")])
    for event in events:
        await exchange.send({"type": "http.response.body", "body": event, "more_body": True})
    await exchange.send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
