"""Request and response bodies, as pydantic models that quart-schema documents."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from quart import request

from .errors import BadInput, TooLarge

Temperature = Annotated[float, Field(strict=True, ge=0, le=2)]
ModelName = Annotated[str, Field(strict=True, min_length=1, max_length=200)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class ChatRequest(BaseModel):
    """One turn of the cookie's conversation."""

    model_config = ConfigDict(extra="ignore")
    prompt: Annotated[str, Field(strict=True, min_length=1)]
    model: ModelName | None = None
    temperature: Temperature | None = None
    stream: Annotated[bool, Field(strict=True)] = False  # true: answered as server-sent events

    _blank = field_validator("prompt")(_not_blank)


class Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatReply(BaseModel):
    response: str
    model: str
    usage: Usage | None = None


class HistoryMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class History(BaseModel):
    messages: list[HistoryMessage]


class JobRequest(BaseModel):
    """A background chat job, answered by trace ID."""

    model_config = ConfigDict(extra="ignore")
    message: Annotated[str, Field(strict=True, min_length=1)]
    model: ModelName | None = None
    temperature: Temperature | None = None

    _blank = field_validator("message")(_not_blank)


JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


class JobAccepted(BaseModel):
    """The answer to POST /chat; an idempotent replay shows the job's current status."""

    traceId: str  # noqa: N815 - the Motia API's field name
    message: str
    status: JobStatus


class JobError(BaseModel):
    type: str
    message: str


class JobResult(BaseModel):
    traceId: str  # noqa: N815
    status: JobStatus
    response: str | None = None
    model: str
    usage: Usage | None = None
    error: JobError | None = None
    timestamp: str


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=30, description="seconds to wait for the job to finish")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


Model = TypeVar("Model", bound=BaseModel)


async def read_body(model: type[Model]) -> Model:
    """Parse the request's JSON body into ``model``; BadInput (400) or TooLarge (413)."""
    return parse_body(await request.get_data(cache=False), model)


def parse_body(raw: bytes, model: type[Model]) -> Model:
    """Parse a JSON object body into ``model``; raises BadInput (400).

    JSON nested deeper than the interpreter's recursion limit (about 1,000 levels: ``[[[...``)
    makes ``json.loads`` raise RecursionError; that is the client's error, not ours.
    """
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the request body is not valid JSON") from None
    except RecursionError:
        raise BadInput("the request body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadInput("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadInput(describe(error)) from None


def describe(error: ValidationError) -> str:
    """One readable line per problem: ``prompt: Field required``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors()
    )


def check_length(text: str, limit: int, field: str) -> None:
    if len(text) > limit:
        raise TooLarge(f"{field} has {len(text)} characters; the limit is {limit}")
