"""Clips end to end on the real process stack (tests/fixtures/stack.py: nginx-rtmp, the
ingest, a prefork Celery worker on the transcode and default queues, uvicorn, SeaweedFS, the
edge) while a publisher's file with numbered frames is broadcast over RTMP:

- the last 6 s of the live broadcast, cut by the worker (stream copy) while the stream is live,
  decodes completely, holds whole segments (its first and last frame are those of the source
  segments at its program date-times) and lasts within one segment of the request;
- a trimmed range of the same live session holds exactly the frames of the requested instants;
- Chromium plays the clip page's video to its end;
- once the broadcast ended, a range of the replay holds the frames of the replay's segments;
- deleting the stream deletes the clips' objects.

Parametrised over the latency modes: ``normal`` publishes MPEG-TS segments, ``low`` CMAF.
"""

from __future__ import annotations

import itertools
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from rest_framework.authtoken.models import Token

from clips.models import Clip
from streams.playback import session_prefix
from tests.browser.harness import chromium
from tests.clips.media import frame_numbers
from tests.factories import make_stream
from tests.fixtures.stack import ProcessStack, latest_session, stream_status, wait_for
from tests.pipeline.media import Source, publish_file, source_file
from transcoding import hls, state, storage

pytestmark = [pytest.mark.faults, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FPS = 30
FRAME = 1 / FPS
LIVE_SOURCE = Source(
    "clips-live-30s", 640, 360, FPS, 1200, seconds=30.0,
    video_args=("-tune", "zerolatency", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"),
)  # fmt: skip


def decode_errors(path: Path) -> str:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    return done.stderr.strip()


def source_numbers(entry: hls.Entry, session_id: int, stream_id: int, tmp: Path) -> list[int]:
    """Frame numbers of one published source segment, read back from S3."""
    prefix = f"{session_prefix(stream_id, session_id)}/source"
    data = storage.get_bytes(f"{prefix}/{entry.name}")
    assert data is not None
    init = entry.init("source")
    if init:
        head = storage.get_bytes(f"{prefix}/{init}")
        assert head is not None
        data = head + data
    path = tmp / f"src-{entry.seq}{'.mp4' if init else '.ts'}"
    path.write_bytes(data)
    return frame_numbers(path)


def unbroken(entries: list[hls.Entry], count: int, first: int) -> int:
    """The first index from ``first`` of ``count`` entries with no chunk given up among them (a
    worker that fell past the live deadline on a loaded machine drops one: clips do not span it)."""
    for i in range(first, len(entries) - count + 1):
        run = entries[i : i + count]
        if all(b.seq == a.seq + 1 and b.epoch == a.epoch for a, b in itertools.pairwise(run)):
            return i
    raise AssertionError(f"no {count} chunks in a row were published: {entries}")


def wait_ready(api: requests.Session, base: str, slug: str) -> dict:
    body: dict = {}

    def ready() -> bool:
        nonlocal body
        body = api.get(f"{base}/api/v1/clips/{slug}/", timeout=5).json()
        assert body["status"] != "failed", body
        return body["status"] == "ready"

    wait_for(ready, 120, f"clip {slug} ready")
    return body


@pytest.mark.parametrize("latency_mode", ["normal", "low"])
def test_clips_of_a_live_broadcast(process_stack: ProcessStack, user, tmp_path: Path, latency_mode: str) -> None:
    stack = process_stack
    base = stack.web_url
    stream, key = make_stream(user, title="Live clips", keep_recordings=True, latency_mode=latency_mode)
    api = requests.Session()
    api.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"
    publisher = publish_file(f"{stack.rtmp_url}/{key}", source_file(LIVE_SOURCE))
    try:
        wait_for(lambda: stream_status(stream.pk) == "live", 30, "stream live")
        session = latest_session(stream.pk)
        wait_for(lambda: state.published_count(session.pk) >= 6, 60, "6 segments published")
        # 1. The last 6 s, while live (whole segments, stream copy).
        response = api.post(f"{base}/api/v1/streams/{stream.pk}/clips/",
                            json={"title": "Last six", "last_seconds": 6}, timeout=10)  # fmt: skip
        assert response.status_code == 202, response.text
        live_slug = response.json()["slug"]
        # 2. A trimmed range of the same live session.
        entries = state.published(session.pk)
        exact_at = unbroken(entries, 4, 1)
        start = entries[exact_at].wall + 0.5
        end = entries[exact_at + 3].wall + 0.3
        body = {"title": "Exact", "session": session.pk, "trim": True,
                "start": datetime.fromtimestamp(start, UTC).isoformat(),
                "end": datetime.fromtimestamp(end, UTC).isoformat()}  # fmt: skip
        response = api.post(f"{base}/api/v1/streams/{stream.pk}/clips/", json=body, timeout=10)
        assert response.status_code == 202, response.text
        exact_slug = response.json()["slug"]
        live_clip = wait_ready(api, base, live_slug)
        assert stream_status(stream.pk) == "live"  # cut while the broadcast goes on
    finally:
        publisher.wait(timeout=60)

    entries = state.published(session.pk)
    by_wall = {round(e.wall, 3): e for e in entries}

    # The live clip: decodes, whole segments from its start to its end, within one segment.
    clip = Clip.objects.get(slug=live_slug)
    video = tmp_path / "live.mp4"
    response = requests.get(live_clip["video_url"], timeout=30)  # through the edge
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    video.write_bytes(response.content)
    assert decode_errors(video) == ""
    numbers = frame_numbers(video)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "frames missing or repeated"
    assert len(numbers) == clip.frames
    assert clip.start is not None
    assert clip.end is not None
    first_entry = by_wall[round(clip.start.timestamp(), 3)]
    last_entry = max((e for e in entries if e.wall < clip.end.timestamp() - 0.1), key=lambda e: e.wall)
    assert last_entry.wall + last_entry.duration == pytest.approx(clip.end.timestamp(), abs=2 * FRAME)
    longest = max(e.duration for e in entries)
    asked = clip.requested_end.timestamp() - clip.requested_start.timestamp()
    if asked < 6 - 0.001:  # a chunk was given up in the last 6 s: the clip starts after it
        after = entries.index(first_entry)
        assert first_entry.seq != entries[after - 1].seq + 1, (asked, entries)
        assert clip.requested_start.timestamp() == pytest.approx(first_entry.wall)
    else:
        assert asked == pytest.approx(6)
    assert abs(clip.duration_s - asked) <= longest + FRAME
    assert numbers[0] == source_numbers(first_entry, session.pk, stream.pk, tmp_path)[0]
    assert numbers[-1] == source_numbers(last_entry, session.pk, stream.pk, tmp_path)[-1]

    # The trimmed clip: exactly the frames of [start, end) (RTMP's millisecond timestamps: +-1).
    exact = wait_ready(api, base, exact_slug)
    video = tmp_path / "exact.mp4"
    video.write_bytes(requests.get(exact["video_url"], timeout=30).content)
    assert decode_errors(video) == ""
    numbers = frame_numbers(video)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    seg = entries[exact_at]
    expected_first = source_numbers(seg, session.pk, stream.pk, tmp_path)[0] + math.ceil(round(0.5 * FPS, 3))
    assert abs(numbers[0] - expected_first) <= 1
    assert abs(len(numbers) - (end - start) * FPS) <= 2
    assert Clip.objects.get(slug=exact_slug).duration_s == pytest.approx(end - start, abs=2 * FRAME)

    # Chromium plays the clip page's video to its end.
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/clips/{live_slug}/")
        assert page.text_content("#clipper") == user.public_name
        page.evaluate("document.getElementById('clip-video').play()")
        page.wait_for_function("document.getElementById('clip-video').ended", timeout=60_000)
        played = page.evaluate(
            "(() => { const v = document.getElementById('clip-video');"
            " return {d: v.duration, t: v.currentTime, e: v.error && v.error.code}; })()"
        )
        assert played["e"] is None
        assert played["d"] == pytest.approx(clip.duration_s, abs=0.1)
        assert played["t"] == pytest.approx(played["d"], abs=0.1)

    # A range of the replay once the broadcast ended (listed by the replay's playlist in S3).
    wait_for(lambda: latest_session(stream.pk).status == "ended", 120, "broadcast ended")
    assert latest_session(stream.pk).is_replay
    at = unbroken(entries, 3, 6)
    r_start, r_end = entries[at].wall + 0.2, entries[at + 2].wall + 0.7
    body = {"title": "From the replay", "session": session.pk,
            "start": datetime.fromtimestamp(r_start, UTC).isoformat(),
            "end": datetime.fromtimestamp(r_end, UTC).isoformat()}  # fmt: skip
    response = api.post(f"{base}/api/v1/streams/{stream.pk}/clips/", json=body, timeout=10)
    assert response.status_code == 202, response.text
    from_replay = wait_ready(api, base, response.json()["slug"])
    video = tmp_path / "replay.mp4"
    video.write_bytes(requests.get(from_replay["video_url"], timeout=30).content)
    assert decode_errors(video) == ""
    numbers = frame_numbers(video)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[0] == source_numbers(entries[at], session.pk, stream.pk, tmp_path)[0]
    assert numbers[-1] == source_numbers(entries[at + 2], session.pk, stream.pk, tmp_path)[-1]

    # Deleting the stream deletes its clips' objects.
    keys = list(Clip.objects.filter(stream=stream).values_list("video_key", flat=True))
    assert len(keys) == 3
    assert all(storage.get_bytes(k) for k in keys)
    assert api.delete(f"{base}/api/v1/streams/{stream.pk}/", timeout=10).status_code == 204
    wait_for(lambda: all(storage.get_bytes(k) is None for k in keys), 60, "clip objects purged")
    assert not Clip.objects.filter(stream_id=stream.pk).exists()
