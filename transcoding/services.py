"""Writes of the ingest edge: accepting and ending publishes on behalf of nginx-rtmp.

Maps nginx-rtmp's callbacks onto ``streams.sessions`` and the Redis-driven ingest: an accepted
publish is renamed to a non-secret internal name (``s<session>c<connection>``) that the
ingest supervisor pulls; the plaintext key is never stored or logged.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import transaction

from livestream.redis import redis_client
from streams import keys, sessions
from transcoding import state

logger = logging.getLogger(__name__)

CLIENT_TTL_S = 86400


def internal_name(session_id: int, connection: int) -> str:
    return f"s{session_id}c{connection}"


def _client_key(client_id: str) -> str:
    return f"pipe:client:{client_id}"


def accept_publish(*, key: str, client_id: str) -> str:
    """Accept a publisher (``sessions.start_publish``; raises ``PublishRefused``) and queue its
    segmenter. Returns the internal stream name nginx-rtmp renames the publish to.

    Side effects after commit: Redis client map (for on_publish_done), an ingest command on
    ``state.INGEST_QUEUE``, and finalisation of superseded sessions.
    """
    if not key or len(key) > 200:
        raise sessions.PublishRefused("missing or malformed stream key")
    grant = sessions.start_publish(key)
    session = grant.session
    name = internal_name(session.pk, grant.connection)
    command = {"session": session.pk, "stream": session.stream_id, "conn": grant.connection, "name": name}

    def queue_ingest() -> None:
        r = redis_client()
        mapping = {"session": session.pk, "conn": grant.connection, "key_hash": keys.hash_key(key)}
        r.set(_client_key(client_id), json.dumps(mapping), ex=CLIENT_TTL_S)
        state.set_ingest(session.pk, grant.connection, "queued")
        r.rpush(state.INGEST_QUEUE, json.dumps(command))

    transaction.on_commit(queue_ingest)
    if grant.superseded:
        from transcoding.tasks import finalize_session

        def finalize_superseded() -> None:
            for old in grant.superseded:
                finalize_session.delay(old)

        transaction.on_commit(finalize_superseded)
    return name


def publish_done(*, key: str, client_id: str) -> int | None:
    """The publisher of nginx client ``client_id`` left. Returns the session id it belonged to
    (None if unknown). Schedules the grace-period check after commit."""
    r = redis_client()
    raw = r.get(_client_key(client_id))
    if raw is None:
        return None
    mapping = json.loads(raw)
    if not keys.matches(key, mapping["key_hash"]):
        logger.warning("publish_done for a client id with another key; ignored", extra={"ctx": {"client": client_id}})
        return None
    r.delete(_client_key(client_id))
    session = sessions.disconnect(mapping["session"], mapping["conn"])
    if session is None:
        return None
    from transcoding.tasks import finalize_session

    countdown = settings.RECONNECT_GRACE_SECONDS + 0.5
    transaction.on_commit(lambda: finalize_session.apply_async((session.pk,), countdown=countdown))
    return session.pk
