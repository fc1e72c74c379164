"""The live pipeline on a real Redis Cluster (three masters, tests/fixtures/redis_cluster.py).

The live stack's live Redis (pipeline state, chunks) is the cluster; the broker, the channel
layer and the cache stay on the slot's plain Redis (``cluster_live_state``). On a cluster a
transaction, a Lua script or a multi-key command over two hash slots fails with CROSSSLOT, so
both tests also prove that no step of a publish spans two sessions' keys or a session key and a
global one.

- ``test_every_key_of_a_publish_is_in_its_sessions_slot`` (fast: a 4 s recording ingested at
  file speed, no RTMP publisher): from ``accept_publish`` (what on_publish calls) through the
  real ingest supervisor, segmenter, Celery worker and assembler to the end of the session, every
  key written (keyspace notifications of every node, writes inside MULTI and Lua included) that
  names the session carries its hash tag, so all of them hash to one slot (redis-py
  ``key_slot``); a new key that forgets the tag fails here. Nothing of the session is left.
- ``test_publish_transcode_replay_on_a_redis_cluster``: test_live_e2e's acceptance run (publish
  over RTMP with ffmpeg, every rendition decodes, the replay is complete) on the cluster.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from django.db import connection
from redis.crc import key_slot
from redis.exceptions import CrossSlotTransactionError

from streams.models import SessionStatus, StreamSession
from tests.factories import make_stream
from tests.fixtures.redis_cluster import KeyspaceRecorder, RedisClusterNodes
from tests.pipeline.media import Source, source_file
from tests.pipeline.test_live_e2e import publish_transcode_replay
from transcoding import recording, rtmp_control, services, state

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# 640x480 (ladder: source + 360p), 1 s GOPs: a few chunks, each transcoded in well under a second.
SMALL = Source("640x480-4s-gop30", 640, 480, 30, 800, seconds=4.0,
               video_args=("-tune", "zerolatency", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"))  # fmt: skip


def _recorder(cluster: RedisClusterNodes) -> KeyspaceRecorder:
    return KeyspaceRecorder([cluster.node(port) for port in cluster.ports])


def _distinct_session_ids() -> None:
    """Session ids from 800000 on: no stream id, client id or other number in a key name can be
    mistaken for the session's."""
    table = StreamSession._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(seq, GREATEST(800000, nextval(seq))) FROM pg_get_serial_sequence(%s, 'id') AS seq",
            [table],
        )


def _session_keys(keys: set[str], session_id: int) -> set[str]:
    """The written keys that name the session (its id as one ``:``/``{}``-separated part)."""
    return {k for k in keys if str(session_id) in re.split(r"[:{}]", k)}


def _assert_one_slot(keys: set[str], session_id: int) -> set[str]:
    """Every key naming the session is ``pipe:{<session>}:<name>`` (hash tag: one slot);
    returns the names."""
    mine = _session_keys(keys, session_id)
    prefix = state.key(session_id, "")
    # The highlights' per-segment loudness (highlights/keys.py) carries the same hash tag; it
    # outlives the session's purge on purpose (the final scoring reads it; TTL).
    highlights = f"hl:{{{session_id}}}:"
    untagged = sorted(k for k in mine if not k.startswith((prefix, highlights)))
    assert untagged == [], f"keys of session {session_id} without its hash tag {prefix}: {untagged}"
    slots = {key_slot(k.encode()) for k in mine}
    assert slots == {key_slot(prefix.encode())}, slots
    return {k.removeprefix(prefix) for k in mine}


def test_every_key_of_a_publish_is_in_its_sessions_slot(cluster_live_state, live_stack, user, settings):
    cluster = cluster_live_state
    stream, key = make_stream(user, title="Slots", keep_recordings=False)
    media = source_file(SMALL)
    client_id = "7701"
    node = str(settings.INGEST_NODE_ID)  # the live stack's supervisor runs this node
    # ...and registers it every second, in the live Redis it started with: here, for the cluster.
    state.register_node(node, control_url=rtmp_control.local_control_url(), ttl_s=600)
    _distinct_session_ids()
    with _recorder(cluster) as recorder:
        name = services.accept_publish(key=key, client_id=client_id, node=node)
        session = StreamSession.objects.get(stream=stream)
        # nginx-rtmp's recording of a publish that is already over (the file is not locked):
        # the segmenter ingests all of it at file speed, then ends.
        target = recording.path_for(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        shutil.copy(media, partial)
        partial.rename(target)
        _wait(lambda: (state.ingest_status(session.pk, 1) or "").startswith("ended:"), 30, "segmenter ended")
        last = int((state.ingest_status(session.pk, 1) or "ended:-1").split(":")[1])
        assert last >= 1, last  # a 4 s recording: two 2 s chunks
        _wait(lambda: state.next_to_publish(session.pk) > last, 60, "every chunk published")
        assert state.gap_count(session.pk) == 0
        assert services.publish_done(key=key, client_id=client_id, node=node) == session.pk
        ended = live_stack.wait_session_ended(stream.pk, timeout=60)
        assert ended.status == SessionStatus.ENDED
        _wait(lambda: not cluster.keys(state.key(session.pk, "*")), 20, "the session's keys purged")
    names = _assert_one_slot(recorder.keys, session.pk)
    # The recorder saw the pipeline's writes: chunk bytes, outputs, meta, the published log...
    assert {"epoch", "seq", "data:0", "chunk:0", "out:0", "published", "win", "next", "ingest"} <= names, names
    assert any(n.startswith("hb:") for n in names), names
    # ...and the global keys, which name no session.
    assert state.node_heartbeats_key(node) in recorder.keys
    assert state.client_key(node, client_id) in recorder.keys


def test_publish_transcode_replay_on_a_redis_cluster(cluster_live_state, live_stack, user, tmp_path: Path, settings):
    # Every rendition complete: on a loaded shared machine overload shedding would gap the top
    # rungs (by design); this test is about Redis.
    settings.OVERLOAD_SHEDDING = False
    _distinct_session_ids()
    with _recorder(cluster_live_state) as recorder:
        session = publish_transcode_replay(live_stack, user, tmp_path)
    names = _assert_one_slot(recorder.keys, session.pk)
    assert {"data:0", "out:0", "published"} <= names, names


def _wait(predicate, timeout: float, what: str) -> None:
    from livestream import devstack

    devstack.wait_until(predicate, timeout, what)


async def test_other_live_redis_users_and_the_client_on_the_cluster(cluster_live_state):
    """Presence (batches over many slots, a one-key transaction from the asyncio client), the
    metrics' memory figure, and the client's contract: ``pipeline()`` is a transaction, so it
    refuses keys of two slots instead of silently splitting them."""
    from asgiref.sync import sync_to_async

    from chat import presence
    from livestream.redis import memory, new_async_redis_client, redis_client

    client = new_async_redis_client()
    try:
        streams = list(range(1, 40))  # presence:<id> keys over many slots and all three shards
        for stream_id in streams:
            await presence.add_members(client, stream_id, [f"socket-{stream_id}"])
        assert set((await presence.acounts(client, streams)).values()) == {1}
        assert await presence.claim_address(client, "192.0.2.7", "socket-a", limit=1)
        assert not await presence.claim_address(client, "192.0.2.7", "socket-b", limit=1)
    finally:
        await client.aclose()
    counts = await sync_to_async(presence.viewer_counts)(streams)
    assert set(counts.values()) == {1}
    assert await sync_to_async(presence.sockets_from)("192.0.2.7") == 1

    def sync_checks() -> None:
        used, _ = memory()
        assert used > 3 * 500_000  # three nodes' used_memory, summed
        pipe = redis_client().pipeline()
        pipe.set(state.key(1, "x"), "1")
        pipe.set(state.key(2, "x"), "1")
        with pytest.raises(CrossSlotTransactionError):
            pipe.execute()
        pipe = redis_client().pipeline()
        pipe.set(state.key(1, "x"), "1")
        pipe.set(state.key(1, "y"), "1")
        pipe.execute()  # (redis-py's cluster transactions return SET's raw b"OK", not True)
        assert redis_client().mget(state.key(1, "x"), state.key(1, "y")) == [b"1", b"1"]

    await sync_to_async(sync_checks)()
