"""What the routes share: settings, the cookie signer, the running ChatService and its stop."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from quart import current_app

from actors.config import Settings
from actors.service import ChatService

from .cookies import CookieSigner


@dataclass
class AppState:
    """One app's shared state. ``service`` is set while the app serves (see web/api/app.py).

    ``stop_requested`` tells the service to drain and close; ``service_closed`` is set once
    it has closed everything it opened.
    """

    settings: Settings
    signer: CookieSigner
    service: ChatService | None = None
    stop_requested: trio.Event = field(default_factory=trio.Event)
    service_closed: trio.Event = field(default_factory=trio.Event)


def app_state() -> AppState:
    return current_app.extensions["actorchat"]


def chat_service() -> ChatService:
    service = app_state().service
    if service is None:
        raise RuntimeError("the chat service is not running")
    return service
