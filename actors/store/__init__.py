"""Stores for session histories and job results."""

from ..errors import StoreUnavailable
from .base import JobRecord, Message, SessionSnapshot, Store
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
