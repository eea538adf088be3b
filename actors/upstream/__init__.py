"""The upstream: the `Upstream` protocol and its implementation over the official openai SDK."""

from .base import ChatRequest, Completion, RateLimitInfo, Upstream
from .openai_sdk import (
    MAX_RETRY_AFTER_S,
    OpenAIUpstream,
    rate_limit_of,
    retry_after_of,
    translate_status,
)

__all__ = [
    "MAX_RETRY_AFTER_S",
    "ChatRequest",
    "Completion",
    "OpenAIUpstream",
    "RateLimitInfo",
    "Upstream",
    "rate_limit_of",
    "retry_after_of",
    "translate_status",
]
