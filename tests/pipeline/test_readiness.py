"""``stream.ready`` (transcoding/readiness.py) against real Redis, S3, ffmpeg and the real
channel layer: sent once per session, only once every rendition has its first segment listed,
never for a start made of gaps, and never twice across workers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from livestream.events import stream_group
from livestream.redis import redis_client
from streams.playback import session_dir, stream_prefix
from tests.pipeline.test_tasks import SESSION, STREAM, _add, _live, chunks_480  # noqa: F401 - fixture
from transcoding import assembler, playlists, state, storage, tasks
from transcoding.tasks import transcode_chunk

pytestmark = pytest.mark.django_db


class GroupListener(threading.Thread):
    """Subscribes a channel of the real channel layer to the stream's public group (what the
    chat hub does for watch pages) and records every message it gets."""

    def __init__(self, group: str) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.messages: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._listen())

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.subscribed.set()
        try:
            while not self.stop.is_set():
                try:
                    self.messages.append(await asyncio.wait_for(layer.receive(channel), 0.2))
                except TimeoutError:
                    continue
        finally:
            await layer.group_discard(self.group, channel)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == name]


@pytest.fixture
def listener() -> Iterator[GroupListener]:
    thread = GroupListener(stream_group(STREAM))
    thread.start()
    assert thread.subscribed.wait(10)
    yield thread
    thread.stop.set()
    thread.join(timeout=5)


def _settle_messages(listener: GroupListener, seconds: float = 0.5) -> None:
    time.sleep(seconds)  # pub/sub delivery is asynchronous; nothing more may arrive meanwhile


def test_ready_once_when_every_rendition_has_its_first_segment_not_on_a_gap_only_start(
    chunks_480,  # noqa: F811
    listener,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.LIVE_DEADLINE_SECONDS = 5
    seqs = [_add(c) for c in chunks_480]
    ago = repr(time.time() - 60)  # chunk 0 was ingested a minute ago: it becomes a gap
    redis_client().hset(state.key(SESSION, f"chunk:{seqs[0]}"), mapping={"queued": ago, "completed": ago})
    with django_capture_on_commit_callbacks(execute=True):
        # Chunk 1, 360p only: chunk 0 is given up, chunk 1 waits for its source rendition.
        assert transcode_chunk(SESSION, seqs[1], 1, 2) == "done"
    assert state.is_gap(SESSION, seqs[0])
    assert playlists.published(SESSION) == []
    _settle_messages(listener)
    assert listener.events("stream.ready") == []  # a gap and half a chunk: not playable

    with django_capture_on_commit_callbacks(execute=True):
        assert transcode_chunk(SESSION, seqs[1], 0, 2) == "done"  # the source: chunk 1 is published
    deadline = time.time() + 5
    while not listener.events("stream.ready") and time.time() < deadline:
        time.sleep(0.05)
    [ready] = listener.events("stream.ready")
    assert ready["data"] == {
        "stream": STREAM,
        "session": SESSION,
        "playback_url": f"{settings.HLS_EDGE_URL}/{stream_prefix(STREAM)}/master.m3u8",
        "renditions": ["source", "360p"],
    }
    # When it was sent, the stable master (S3) and every rendition's live playlist (rendered by
    # the origin view from Redis while live) listed chunk 1.
    master = storage.get_bytes(f"{stream_prefix(STREAM)}/master.m3u8")
    assert master is not None
    assert f"{session_dir(STREAM, SESSION)}/360p/live.m3u8" in master.decode()
    for name in ("source", "360p"):
        assert "seg_000001.ts" in _live(name), name

    # More segments, and another worker going round again: the claim is taken, nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        assert transcode_chunk(SESSION, seqs[2]) == "done"
        layout = tasks.layout_for(SESSION)
        assert layout is not None
        assembler.advance(layout)
    _settle_messages(listener)
    assert len(listener.events("stream.ready")) == 1
    assert [e.seq for e in playlists.published(SESSION)] == [1, 2]


def test_ready_needs_every_rendition_of_the_ladder(chunks_480, listener, django_capture_on_commit_callbacks):  # noqa: F811
    """A published segment without bytes for the source rendition does not make the session
    ready, and the claim is not taken: the next full one sends it."""
    transcode_chunk(SESSION, _add(chunks_480[0]), 1, 2)  # decides the ladder (source + 360p), no commit
    layout = tasks.layout_for(SESSION)
    assert layout is not None
    first, second = _add(chunks_480[1]), _add(chunks_480[2])
    state.mark_gap(SESSION, 0, "test")
    state.store_outputs(SESSION, first, {"360p": _ts(), "source": b""}, 5)
    with django_capture_on_commit_callbacks(execute=True):
        assembler.advance(layout)
    assert [e.seq for e in playlists.published(SESSION)] == [first]
    _settle_messages(listener)
    assert listener.events("stream.ready") == []
    assert redis_client().get(state.key(SESSION, "once:ready")) is None
    state.store_outputs(SESSION, second, {"360p": _ts(), "source": _ts()}, 5)
    with django_capture_on_commit_callbacks(execute=True):
        assembler.advance(layout)
    assert [e.seq for e in playlists.published(SESSION)] == [first, second]
    deadline = time.time() + 5
    while not listener.events("stream.ready") and time.time() < deadline:
        time.sleep(0.05)
    assert len(listener.events("stream.ready")) == 1


def _ts() -> bytes:
    from tests.pipeline.test_assembler import ts

    return ts()
