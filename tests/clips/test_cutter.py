"""The cutter on real media (no database, no S3): MPEG-TS and CMAF segments of a publisher's
file whose frames carry their numbers. A stream-copy clip holds exactly the frames of the
segments of the range; a trimmed one exactly the frames of the requested instants; both decode
without an error and their timestamps run on (no hole, no overlap)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clips import cutter
from tests.clips.media import BASE_WALL, FPS, expected_frames, frame_numbers, segments
from tests.pipeline.media import largest_gap, packets

FRAME = 1 / FPS


def decode_errors(path: Path) -> str:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True, check=False
    )
    return done.stderr.strip()


def local(kind: str) -> list[cutter.Segment]:
    segs, init = segments(kind)
    return [cutter.Segment(s.path, s.wall, s.duration, init=init) for s in segs]


def assert_continuous(path: Path) -> None:
    series = packets(path)
    gap, monotonic = largest_gap(series["video"])
    assert monotonic, "video timestamps go back"
    assert gap <= FRAME * 0.5, f"hole of {gap:.3f} s in the video"
    if series.get("audio"):
        gap, monotonic = largest_gap(series["audio"])
        assert monotonic
        assert gap <= 0.03, f"hole of {gap:.3f} s in the audio"


@pytest.mark.parametrize("kind", ["ts", "cmaf"])
def test_stream_copy_holds_the_segments_of_the_range(kind: str, tmp_path: Path) -> None:
    segs, _ = segments(kind)
    chosen = local(kind)[1:4]
    cut = cutter.cut(chosen, tmp_path)
    assert decode_errors(cut.path) == ""
    numbers = frame_numbers(cut.path)
    first, last = segs[1], segs[3]
    assert numbers == list(range(first.first_frame, last.first_frame + last.frames))
    assert cut.frames == len(numbers)
    assert cut.start == pytest.approx(first.wall)
    assert cut.duration == pytest.approx(sum(s.duration for s in segs[1:4]), abs=FRAME)
    assert_continuous(cut.path)
    data = cut.path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "not faststart"


@pytest.mark.parametrize("kind", ["ts", "cmaf"])
def test_trim_is_exact_to_the_frame(kind: str, tmp_path: Path) -> None:
    start, end = BASE_WALL + 2.5, BASE_WALL + 9.2  # inside segments 1 and 4
    chosen = [s for s in local(kind) if s.wall < end and s.wall + s.duration > start]
    cut = cutter.cut(chosen, tmp_path, start=start, end=end)
    assert decode_errors(cut.path) == ""
    numbers = frame_numbers(cut.path)
    assert numbers == expected_frames(start, end)  # 75 .. 275: the first and the last exactly
    assert cut.start == pytest.approx(start, abs=FRAME / 2)
    assert cut.duration == pytest.approx(end - start, abs=FRAME)
    assert_continuous(cut.path)


def test_trim_within_one_segment(tmp_path: Path) -> None:
    start, end = BASE_WALL + 4.3, BASE_WALL + 5.1
    chosen = [s for s in local("ts") if s.wall < end and s.wall + s.duration > start]
    assert len(chosen) == 1
    cut = cutter.cut(chosen, tmp_path, start=start, end=end)
    assert decode_errors(cut.path) == ""
    assert frame_numbers(cut.path) == expected_frames(start, end)


def test_no_segments_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(cutter.CutError):
        cutter.cut([], tmp_path)
