"""Viewer presence: how many watch pages are open per stream.

Each open watch page (one WebSocket) is a member of the Redis sorted set
``presence:<stream_id>`` scored by its expiry time; sockets refresh their entry on a
heartbeat, so crashed servers' members age out. Counting drops expired members first.
"""

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from livestream.redis import redis_client

PRESENCE_TTL_S = 45


def _key(stream_id: int) -> str:
    return f"presence:{stream_id}"


def viewer_counts(stream_ids: Iterable[int]) -> dict[int, int]:
    ids = list(stream_ids)
    if not ids:
        return {}
    now = time.time()
    pipe = redis_client().pipeline(transaction=False)
    for stream_id in ids:
        pipe.zremrangebyscore(_key(stream_id), "-inf", now)
        pipe.zcard(_key(stream_id))
    results = pipe.execute()
    return {stream_id: int(results[i * 2 + 1]) for i, stream_id in enumerate(ids)}


def viewer_count(stream_id: int) -> int:
    return viewer_counts([stream_id])[stream_id]


# --- Writer side (used by chat.fanout, one asyncio Redis client per event loop) -------------


async def add_members(client: aioredis.Redis, stream_id: int, members: Iterable[str]) -> None:
    """Count ``members`` (socket ids) as present for another PRESENCE_TTL_S seconds."""
    mapping = dict.fromkeys(members, time.time() + PRESENCE_TTL_S)
    if mapping:
        await client.zadd(_key(stream_id), mapping)
        await client.expire(_key(stream_id), PRESENCE_TTL_S * 2)


async def refresh(client: aioredis.Redis, rooms: dict[int, list[str]]) -> None:
    """Extend every listed member's presence in one round trip (the heartbeat)."""
    if not rooms:
        return
    expiry = time.time() + PRESENCE_TTL_S
    pipe = client.pipeline(transaction=False)
    for stream_id, members in rooms.items():
        if members:
            pipe.zadd(_key(stream_id), dict.fromkeys(members, expiry))
            pipe.expire(_key(stream_id), PRESENCE_TTL_S * 2)
    await pipe.execute()


async def remove_member(client: aioredis.Redis, stream_id: int, member: str) -> None:
    await client.zrem(_key(stream_id), member)


async def acounts(client: aioredis.Redis, stream_ids: Iterable[int]) -> dict[int, int]:
    """Async twin of ``viewer_counts``."""
    ids = list(stream_ids)
    if not ids:
        return {}
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for stream_id in ids:
        pipe.zremrangebyscore(_key(stream_id), "-inf", now)
        pipe.zcard(_key(stream_id))
    results = await pipe.execute()
    return {stream_id: int(results[i * 2 + 1]) for i, stream_id in enumerate(ids)}
