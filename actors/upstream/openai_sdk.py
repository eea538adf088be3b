"""One attempt at an OpenAI chat completion, through the official SDK: `OpenAIUpstream`.

The SDK's own retries are off (``max_retries=0``): the caller above retries. Every SDK error
is translated here into a domain error from :mod:`actors.errors`, so nothing above this module
sees an ``openai`` exception. Messages never carry the API key.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

import httpx2
import openai

from ..errors import (
    UpstreamCertificateError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefusedKey,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .base import ChatRequest, Completion, ModelInfo, StreamEvent
from .client import UpstreamHTTPClient
from .headers import rate_limit_of, retry_after_of
from .streaming import CompletionStream
from .transport import TrioHTTP11Transport

_JSON = {"Content-Type": "application/json"}


class OpenAIUpstream:
    """An ``AsyncOpenAI`` client for one base URL and key; each call makes one attempt."""

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
        self._http = UpstreamHTTPClient(
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
        self._completions_url = _absolute(self._client.base_url, "chat/completions")

    async def complete(self, request: ChatRequest) -> Completion:
        """Make one call. Raises an :class:`UpstreamError` subclass on any failure."""
        response = await self._post(request, stream=False)
        return _completion_from(response)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Make one streamed call (``stream_options.include_usage`` on); see
        `actors.upstream.Upstream.stream`. The response is closed when the block is left."""
        events = CompletionStream(await self._post(request, stream=True), self._without_key)
        try:
            yield events
        finally:
            await events.aclose()

    async def list_models(self) -> list[ModelInfo]:
        """GET /models, one attempt. Raises an :class:`UpstreamError` subclass on failure."""
        with self._translated_errors():
            response = await self._client.get(
                "/models", cast_to=httpx2.Response,
                options={"security": {"bearer_auth": True}},
            )
        try:
            return [
                ModelInfo(id=str(model["id"]), owned_by=str(model.get("owned_by") or ""),
                          created=int(model.get("created") or 0))
                for model in response.json()["data"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamUnavailable("the upstream sent a malformed model list") from None

    async def aclose(self) -> None:
        await self._client.close()

    async def _post(self, request: ChatRequest, *, stream: bool) -> httpx2.Response:
        """POST /chat/completions; with ``stream`` the body is left to read as it arrives."""
        payload: dict[str, object] = {
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
        }
        if request.params:
            payload.update(request.params)
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        with self._translated_errors():
            # The SDK's own request path (auth, headers, error classes) without
            # chat.completions.create's recursive TypedDict transform of every message (14%
            # of a turn's CPU in profiles), and with the body already encoded: a dict body is
            # deep-copied and encoded again by the SDK, the whole history on every turn.
            return await self._client.post(
                self._completions_url,
                cast_to=httpx2.Response,
                content=json.dumps(payload).encode(),
                options={"security": {"bearer_auth": True}, "headers": _JSON},
                stream=stream,
            )

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Turn the SDK's errors into domain errors, without the key in any message."""
        try:
            yield
        except openai.APIStatusError as error:
            detail = self._without_key(_message_of(error))
            raise translate_status(error.status_code, error.response.headers, detail) from None
        except openai.APITimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except openai.APIConnectionError as error:
            raise connection_error(error) from None

    def _without_key(self, text: str) -> str:
        return text.replace(self._key, "****") if self._key else text


def connection_error(error: openai.APIConnectionError) -> UpstreamError:
    """`UpstreamCertificateError` when the upstream's certificate failed verification (never
    retried), else `UpstreamUnavailable` naming what failed."""
    cause: BaseException | None = error.__cause__
    seen = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return UpstreamCertificateError(
                f"the upstream's TLS certificate failed verification ({cause.verify_message}); "
                "if a private CA signs it, set SSL_CERT_FILE to a PEM file of the CA "
                "certificates to trust"
            )
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return UpstreamUnavailable(
        f"could not reach the upstream: {type(error.__cause__ or error).__name__}"
    )


def _absolute(base_url: httpx2.URL, path: str) -> str:
    """``path`` under ``base_url`` as the SDK joins them, as one absolute URL.

    The SDK parses a relative path and then parses it again joined to its base URL, on every
    call; an absolute URL it parses once and uses as it is. Saves ~35 us of CPU per call
    (callgrind, ``python -m bench.transport_cpu``'s calls: 3.03 M -> 2.92 M instructions);
    ``tests/test_upstream_cpu_tricks.py`` checks it is the URL the SDK would build.
    """
    return str(base_url.copy_with(raw_path=base_url.raw_path + path.encode("ascii")))


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


def _redact(text: str) -> str:
    """Drop anything that looks like a key from an upstream message before we repeat it."""
    words = [word if not word.startswith("sk-") else "sk-****" for word in text.split(" ")]
    return " ".join(words)[:500]
