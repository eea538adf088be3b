"""One attempt at an OpenAI chat completion, through the official SDK.

The SDK's own retries are off (``max_retries=0``): the supervisor retries. Every SDK error
is translated here into a domain error from :mod:`actors.errors`, so nothing above this module
sees an ``openai`` exception. Messages never carry the API key.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping

import httpx2
import openai

from ..errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefusedKey,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .base import ChatRequest, Completion, RateLimitInfo
from .transport import TrioHTTP11Transport

_JSON = {"Content-Type": "application/json"}


def rate_limit_of(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The request budget the upstream reported, or None when it sent no such headers."""
    limit = headers.get("x-ratelimit-limit-requests")
    remaining = headers.get("x-ratelimit-remaining-requests")
    if limit is None or remaining is None or not limit.isdigit() or not remaining.isdigit():
        return None
    return RateLimitInfo(int(limit), int(remaining))


class OpenAIUpstream:
    """An ``AsyncOpenAI`` client for one base URL and key; ``complete`` makes one attempt."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_connections: int = 256,
        label: str = "openai",
    ) -> None:
        self.label = label
        self._key = api_key  # only to take it out of upstream error text we repeat
        self.base_url = base_url or "https://api.openai.com/v1"
        self._http = httpx2.AsyncClient(
            transport=TrioHTTP11Transport(max_connections=max_connections),
            timeout=timeout_s,
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=timeout_s,
            http_client=self._http,
        )

    async def complete(self, request: ChatRequest) -> Completion:
        """Make one call. Raises an :class:`UpstreamError` subclass on any failure."""
        try:
            # The SDK's own request path (auth, headers, error classes) without
            # chat.completions.create's recursive TypedDict transform of every message (14%
            # of a turn's CPU in profiles), and with the body already encoded: a dict body is
            # deep-copied and encoded again by the SDK, the whole history on every turn.
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=json.dumps({
                    "model": request.model,
                    "messages": request.messages,
                    "temperature": request.temperature,
                }).encode(),
                options={"security": {"bearer_auth": True}, "headers": _JSON},
            )
        except openai.APIStatusError as error:
            detail = _message_of(error).replace(self._key, "****") if self._key else \
                _message_of(error)
            raise translate_status(error.status_code, error.response.headers, detail) from None
        except openai.APITimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except openai.APIConnectionError as error:
            raise UpstreamUnavailable(
                f"could not reach the upstream: {type(error.__cause__ or error).__name__}"
            ) from None
        return _completion_from(response)

    async def aclose(self) -> None:
        await self._client.close()


def _completion_from(response: httpx2.Response) -> Completion:
    try:
        body = response.json()
        content = body["choices"][0]["message"].get("content") or ""
        model = str(body.get("model", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamUnavailable("the upstream sent a malformed completion") from None
    return Completion(
        content=content,
        model=model,
        usage=body.get("usage"),
        rate_limit=rate_limit_of(response.headers),
    )


def _message_of(error: openai.APIStatusError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("message") if isinstance(body.get("message"), str) else None
    return detail or f"HTTP {error.status_code}"


def translate_status(status: int, headers: Mapping[str, str], detail: str) -> UpstreamError:
    """The domain error for an upstream HTTP error status."""
    if status in (401, 403):
        return UpstreamRefusedKey(
            f"the upstream refused the API key (HTTP {status}); check OPENAI_API_KEY"
        )
    if status == 429:
        return UpstreamRateLimited(
            "the upstream is rate limiting requests",
            retry_after=retry_after_of(headers),
            rate_limit=rate_limit_of(headers),
        )
    if status >= 500 or status == 408:
        return UpstreamUnavailable(f"the upstream failed with HTTP {status}")
    return UpstreamRejected(f"the upstream rejected the request: {_redact(detail)}", status)


# A Retry-After longer than this is taken as this: one bad header must not close the shared
# gate for hours (``inf`` would close it for good).
MAX_RETRY_AFTER_S = 300.0


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date).

    None when absent or unreadable; never negative, never over ``MAX_RETRY_AFTER_S``.
    """
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    try:
        if milliseconds:
            seconds = float(milliseconds) / 1000
        elif value:
            seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None and value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            seconds = email.utils.mktime_tz(parsed) - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _redact(text: str) -> str:
    """Drop anything that looks like a key from an upstream message before we repeat it."""
    words = [word if not word.startswith("sk-") else "sk-****" for word in text.split(" ")]
    return " ".join(words)[:500]
