"""The in-process chunk transcoder (PyAV) on real chunks cut like the segmenter cuts them."""

import io
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.test import override_settings

from tests.pipeline.media import SOURCES, decode_errors, largest_gap, packets, source_file
from transcoding import encoder, ffmpeg, mpegts
from transcoding.ladder import Rendition

RENDITIONS = [Rendition("source", 640, 480, 0, 0, copy=True), Rendition("360p", 480, 360, 800, 96)]


def _chunks(tmp_path: Path, *, audio: bool = True) -> list[bytes]:
    """Two 1 s GOP chunks of a 640x480 source with timestamps kept (the segmenter's cut)."""
    src = tmp_path / "src.flv"
    inputs = ["-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine", "-c:a", "aac"]
    subprocess.run(
        ["ffmpeg", "-v", "error", *inputs, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
         "-bf", "2", str(src)],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", "-f", "segment", "-segment_time", "1",
         "-reset_timestamps", "0", str(tmp_path / "c%03d.ts")],
        check=True, timeout=60,
    )  # fmt: skip
    return [p.read_bytes() for p in sorted(tmp_path.glob("c*.ts"))]


def _first_video_pts(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts", "-of", "csv=p=0",
         str(path)],
        capture_output=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    return min(int(v.strip(b",")) for v in out if v.strip(b","))


def _packet_list(path: Path) -> list[tuple[int, int, int]]:
    """(stream, size, pts) of every packet."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,size,pts", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    rows = [line.strip(",").split(",") for line in out.split()]
    return [(int(stream), int(size), int(pts)) for stream, pts, size, *_ in rows]


def _stream_info(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,profile,width,height", "-of", "csv=p=0",
         str(path)],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip


@override_settings(X264_PRESET="veryfast")
def test_x264_options_follow_the_rendition():
    options = encoder.x264_options(Rendition("360p", 640, 360, 800, 96), 30.0)
    assert options == {
        "preset": "veryfast",
        "profile": "high",
        "b": "800k",
        "maxrate": "880k",
        "bufsize": "1200k",
        "g": "300",
        "sc_threshold": "0",
    }


def test_chunks_transcode_into_one_continuous_stream_per_rendition(tmp_path):
    chunks = _chunks(tmp_path)
    joined: dict[str, bytes] = {}
    counters: dict[str, dict[int, int]] = {}
    for index, chunk in enumerate(chunks):
        outputs = encoder.transcode(io.BytesIO(chunk), RENDITIONS, 30.0, threads=1)
        assert sorted(outputs) == ["360p", "source"]
        (tmp_path / f"in{index}.ts").write_bytes(chunk)
        for name, data in outputs.items():
            (tmp_path / f"{name}{index}.ts").write_bytes(data)
            # Source timestamps are kept: each output starts where its chunk starts.
            assert _first_video_pts(tmp_path / f"{name}{index}.ts") == _first_video_pts(tmp_path / f"in{index}.ts")
            fixed, counters[name] = mpegts.continue_counters(data, counters.get(name, {}))
            joined[name] = joined.get(name, b"") + fixed
    for name, data in joined.items():
        path = tmp_path / f"{name}.ts"
        path.write_bytes(data)
        assert decode_errors(path) == ""
        series = packets(path)
        for kind in ("video", "audio"):
            gap, monotonic = largest_gap(series[kind])
            assert monotonic, (name, kind)
            assert gap < 1 / 30 + 0.001, (name, kind, gap)
        assert len(series["video"]) == 60
    assert _stream_info(tmp_path / "360p1.ts").startswith("h264,High,480,360")
    # The x264 settings reach the encoder (its SEI lists them).
    sei = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(tmp_path / "360p1.ts"), "-map", "0:v", "-c", "copy", "-f", "h264", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    for setting in (b"scenecut=0", b"bitrate=800", b"vbv_maxrate=880", b"vbv_bufsize=1200", b"keyint=300"):
        assert setting in sei


def test_a_chunk_read_while_it_is_written_gives_the_same_bytes(tmp_path):
    chunk = _chunks(tmp_path)[0]

    def blocks() -> Iterator[bytes]:
        for start in range(0, len(chunk), 7_000):
            yield chunk[start : start + 7_000]

    whole = encoder.transcode(io.BytesIO(chunk), RENDITIONS, 30.0, threads=1)
    fed = encoder.transcode(encoder.FeedReader(blocks()), RENDITIONS, 30.0, threads=1)
    assert sorted(fed) == sorted(whole)
    for name in whole:
        (tmp_path / "whole.ts").write_bytes(whole[name])
        (tmp_path / "fed.ts").write_bytes(fed[name])
        a, b = _packet_list(tmp_path / "whole.ts"), _packet_list(tmp_path / "fed.ts")
        assert len(a) == len(b) > 60
        # The same packets. A demuxer that cannot seek may round a timestamp differently by one
        # 90 kHz tick, and x264's rate control follows timestamps: sizes may differ slightly.
        assert all(x[0] == y[0] and abs(x[2] - y[2]) <= 1 for x, y in zip(a, b, strict=True))
        assert abs(sum(x[1] for x in a) - sum(y[1] for y in b)) <= 0.02 * sum(x[1] for x in a)


def test_a_source_without_audio(tmp_path):
    chunk = _chunks(tmp_path, audio=False)[0]
    outputs = encoder.transcode(io.BytesIO(chunk), RENDITIONS, 30.0, threads=2)
    path = tmp_path / "360p.ts"
    path.write_bytes(outputs["360p"])
    assert set(packets(path)) == {"video"}
    assert decode_errors(path) == ""


@pytest.mark.parametrize("junk", [b"", b"not a transport stream" * 500, bytes([0x47]) + bytes(187) * 3])
def test_garbage_is_a_transcode_error(junk):
    with pytest.raises(encoder.TranscodeError):
        encoder.transcode(io.BytesIO(junk), RENDITIONS, 30.0, threads=1)


def test_a_feed_that_fails_stops_the_transcode_with_its_error(tmp_path):
    chunk = _chunks(tmp_path)[0]

    class AbandonedError(Exception):
        pass

    def blocks() -> Iterator[bytes]:
        yield chunk[: len(chunk) // 3]
        raise AbandonedError("the ingest gave the chunk up")

    with pytest.raises(AbandonedError):
        encoder.transcode(encoder.FeedReader(blocks()), RENDITIONS, 30.0, threads=1)


def test_transcodes_in_parallel_threads_do_not_share_scalers(tmp_path):
    """Celery's thread pool (and the tests' in-process worker) runs transcodes side by side; a
    scaler shared between threads crashed the process."""
    chunks = _chunks(tmp_path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda chunk: encoder.transcode(io.BytesIO(chunk), RENDITIONS, 30.0, threads=1), chunks * 4)
        )
    for index, outputs in enumerate(results):
        path = tmp_path / f"parallel{index}.ts"
        path.write_bytes(outputs["360p"])
        assert len(packets(path)["video"]) == 30


@pytest.mark.parametrize("name", ["1080p30-8M-noisy", "720p60-6M-mono44k"])
def test_audio_parameters_come_from_the_source_not_from_the_chunk(name, tmp_path):
    """At 6-8 Mbit/s a chunk's first audio packet comes after the 150 kB the demuxer probes (the
    chunk may still be being written): its audio parameters are unknown and the muxers refused
    every chunk ("Invalid argument"). They come from the connection's probed source."""
    source = SOURCES[name]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source_file(source)), "-c", "copy", "-f", "segment", "-segment_time", "2",
         "-reset_timestamps", "0", "-segment_format", "mpegts", str(tmp_path / "c%03d.ts")],
        check=True, timeout=60,
    )  # fmt: skip
    chunks = [p.read_bytes() for p in sorted(tmp_path.glob("c*.ts"))][:2]
    probed = ffmpeg.probe(tmp_path / "c000.ts", context={})
    assert (probed.audio_sample_rate, probed.audio_channels) == (source.audio_rate, source.audio_channels)
    renditions = [
        Rendition("source", source.width, source.height, 0, 0, copy=True),
        Rendition("360p", 640, 360, 800, 96),
    ]
    if name == "1080p30-8M-noisy":  # its first audio packet is 300 kB into the chunk
        with pytest.raises(encoder.TranscodeError, match="Invalid argument"):
            encoder.transcode(io.BytesIO(chunks[1]), renditions, source.fps, threads=1)
    joined: dict[str, bytes] = {}
    counters: dict[str, dict[int, int]] = {}
    for chunk in chunks:
        outputs = encoder.transcode(io.BytesIO(chunk), renditions, source.fps, threads=1, media=probed)
        for rendition, data in outputs.items():
            fixed, counters[rendition] = mpegts.continue_counters(data, counters.get(rendition, {}))
            joined[rendition] = joined.get(rendition, b"") + fixed
    for rendition, data in joined.items():
        path = tmp_path / f"{rendition}.ts"
        path.write_bytes(data)
        assert decode_errors(path) == "", rendition
        audio = packets(path)["audio"]
        gap, monotonic = largest_gap(audio)
        assert monotonic
        assert gap < 0.001
        assert audio[-1][0] + audio[-1][1] - audio[0][0] == pytest.approx(4.0, abs=0.05)
