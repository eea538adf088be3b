"""Signed session cookies: a random ID of 128 bits and an HMAC-SHA256 of it."""

from __future__ import annotations

import base64
import hashlib
import hmac


class CookieSigner:
    """Signs and checks ``<session_id>.<signature>`` values with one secret."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"actorchat-session-cookie:" + secret.encode()).digest()

    def _signature(self, session_id: str) -> bytes:
        digest = hmac.new(self._key, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._signature(session_id).decode()}"

    def unsign(self, value: str | None) -> str | None:
        """The session ID if ``value`` is a cookie this secret signed, else None.

        Anything else (missing, malformed, tampered, not ASCII) is None, never an error.
        """
        if not value or not value.isascii() or value.count(".") != 1:
            return None
        session_id, signature = value.split(".")
        if not session_id or not hmac.compare_digest(signature.encode(),
                                                     self._signature(session_id)):
            return None
        return session_id
