"""The shared cache tier: 8 product processes ("instances") x 1,000 embed requests, without and with Redis.

Each instance is ``python -m devtools.instance`` (the function app through its own index, its own memory
caches) with ``CALLER_AUTH=jwt`` and the 20 (report, user) pairs of :mod:`benchmarks.embed_world`; the eight
run at once, each on 4 threads, round-robin over the pairs from its own offset. Without Redis every instance
mints its own token per pair (8 x 20 GenerateToken calls); with ``CACHE_REDIS_HOST`` (a local Debian
``redis-server``, the key in the Key Vault emulator, read with the emulated managed identity) one instance
mints each pair and the others find it in Redis (target: exactly 20).

Also: the median of an L2 hit (``MGET``, AES-GCM decryption, decoding, through the product's
:class:`~token_broker.shared.cache.SharedCacheTier`) against a GenerateToken round trip to the Power BI
emulator at the stack's latency, and Redis memory per entry (``MEMORY USAGE`` of the embed-token entries and
``INFO memory`` growth per key).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devtools.instance import Instance
from devtools.offline_stack import TENANT_ID
from devtools.powerbi import PowerBIEmulator
from devtools.shared_stack import KEY_SECRET, SharedCacheStack
from token_broker.config.identity import AppIdentity
from token_broker.config.shared_cache import SharedCacheSettings
from token_broker.powerbi import cache_codec
from token_broker.powerbi.access import PowerBIAccess
from token_broker.powerbi.client import PowerBIClient
from token_broker.shared.cache import SharedCacheTier
from token_broker.shared.connection import RedisConnection
from token_broker.shared.keyring import KeyringSource

from .embed_world import DATASET_ROLE, EmbedWorld
from .measure import NS_PER_MS, percentile
from .report import Figure, Target
from .stack import BenchStack, RunContext, msal_token

INSTANCES = 8
THREADS_PER_INSTANCE = 4
REQUESTS_PER_INSTANCE = 1_000
WITHOUT = "the same 8 instances without Redis (memory caches only)"
PLAIN = "the same value as plaintext JSON under a readable key (no encryption)"


def _phase(stack: BenchStack, world: EmbedWorld, environ: dict[str, str]) -> tuple[int, int]:
    """GenerateToken calls and failed requests of 8 instances x 1,000 requests, all at once."""
    pairs = world.pairs()
    headers = {user: {"Authorization": f"Bearer {stack.offline.user_token(user)}"} for user in world.usernames}
    world.powerbi.reset_counters()
    instances = [Instance(environ) for _ in range(INSTANCES)]
    try:
        def drive(number: int) -> list[dict[str, Any]]:
            batch: list[Mapping[str, Any]] = []
            for index in range(REQUESTS_PER_INSTANCE):
                report, user = pairs[(index + number * 3) % len(pairs)]
                batch.append({"method": "POST", "url": "/api/embed-token", "headers": headers[user],
                              "json": world.request_body(report)})
            return instances[number].batch(batch, threads=THREADS_PER_INSTANCE)

        with ThreadPoolExecutor(INSTANCES) as pool:
            results = [r for answers in pool.map(drive, range(INSTANCES)) for r in answers]
    finally:
        for instance in instances:
            instance.close()
    failed = sum(1 for r in results if r["status"] != 200)
    return world.powerbi.generate_token_calls(), failed


def _generate_token_p50(stack: BenchStack, world: EmbedWorld, count: int) -> tuple[float, bytes, bytes]:
    """Median GenerateToken round trip (ms) with the product's client, and one real value as the L2 stores it."""
    access = PowerBIAccess(str(msal_token(stack.new_msal_app(), stack.scopes)["access_token"]))
    client = PowerBIClient(world.powerbi.api_url, timeout=10)
    report = client.get_report(access, world.workspace_id, world.report_ids[0])
    body = {"reports": [{"id": report.id}], "datasets": [{"id": world.dataset_id}],
            "identities": [{"username": world.usernames[0], "roles": [DATASET_ROLE], "datasets": [world.dataset_id]}]}
    client.generate_token(access, body)  # warm: the connection
    samples: list[int] = []
    token = None
    for _ in range(count):
        before = time.perf_counter_ns()
        token = client.generate_token(access, body)
        samples.append(time.perf_counter_ns() - before)
    assert token is not None
    samples.sort()
    return (percentile(samples, 0.5) / NS_PER_MS, cache_codec.encode_embed(token, (report,)),
            cache_codec.encode_report(report))


def _l2_hit_p50(shared: SharedCacheStack, value: bytes, count: int) -> float:
    """Median of an L2 hit through the product's tier (MGET of two key versions, decrypt, decode)."""
    assert shared.redis is not None and shared.vault is not None
    key = shared.vault.versions(KEY_SECRET)[-1].value
    settings = SharedCacheSettings(host=shared.redis.host, port=shared.redis.port, auth="none")
    tier = SharedCacheTier(RedisConnection(settings, AppIdentity()),
                           KeyringSource(lambda: [("bench-2", key), ("bench-1", key)]), lock_seconds=5)
    cache_key = ("bench", "l2-hit")

    def fetch() -> bytes:
        return value

    def never() -> bytes:
        raise RuntimeError("an L2 hit must not fetch")

    tier.get_or_fetch("embed token", cache_key, fetch, encode=bytes, decode=cache_codec.decode_embed_bytes,
                      ttl=lambda _v: 600.0)
    samples: list[int] = []
    for _ in range(count):
        before = time.perf_counter_ns()
        tier.get_or_fetch("embed token", cache_key, never, encode=bytes, decode=cache_codec.decode_embed_bytes,
                          ttl=lambda _v: 600.0)
        samples.append(time.perf_counter_ns() - before)
    samples.sort()
    return percentile(samples, 0.5) / NS_PER_MS


def _memory(shared: SharedCacheStack, plain_embed: bytes, plain_report: bytes) -> tuple[float, ...]:
    """Mean ``MEMORY USAGE`` (bytes) of the embed-token and metadata entries, and of one plaintext copy of each
    under a readable key (what an unencrypted cache keyed by ids would hold: the baseline)."""
    assert shared.redis is not None
    client: Any = shared.redis.client()

    def mean(pattern: str) -> float:
        keys = client.keys(pattern)
        return float(statistics.mean(client.memory_usage(k) for k in keys)) if keys else 0.0

    embed, metadata = mean("tb:embed token:*"), mean("tb:powerbi metadata:*")
    plain_keys = ("plain:embed:client_credentials:0ff1ce00-0000-4000-8000-0000000e4b3d:bench-user-1@contoso.com",
                  "plain:report:0ff1ce00-0000-4000-8000-00000000da7a:0ff1ce00-0000-4000-8000-0000000e4b3d")
    client.set(plain_keys[0], plain_embed)
    client.set(plain_keys[1], plain_report)
    plain = tuple(float(client.memory_usage(k)) for k in plain_keys)
    client.delete(*plain_keys)
    return embed, metadata, *plain


def run(ctx: RunContext) -> list[Figure]:
    """Measure GenerateToken calls of 8 instances without and with Redis, an L2 hit, and Redis memory."""
    stack = ctx.stack()
    world = stack.embed_world()
    world.powerbi.latency = stack.latency
    runs = 1 if ctx.quick else 3
    shared = SharedCacheStack(stack.offline.ca, stack.entra)
    platform = shared.start(TENANT_ID)
    try:
        base = stack.child_environ({**world.jwt_settings(stack), **platform})
        with_redis = {**base, **shared.settings()}
        assert shared.redis is not None
        client: Any = shared.redis.client()
        count = 200 if ctx.quick else 1_000
        generate_ms, value, report_value = _generate_token_p50(stack, world, 20 if ctx.quick else 50)
        without_calls, with_calls, usages, per_key, plain_usages, plain_per_key = [], [], [], [], [], []
        for number in range(runs):
            calls, failed = _phase(stack, world, base)
            without_calls.append(float(calls))
            client.flushall()
            empty = float(client.info("memory")["used_memory"])
            calls_l2, failed_l2 = _phase(stack, world, with_redis)
            with_calls.append(float(calls_l2))
            if failed or failed_l2:
                raise RuntimeError(f"{failed} + {failed_l2} embed requests failed")
            usage, metadata, plain_usage, plain_metadata = _memory(shared, value, report_value)
            usages.append(usage)
            per_key.append(metadata)
            plain_usages.append(plain_usage)
            plain_per_key.append(plain_metadata)
            growth = float(client.info("memory")["used_memory"]) - empty
            ctx.progress(f"shared cache run {number + 1}/{runs}: {calls} GenerateToken calls without Redis, "
                         f"{calls_l2} with; {usage:.0f} bytes per embed entry")
        ctx.note("Shared cache (Redis)", [
            f"used_memory grew {growth / 1024:.0f} KiB for {client.dbsize()} keys: mostly the {INSTANCES} instances' "
            "connection buffers, not the entries (MEMORY USAGE per entry is the figure)"])
        hit_ms = [_l2_hit_p50(shared, value, count) for _ in range(runs)]
    finally:
        shared.stop()
        _reset(world.powerbi)
    text = f"{INSTANCES} instances × {REQUESTS_PER_INSTANCE:,} POST /api/embed-token over {len(world.pairs())} pairs"
    return [
        Figure("shared.generate_token_calls", f"GenerateToken calls, {text}, with Redis", "calls", tuple(with_calls),
               tuple(without_calls), WITHOUT, target=Target("==", len(world.pairs()), every_run=True)),
        Figure("shared.l2_hit_p50", "Median L2 hit (Redis MGET + AES-GCM + decode) vs a GenerateToken round trip "
               f"at {stack.latency * 1000:.0f} ms emulator latency", "ms", tuple(hit_ms), (generate_ms,),
               "GenerateToken round trip (PowerBIClient)"),
        Figure("shared.redis_bytes_per_embed_entry", "Redis MEMORY USAGE per embed-token entry (encrypted, HMAC "
               "key name)", "bytes", tuple(usages), tuple(plain_usages), PLAIN),
        Figure("shared.redis_bytes_per_metadata_entry", "Redis MEMORY USAGE per Power BI metadata entry (encrypted, "
               "HMAC key name)", "bytes", tuple(per_key), tuple(plain_per_key), PLAIN),
    ]


def _reset(powerbi: PowerBIEmulator) -> None:
    powerbi.reset_counters()
