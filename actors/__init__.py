"""The actor system: sessions and trace-ID jobs as Trio actors. No HTTP in here."""

from .actor import Actor, ActorRef, ActorStats
from .config import Settings, load_settings
from .service import ChatService
from .system import ActorSystem

__all__ = ["Actor", "ActorRef", "ActorStats", "ActorSystem", "ChatService", "Settings",
           "load_settings"]
