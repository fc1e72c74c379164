"""The one place that builds Redis clients for live state (pipeline, presence, chat limits).

``REDIS_URL`` is one Redis, or with ``REDIS_CLUSTER`` the address of any node of a Redis
Cluster (redis-py's cluster client finds the others and routes each command by its key's
slot). Callers do not tell the two apart: both clients have the same commands, and a
``pipeline()`` is a MULTI/EXEC transaction by default on both (redis-py's cluster client would
otherwise default to a non-atomic batch). On a cluster a transaction, a Lua script or a
multi-key command must keep to one hash slot (``transcoding/state.py`` tags every key of a
session with ``{<session>}``); a batch over several slots says ``pipeline(transaction=False)``.
The Celery broker, the Channels layer and Django's cache have URLs of their own and stay on
plain Redis (neither Celery, channels_redis nor Django's RedisCache speak Cluster).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from django.conf import settings
from redis.exceptions import RedisClusterException, SlotNotCoveredError

_client: redis.Redis | None = None
_client_lock = threading.Lock()
# The same options for every client: a read never waits forever; a pooled connection idle for
# 30 s is checked before use (a restarted Redis costs no command).
_OPTIONS: dict[str, Any] = {"socket_timeout": 10, "health_check_interval": 30}


def _outage(exc: RedisClusterException) -> Exception:
    """redis-py's cluster client reports an unreachable cluster ("cannot be connected") or an
    uncovered slot with exceptions that are not ``RedisError``s: every caller's outage handling
    (the supervisor and segmenters riding out a Redis restart, the tasks' retries) catches
    ``redis.ConnectionError``. Other cluster errors (a command over two slots) stay as they are."""
    if isinstance(exc, SlotNotCoveredError) or isinstance(exc.__cause__, redis.RedisError | OSError):
        return redis.ConnectionError(str(exc))
    return exc


class _Cluster(redis.cluster.RedisCluster):
    """redis-py's cluster client whose ``pipeline()`` is transactional by default, like
    ``redis.Redis``'s (the keys of one transaction must share a slot), and whose outages are
    ``redis.ConnectionError``s like a single Redis's."""

    def pipeline(self, transaction: Any = True, shard_hint: Any = None) -> Any:  # noqa: FBT002 - redis-py's signature
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _outage(exc) from exc


class _AsyncCluster(aiocluster.RedisCluster):
    """The asyncio twin of ``_Cluster``."""

    def pipeline(self, transaction: Any = True, shard_hint: Any = None) -> Any:  # noqa: FBT002 - redis-py's signature
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _outage(exc) from exc


def cluster_enabled() -> bool:
    return bool(getattr(settings, "REDIS_CLUSTER", False))


def _build() -> redis.Redis:
    if cluster_enabled():
        # Same command API as redis.Redis (typed as such for the callers).
        return cast("redis.Redis", _Cluster.from_url(settings.REDIS_URL, **_OPTIONS))
    return redis.Redis.from_url(settings.REDIS_URL, **_OPTIONS)


def redis_client() -> redis.Redis:
    """The process's client (one connection pool), made once under a lock. Not functools.cache:
    concurrent first calls (a burst of requests on a fresh web worker) would each build one, and
    a discarded client closes its pool's connections when collected, which is as soon as
    ``redis_client().pipeline()`` keeps only the pool: the pipeline's socket was closed under it
    (EBADF, reads timing out on a reused descriptor, found by tests/web/test_load.py)."""
    global _client  # noqa: PLW0603 - a per-process singleton
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = _build()
    return _client


def reset_redis_client() -> None:
    """Forget the process's clients (tests that point REDIS_URL at another server)."""
    global _client  # noqa: PLW0603 - a per-process singleton
    with _client_lock:
        _client = None
    async_redis_client.cache_clear()


def new_async_redis_client() -> aioredis.Redis:
    """A new asyncio client with its own pool (one per event loop: chat.fanout's hub)."""
    if cluster_enabled():
        return cast("aioredis.Redis", _AsyncCluster.from_url(settings.REDIS_URL, **_OPTIONS))
    return aioredis.Redis.from_url(settings.REDIS_URL, **_OPTIONS)


@cache
def async_redis_client() -> aioredis.Redis:
    """An asyncio client; one per process (event loop) for consumers."""
    return new_async_redis_client()


def memory() -> tuple[int, int]:
    """``used_memory`` and ``maxmemory`` (0: none) of the live-state Redis; of a cluster, the
    sums over its primaries (each shard holds its share of the sessions)."""
    client = redis_client()
    if not cluster_enabled():
        info = client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    per_node = cast("redis.cluster.RedisCluster", client).info(
        "memory", target_nodes=redis.cluster.RedisCluster.PRIMARIES
    )
    return (
        sum(int(info.get("used_memory", 0)) for info in per_node.values()),
        sum(int(info.get("maxmemory", 0)) for info in per_node.values()),
    )
