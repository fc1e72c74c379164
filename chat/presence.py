"""Viewer presence: how many watch pages are open per stream.

Each open watch page (one WebSocket) is a member of the Redis sorted set
``presence:<stream_id>`` scored by its expiry time; sockets refresh their entry on a
heartbeat, so crashed servers' members age out. Counting drops expired members first.
"""

import time
from collections.abc import Iterable

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
