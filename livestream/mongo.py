"""MongoDB connection (mongoengine) for stream metadata and analytics.

``connect()`` is called once per process at start-up (AppConfig.ready). A real server comes
from ``MONGODB_URI``; tests set ``MONGODB_MOCK`` and get mongomock. When the server cannot be
reached the platform keeps streaming: ``is_enabled()`` turns False, callers skip recording,
and one clear warning is logged.
"""

import logging
import threading

from django.conf import settings

logger = logging.getLogger("livestream.mongo")
_lock = threading.Lock()
_state: dict[str, bool] = {}


def connect() -> bool:
    """Connect the default mongoengine alias; return whether metadata recording is on."""
    with _lock:
        if "enabled" in _state:
            return _state["enabled"]
        import mongoengine

        if settings.MONGODB_MOCK:
            import mongomock

            mongoengine.connect(
                db="livestream",
                host="mongodb://localhost",
                mongo_client_class=mongomock.MongoClient,
                alias="default",
                uuidRepresentation="standard",
            )
            _state["enabled"] = True
            return True
        timeout_ms = int(settings.MONGODB_TIMEOUT_S * 1000)
        try:
            client = mongoengine.connect(
                host=settings.MONGODB_URI,
                alias="default",
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                uuidRepresentation="standard",
                tz_aware=True,
            )
            client.admin.command("ping")
        except Exception as exc:  # any failure means "off", never a crash
            logger.warning(
                "MongoDB at %s is unreachable (%s): stream metadata and analytics recording is OFF; "
                "streaming continues. Set MONGODB_URI to a reachable server to enable it.",
                _redacted(settings.MONGODB_URI),
                type(exc).__name__,
            )
            _state["enabled"] = False
            return False
        _state["enabled"] = True
        logger.info("MongoDB connected: metadata and analytics recording is on")
        return True


def is_enabled() -> bool:
    return connect()


def _redacted(uri: str) -> str:
    if "@" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
