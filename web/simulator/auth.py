"""The simulator's bearer-key check, with OpenAI's 401 messages."""

from __future__ import annotations

import hmac

from .exchange import ApiError

_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with"
    " blank username) if you're accessing the API from your browser and are prompted for a"
    " username and password. You can obtain an API key from"
    " https://platform.openai.com/account/api-keys."
)


def mask_key(key: str) -> str:
    """Mask an API key as OpenAI's error messages do (``sk-ab****wxyz``); short keys wholly."""
    return f"{key[:5]}****{key[-4:]}" if len(key) >= 20 else "****"


def auth_error(key: str | None, expected: str | None) -> ApiError | None:
    """The 401 for bearer ``key`` (None: no key sent), or None if it opens the simulator.

    With ``expected`` None any non-empty key is accepted; otherwise only ``expected`` is, and the
    message names the wrong key masked by `mask_key`.
    """
    if key is None:
        return ApiError(401, _NO_KEY_MESSAGE)
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        message = (
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at"
            " https://platform.openai.com/account/api-keys."
        )
        return ApiError(401, message, code="invalid_api_key")
    return None
