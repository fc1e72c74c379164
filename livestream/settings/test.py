"""Test settings: real PostgreSQL, Redis and S3; mongomock for MongoDB (no server installable)."""

from livestream.dbpool import build_database_settings
from livestream.settings.base import *  # noqa: F403
from livestream.settings.base import (
    DATABASE_APPLICATION_NAME,
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_POOL_MAX_IDLE_S,
    DATABASE_POOL_MIN,
    DATABASE_POOL_TIMEOUT_S,
    DATABASES,
    REST_FRAMEWORK,
    env,
)

# Separate Redis databases so a test run never touches a running local stack's state.
# Metrics stay in memory in the test process unless a test's processes are given a METRICS_DIR.
METRICS_DIR = env.str("METRICS_DIR", default="")
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/10")
# TEST_REDIS_URL is a node of a Redis Cluster (a developer's REDIS_CLUSTER never applies here).
REDIS_CLUSTER = env.bool("TEST_REDIS_CLUSTER", default=False)
CELERY_BROKER_URL = env.str("TEST_CELERY_BROKER_URL", default="redis://127.0.0.1:6379/11")
CHANNEL_REDIS_URL = env.str("TEST_CHANNEL_REDIS_URL", default="redis://127.0.0.1:6379/12")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": CHANNEL_REDIS_URL,
                    "socket_timeout": None,
                    "max_connections": 10000,
                    "health_check_interval": 10,
                }
            ],
            "prefix": "lstest",
        },
    }
}
# The cache shares the test Redis DB unless told otherwise (every test starts with it flushed).
CACHE_REDIS_URL = env.str("TEST_CACHE_REDIS_URL", default=REDIS_URL)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="lstest"),
    }
}
MONGODB_MOCK = True
# Tests get their own bucket so they never touch a local stack's objects.
S3_BUCKET = env.str("TEST_S3_BUCKET", default="livestream-test")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; tests only
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "10000/min", "user": "10000/min", "auth": "10000/min"},
}

# The test process plays many roles at once in threads of its own (live servers, Celery worker
# threads, Channels' executors) while its main thread keeps the connection pytest-django set
# the test database up with: a bigger pool than one production process needs. An explicit
# DATABASE_POOL_MAX still wins (the web servers the tests start get the Procfile's).
DATABASE_POOL_MAX = env.int("DATABASE_POOL_MAX", default=20)
DATABASES = {
    **DATABASES,
    "default": build_database_settings(
        DATABASES["default"],
        pool_max=DATABASE_POOL_MAX,
        pool_min=DATABASE_POOL_MIN,
        pool_timeout_s=DATABASE_POOL_TIMEOUT_S,
        max_idle_s=DATABASE_POOL_MAX_IDLE_S,
        connect_timeout_s=DATABASE_CONNECT_TIMEOUT_S,
        application_name=DATABASE_APPLICATION_NAME,
    ),
}
