"""The pieces of fault tolerance on their own, against real Redis, PostgreSQL and S3: takeover of
a session whose ingest is dead, accept_publish when Redis fails, the reconciler, client maps,
numbering generations, the published log recovered from S3, publish retries that never
transcode again, and the stable master matched exactly. (The same faults with real processes:
test_faults.py.)"""

from __future__ import annotations

import json
import time

import pytest
import redis

from livestream.redis import redis_client, reset_redis_client
from streams.models import SessionStatus, Stream, StreamSession
from streams.playback import session_dir, session_prefix, stream_prefix
from tests.factories import make_stream
from tests.pipeline.test_tasks import SESSION, STREAM, _add, chunks  # noqa: F401 - fixture
from transcoding import assembler, playlists, services, state, storage, tasks
from transcoding.tasks import transcode_chunk

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("ingest_node")]


def _accept(key: str, client: str = "7", node: str | None = None) -> tuple[str, StreamSession]:
    from django.conf import settings

    name = services.accept_publish(key=key, client_id=client, node=node or settings.INGEST_NODE_ID)
    session = StreamSession.objects.order_by("-pk").first()
    assert session is not None
    return name, session


def test_accept_publish_queues_ingest_and_maps_the_client_for_the_session_lifetime(user, ingest_node):
    stream, key = make_stream(user)
    name, session = _accept(key)
    assert name == f"s{session.pk}c1"
    r = redis_client()
    command = json.loads(r.lpop(state.ingest_queue_key(ingest_node)))
    assert command == {"session": session.pk, "stream": stream.pk, "conn": 1, "name": name, "chunk_s": 2.0}
    assert r.ttl(state.client_key(ingest_node, "7")) == -1  # no fixed TTL: lives as long as its session
    assert state.epoch(session.pk) == 0
    state.purge(session.pk)
    assert not r.exists(state.client_key(ingest_node, "7"))


def test_accept_publish_leaves_nothing_live_when_redis_fails(user, settings):
    stream, key = make_stream(user)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: a real connection error
    reset_redis_client()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            services.accept_publish(key=key, client_id="1", node="node1")
    finally:
        reset_redis_client()
    assert Stream.objects.get(pk=stream.pk).status == "offline"
    assert not StreamSession.objects.filter(stream=stream).exists()


def test_a_live_session_is_taken_over_only_when_its_ingest_is_dead(user, settings):
    settings.INGEST_TAKEOVER_SECONDS = 3
    stream, key = make_stream(user)
    _name, session = _accept(key)
    state.heartbeat(session.pk, 1)
    with pytest.raises(services.sessions.PublishRefused, match="already live"):
        _accept(key, client="8")
    # The segmenter ended (nginx-rtmp was killed; on_publish_done never came): taken over.
    state.set_ingest(session.pk, 1, "ended:4")
    name, again = _accept(key, client="9")
    assert (again.pk, again.connections, name) == (session.pk, 2, f"s{session.pk}c2")
    assert Stream.objects.get(pk=stream.pk).status == "live"
    # Heartbeat too old (the ingest node is gone): taken over as well.
    state.set_ingest(session.pk, 2, "running")
    state.heartbeat(session.pk, 2, now=time.time() - 60)
    redis_client().set("pipe:state:since", repr(time.time() - 60))
    StreamSession.objects.filter(pk=session.pk).update(updated_at=session.updated_at.replace(year=2020))
    _name, third = _accept(key, client="10")
    assert third.connections == 3


def test_reconciler_ends_a_live_session_whose_ingest_is_silent(user, settings):
    settings.INGEST_SILENCE_SECONDS = 5
    settings.CELERY_TASK_ALWAYS_EAGER = False
    stream, key = make_stream(user)
    _name, session = _accept(key)
    state.heartbeat(session.pk, 1)
    assert tasks.reconcile_live_sessions.run()["ended"] == 0
    state.heartbeat(session.pk, 1, now=time.time() - 30)
    redis_client().set("pipe:state:since", repr(time.time() - 30))
    StreamSession.objects.filter(pk=session.pk).update(updated_at=session.updated_at.replace(year=2020))
    from livestream.celery import app

    with app.connection() as conn:  # the finalisation is queued (countdown): drop it afterwards
        counts = tasks.reconcile_live_sessions.run()
        conn.default_channel.queue_purge("default")
    assert counts["ended"] == 1
    assert StreamSession.objects.get(pk=session.pk).status == SessionStatus.RECONNECTING
    assert Stream.objects.get(pk=stream.pk).status == "offline"


def test_writes_of_a_lost_generation_are_refused(settings):
    state.start_epoch(SESSION)
    seq = state.reserve_chunk(SESSION, conn=1, disc=False, epoch=0)
    redis_client().flushdb()  # Redis restarted without persistence
    with pytest.raises(state.StateLost):
        state.append_chunk_data(SESSION, seq, b"x", epoch=0)
    with pytest.raises(state.StateLost):
        state.reserve_chunk(SESSION, conn=1, disc=False, epoch=0)
    assert not redis_client().exists(state.key(SESSION, f"data:{seq}"))
    fresh = state.ensure_epoch(SESSION)
    assert fresh > 0
    assert state.reserve_chunk(SESSION, conn=1, disc=True, epoch=fresh) == 0
    assert playlists.segment_name(0, fresh) == f"seg_{fresh}_000000.ts"


def test_published_log_is_recovered_from_s3_and_numbering_never_reuses_a_name(chunks):  # noqa: F811
    seqs = [_add(c) for c in chunks]
    assert transcode_chunk(SESSION, seqs[0]) == "done"
    assert transcode_chunk(SESSION, seqs[1]) == "done"
    prefix = f"{session_prefix(STREAM, SESSION)}/source"
    first = storage.get_bytes(f"{prefix}/seg_000000.ts")
    # Redis loses everything; the segmenter starts a new generation with the third chunk.
    redis_client().flushdb()
    state.set_json(SESSION, "stream", STREAM)
    epoch = state.ensure_epoch(SESSION)
    data, start, end = chunks[2]
    seq = state.add_chunk(SESSION, data=data, start=start, end=end, wall=time.time(), conn=1, disc=True, epoch=epoch)
    assert seq == 0
    assert transcode_chunk(SESSION, seq, 0, 1, epoch) == "done"
    assert storage.get_bytes(f"{prefix}/seg_000000.ts") == first  # never written again
    assert storage.get_bytes(f"{prefix}/{playlists.segment_name(0, epoch)}")
    # The DVR playlist (rendered from Redis by the origin view while live) and, at the end, the
    # replay written to S3 keep every segment from before the loss.
    text = assembler.live_playlist(STREAM, SESSION, "source", "index") or ""
    names = [line for line in text.splitlines() if line.startswith("seg_")]
    assert names == ["seg_000000.ts", "seg_000001.ts", f"seg_{epoch}_000000.ts"]
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    layout = tasks.layout_for(SESSION)
    assert layout is not None
    assembler.advance(layout, final=True)
    replay = storage.get_bytes(f"{prefix}/index.m3u8").decode()
    assert [line for line in replay.splitlines() if line.startswith("seg_")] == names
    assert replay.rstrip().endswith("#EXT-X-ENDLIST")
    assert transcode_chunk(SESSION, seq, 0, 1, epoch - 1) == "stale"  # a task of the lost generation


def test_a_publish_retry_uploads_kept_outputs_without_transcoding_again(chunks, settings):  # noqa: F811
    seqs = [_add(c) for c in chunks]
    layout = tasks.layout_for(SESSION)
    assert layout is not None
    # The transcode is done and its outputs are kept, but S3 failed: nothing was committed.
    outputs = {"source": chunks[0][0]}
    assert transcode_chunk(SESSION, seqs[1]) == "done"  # decides the ladder; waits for chunk 0
    state.store_outputs(SESSION, seqs[0], outputs, 5)
    # Far past the live deadline: outputs that exist are still published, never a gap.
    redis_client().hset(state.key(SESSION, f"chunk:{seqs[0]}"), "queued", repr(time.time() - 600))
    assert transcode_chunk(SESSION, seqs[0]) == "published"
    assert not state.is_gap(SESSION, seqs[0])
    assert [e.seq for e in playlists.published(SESSION)] == [0, 1]


def test_purging_one_session_never_touches_a_master_of_another(s3, settings):
    stream_id = 424_242
    stable = f"{stream_prefix(stream_id)}/master.m3u8"
    eleven = session_prefix(stream_id, 11)
    variant = f"{session_dir(stream_id, 11)}/source/live.m3u8"
    storage.put_playlist(stable, f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{variant}\n")
    storage.put_playlist(f"{session_prefix(stream_id, 1)}/source/index.m3u8", "#EXTM3U\n")
    storage.put_playlist(f"{eleven}/source/index.m3u8", "#EXTM3U\n")
    # Session 1 also wrote under a tag of an earlier HLS_PATH_SECRET: gone with it all the same.
    settings.HLS_PATH_SECRET = "an-earlier-secret-of-this-deployment-000"
    storage.put_playlist(f"{session_prefix(stream_id, 1)}/source/index.m3u8", "#EXTM3U\n")
    settings.HLS_PATH_SECRET = "another-secret-entirely-different-000000"
    try:
        assert tasks._delete_session_objects(stream_id, 1) == 2  # only session 1's playlists
        assert storage.get_bytes(stable) is not None  # "1-" is not "11-"
        assert storage.get_bytes(f"{eleven}/source/index.m3u8") is not None
        assert tasks._delete_session_objects(stream_id, 11) == 2  # its playlist and the master
        assert storage.get_bytes(stable) is None
    finally:
        storage.delete_prefix(f"{stream_prefix(stream_id)}/")
    assert tasks.master_points_at(b"#EXTM3U\n11-0123456789abcdef/source/live.m3u8\n", 11)
    assert not tasks.master_points_at(b"#EXTM3U\n11-0123456789abcdef/source/live.m3u8\n", 1)
    assert tasks.master_points_at(b"#EXTM3U\n11/source/live.m3u8\n", 11)  # from before the tags


def test_reconciler_finalises_a_session_whose_countdown_was_lost(user, settings):
    settings.RECONNECT_GRACE_SECONDS = 3
    _stream, key = make_stream(user)
    _name, session = _accept(key)
    services.sessions.disconnect(session.pk, 1)
    from django.utils import timezone

    from livestream.celery import app

    with app.connection() as conn:
        assert tasks.reconcile_live_sessions.run()["finalised"] == 0  # its own countdown is due first
        long_ago = timezone.now() - timezone.timedelta(seconds=60)
        StreamSession.objects.filter(pk=session.pk).update(disconnected_at=long_ago)
        assert tasks.reconcile_live_sessions.run()["finalised"] == 1
        assert tasks.reconcile_live_sessions.run()["finalised"] == 0  # once, not every period
        conn.default_channel.queue_purge("default")
