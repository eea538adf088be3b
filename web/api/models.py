"""Request and response bodies, as pydantic models that quart-schema documents."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from quart import request

from .errors import BadInput, TooLarge

Temperature = Annotated[float, Field(strict=True, ge=0, le=2)]
ModelName = Annotated[str, Field(strict=True, min_length=1, max_length=200)]
Penalty = Annotated[float, Field(strict=True, ge=-2, le=2)]
StopSequence = Annotated[str, Field(strict=True, min_length=1)]
_INT64 = 2**63


def _whole(value: object) -> object:
    # JSON Schema's "integer" includes 53.0, and so do OpenAI and schemathesis; strict
    # pydantic would refuse it. Anything else that is not an int is left to the strict check.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Whole = BeforeValidator(_whole)
Int64 = Annotated[int, Field(strict=True, ge=-_INT64, le=_INT64 - 1), Whole]
MAX_STOP_SEQUENCES = 4
StopList = Annotated[list[StopSequence], Field(min_length=1, max_length=MAX_STOP_SEQUENCES)]
# Not blank: the pattern says so in the schema; _not_blank checks it with its own message.
Text = Annotated[str, Field(strict=True, min_length=1, json_schema_extra={"pattern": r"\S"})]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class OpenAIParameters(BaseModel):
    """The OpenAI parameters passed through to the upstream, checked against OpenAI's ranges.

    An unknown field is refused (400, naming it), so a misspelt parameter is never silently
    dropped. ``null`` means "not given", as it does for OpenAI.
    """

    model_config = ConfigDict(extra="forbid")
    max_tokens: Annotated[int, Field(strict=True, ge=1), Whole] | None = Field(
        None, description="the most tokens the answer may have")
    top_p: Annotated[float, Field(strict=True, ge=0, le=1)] | None = None
    stop: StopSequence | StopList | None = Field(
        None, description="up to 4 sequences where the upstream stops the answer")
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Int64 | None = None
    user: Annotated[str, Field(strict=True)] | None = Field(
        None, description="the end user's ID, for the upstream's abuse monitoring")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: object) -> object:
        # One plain message instead of one per branch of the union.
        if value is None or (isinstance(value, str) and value):
            return value
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_STOP_SEQUENCES or \
                not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"must be a non-empty string or a list of 1 to "
                             f"{MAX_STOP_SEQUENCES} non-empty strings")
        return value

    def openai_params(self) -> dict[str, Any]:
        """The parameters given (not null), as the upstream's request body names them."""
        return {
            name: getattr(self, name) for name in _PARAMETER_NAMES
            if getattr(self, name) is not None
        }


_PARAMETER_NAMES = tuple(OpenAIParameters.model_fields)


class ChatRequest(OpenAIParameters):
    """One turn of the cookie's conversation."""

    prompt: Text
    model: ModelName | None = None
    temperature: Temperature | None = None
    stream: Annotated[bool, Field(strict=True)] = False  # true: answered as server-sent events

    _blank = field_validator("prompt")(_not_blank)

    @field_validator("stream", mode="before")
    @classmethod
    def _boolean(cls, value: object) -> object:
        # Literal[False] alone would take 0 (0 == False); only a JSON boolean is one.
        if not isinstance(value, bool):
            raise ValueError("must be a boolean")
        return value


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


class JobRequest(OpenAIParameters):
    """A background chat job, answered by trace ID."""

    message: Text
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


class ModelEntry(BaseModel):
    """One model, as OpenAI's ``GET /v1/models`` lists it."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelListBody(BaseModel):
    """``GET /api/models``: OpenAI's list shape, so OpenAI clients can read it as it is."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


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
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: "
        + ("unknown field" if problem["type"] == "extra_forbidden"
           else problem["msg"].removeprefix("Value error, "))
        for problem in error.errors()
    )


def check_length(text: str, limit: int, field: str) -> None:
    if len(text) > limit:
        raise TooLarge(f"{field} has {len(text)} characters; the limit is {limit}")
