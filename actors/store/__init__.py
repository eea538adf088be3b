"""Stores for session histories and job results."""

from .base import JobRecord, Message, Store
from .memory import MemoryStore

__all__ = ["JobRecord", "MemoryStore", "Message", "Store"]
