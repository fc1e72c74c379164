"""Viewer presence: how many watch pages are open per stream.

Each open watch page (one WebSocket) is a member of the Redis sorted set
``presence:<stream_id>`` scored by its expiry time; sockets refresh their entry on a
heartbeat, so crashed servers' members age out. Counting drops expired members first.

The same scheme caps sockets per client address (``CHAT_MAX_SOCKETS_PER_IP``): every open
socket (watch page or owner's analytics page) is a member of ``wsaddr:<address>`` while it is
open; IPv6 clients count per /64 (one host usually holds a whole /64).
"""

import ipaddress
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


async def refresh(
    client: aioredis.Redis, rooms: dict[int, list[str]], addresses: dict[str, list[str]] | None = None
) -> None:
    """Extend every listed member's presence (and address claim) in one round trip (the
    heartbeat)."""
    if not rooms and not addresses:
        return
    expiry = time.time() + PRESENCE_TTL_S
    pipe = client.pipeline(transaction=False)
    for key, members in [
        *((_key(stream_id), members) for stream_id, members in rooms.items()),
        *((address_key(address), members) for address, members in (addresses or {}).items()),
    ]:
        if members:
            pipe.zadd(key, dict.fromkeys(members, expiry))
            pipe.expire(key, PRESENCE_TTL_S * 2)
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


# --- Sockets per client address -------------------------------------------------------------


def address_key(address: str) -> str:
    """``wsaddr:<address>``; IPv6 addresses count per /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"wsaddr:{address[:64]}"
    if ip.version == 6:
        return f"wsaddr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"wsaddr:{ip}"


async def claim_address(client: aioredis.Redis, address: str, member: str, limit: int) -> bool:
    """Count socket ``member`` against ``address``; False (and not counted) when that makes more
    than ``limit`` open sockets. Concurrent claims over the limit may all be refused."""
    key = address_key(address)
    now = time.time()
    pipe = client.pipeline(transaction=True)
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zadd(key, {member: now + PRESENCE_TTL_S})
    pipe.zcard(key)
    pipe.expire(key, PRESENCE_TTL_S * 2)
    results = await pipe.execute()
    if int(results[2]) > limit:
        await client.zrem(key, member)
        return False
    return True


async def release_address(client: aioredis.Redis, address: str, member: str) -> None:
    await client.zrem(address_key(address), member)


def sockets_from(address: str) -> int:
    """Open sockets counted against ``address`` (tests, diagnostics)."""
    key = address_key(address)
    pipe = redis_client().pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", time.time())
    pipe.zcard(key)
    return int(pipe.execute()[1])
