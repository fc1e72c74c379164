"""Real media for the clip tests: a publisher's file with burnt-in frame numbers
(``tests.pipeline.media.Source``: every frame carries its number), segmented the way the
pipeline stores it (MPEG-TS ``seg_<seq>.ts`` with the source timestamps, or CMAF
``init_<sha>.mp4`` + ``seg_<seq>.m4s``), and stored as a finished replay in S3."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.utils import timezone

from streams import playback
from streams.models import SessionStatus, Stream, StreamSession
from tests.pipeline.media import Source, decode_segment, media_cache, source_file
from transcoding import hls, storage

FPS = 30
SOURCE = Source(
    "clips-12s-gop1", 640, 360, FPS, 1200, seconds=12.0,
    video_args=("-tune", "zerolatency", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"),
)  # fmt: skip
BASE_WALL = 1_800_000_000.0  # program date-time of frame 0
INIT = "init_0123456789ab.mp4"


@dataclass(frozen=True)
class Seg:
    path: Path
    wall: float
    duration: float
    first_frame: int
    frames: int


def _video_start(path: Path, init: Path | None = None) -> float:
    target = path
    if init is not None:
        target = path.with_suffix(".probe.mp4")
        target.write_bytes(init.read_bytes() + path.read_bytes())
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=start_time", "-of", "json",
         str(target)], capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    if init is not None:
        target.unlink()
    return float(json.loads(out)["streams"][0]["start_time"])


def segments(kind: str) -> tuple[list[Seg], Path | None]:
    """The source cut into 2 s segments (``kind``: "ts" or "cmaf"), cached; and the init section."""
    src = source_file(SOURCE)
    out = media_cache() / f"clips-{kind}-{src.stem}"
    if not out.exists():
        tmp = out.with_name(out.name + ".part")
        tmp.mkdir(parents=True, exist_ok=True)
        if kind == "ts":  # as the ingest's segmenter cuts (transcoding.ffmpeg.segmenter_args)
            args = ["-f", "segment", "-segment_time", "2", "-reset_timestamps", "0", "-segment_format", "mpegts",
                    str(tmp / "seg_%06d.ts")]  # fmt: skip
        else:
            args = ["-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT,
                    "-hls_segment_filename", str(tmp / "seg_%06d.m4s"), "-hls_playlist_type", "vod",
                    str(tmp / "index.m3u8")]  # fmt: skip
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-copyts", "-i", str(src), "-c", "copy", *args], check=True)
        tmp.rename(out)
    init = out / INIT if kind == "cmaf" else None
    files = sorted(out.glob("seg_*.ts" if kind == "ts" else "seg_*.m4s"))
    starts = [_video_start(f, init) for f in files]
    result = []
    for i, f in enumerate(files):
        first = round((starts[i] - starts[0]) * FPS)
        end = round((starts[i + 1] - starts[0]) * FPS) if i + 1 < len(files) else SOURCE.frames
        result.append(Seg(f, BASE_WALL + first / FPS, (end - first) / FPS, first, end - first))
    return result, init


def frame_numbers(path: Path) -> list[int]:
    return decode_segment(path, SOURCE).numbers


def expected_frames(start: float, end: float) -> list[int]:
    """Frame numbers whose program date-time lies in ``[start, end)``."""
    first = math.ceil(round((start - BASE_WALL) * FPS, 3))
    last = math.ceil(round((end - BASE_WALL) * FPS, 3)) - 1
    return list(range(first, last + 1))


def store_replay(stream: Stream, kind: str, *, drop: tuple[int, ...] = ()) -> tuple[StreamSession, list[Seg]]:
    """A finished, kept session of ``stream`` whose source rendition is these segments;
    ``drop``: the numbers of chunks the pipeline gave up (not listed, the next one starts a
    discontinuity, as the assembler publishes it)."""
    segs, init = segments(kind)
    started = datetime.fromtimestamp(BASE_WALL, UTC)
    session = StreamSession.objects.create(
        stream=stream, status=SessionStatus.ENDED, started_at=started, ended_at=started + timedelta(seconds=12),
        duration_s=12, is_replay=True,
    )  # fmt: skip
    prefix = f"{playback.session_prefix(stream.pk, session.pk)}/source"
    session.storage_prefix = prefix.rsplit("/", 1)[0]
    session.save(update_fields=["storage_prefix"])
    entries: list[hls.Entry] = []
    for i, seg in enumerate(segs):
        if i in drop:
            continue
        storage.put_segment(f"{prefix}/{seg.path.name}", seg.path.read_bytes())
        inits = {"source": INIT} if init else {}
        disc = i - 1 in drop
        entries.append(hls.Entry(len(entries), i, seg.duration, seg.wall, disc, {"source": 1}, inits=inits))
    if init is not None:
        storage.put_segment(f"{prefix}/{INIT}", init.read_bytes())
    text = hls.render_media(entries, 0, 0, target=3, kind="event", ended=True, rendition="source")
    storage.put_playlist(f"{prefix}/index.m3u8", text)
    assert timezone.is_aware(started)
    return session, segs
