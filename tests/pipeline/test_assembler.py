"""The assembler against real Redis and S3 with synthetic outputs: a fenced single writer (an
assembler whose lease lapsed publishes nothing twice), a chunk published or a gap never both,
live playlists from Redis through the origin view, per-chunk keys gone once passed."""

import contextlib
import random
import threading
import time
from collections.abc import Iterator

import pytest

from livestream.redis import redis_client
from streams.playback import session_dir, session_prefix, stream_prefix
from transcoding import assembler, state, storage
from transcoding.ladder import Rendition
from transcoding.mpegts import PACKET, SYNC

SESSION, STREAM = 987_660, 98_766
LADDER = [Rendition("source", 640, 360, 800, 96, copy=True), Rendition("240p", 426, 240, 400, 64)]


def ts(packets: int = 20, pid: int = 0x100) -> bytes:
    """Synthetic MPEG-TS: payload-only packets of one PID, counters from 0."""
    out = bytearray()
    for i in range(packets):
        header = bytes([SYNC, (pid >> 8) & 0x1F, pid & 0xFF, 0x10 | (i % 16)])
        out += header + bytes([i % 256]) * (PACKET - 4)
    return bytes(out)


@pytest.fixture
def session(s3: str) -> Iterator[assembler.Layout]:
    from tests.pipeline.test_units import SOURCE_720

    state.start_epoch(SESSION)
    state.remember_stream(SESSION, STREAM)
    state.decide_ladder(SESSION, LADDER)
    state.store_source(SESSION, SOURCE_720, conn=1)
    yield assembler.Layout(stream_prefix(STREAM), session_prefix(STREAM, SESSION), SESSION)
    storage.delete_prefix(stream_prefix(STREAM) + "/")


def add_ready(n: int, *, duration: float = 2.0) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = state.add_chunk(SESSION, data=b"x" * 1000, start=0.0, end=duration, wall=time.time(), conn=1, disc=False)
        state.store_outputs(SESSION, seq, {r.name: ts() for r in LADDER}, 5)
        seqs.append(seq)
    return seqs


def published_seqs() -> list[int]:
    return [e.seq for e in state.published(SESSION)]


def assert_done_xor_gap(seqs: list[int]) -> None:
    published = published_seqs()
    assert len(published) == len(set(published)), f"duplicate playlist entries: {published}"
    gaps = {s for s in seqs if state.is_gap(SESSION, s)}
    assert not gaps & set(published), f"both published and a gap: {sorted(gaps & set(published))}"
    assert gaps | set(published) == set(seqs)
    assert [e.index for e in state.published(SESSION)] == list(range(len(published)))


def test_an_assembler_whose_lease_lapsed_publishes_nothing_twice(session, monkeypatch):
    """Assembler A stalls in an S3 PUT past its lease; B takes over and publishes everything; A
    wakes up with the same chunk ready to commit: its fence token is stale, nothing is added."""
    monkeypatch.setattr(state, "ASSEMBLER_LEASE_S", 0.5)
    seqs = add_ready(3)
    put = storage.put_segment
    stalled = threading.Event()
    first = threading.Lock()

    def slow_put(key: str, data: bytes) -> None:
        if first.acquire(blocking=False):  # A's first PUT (B starts only once A stalls)
            stalled.set()
            time.sleep(1.5)  # three leases
        put(key, data)

    monkeypatch.setattr(storage, "put_segment", slow_put)
    results: dict[str, int] = {}
    a = threading.Thread(target=lambda: results.update(A=assembler.advance(session)), name="A")
    a.start()
    assert stalled.wait(10)
    time.sleep(0.7)  # A's lease has lapsed
    results["B"] = assembler.advance(session)
    assert results["B"] == 3
    a.join(timeout=30)
    assert results["A"] == 3  # A noticed it lost the session and stopped
    assert published_seqs() == [0, 1, 2]
    assert [e.seq for e in state.window(SESSION).entries] == [0, 1, 2]
    assert_done_xor_gap(seqs)
    # Its segments are the same bytes as B's (deterministic counters), so A's late PUT was harmless.
    live = assembler.live_playlist(STREAM, SESSION, "source", "live") or ""
    assert [line for line in live.splitlines() if line.startswith("seg_")] == [
        "seg_000000.ts",
        "seg_000001.ts",
        "seg_000002.ts",
    ]


def test_gaps_marked_while_assemblers_commit_are_never_also_published(session):
    """Two assemblers and a gap-marker (a task giving up, a segmenter abandoning a chunk) race
    over 60 chunks: every chunk ends published or a gap, never both, never twice."""
    seqs = add_ready(60)
    rng = random.Random(7)
    stop = threading.Event()

    def marker() -> None:
        while not stop.is_set():
            state.mark_gap(SESSION, rng.choice(seqs), "raced")

    def assemble() -> None:
        while not stop.is_set() and state.next_to_publish(SESSION) < len(seqs):
            assembler.advance(session)

    threads = [threading.Thread(target=marker), threading.Thread(target=assemble), threading.Thread(target=assemble)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while state.next_to_publish(SESSION) < len(seqs) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert state.next_to_publish(SESSION) == len(seqs)
    assert_done_xor_gap(seqs)
    assert 0 < state.gap_count(SESSION) < len(seqs)
    # The discontinuity after each gap is counted in the window's discontinuity sequence.
    entries = state.published(SESSION)
    tags = sum(1 for e in entries if e.disc and e.index)
    assert entries[-1].after() == tags


def test_live_playlists_come_from_redis_and_the_replay_goes_to_s3_at_the_end(session, client, settings):
    settings.PLAYLIST_WINDOW = 3
    add_ready(5)
    assembler.advance(session)
    prefix = session_prefix(STREAM, SESSION)
    assert storage.get_bytes(f"{prefix}/source/live.m3u8") is None  # nothing rewritten per chunk
    assert storage.get_bytes(f"{prefix}/master.m3u8") is not None
    response = client.get(f"/internal/origin/{prefix}/240p/live.m3u8")
    assert response.status_code == 200
    text = response.content.decode()
    assert "#EXT-X-MEDIA-SEQUENCE:2" in text
    assert [line for line in text.splitlines() if line.startswith("seg_")] == [
        "seg_000002.ts",
        "seg_000003.ts",
        "seg_000004.ts",
    ]
    assert response["Cache-Control"] == storage.PLAYLIST_CACHE
    dvr = client.get(f"/internal/origin/{prefix}/240p/index.m3u8").content.decode()
    assert dvr.count("#EXTINF:") == 5
    assert "#EXT-X-PLAYLIST-TYPE" not in dvr  # a sliding DVR window (tests/pipeline/test_dvr_window.py)
    assert client.get(f"/internal/origin/{session_prefix(STREAM + 1, SESSION)}/240p/live.m3u8").status_code == 404
    # Only the session's own tag opens its playlists (ADR 0034): a wrong one, or none, is a 404.
    wrong = f"{stream_prefix(STREAM)}/{SESSION}-{'0' * 16}"
    assert client.get(f"/internal/origin/{wrong}/240p/live.m3u8").status_code == 404
    assert client.get(f"/internal/origin/live/{STREAM}/{SESSION}/240p/live.m3u8").status_code == 404
    assert client.get(f"/internal/origin/{prefix}/1080p/live.m3u8").status_code == 404
    assert client.get(f"/internal/origin/{prefix}/240p/other.m3u8").status_code == 404
    assembler.advance(session, final=True)
    replay = storage.get_bytes(f"{prefix}/240p/index.m3u8").decode()
    assert replay.count("#EXTINF:") == 5
    assert replay.rstrip().endswith("#EXT-X-ENDLIST")
    assert storage.get_bytes(f"{prefix}/source/live.m3u8").decode().rstrip().endswith("#EXT-X-ENDLIST")
    log = storage.get_bytes(f"{prefix}/log/000000.jsonl").decode().splitlines()
    assert len(log) == 5


def test_passed_chunks_leave_no_keys_and_purge_needs_no_scan(session):
    add_ready(4)
    for _ in range(2):  # 4: still being transcoded, 5: given up by its task
        state.add_chunk(SESSION, data=b"y", start=0, end=2, wall=time.time(), conn=1, disc=False)
    assert state.mark_gap(SESSION, 5, "transcode failed")
    assembler.advance(session)
    r = redis_client()
    for seq in range(4):
        assert not r.exists(*state._chunk_keys(SESSION, seq)), seq
    assert r.exists(state.key(SESSION, "data:4"))
    state.set_ingest(SESSION, 1, "running")
    state.set_ingest_node(SESSION, 1, "node-a")
    state.heartbeat(SESSION, 1, node="node-a")
    state.map_client("node-a", "3", SESSION, 1, "h")
    state.purge(SESSION)
    assert list(r.scan_iter(state.key(SESSION, "*"))) == []
    assert not r.hexists(state.node_heartbeats_key("node-a"), f"{SESSION}:1")
    assert not r.exists(state.client_key("node-a", "3"))


def test_the_log_checkpoint_is_written_in_bounded_parts_and_recovers_the_log(session, monkeypatch):
    monkeypatch.setattr(state, "LOG_PART_SEGMENTS", 4)
    put_log = storage.put_log
    failed: list[str] = []

    def flaky(key: str, body: bytes) -> None:
        if key.endswith("000001.jsonl") and not failed:  # S3 fails once, after a commit
            failed.append(key)
            raise OSError("S3 away")
        put_log(key, body)

    monkeypatch.setattr(storage, "put_log", flaky)
    for _ in range(10):
        add_ready(1)
        with contextlib.suppress(OSError):
            assembler.advance(session)
    assert failed
    prefix = f"{session_prefix(STREAM, SESSION)}/log"
    parts = [storage.get_bytes(f"{prefix}/{n:06d}.jsonl").decode().splitlines() for n in range(3)]
    assert [len(p) for p in parts] == [4, 4, 2]  # the part whose PUT failed was written again
    # Redis loses the session: the next generation's assembler reloads the log from the parts.
    redis_client().flushdb()
    state.remember_stream(SESSION, STREAM)
    state.decide_ladder(SESSION, LADDER)
    epoch = state.ensure_epoch(SESSION)
    assert epoch
    seq = state.add_chunk(SESSION, data=b"z", start=0, end=2, wall=time.time(), conn=1, disc=True, epoch=epoch)
    state.store_outputs(SESSION, seq, {r.name: ts() for r in LADDER}, 5)
    assembler.advance(session)
    entries = state.published(SESSION)
    assert [e.seq for e in entries] == [*range(10), 0]
    assert entries[-1].epoch == epoch
    assert entries[-1].disc


def test_a_private_preview_writes_no_stable_master_until_it_goes_public(session):
    """ADR 0034: the stable master ``live/<stream>/master.m3u8`` is a guessable path, so a
    private preview does not have one; its own master (unguessable prefix) is written as usual.
    Once the preview goes public (``end_preview``) the next committed chunk writes it."""
    stable = f"{stream_prefix(STREAM)}/master.m3u8"
    state.set_preview(SESSION)
    add_ready(3)
    assembler.advance(session)
    assert storage.get_bytes(f"{session.session_prefix}/master.m3u8") is not None
    assert storage.get_bytes(stable) is None
    add_ready(10)  # past 10 segments the masters are due again: still no stable one
    assembler.advance(session)
    assert storage.get_bytes(stable) is None
    assert state.in_preview(SESSION)

    state.end_preview(SESSION)
    add_ready(1)
    assembler.advance(session)
    master = storage.get_bytes(stable)
    assert master is not None
    assert f"{session_dir(STREAM, SESSION)}/source/live.m3u8" in master.decode()
