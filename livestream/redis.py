"""The one place that builds Redis clients for live state (presence, pipeline, rate limits)."""

from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, health_check_interval=30)


@cache
def async_redis_client() -> aioredis.Redis:
    """An asyncio client; one per process (event loop) for consumers."""
    return aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, health_check_interval=30)
