"""Low-Latency HLS through the real stack (ADR 0031): nginx-rtmp, the segmenter, a Celery worker,
SeaweedFS, the live origin behind the nginx edge. A publisher with 2 s keyframes (the usual
setting) streams into a stream in the low latency mode; while it is live the test reads every
rendition's LL playlist at the edge several times a second and checks the RFC 8216bis rules
that matter on each (``tests/fixtures/llhls.py``), asks for the next part with a blocking
request and with the preload hint, and checks that N viewers asking for the same part cost one
origin request. At the end the replay (full CMAF segments in S3) holds every frame the
publisher sent, and the parts served while live are the segments' bytes."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from streams.playback import replay_url
from tests.factories import make_stream
from tests.fixtures import llhls
from tests.pipeline.media import Source, decode_errors, decode_segment, parse_master, publish_file, source_file
from transcoding import thumbnails

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

SOURCE = Source("ll-720p30-gop2", seconds=12.0)  # 720p30, a keyframe every 2 s, AAC
VIEWERS = 50


def _contains(pl: llhls.MediaPlaylist, msn: int, part: int) -> bool:
    """Whether the playlist lists part ``part`` of segment ``msn`` (or anything later)."""
    if pl.in_progress is not None and pl.in_progress.parts:
        return (msn, part) <= (pl.in_progress.msn, len(pl.in_progress.parts) - 1)
    last = pl.segments[-1]
    return (msn, part) <= (last.msn, len(last.parts) - 1) or msn <= last.msn


def _next_part(pl: llhls.MediaPlaylist) -> tuple[int, int]:
    if pl.in_progress is not None and pl.in_progress.parts:
        return pl.in_progress.msn, len(pl.in_progress.parts)
    return pl.segments[-1].msn + 1, 0


def test_low_latency_hls_end_to_end(live_stack, user, settings, tmp_path: Path):
    settings.TRANSCODE_LADDER = ["360p:360:600:64"]  # the copied source + one encoded rung
    settings.LIVE_DEADLINE_SECONDS = 90.0
    stream, key = make_stream(user, title="LL", latency_mode="low", keep_recordings=True)
    publisher = publish_file(f"{live_stack.rtmp_url}/{key}", source_file(SOURCE))
    live_stack.wait_live(stream.pk)
    urls = live_stack.wait_segments(stream.pk, 1)
    assert set(urls) == {"source", "360p"}

    previous: dict[str, llhls.MediaPlaylist] = {}
    problems: list[str] = []
    rounds = 0
    parts_seen: dict[tuple[str, int], bytes] = {}  # (rendition, msn) -> its parts' bytes, fetched while live
    blocking: dict[str, float] = {}
    collapsed: list[str] = []
    refused: list[int] = []
    plain = thumbnail = ""
    while publisher.poll() is None:
        now: dict[str, llhls.MediaPlaylist] = {}
        texts: dict[str, str] = {}
        for rendition, url in urls.items():
            response = requests.get(url, timeout=5)
            assert response.status_code == 200, (rendition, response.status_code, response.text)
            texts[rendition] = response.text
            pl = now[rendition] = llhls.parse(response.text)
            problems += [f"{rendition}: {v}" for v in llhls.violations(pl, previous.get(rendition))]
            for segment in pl.segments:
                if segment.parts and (rendition, segment.msn) not in parts_seen and len(parts_seen) < 6:
                    # What a live viewer gets in parts (fetched now: parts live in Redis only).
                    base_url = url.rsplit("/", 1)[0]
                    got = [requests.get(f"{base_url}/{p.uri}", timeout=5) for p in segment.parts]
                    assert all(g.status_code == 200 for g in got), [g.status_code for g in got]
                    parts_seen[(rendition, segment.msn)] = b"".join(g.content for g in got)
        # Fetched one after the other through the edge (plain requests: 100 ms slots), and at a
        # segment boundary the parts the next chunk already has appear at once (when the
        # assembler commits the segment): a report may be a few parts from what the other
        # playlist shows a moment later.
        problems += llhls.reports_consistent({f"{r}/live.m3u8": now[r] for r in urls}, slack=4)
        previous = now
        rounds += 1
        source = now["source"]
        assert source.part_target is not None, texts
        assert source.server_control.get("CAN-BLOCK-RELOAD") == "YES", texts
        # Mid-segment (a hint at a segment's end may name a part that never comes: the chunk ended).
        mid = source.in_progress is not None and 1 <= len(source.in_progress.parts) <= 3
        if rounds >= 5 and not refused:
            refused = _bad_directives(urls["source"], source)
            plain = _plain_hls_client(live_stack.edge_url, stream.pk)
            # The directory thumbnail decodes a CMAF segment (after its init section).
            session_id = int(urls["source"].rsplit("/", 3)[-3].split("-", 1)[0])  # <session>-<tag>
            thumbnail = thumbnails.make_thumbnail(session_id)
        if rounds >= 8 and mid and not blocking:
            blocking = _blocking_request(urls["source"], source)
        elif rounds >= 12 and mid and not collapsed:
            collapsed = _many_viewers_one_part(urls["source"], source)
        time.sleep(0.15)
    assert publisher.wait(timeout=30) == 0, publisher.stderr.read() if publisher.stderr else ""
    assert rounds >= 20, rounds
    assert problems == [], "\n".join(problems[:20])
    # The blocking request was answered with the part it asked for, within three targets.
    assert blocking["status"] == 200, blocking
    assert blocking["contains"], blocking
    assert blocking["seconds"] < 3 * 2, blocking
    # N viewers asking for the next part at once: one origin request.
    assert len(collapsed) == VIEWERS, collapsed
    assert collapsed.count("MISS") == 1, collapsed

    # Bad directives are refused (RFC 8216bis 6.2.5.2) rather than held or answered.
    assert refused == [400, 400, 400], refused
    # A client without LL support (ffmpeg's HLS reader) played the same master: full segments.
    assert plain.startswith("ok"), plain
    assert thumbnail == "updated", thumbnail
    image = requests.get(thumbnails.thumbnail_url(stream.pk), timeout=5)
    assert image.content[:2] == b"\xff\xd8"
    session = live_stack.wait_session_ended(stream.pk, timeout=120)
    assert session.is_replay

    # The replay: full CMAF segments, every frame the publisher sent, in order, once.
    compared = 0
    master = requests.get(replay_url(session), timeout=5)
    base = replay_url(session).rsplit("/", 1)[0]
    for variant in parse_master(master.text):
        rendition = variant.uri.split("/")[0]
        text = requests.get(f"{base}/{variant.uri}", timeout=5).text
        assert "#EXT-X-ENDLIST" in text
        maps = [line for line in text.splitlines() if line.startswith("#EXT-X-MAP:")]
        assert len(maps) == 1, maps
        init_uri = maps[0].split('URI="')[1].rstrip('"')
        init = requests.get(f"{base}/{rendition}/{init_uri}", timeout=5)
        assert init.status_code == 200, init_uri
        assert init.headers["Content-Type"] == "video/mp4"
        uris = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert all(u.endswith(".m4s") for u in uris), uris
        numbers: list[int] = []
        joined = tmp_path / f"{rendition}.mp4"
        with joined.open("wb") as out:
            out.write(init.content)
            for index, uri in enumerate(uris):
                fetched = requests.get(f"{base}/{rendition}/{uri}", timeout=10)
                assert fetched.status_code == 200, uri
                alone = tmp_path / f"{rendition}-{uri}.mp4"
                alone.write_bytes(init.content + fetched.content)
                decoded = decode_segment(alone, SOURCE)
                assert decoded.first_is_key, (rendition, uri)
                numbers += decoded.numbers
                out.write(fetched.content)
                msn = int(text.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0]) + index
                if (rendition, msn) in parts_seen:  # what live viewers got in parts is this segment
                    assert parts_seen[(rendition, msn)] == fetched.content, (rendition, uri)
                    compared += 1
        assert numbers == list(range(SOURCE.frames)), (rendition, len(numbers), numbers[:3], numbers[-3:])
        assert decode_errors(joined) == "", rendition
    assert compared >= 4, (compared, sorted(parts_seen))


def _plain_hls_client(edge: str, stream_id: int) -> str:
    """ffmpeg reads 3 s of the stream's master as a player without LL support would."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", f"{edge}/live/{stream_id}/master.m3u8", "-t", "3", "-map", "0:v:0",
         "-f", "framemd5", "-"],
        capture_output=True, timeout=60, check=False, text=True,
    )  # fmt: skip
    frames = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    if done.returncode != 0 or len(frames) < 60:
        return f"rc {done.returncode}, {len(frames)} frames: {done.stderr[-500:]}"
    return f"ok, {len(frames)} frames"


def _bad_directives(url: str, pl: llhls.MediaPlaylist) -> list[int]:
    last = pl.segments[-1].msn
    asks = [{"_HLS_part": "1"}, {"_HLS_msn": str(last + 10)}, {"_HLS_msn": "x"}]
    return [requests.get(url, params=ask, timeout=10).status_code for ask in asks]


def _blocking_request(url: str, pl: llhls.MediaPlaylist) -> dict[str, float]:
    """Ask for the part after the last listed one; it is held until it exists."""
    msn, part = _next_part(pl)
    assert not _contains(pl, msn, part)
    started = time.monotonic()
    response = requests.get(url, params={"_HLS_msn": msn, "_HLS_part": part}, timeout=15)
    seconds = time.monotonic() - started
    contains = response.status_code == 200 and _contains(llhls.parse(response.text), msn, part)
    # The preload hint of that answer names the next part: requesting it is held until it exists.
    answer = llhls.parse(response.text)
    hinted = requests.get(f"{url.rsplit('/', 1)[0]}/{answer.hints[0].uri}", timeout=15)
    assert hinted.status_code == 200, hinted.status_code
    assert hinted.headers["Content-Type"] == "video/iso.segment"
    assert hinted.content[4:8] == b"moof"
    return {"status": response.status_code, "contains": float(contains), "seconds": seconds}


def _many_viewers_one_part(url: str, pl: llhls.MediaPlaylist) -> list[str]:
    """``VIEWERS`` clients ask the edge for the hinted part at once; how the edge served each."""
    hint = f"{url.rsplit('/', 1)[0]}/{pl.hints[0].uri}"
    barrier = threading.Barrier(VIEWERS)

    def fetch(_: int) -> str:
        barrier.wait(timeout=10)
        response = requests.get(hint, timeout=15)
        assert response.status_code == 200, response.status_code
        return response.headers.get("X-Cache-Status", "?")

    with ThreadPoolExecutor(VIEWERS) as pool:
        return list(pool.map(fetch, range(VIEWERS)))
