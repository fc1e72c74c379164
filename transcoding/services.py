"""Writes of the ingest edge: accepting and ending publishes on behalf of nginx-rtmp.

Maps nginx-rtmp's callbacks onto ``streams.sessions`` and the Redis-driven ingest: an accepted
publish is renamed to a non-secret internal name (``s<session>c<connection>``) that the
ingest supervisor of the node that received it pulls from that node's queue; the plaintext
key is never stored or logged.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction

from streams import keys, problems, sessions
from streams.models import LatencyMode, Stream, StreamSession, chunk_seconds
from transcoding import state

logger = logging.getLogger(__name__)


def internal_name(session_id: int, connection: int) -> str:
    return f"s{session_id}c{connection}"


def ingest_silent_for(session: StreamSession) -> float:
    """Seconds since anything showed that the ingest of the session's current connection is
    alive: its segmenter's heartbeat, the session's last change, or (right after a Redis restart,
    when heartbeats are not back yet) the moment this Redis's state began."""
    last = max(
        state.last_heartbeat(session.pk, session.connections) or 0.0,
        session.updated_at.timestamp(),
        state.observed_since(),
    )
    return time.time() - last


def ingest_dead(session: StreamSession) -> bool:
    """Nothing receives the session's publisher any more: its segmenter ended for good (nginx-rtmp
    gone, on_publish_done lost), the ingest node that received it stopped renewing its
    registration (``INGEST_NODE_TTL_SECONDS``: the node died), or its heartbeat is older than
    ``INGEST_TAKEOVER_SECONDS``."""
    status = state.ingest_status(session.pk, session.connections) or ""
    if status.startswith("ended:"):
        return True
    node = state.ingest_node(session.pk, session.connections)
    if node is not None and not state.node_is_alive(node):
        return True
    return ingest_silent_for(session) > settings.INGEST_TAKEOVER_SECONDS


def valid_client_id(client_id: str) -> bool:
    """nginx-rtmp's client ids are decimal counters."""
    return client_id.isascii() and client_id.isdigit() and len(client_id) <= 20


def known_stream_key(key: str) -> bool:
    """Whether ``key`` is some stream's current key: the cheap check a listener makes during
    its protocol's handshake (SRT) before the publish reaches on_publish, which decides."""
    if not key or len(key) > 200:
        return False
    return Stream.objects.filter(key_hash=keys.hash_key(key)).exists()


def accept_publish(*, key: str, client_id: str, node: str) -> str:
    """Accept a publisher on ingest node ``node`` (``sessions.start_publish``; raises
    ``PublishRefused``) and queue its segmenter on that node. Returns the internal stream name
    nginx-rtmp renames the publish to.

    Refused before anything is written when the node id is malformed or the node is not
    registered (no supervisor runs there: nothing would segment the publish).

    The Redis steps (client map for on_publish_done, numbering generation, the connection's
    node, the ingest command on the node's queue) run inside the database transaction: when
    Redis fails, the session is rolled back (a RedisError reaches the caller) and the database
    never says live for a publish nothing segments. Superseded sessions are finalised after
    commit.
    """
    if not key or len(key) > 200:
        raise sessions.PublishRefused("missing or malformed stream key")
    if not state.valid_node(node):
        raise sessions.PublishRefused("missing or malformed ingest node id")
    if not valid_client_id(client_id):
        raise sessions.PublishRefused("missing or malformed client id")
    if not state.node_is_alive(node):
        raise sessions.PublishRefused(f"ingest node {node} is not running")
    try:
        grant = _accept_atomically(key, client_id, node)
    except sessions.PublishRefused as refusal:
        # Rolled back with the rest: told to the owner in a transaction of its own.
        if refusal.tell_owner and refusal.stream_id is not None:
            problems.record(refusal.stream_id, refusal.reason)
        raise
    if grant.superseded:
        from transcoding.tasks import finalize_session

        def finalize_superseded() -> None:
            for old in grant.superseded:
                finalize_session.delay(old)

        transaction.on_commit(finalize_superseded)
    return internal_name(grant.session.pk, grant.connection)


def _accept_atomically(key: str, client_id: str, node: str) -> sessions.PublishGrant:
    with transaction.atomic():
        grant = sessions.start_publish(key, ingest_dead=ingest_dead)
        session = grant.session
        name = internal_name(session.pk, grant.connection)
        command = {
            "session": session.pk,
            "stream": session.stream_id,
            "conn": grant.connection,
            "name": name,
            "chunk_s": chunk_seconds(session.stream.latency_mode),  # the stream's latency mode
        }
        state.map_client(node, client_id, session.pk, grant.connection, keys.hash_key(key))
        state.start_epoch(session.pk)
        if session.stream.latency_mode == LatencyMode.LOW:  # CMAF with partial segments (ADR 0031)
            state.set_low_latency(session.pk, settings.LL_PART_SECONDS)
        if sessions.private_preview(session):  # no stable master while private (ADR 0034)
            state.set_preview(session.pk)
        elif session.is_preview:  # went public: again, in case go_public could not reach Redis
            state.end_preview(session.pk)
        state.set_ingest_node(session.pk, grant.connection, node)
        state.set_ingest(session.pk, grant.connection, "queued")
        state.queue_ingest(node, command)
    return grant


def publish_done(*, key: str, client_id: str, node: str) -> int | None:
    """The publisher of nginx client ``client_id`` of ingest node ``node`` left. Returns the
    session id it belonged to (None if unknown). Schedules the grace-period check after commit."""
    if not state.valid_node(node) or not valid_client_id(client_id):
        return None
    mapping = state.client(node, client_id)
    if mapping is None:
        return None
    if not keys.matches(key, mapping["key_hash"]):
        logger.warning("publish_done for a client id with another key; ignored", extra={"ctx": {"client": client_id}})
        return None
    state.forget_client(node, client_id)
    session = sessions.disconnect(mapping["session"], mapping["conn"])
    if session is None:
        return None
    from transcoding.tasks import finalize_session

    countdown = settings.RECONNECT_GRACE_SECONDS + 0.5
    transaction.on_commit(lambda: finalize_session.apply_async((session.pk,), countdown=countdown))
    return session.pk
