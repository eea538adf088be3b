"""SessionActor: one conversation, one turn at a time, recorded whole or not at all.

Its messages: :class:`ChatTurn` (answered with :class:`TurnReply`), :class:`GetHistory`
(:class:`Transcript`) and :class:`Forget` (:class:`Forgotten`; the actor stops after it).
A turn goes with its caller: dropped if its caller left while it was queued, its upstream
call cancelled if the caller leaves while it runs; either way nothing is recorded. A streamed
turn sends the answer's pieces to its caller as they come (:class:`TurnStream` reads them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import trio

from .actor import Actor
from .context import fit_context, turns_to_drop
from .errors import CallerLeft, SessionGone
from .lease import LocalLeases, SessionLeases, TurnLease
from .ref import Ask, ReplySlot
from .store.base import Message, SessionStore
from .streamed_attempt import OnPiece
from .upstream import ChatRequest
from .upstream_caller import CallTimings, UpstreamCaller


@dataclass(frozen=True, slots=True)
class TurnReply:
    """The answer to a :class:`ChatTurn`, with where its time went (seconds)."""

    response: str
    model: str
    usage: dict[str, Any] | None
    mailbox_s: float
    gate_s: float
    upstream_s: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """The answer to :class:`GetHistory`: the recorded messages, oldest first."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """The answer to :class:`Forget`: whether the store had the session."""

    existed: bool


@dataclass(frozen=True, slots=True)
class ChatTurn(Ask[TurnReply]):
    """One user turn: send the history plus ``prompt`` upstream, keep both on success.

    With ``pieces``, the turn is streamed: each piece of the answer is sent there as the
    upstream writes it (the send blocks while the channel is full), and the reply closes it.
    """

    prompt: str
    model: str
    temperature: float
    params: Mapping[str, Any] = field(default_factory=dict)  # further OpenAI parameters
    pieces: trio.MemorySendChannel[str] | None = None

    cancel_with_caller: ClassVar[bool] = True

    def weight(self) -> int:
        return sys.getsizeof(self.prompt)  # what the waiting prompt holds in memory

    def stream_to(self) -> trio.MemorySendChannel[str] | None:
        return self.pieces


@dataclass(frozen=True, slots=True)
class GetHistory(Ask[Transcript]):
    """Ask for the conversation so far, oldest first."""


@dataclass(frozen=True, slots=True)
class Forget(Ask[Forgotten]):
    """Delete the conversation from the store; the actor stops after answering."""


class SessionActor(Actor):
    """Holds one session's history; the store has every turn before the reply goes out."""

    kind = "session"

    def __init__(
        self,
        session_id: str,
        *,
        mailbox_size: int,
        store: SessionStore,
        upstream: UpstreamCaller,
        system_prompt: str,
        leases: SessionLeases | None = None,
        max_context_chars: int = 100_000,
        max_history_messages: int = 0,
    ) -> None:
        super().__init__(session_id, mailbox_size)
        self._max_context_chars = max_context_chars
        self._max_history_messages = max_history_messages  # 0: no limit
        self._pinned = 1 if system_prompt else 0  # the system prompt heads _context
        self._context_chars = 0  # characters of content in _context, for fit_context
        self.last_context_messages: int | None = None  # messages the last turn sent
        self._store = store
        # One turn at a time across instances too (actors/lease.py); the version says whether
        # the history held here is still the store's.
        self._leases = leases if leases is not None else LocalLeases(store)
        self._version = 0
        self._upstream = upstream
        self._system_prompt = system_prompt
        self.history: list[Message] = []
        # The history as the upstream wants it, kept beside it while the actor lives so a
        # turn does not rebuild a dict per message; the store keeps the compact tuples.
        self._context: list[dict[str, str]] = []
        self._forgotten = False

    def finished(self) -> bool:
        return self._forgotten

    @property
    def shares_store(self) -> bool:
        """True when other instances may change or delete this session (leases over Redis)."""
        return not isinstance(self._leases, LocalLeases)

    def history_length(self) -> int:
        return len(self.history)

    async def load(self) -> None:
        snapshot = await self._store.load_session(self.key)
        self.history, self._version = snapshot.history or [], snapshot.version
        self._context = []
        if self._system_prompt:
            self._context.append({"role": "system", "content": self._system_prompt})
        self._context.extend({"role": role, "content": text} for role, text in self.history)
        self._context_chars = sum(len(message["content"]) for message in self._context)

    async def handle(self, message: Any) -> TurnReply | Transcript | Forgotten:
        if isinstance(message, ChatTurn):
            return await self._turn(message)
        if isinstance(message, GetHistory):
            if not await self._leases.is_current(self.key, self._version):
                await self.load()
            return Transcript(tuple(self.history))
        if isinstance(message, Forget):
            existed = await self._store.delete_session(self.key)
            self.history = []
            self._context = self._context[:self._pinned]
            self._context_chars = len(self._system_prompt)
            self._forgotten = True
            self._version = 0
            return Forgotten(existed)
        raise TypeError(f"SessionActor cannot handle {type(message).__name__}")

    async def _turn(self, turn: ChatTurn) -> TurnReply:
        async with self._leases.hold(self.key) as lease:
            if lease.version == 0:  # the shared store has no such session (any more)
                self._forgotten = True
                raise SessionGone("the session no longer exists", retry_after=1.0)
            if lease.version is not None and lease.version != self._version:
                await self.load()  # another instance wrote since
            return await self._leased_turn(turn, lease)

    async def _leased_turn(self, turn: ChatTurn, lease: TurnLease) -> TurnReply:
        mailbox_s = trio.current_time() - self.current_sent_at
        user = {"role": "user", "content": turn.prompt}
        context = fit_context(self._context, user, self._max_context_chars,
                              pinned=self._pinned, total_chars=self._context_chars)
        self.last_context_messages = len(context)
        timings = CallTimings()
        request = ChatRequest(context, turn.model, turn.temperature, turn.params)
        if turn.pieces is None:
            completion = await self._upstream.complete(
                request, key=self.key, on_activity=self._set_activity, timings=timings
            )
        else:
            completion = await self._upstream.stream(
                request, _sender(turn.pieces), key=self.key, on_activity=self._set_activity,
                timings=timings,
            )
        # Recorded whole or not at all: a caller leaving now does not cut the write in two.
        with trio.CancelScope(shield=True):
            self._version = await lease.record(turn.prompt, completion.content)
        self.history.append(("user", turn.prompt))
        self.history.append(("assistant", completion.content))
        self._context.append(user)
        self._context.append({"role": "assistant", "content": completion.content})
        self._context_chars += len(turn.prompt) + len(completion.content)
        self._cap_history()
        return TurnReply(
            response=completion.content,
            model=completion.model,
            usage=completion.usage,
            mailbox_s=mailbox_s,
            gate_s=timings.gate_s,
            upstream_s=timings.upstream_s,
            attempts=timings.attempts,
        )

    def _cap_history(self) -> None:
        """Drop the oldest whole turns past ``sessions.max_history_messages``, as the store
        does on append, so the actor's copy stays bounded too."""
        drop = turns_to_drop(len(self.history), self._max_history_messages)
        if drop:
            del self.history[:drop]
            dropped = self._context[self._pinned:self._pinned + drop]
            self._context_chars -= sum(len(message["content"]) for message in dropped)
            del self._context[self._pinned:self._pinned + drop]

    def last_context_length(self) -> int | None:
        return self.last_context_messages

    def _set_activity(self, activity: str) -> None:
        self.activity = activity


def _sender(pieces: trio.MemorySendChannel[str]) -> OnPiece:
    """Send pieces to the caller; its going away (channel closed) cancels the turn."""

    async def send(piece: str) -> None:
        try:
            await pieces.send(piece)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise CallerLeft("the caller stopped reading the stream") from None

    return send


class TurnStream:
    """The caller's end of a streamed :class:`ChatTurn`: its pieces, then its reply.

    ``async for piece in stream.pieces`` ends when the turn ends; then ``await
    stream.reply()`` returns the :class:`TurnReply` or raises the turn's error. ``close()``
    (never awaits; also ``with stream:``) says the caller has gone: a turn still queued is
    dropped, one running is cancelled, and nothing is recorded. Closing after the reply
    changes nothing.
    """

    __slots__ = ("_reply", "pieces")

    def __init__(self, pieces: trio.MemoryReceiveChannel[str], reply: ReplySlot[TurnReply],
                 ) -> None:
        self.pieces = pieces
        self._reply = reply

    async def reply(self) -> TurnReply:
        """The turn's reply, once its pieces have ended; raises the turn's error."""
        return await self._reply.wait()

    def close(self) -> None:
        """Stop reading; cancel the turn unless it has been answered."""
        self.pieces.close()
        self._reply.abandon()

    def __enter__(self) -> TurnStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_turn_stream(post: Callable[[ChatTurn], ReplySlot[TurnReply]], turn: ChatTurn,
                      buffer: int = 16) -> TurnStream:
    """Post ``turn`` streamed (``post`` puts it in the session's mailbox) and return its
    :class:`TurnStream`, whose channel holds ``buffer`` pieces; ``post``'s errors propagate."""
    send, receive = trio.open_memory_channel[str](buffer)
    try:
        reply = post(replace(turn, pieces=send))
    except BaseException:
        send.close()
        receive.close()
        raise
    return TurnStream(receive, reply)
