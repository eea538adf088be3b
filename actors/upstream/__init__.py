"""The upstream: the `Upstream` protocol and its implementation over the official openai SDK."""

from .base import (
    ChatRequest,
    Completion,
    Delta,
    Head,
    ModelInfo,
    RateLimitInfo,
    StreamEvent,
    Upstream,
)
from .headers import MAX_RETRY_AFTER_S, rate_limit_of, retry_after_of
from .openai_sdk import OpenAIUpstream, translate_status

__all__ = [
    "MAX_RETRY_AFTER_S",
    "ChatRequest",
    "Completion",
    "Delta",
    "Head",
    "ModelInfo",
    "OpenAIUpstream",
    "RateLimitInfo",
    "StreamEvent",
    "Upstream",
    "rate_limit_of",
    "retry_after_of",
    "translate_status",
]
