"""Bytes waiting in mailboxes: one actor's bound and the bound across all actors.

Issue 11, finding 3: a mailbox bounded by count alone let 64 turns of 200,000 characters wait
per session, and any number of sessions. Each message that says what it holds
(:meth:`actors.ref.Ask.weight`) is charged when it is posted and released when its actor takes
it off the mailbox (or refuses it). Past ``actors.max_mailbox_bytes`` for one actor the post
is refused as :class:`SessionBusy` (429: that conversation is busy, as with a full mailbox);
past ``actors.max_queued_bytes`` across all mailboxes as :class:`MailboxesFull` (503: the
server is overloaded). Never awaits.
"""

from __future__ import annotations

from .errors import MailboxesFull, SessionBusy


class QueuedBytes:
    """The bytes waiting in all mailboxes, against ``limit``; shared by every mailbox."""

    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0


class MailboxBytes:
    """One mailbox's waiting bytes, against ``limit`` and the shared :class:`QueuedBytes`."""

    __slots__ = ("limit", "shared", "total")

    def __init__(self, limit: int, shared: QueuedBytes) -> None:
        self.limit = limit
        self.shared = shared
        self.total = 0

    def charge(self, weight: int) -> None:
        """Count ``weight`` more bytes, or refuse them: SessionBusy over this mailbox's limit,
        MailboxesFull over the shared one. A message alone over the limit is let into an
        empty mailbox (the prompt limit bounds it), so no single turn is refused for ever."""
        if self.total and self.total + weight > self.limit:
            raise SessionBusy(
                f"this conversation has {self.total} bytes of turns waiting already "
                f"(actors.max_mailbox_bytes is {self.limit}); try again shortly",
                retry_after=1,
            )
        if self.shared.total and self.shared.total + weight > self.shared.limit:
            raise MailboxesFull(
                "the server has too many turns waiting (actors.max_queued_bytes); "
                "try again shortly",
                retry_after=1,
            )
        self.total += weight
        self.shared.total += weight

    def release(self, weight: int) -> None:
        """Count ``weight`` bytes as gone from the mailbox."""
        self.total -= weight
        self.shared.total -= weight
