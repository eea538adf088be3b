"""Over Redis, a session whose actor is live here is taken to exist without asking the store
(a turn makes two store round trips: the lease, the append); a turn of a session deleted by
another instance meanwhile raises SessionGone, and nothing is sent upstream."""

from __future__ import annotations

from typing import Any

import pytest

from actors.config import build_settings
from actors.errors import SessionGone
from actors.lifetime import given_upstream, open_chat_service
from actors.store.redis import open_redis_store

from .fakes import ScriptedUpstream
from .redis_servers import SHARED_REDIS_URL, shared_redis_store


def settings(prefix: str) -> Any:
    return build_settings({"store": {"backend": "redis", "prefix": prefix}}, environ={})


async def test_a_live_session_is_not_looked_up_and_one_deleted_elsewhere_is_gone() -> None:
    async with shared_redis_store() as store:
        upstream = ScriptedUpstream()
        async with open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own_a, \
                open_redis_store(SHARED_REDIS_URL, prefix=store.prefix) as own_b, \
                open_chat_service(settings(store.prefix), open_upstream=given_upstream(upstream),
                                  store=own_a) as a, \
                open_chat_service(settings(store.prefix),
                                  open_upstream=given_upstream(ScriptedUpstream()),
                                  store=own_b) as b:
            session = await a.new_session()
            await a.chat(session, "first", "m", 0.5)
            looked_up: list[str] = []
            exists = own_a.session_exists

            async def counted(session_id: str) -> bool:
                looked_up.append(session_id)
                return await exists(session_id)

            own_a.session_exists = counted  # type: ignore[method-assign]
            assert await a.session_exists(session)
            assert looked_up == []  # its actor is live here: no round trip

            assert await b.forget(session)
            with pytest.raises(SessionGone):
                await a.chat(session, "again", "m", 0.5)
            assert len(upstream.requests) == 1  # the gone turn never went upstream
            # The actor knows now: the next question goes to the store, which says no.
            assert not await a.session_exists(session)
            assert looked_up == [session]
