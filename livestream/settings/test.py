"""Test settings: real PostgreSQL, Redis and S3; mongomock for MongoDB (no server installable)."""

from livestream.settings.base import *  # noqa: F403
from livestream.settings.base import REST_FRAMEWORK, env

# Separate Redis databases so a test run never touches a running local stack's state.
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/10")
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
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
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
