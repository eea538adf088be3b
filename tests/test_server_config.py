"""Hypercorn's settings and the garbage collector's, as ``web/api/server.py`` makes them."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
from hypercorn.config import Config as HypercornConfig

from web.api import server as server_module
from web.api.server import hypercorn_config

from .conftest import RunningServer


def test_the_response_headers_kept_for_a_second_are_hypercorns_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000_000.2]
    monkeypatch.setattr(server_module, "time", SimpleNamespace(time=lambda: clock[0]))
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


def test_once_started_the_heap_is_frozen_and_young_collections_come_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done: list[object] = []
    monkeypatch.setattr(server_module, "gc", SimpleNamespace(
        collect=lambda: done.append("collect"), freeze=lambda: done.append("freeze"),
        get_threshold=lambda: (700, 10, 10), set_threshold=lambda *sizes: done.append(sizes),
    ))
    reported: list[list[str]] = []
    status = server_module._TuneGCOnceStarted(SimpleNamespace(started=reported.append))
    assert done == []
    status.started(["http://127.0.0.1:1"])
    assert done == ["collect", "freeze", (server_module.GEN0_THRESHOLD, 10, 10)]
    assert reported == [["http://127.0.0.1:1"]]


async def test_a_server_given_its_app_leaves_the_garbage_collector_alone(
    server: RunningServer,
) -> None:
    """Tests run many apps in one process: only a server process tunes the collector."""
    assert gc.get_threshold()[0] != server_module.GEN0_THRESHOLD
