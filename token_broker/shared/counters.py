"""Counters shared by every instance: the per-caller rate limit (GCRA) and the executeQueries budget (a sliding
window), each one Lua script, one round trip, timed by Redis' own clock (instances' clocks may differ).

Counter names are HMACs of the caller key or the Power BI identity under the newest cache key, like cache
keys (a rotation starts the counters afresh). ``None`` means the tier is unavailable: the caller counts locally.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Hashable
from typing import Any

from .connection import UNAVAILABLE, RedisConnection
from .keyring import KeyringSource
from .keys import canonical

# GCRA: ARGV[1] = ms per request, ARGV[2] = burst. Returns 0 (taken) or the ms to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', new_tat - now)
return 0
"""
# Sliding window: ARGV[1] = window ms, ARGV[2] = limit, ARGV[3] = a unique member. Returns 0 or the ms to wait.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class SharedCountersTier:
    """:class:`~token_broker.support.shared.SharedCounters` on Redis."""

    def __init__(self, connection: RedisConnection, keys: KeyringSource) -> None:
        self._redis = connection
        self._keys = keys
        self._scripts: dict[str, Any] = {}

    def take_rate(self, namespace: str, key: Hashable, *, per_minute: int) -> float | None:
        interval = max(1, math.ceil(60_000 / per_minute))
        return self._run("rate_limit", _GCRA, namespace, key, [interval, per_minute])

    def take_window(self, namespace: str, key: Hashable, *, limit: int, seconds: float) -> float | None:
        return self._run("query_budget", _WINDOW, namespace, key, [int(seconds * 1000), limit, secrets.token_hex(8)])

    def _run(self, operation: str, source: str, namespace: str, key: Hashable, args: list[Any]) -> float | None:
        try:
            keyring = self._keys.current()
        except Exception:  # a limiter never fails a request: the local one takes over
            return None
        name = keyring.newest.name(namespace, canonical(key))

        def run(client: Any) -> Any:
            script = self._scripts.get(operation)
            if script is None:
                script = self._scripts[operation] = client.register_script(source)
            return script(keys=[name], args=args, client=client)

        waited: Any = self._redis.call(operation, run)
        if waited is UNAVAILABLE:
            return None
        return int(waited) / 1000.0
