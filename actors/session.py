"""SessionActor: one conversation, one turn at a time, recorded whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from .actor import Actor
from .store.base import Message, SessionStore
from .supervisor import CallTimings, UpstreamSupervisor
from .upstream import ChatRequest


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One user turn: send the history plus ``prompt`` upstream, keep both on success."""

    prompt: str
    model: str
    temperature: float


@dataclass(frozen=True, slots=True)
class GetHistory:
    """Ask for the conversation so far, oldest first."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete the conversation from the store; the actor stops after answering."""


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


class SessionActor(Actor):
    """Holds one session's history; the store has every turn before the reply goes out."""

    kind = "session"

    def __init__(
        self,
        session_id: str,
        *,
        mailbox_size: int,
        store: SessionStore,
        supervisor: UpstreamSupervisor,
        system_prompt: str,
    ) -> None:
        super().__init__(session_id, mailbox_size)
        self._store = store
        self._supervisor = supervisor
        self._system_prompt = system_prompt
        self.history: list[Message] = []
        # The history as the upstream wants it, kept beside it while the actor lives so a
        # turn does not rebuild a dict per message; the store keeps the compact tuples.
        self._context: list[dict[str, str]] = []
        self._forgotten = False

    def finished(self) -> bool:
        return self._forgotten

    async def load(self) -> None:
        self.history = await self._store.load_history(self.key) or []
        self._context = []
        if self._system_prompt:
            self._context.append({"role": "system", "content": self._system_prompt})
        self._context.extend({"role": role, "content": text} for role, text in self.history)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, ChatTurn):
            return await self._turn(message)
        if isinstance(message, GetHistory):
            return list(self.history)
        if isinstance(message, Forget):
            existed = await self._store.delete_session(self.key)
            self.history = []
            self._context = self._context[:1] if self._system_prompt else []
            self._forgotten = True
            return existed
        raise TypeError(f"SessionActor cannot handle {type(message).__name__}")

    async def _turn(self, turn: ChatTurn) -> TurnReply:
        mailbox_s = trio.current_time() - self.current_enqueued_at
        user = {"role": "user", "content": turn.prompt}
        context = [*self._context, user]
        timings = CallTimings()
        completion = await self._supervisor.complete(
            ChatRequest(context, turn.model, turn.temperature),
            key=self.key,
            on_activity=self._set_activity,
            timings=timings,
        )
        await self._store.append_turn(self.key, turn.prompt, completion.content)
        self.history.append(("user", turn.prompt))
        self.history.append(("assistant", completion.content))
        self._context.append(user)
        self._context.append({"role": "assistant", "content": completion.content})
        return TurnReply(
            response=completion.content,
            model=completion.model,
            usage=completion.usage,
            mailbox_s=mailbox_s,
            gate_s=timings.gate_s,
            upstream_s=timings.upstream_s,
            attempts=timings.attempts,
        )

    def _set_activity(self, activity: str) -> None:
        self.activity = activity
