"""What the routes share: settings, the cookie signer and the running ChatService."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from actors.config import Settings
from actors.service import ChatService

from .cookies import CookieSigner


@dataclass
class AppState:
    settings: Settings
    signer: CookieSigner
    service: ChatService | None = None
    upstream_label: str = "none"


def app_state() -> AppState:
    return current_app.extensions["actorchat"]


def chat_service() -> ChatService:
    service = app_state().service
    if service is None:
        raise RuntimeError("the chat service is not running")
    return service
