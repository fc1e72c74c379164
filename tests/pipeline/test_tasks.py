"""transcode_chunk and the assembler against real Redis, S3 and ffmpeg, run inline (task logic
only; the live path with a real worker is in test_live_e2e)."""

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.playback import session_prefix, stream_prefix
from transcoding import assembler, playlists, state, storage
from transcoding.tasks import transcode_chunk

SESSION, STREAM = 987_650, 98_765


def _make_chunks(tmp_path: Path, size: str) -> list[tuple[bytes, float, float]]:
    """Three 1 s GOP chunks of a ``size`` source, cut like the segmenter does."""
    src = tmp_path / "src.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i",
         "sine", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", str(src)],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", "-f", "segment", "-segment_time", "1",
         "-reset_timestamps", "0", "-segment_list", str(tmp_path / "l.csv"), "-segment_list_type", "csv",
         str(tmp_path / "c%03d.ts")],
        check=True, timeout=60,
    )  # fmt: skip
    out = []
    for line in (tmp_path / "l.csv").read_text().split():
        name, start, end = line.rsplit(",", 2)
        out.append(((tmp_path / name).read_bytes(), float(start), float(end)))
    return out


@pytest.fixture
def chunks(tmp_path: Path, s3) -> Iterator[list[tuple[bytes, float, float]]]:
    """Three 1 s GOP chunks of a 320x240 source (ladder: source only)."""
    state.set_json(SESSION, "stream", STREAM)
    yield _make_chunks(tmp_path, "320x240")
    storage.delete_prefix(stream_prefix(STREAM) + "/")


@pytest.fixture
def chunks_480(tmp_path: Path, s3) -> Iterator[list[tuple[bytes, float, float]]]:
    """Three 1 s GOP chunks of a 640x480 source (ladder: source + 360p)."""
    state.set_json(SESSION, "stream", STREAM)
    yield _make_chunks(tmp_path, "640x480")
    storage.delete_prefix(stream_prefix(STREAM) + "/")


def _live(rendition: str) -> str:
    """The live media playlist as the origin view renders it (from Redis; S3 has none while live)."""
    text = assembler.live_playlist(STREAM, SESSION, rendition, "live")
    assert text is not None
    return text


def _add(chunk: tuple[bytes, float, float]) -> int:
    data, start, end = chunk
    return state.add_chunk(SESSION, data=data, start=start, end=end, wall=time.time(), conn=1, disc=False)


def test_transcode_is_idempotent_and_publishes_in_order(chunks):
    seqs = [_add(c) for c in chunks]
    # Out of order: chunk 1 first; nothing can be published before chunk 0.
    assert transcode_chunk(SESSION, seqs[1]) == "done"
    assert playlists.published(SESSION) == []
    assert transcode_chunk(SESSION, seqs[0]) == "done"
    assert [e.seq for e in playlists.published(SESSION)] == [0, 1]
    assert transcode_chunk(SESSION, seqs[0]) == "settled"  # redelivered task: no-op
    assert transcode_chunk(SESSION, seqs[2]) == "done"
    text = _live("source")
    assert playlists.extinf_total(text) == pytest.approx(3.0, abs=0.1)
    assert "#EXT-X-DISCONTINUITY" not in text


def test_late_chunk_becomes_a_gap_and_the_edge_moves_on(chunks, settings):
    settings.LIVE_DEADLINE_SECONDS = 5
    seqs = [_add(c) for c in chunks]
    from livestream.redis import redis_client

    # Ingested a minute ago (the deadline runs from when the ingest finished the chunk).
    ago = repr(time.time() - 60)
    redis_client().hset(state.key(SESSION, f"chunk:{seqs[1]}"), mapping={"queued": ago, "completed": ago})
    assert transcode_chunk(SESSION, seqs[0]) == "done"
    assert transcode_chunk(SESSION, seqs[2]) == "done"  # chunk 1 is overdue: given up
    assert state.is_gap(SESSION, seqs[1])
    published = playlists.published(SESSION)
    assert [(e.seq, e.disc) for e in published] == [(0, False), (2, True)]
    assert transcode_chunk(SESSION, seqs[1]) == "settled"  # the late task finds the gap
    text = _live("source")
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert "seg_000001.ts" not in text


def test_split_renditions_over_tasks_commit_once_every_rendition_is_in(chunks_480):
    """TRANSCODE_TASKS_PER_CHUNK=2: each task encodes half the ladder; the chunk is published
    only when both halves are stored, and each half is idempotent on its own."""
    seqs = [_add(c) for c in chunks_480]
    assert transcode_chunk(SESSION, seqs[0], 1, 2) == "done"  # 360p only
    assert [r.name for r in state.ladder(SESSION)] == ["source", "360p"]
    assert playlists.published(SESSION) == []  # source is still missing
    assert transcode_chunk(SESSION, seqs[0], 0, 2) == "done"  # source (copy)
    assert [e.seq for e in playlists.published(SESSION)] == [0]
    assert transcode_chunk(SESSION, seqs[0], 1, 2) == "settled"
    assert transcode_chunk(SESSION, seqs[1], 0, 3) == "done"
    assert transcode_chunk(SESSION, seqs[1], 2, 3) == "idle"  # more tasks than renditions
    assert transcode_chunk(SESSION, seqs[1], 1, 3) == "done"
    assert [e.seq for e in playlists.published(SESSION)] == [0, 1]
    for name in ("source", "360p"):
        text = _live(name)
        assert playlists.extinf_total(text) == pytest.approx(2.0, abs=0.1), name
        segment = storage.get_bytes(f"{session_prefix(STREAM, SESSION)}/{name}/seg_000001.ts")
        assert segment


def _frames(data: bytes, tmp: Path) -> int:
    path = tmp / "segment.ts"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return int(out.split()[0])  # (a TS program lists its streams again)


def test_progressive_chunk_is_transcoded_while_it_is_being_written(chunks_480, tmp_path):
    """Progressive transcoding: the task of a chunk starts before the chunk is complete and is
    fed its bytes as the segmenter appends them; it finishes once the chunk is completed."""
    first = _add(chunks_480[0])
    assert transcode_chunk(SESSION, first) == "done"  # decides the ladder from a whole chunk
    data, start, end = chunks_480[1]
    seq = state.reserve_chunk(SESSION, conn=1, disc=False)
    state.set_ingest(SESSION, 1, "running")
    assert not state.chunk_meta(SESSION, seq).complete
    result: list[str] = []
    task = threading.Thread(target=lambda: result.append(transcode_chunk(SESSION, seq)))
    task.start()
    pieces = [data[i : i + len(data) // 5 + 1] for i in range(0, len(data), len(data) // 5 + 1)]
    for piece in pieces:
        time.sleep(0.15)
        assert task.is_alive()  # still waiting for the rest of the chunk
        state.append_chunk_data(SESSION, seq, piece)
    state.complete_chunk(SESSION, seq, start=start, end=end, wall=time.time())
    task.join(timeout=60)
    assert result == ["done"]
    assert [e.seq for e in playlists.published(SESSION)] == [first, seq]
    for name in ("source", "360p"):
        segment = storage.get_bytes(f"{session_prefix(STREAM, SESSION)}/{name}/seg_000001.ts")
        assert _frames(segment, tmp_path) == 30, name  # the whole 1 s chunk, nothing lost
    text = _live("360p")
    assert playlists.extinf_total(text) == pytest.approx(2.0, abs=0.1)


def test_progressive_chunk_whose_segmenter_died_becomes_a_gap(chunks_480, settings):
    settings.CHUNK_SECONDS = 0.2
    assert transcode_chunk(SESSION, _add(chunks_480[0])) == "done"
    seq = state.reserve_chunk(SESSION, conn=1, disc=False)
    state.append_chunk_data(SESSION, seq, chunks_480[1][0][:20_000])
    state.set_ingest(SESSION, 1, "ended:0")  # gone without completing it
    assert transcode_chunk(SESSION, seq) == "gap"
    assert state.is_gap(SESSION, seq)


def test_progressive_chunk_of_a_dead_ingest_node_becomes_a_gap(chunks_480, settings):
    """The node died with its segmenter (still "running" in Redis): once the node's
    registration lapsed the chunk is given up, not waited for until the live deadline."""
    settings.CHUNK_SECONDS = 0.2
    assert transcode_chunk(SESSION, _add(chunks_480[0])) == "done"
    seq = state.reserve_chunk(SESSION, conn=1, disc=False)
    state.append_chunk_data(SESSION, seq, chunks_480[1][0][:20_000])
    state.set_ingest(SESSION, 1, "running")
    state.set_ingest_node(SESSION, 1, "node-gone")  # never registered: dead
    started = time.monotonic()
    assert transcode_chunk(SESSION, seq) == "gap"
    assert time.monotonic() - started < settings.LIVE_DEADLINE_SECONDS
    assert state.is_gap(SESSION, seq)


def test_deadlines_run_from_when_the_ingest_finished_the_chunk(settings):
    """A chunk lasts a keyframe interval (OBS's default: 8.3 s): its deadline counts from its end
    at the ingest, not from when its progressive task was queued at its start."""
    settings.LIVE_DEADLINE_SECONDS, settings.CHUNK_SECONDS = 15, 2
    done = state.ChunkMeta(0, 0.0, 8.3, 0.0, 1, False, queued=100.0, complete=True, completed=108.3)
    assert done.deadline == pytest.approx(123.3)
    writing = state.ChunkMeta(1, 0.0, 0.0, 0.0, 1, False, queued=100.0, complete=False, expect=8.3)
    assert writing.deadline == pytest.approx(123.3)
    assert state.ChunkMeta(2, 0, 0, 0, 1, False, queued=100.0, complete=False).deadline == pytest.approx(117.0)


def test_each_connection_has_its_probed_source():
    from tests.pipeline.test_units import SOURCE_720

    mono = SOURCE_720.__class__(**{**SOURCE_720.__dict__, "audio_channels": 1, "audio_layout": "mono"})
    state.store_source(SESSION, SOURCE_720, conn=1)
    state.store_source(SESSION, mono, conn=2)  # a reconnect with other audio
    assert state.source(SESSION, 2) == mono
    assert state.source(SESSION, 1) == SOURCE_720
    assert state.source(SESSION) == SOURCE_720  # the session's: its first connection's
    assert state.source(SESSION, 3) == SOURCE_720  # not probed (yet): the session's
