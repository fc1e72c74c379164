"""Redis keys of simulcast: the live working status of each restream target (ADR 0033).

``simulcast:{<stream>}:target:<target>`` holds one JSON record written by the relay of the
ingest node that pushes the target (``simulcast.relay``): status, reason, attempt, next retry
time (epoch seconds), session. It lives ``STATUS_TTL_S`` and is renewed while the relay runs,
so a node that dies leaves no stale "live" behind; PostgreSQL keeps the last status change
(``Target.last_*``) for when the stream is offline.
"""

from __future__ import annotations

import json
from typing import Any

import redis.exceptions

from livestream.redis import redis_client

STATUS_TTL_S = 20


def status_key(stream_id: int, target_id: int) -> str:
    return f"simulcast:{{{stream_id}}}:target:{target_id}"


def write_status(stream_id: int, target_id: int, record: dict[str, Any]) -> None:
    redis_client().set(status_key(stream_id, target_id), json.dumps(record), ex=STATUS_TTL_S)


def renew_status(stream_id: int, target_id: int) -> None:
    redis_client().expire(status_key(stream_id, target_id), STATUS_TTL_S)


def clear_status(stream_id: int, target_id: int) -> None:
    redis_client().delete(status_key(stream_id, target_id))


def read_statuses(stream_id: int, target_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The live records of these targets of one stream (missing: none running). An unreachable
    Redis answers nothing: the callers fall back to the last status in PostgreSQL."""
    if not target_ids:
        return {}
    try:
        raw = redis_client().mget([status_key(stream_id, t) for t in target_ids])
    except redis.exceptions.RedisError:
        return {}
    found: dict[int, dict[str, Any]] = {}
    for target_id, value in zip(target_ids, raw, strict=True):
        if value is None:
            continue
        try:
            record = json.loads(value)
        except ValueError:
            continue
        if isinstance(record, dict):
            found[target_id] = record
    return found
