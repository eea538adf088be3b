"""The actor system: sessions and trace-ID jobs as Trio actors. No HTTP in here."""

from .actor import Actor, ActorStats
from .config import Settings, load_settings
from .lifetime import UpstreamChoice, given_upstream, open_chat_service
from .ref import ActorRef, Ask
from .service import ChatService
from .stats import ServiceStats
from .system import ActorSystem

__all__ = [
    "Actor",
    "ActorRef",
    "ActorStats",
    "ActorSystem",
    "Ask",
    "ChatService",
    "ServiceStats",
    "Settings",
    "UpstreamChoice",
    "given_upstream",
    "load_settings",
    "open_chat_service",
]
