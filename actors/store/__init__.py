"""Stores for session histories and job results."""

from .base import JobRecord, Message, SessionSnapshot, Store, StoreUnavailable
from .factory import open_store
from .memory import MemoryStore

__all__ = [
    "JobRecord",
    "MemoryStore",
    "Message",
    "SessionSnapshot",
    "Store",
    "StoreUnavailable",
    "open_store",
]
