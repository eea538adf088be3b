"""The Lua scripts of the Redis store: each reads and writes in one atomic round trip.

Every key a script touches is passed in KEYS and shares one hash tag, so the scripts run
unchanged on Redis Cluster.
"""

from __future__ import annotations

import hashlib


class Lua:
    """A Lua script and its SHA1, for EVALSHA."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# KEYS: version, messages. ARGV: ttl_ms (0: none), first version.
CREATE = Lua("""
redis.call('SET', KEYS[1], ARGV[2], 'NX')
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
""")

# KEYS: version, messages. ARGV: ttl_ms (0: none), first version, user, assistant, the most
# messages to keep (0: no limit; past it the oldest whole turns, two messages each, go).
# Leaves the new version in ``version``; APPEND and the lease's fenced append share it.
APPEND_TURN = """
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local version = redis.call('INCR', KEYS[1])
local length = redis.call('RPUSH', KEYS[2], ARGV[3], ARGV[4])
local limit = tonumber(ARGV[5])
if limit > 0 and length > limit then
  local drop = length - limit
  drop = drop + drop % 2
  redis.call('LTRIM', KEYS[2], drop, -1)
end
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
"""

# APPEND_TURN's keys and arguments. Returns the new version.
APPEND = Lua(APPEND_TURN + "return version\n")

# KEYS: version, messages. Returns false for an unknown session, else {version, messages}.
LOAD = Lua("""
local version = redis.call('GET', KEYS[1])
if not version then return false end
return {version, redis.call('LRANGE', KEYS[2], 0, -1)}
""")

# KEYS: idempotency key. ARGV: binding, ttl_ms. Returns the earlier binding, or false.
CLAIM = Lua("""
local bound = redis.call('GET', KEYS[1])
if bound then return bound end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
""")
