"""The one place that builds Redis clients for live state (presence, pipeline, rate limits)."""

import threading
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

_client: redis.Redis | None = None
_client_lock = threading.Lock()


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
                _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, health_check_interval=30)
    return _client


def reset_redis_client() -> None:
    """Forget the process's client (tests that point REDIS_URL at another server)."""
    global _client  # noqa: PLW0603 - a per-process singleton
    with _client_lock:
        _client = None


@cache
def async_redis_client() -> aioredis.Redis:
    """An asyncio client; one per process (event loop) for consumers."""
    return aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, health_check_interval=30)
