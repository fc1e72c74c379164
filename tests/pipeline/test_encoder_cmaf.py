"""The low-latency transcoder (ADR 0031): chunks cut like the segmenter cuts them, encoded into
CMAF and cut into partial segments while they encode; checked by decoding with FFmpeg against
the input (every frame, timestamps kept), not only against the output itself."""

import subprocess
from pathlib import Path

import pytest

from tests.pipeline.media import decode_errors, largest_gap, packets
from transcoding import encoder, fmp4
from transcoding.ladder import Rendition, SourceInfo

RENDITIONS = [Rendition("source", 640, 480, 0, 0, copy=True), Rendition("360p", 480, 360, 800, 96)]
PART_S = 0.25
SOURCE = SourceInfo("h264", "High", 640, 480, 30.0, 0, "aac", "LC", 1, "mono", 44100, 128000)  # as probed


def _chunks(tmp_path: Path) -> list[bytes]:
    """Two 2 s GOP chunks (a publisher's usual keyframe interval) of a 640x480 source, with
    B-frames, timestamps kept and starting 10 s in (the segmenter's cut of a running stream)."""
    src = tmp_path / "src.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30", "-f", "lavfi", "-i",
         "sine=sample_rate=44100", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-bf", "2",
         "-c:a", "aac", "-output_ts_offset", "10", str(src)],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-copyts", "-i", str(src), "-c", "copy", "-f", "segment", "-segment_time", "2",
         "-reset_timestamps", "0", str(tmp_path / "c%03d.ts")],
        check=True, timeout=60,
    )  # fmt: skip
    return [p.read_bytes() for p in sorted(tmp_path.glob("c*.ts"))]


def _transcode(chunk: bytes) -> tuple[dict[str, bytes], list[encoder.PartOut]]:
    parts: list[encoder.PartOut] = []
    reader = encoder.FeedReader(iter([chunk[i : i + 4096] for i in range(0, len(chunk), 4096)]))
    segments = encoder.transcode_cmaf(reader, RENDITIONS, 30, threads=1, part_s=PART_S, sink=parts.append, media=SOURCE)
    return segments, parts


def _frames(path: Path) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts_time", "-of", "csv=p=0",
         str(path)],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    return [float(v.strip(",")) for v in out.split()]


def test_each_rendition_is_cut_into_parts_that_make_up_its_segment(tmp_path: Path):
    chunk = _chunks(tmp_path)[0]
    segments, parts = _transcode(chunk)
    for rendition in RENDITIONS:
        mine = [p for p in parts if p.rendition == rendition.name]
        # 2 s of video in parts of at most PART-TARGET, all but the last at least 85% of it.
        assert [p.index for p in mine] == list(range(len(mine)))
        assert 8 <= len(mine) <= 9, [p.duration for p in mine]
        assert all(p.duration <= PART_S for p in mine), [p.duration for p in mine]
        assert all(p.duration >= 0.85 * PART_S for p in mine[:-1]), [p.duration for p in mine]
        assert sum(p.duration for p in mine) == pytest.approx(2.0, abs=0.04)
        # Only the first part starts with the chunk's IDR.
        assert [p.independent for p in mine] == [True] + [False] * (len(mine) - 1)
        # The segment is its parts, byte for byte; one init section for all of them.
        assert b"".join(p.data for p in mine) == segments[rendition.name]
        assert len({p.init for p in mine}) == 1
        assert mine[0].codec.startswith("avc1.")


def test_chunks_encoded_apart_join_into_one_stream_with_the_source_timestamps(tmp_path: Path):
    chunks = _chunks(tmp_path)
    assert len(chunks) == 2
    results = [_transcode(c) for c in chunks]
    source_frames = _frames(tmp_path / "c000.ts") + _frames(tmp_path / "c001.ts")
    assert len(source_frames) == 120
    for rendition in RENDITIONS:
        inits = {p.init for _, parts in results for p in parts if p.rendition == rendition.name}
        assert len(inits) == 1  # the same configuration: the same init bytes from both workers
        assert fmp4.init_name(inits.pop()).startswith("init_")
        init = next(p.init for p in results[0][1] if p.rendition == rendition.name)
        joined = tmp_path / f"{rendition.name}.mp4"
        joined.write_bytes(init + b"".join(segments[rendition.name] for segments, _ in results))
        assert decode_errors(joined) == "", rendition.name
        # Every source frame, at its source time (10 s in: absolute decode times), in order.
        frames = _frames(joined)
        assert frames == pytest.approx(sorted(source_frames), abs=0.002), rendition.name
        series = packets(joined)
        assert set(series) == {"video", "audio"}
        for kind in ("video", "audio"):
            gap, monotonic = largest_gap(series[kind])
            assert monotonic, (rendition.name, kind)
            assert gap <= 1 / 30 + 0.002, (rendition.name, kind, gap)
        # Each part decodes after the init (a player may start at any independent part).
        first = next(p for p in results[1][1] if p.rendition == rendition.name and p.independent)
        alone = tmp_path / f"{rendition.name}-part.mp4"
        alone.write_bytes(init + first.data)
        assert decode_errors(alone) == "", rendition.name
        assert len(_frames(alone)) == round(first.duration * 30)
