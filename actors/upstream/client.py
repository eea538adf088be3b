"""The SDK's HTTP client: `UpstreamHTTPClient`, an ``httpx2.AsyncClient`` that builds requests
with less repeated work."""

from __future__ import annotations

from typing import Any

import httpx2

_REMEMBERED = 32
"""How many URLs and header sets a client keeps; the SDK sends a handful of distinct ones."""


class UpstreamHTTPClient(httpx2.AsyncClient):
    """``httpx2.AsyncClient`` that parses each distinct URL, and merges each distinct header
    list with its own headers, once.

    The SDK builds every request from strings and header lists that hardly ever change for one
    client (the URL, its ``Authorization``, ``User-Agent`` and ``X-Stainless-*`` headers; the
    ``Content-Length`` comes later, from the body), and httpx2's ``build_request`` parses and
    normalises them again each time. Per ``OpenAIUpstream.complete`` call (bodies of varying
    length, callgrind): parsing the URL once saves ~35 us of CPU (0.12 M of 3.03 M
    instructions), merging the headers once ~60 us (0.21 M). The result is the same: an
    ``httpx2.URL`` is immutable, and each request gets its own copy of the merged
    ``httpx2.Headers`` (``tests/test_upstream_cpu_tricks.py``). Everything else (auth,
    redirects, cookies, timeouts, errors) is httpx2's own.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx2.URL] = {}
        self._merged_headers: dict[tuple[Any, ...], httpx2.Headers] = {}

    def _merge_url(self, url: httpx2.URL | str) -> httpx2.URL:
        if isinstance(url, str):
            parsed = self._urls.get(url)
            if parsed is None:
                parsed = httpx2.URL(url)
                _remember(self._urls, url, parsed)
            url = parsed
        return super()._merge_url(url)

    def _merge_headers(self, headers: Any = None) -> Any:
        if not isinstance(headers, list):  # the SDK passes a list of (name, value) pairs
            return super()._merge_headers(headers)
        key = (tuple(self.headers.raw), tuple(headers))
        try:
            merged = self._merged_headers.get(key)
        except TypeError:  # pairs given as lists: unhashable, so merged as httpx2 does
            return super()._merge_headers(headers)
        if merged is None:
            merged = super()._merge_headers(headers)
            _remember(self._merged_headers, key, merged)
        return httpx2.Headers(merged)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _REMEMBERED:
        cache.clear()
    cache[key] = value
