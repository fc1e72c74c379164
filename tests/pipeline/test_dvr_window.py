"""The live DVR window (ADR 0029): ``index.m3u8`` of a session on air is a sliding window of
``DVR_WINDOW_SECONDS``, rendered from one bounded LRANGE of the published log, with the media
and discontinuity sequence numbers of its first segment; the replay written at the end stays
the full VOD."""

from __future__ import annotations

import itertools
import re

import pytest

from livestream.redis import redis_client
from streams.playback import session_prefix
from tests.pipeline.test_assembler import SESSION, STREAM, add_ready, session  # noqa: F401 - fixture
from transcoding import assembler, hls, state, storage


def tag(text: str, name: str) -> int | None:
    match = re.search(rf"^#{name}:(\d+)$", text, re.MULTILINE)
    return int(match[1]) if match else None


def segments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("seg_")]


def test_live_index_is_a_sliding_dvr_window_with_its_sequence_numbers(session, client, settings):  # noqa: F811
    settings.PLAYLIST_WINDOW = 2
    settings.DVR_WINDOW_SECONDS = 10
    seqs = add_ready(4)
    state.mark_gap(SESSION, seqs[2], "test")  # the entry after it is a discontinuity
    seqs += add_ready(8)
    assembler.advance(session)
    published = state.published(SESSION)
    assert len(published) == 11
    prefix = session_prefix(STREAM, SESSION)
    text = client.get(f"/internal/origin/{prefix}/240p/index.m3u8").content.decode()
    # 10 s of 2 s segments: the newest 5; the first of them is the 7th published (index 6).
    assert segments(text) == [e.name for e in published[6:]]
    assert tag(text, "EXT-X-MEDIA-SEQUENCE") == 6
    # The discontinuity (index 2) left the window: it is counted, not tagged.
    assert tag(text, "EXT-X-DISCONTINUITY-SEQUENCE") == 1
    assert "#EXT-X-DISCONTINUITY\n" not in text
    assert "#EXT-X-PLAYLIST-TYPE" not in text  # a sliding window cannot be an EVENT playlist
    assert "#EXT-X-ENDLIST" not in text
    assert tag(text, "EXT-X-TARGETDURATION") == 2
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 5
    # While the discontinuity is inside the window it is tagged, and the sequence counts none.
    settings.DVR_WINDOW_SECONDS = 30
    wide = client.get(f"/internal/origin/{prefix}/240p/index.m3u8").content.decode()
    assert segments(wide) == [e.name for e in published]
    assert tag(wide, "EXT-X-MEDIA-SEQUENCE") == 0
    assert tag(wide, "EXT-X-DISCONTINUITY-SEQUENCE") is None
    assert wide.count("#EXT-X-DISCONTINUITY\n") == 1
    # The live playlist is unchanged: the newest PLAYLIST_WINDOW segments.
    live = client.get(f"/internal/origin/{prefix}/240p/live.m3u8").content.decode()
    assert segments(live) == [e.name for e in published[-2:]]
    assert tag(live, "EXT-X-MEDIA-SEQUENCE") == 9
    # DVR_WINDOW_SECONDS=0: the whole log so far, an EVENT playlist (as before the window).
    settings.DVR_WINDOW_SECONDS = 0
    event = client.get(f"/internal/origin/{prefix}/240p/index.m3u8").content.decode()
    assert len(segments(event)) == 11
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event
    # At the end the replay in the bucket is the whole broadcast, VOD.
    settings.DVR_WINDOW_SECONDS = 10
    assembler.advance(session, final=True)
    replay = storage.get_bytes(f"{prefix}/240p/index.m3u8").decode()
    assert segments(replay) == [e.name for e in published]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in replay
    assert replay.rstrip().endswith("#EXT-X-ENDLIST")


def test_the_window_slides_forward_one_segment_at_a_time(session, client, settings):  # noqa: F811
    settings.PLAYLIST_WINDOW = 2
    settings.DVR_WINDOW_SECONDS = 6
    url = f"/internal/origin/{session_prefix(STREAM, SESSION)}/240p/index.m3u8"
    seen: list[tuple[int | None, list[str]]] = []
    for _ in range(6):
        add_ready(1)
        assembler.advance(session)
        text = client.get(url).content.decode()
        seen.append((tag(text, "EXT-X-MEDIA-SEQUENCE"), segments(text)))
    assert [sequence for sequence, _ in seen] == [0, 0, 0, 1, 2, 3]
    for (before, names_before), (after, names_after) in itertools.pairwise(seen):
        # RFC 8216 6.2.1: segments leave from the front only, the rest stays in order.
        assert (
            names_after[: len(names_before) - ((after or 0) - (before or 0))]
            == names_before[(after or 0) - (before or 0) :]
        )
        assert len(names_after) <= 3


def test_the_dvr_read_is_one_bounded_lrange_whatever_the_log_length(session, client, settings):  # noqa: F811
    """10,000 published segments: the DVR playlist asks Redis for the window's entries only."""
    settings.PLAYLIST_WINDOW = 3
    settings.DVR_WINDOW_SECONDS = 60
    add_ready(3)
    assembler.advance(session)
    first = state.published(SESSION)[-1]
    log_key = state.key(SESSION, "published")
    r = redis_client()
    extra = [
        hls.Entry(first.index + i, first.seq + i, 1.0, first.wall + i, False, first.sizes).to_json()
        for i in range(1, 10_001)
    ]
    r.rpush(log_key, *extra)
    threshold = r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()
    try:
        text = client.get(f"/internal/origin/{session_prefix(STREAM, SESSION)}/240p/index.m3u8").content.decode()
        ranges = [entry["command"] for entry in r.slowlog_get(128) if b"LRANGE" in entry["command"].upper()]
    finally:
        r.config_set("slowlog-log-slower-than", threshold)
        r.slowlog_reset()
    assert len(segments(text)) == 60
    assert tag(text, "EXT-X-MEDIA-SEQUENCE") == first.index + 10_000 - 59
    assert [c for c in ranges if log_key.encode() in c] == [f"LRANGE {log_key} -{assembler.dvr_entries()} -1".encode()]
    assert assembler.dvr_entries() == 60 * 2 + 3


@pytest.mark.parametrize(
    ("durations", "seconds", "kept"),
    [
        ([2.0] * 10, 6, 3),  # whole segments that fit
        ([2.0] * 10, 7, 3),  # never more than the window
        ([1.0] * 3, 60, 3),  # a young broadcast: all of it
        ([9.0] * 5, 6, 2),  # at least the live window (PLAYLIST_WINDOW = 2)
    ],
)
def test_dvr_window_keeps_the_newest_entries_that_fit(settings, durations, seconds, kept):
    settings.PLAYLIST_WINDOW = 2
    tail = hls.with_dseq([hls.Entry(i, i, d, 1000.0 + i, False) for i, d in enumerate(durations)])
    window = assembler.dvr_window(tail, seconds)
    assert window == tail[len(tail) - kept :]
