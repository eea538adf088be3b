"""The two doors to ``POST /api/chat``: the ASGI fast path and the Quart view.

Import ``chat_door_fixture`` and ``start_server_through_a_door`` into a test module to run each
of its tests through both: they are the fixtures ``chat_door`` and ``start_server``, which
replaces the conftest's (and so ``server``) in that module. ``use_fast_path`` switches
a running server by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RunningServer, StartServer


def use_fast_path(server: RunningServer, on: bool) -> None:
    """Serve POST /api/chat through the fast path (on) or the Quart view (off)."""
    server.app.asgi_app.fast_chat = on


@pytest.fixture(name="chat_door", params=["fast path", "quart view"])
def chat_door_fixture(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(name="start_server")
async def start_server_through_a_door(start_server: StartServer, chat_door: str) -> StartServer:
    """The conftest's ``start_server``, with POST /api/chat served by ``chat_door``."""

    async def start(*args: Any, **kwargs: Any) -> RunningServer:
        server = await start_server(*args, **kwargs)
        use_fast_path(server, chat_door == "fast path")
        return server

    return start
