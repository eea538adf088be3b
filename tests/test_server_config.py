"""Hypercorn's settings as ``web/api/server.py`` makes them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypercorn.config import Config as HypercornConfig

from web.api import server
from web.api.server import hypercorn_config


def test_the_response_headers_kept_for_a_second_are_hypercorns_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000_000.2]
    monkeypatch.setattr(server, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr("hypercorn.config.time", lambda: clock[0])
    config = hypercorn_config("127.0.0.1:0", 1)

    def hypercorns() -> list[tuple[bytes, bytes]]:
        return HypercornConfig.response_headers(config, "h11")

    first = config.response_headers("h11")
    assert first == hypercorns() == [(b"date", b"Mon, 12 Jan 1970 13:46:40 GMT")]
    first.append((b"x-mine", b"1"))  # each caller gets its own list
    clock[0] = 1_000_000.9
    assert config.response_headers("h11") == hypercorns()
    clock[0] = 1_000_001.0
    assert config.response_headers("h11") == hypercorns() == [
        (b"date", b"Mon, 12 Jan 1970 13:46:41 GMT")
    ]
