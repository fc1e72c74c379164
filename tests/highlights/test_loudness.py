"""EBU R128 momentary loudness (transcoding/loudness.py) against ffmpeg's ``ebur128`` filter on
the same audio, and measured from a chunk's packets as the transcode sees them."""

import io
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from transcoding import encoder, ffmpeg, loudness
from transcoding.ladder import Rendition


def _ffmpeg(*args: str) -> str:
    done = subprocess.run(
        [ffmpeg.FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, check=True, timeout=60
    )
    return done.stderr.decode(errors="replace")


def ebur128_momentary(path: Path, tmp: Path) -> list[float]:
    """ffmpeg's momentary loudness every 100 ms (value k: the 400 ms window ending at (k+1)/10 s)."""
    out = tmp / "m.txt"
    graph = f"ebur128=metadata=1,ametadata=print:key=lavfi.r128.M:file={out}"
    _ffmpeg("-i", str(path), "-map", "0:a:0", "-af", graph, "-f", "null", "-")
    return [float(line.split("=", 1)[1]) for line in out.read_text().splitlines() if "lavfi.r128.M=" in line]


def passage(path: Path, *, rate: int, layout: str, codec: list[str], fmt: str) -> None:
    """6 s: a sine and pink noise, 20 dB down for 2 s, normal for 2 s, 6 dB up for 2 s."""
    _ffmpeg(
        "-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration=6",
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.05:duration=6:sample_rate={rate}",
        "-filter_complex",
        f"[0:a][1:a]amix=inputs=2,volume=0.1:enable='lt(t,2)',volume=2:enable='gte(t,4)',aformat=channel_layouts={layout}",
        *codec, "-f", fmt, str(path),
    )  # fmt: skip


def decoded(path: Path) -> tuple[np.ndarray, int, list[float]]:
    """The file's audio, planar float (PyAV decodes and converts; the measurement is ours)."""
    planes, rate, weights = [], 0, [1.0]
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        for frame in container.decode(stream):
            rate, weights = frame.sample_rate, loudness.channel_weights(frame.layout)
            planes += [f.to_ndarray() for f in resampler.resample(frame)]
    return np.concatenate(planes, axis=1), rate, weights


@pytest.mark.parametrize(
    ("rate", "layout"), [(48000, "stereo"), (44100, "mono"), (48000, "5.1")], ids=["48k-stereo", "44k-mono", "48k-5.1"]
)
def test_momentary_matches_ffmpeg_ebur128(tmp_path: Path, rate: int, layout: str):
    wav = tmp_path / "a.wav"
    passage(wav, rate=rate, layout=layout, codec=["-c:a", "pcm_f32le"], fmt="wav")
    samples, got_rate, weights = decoded(wav)
    assert got_rate == rate
    measured = loudness.measure(samples, rate, weights)
    reference = ebur128_momentary(wav, tmp_path)
    assert measured is not None
    assert measured.seconds == pytest.approx(6.0, abs=0.01)
    # Every window: ours ends at 0.4 + 0.1 i s, ffmpeg's k-th at (k + 1) / 10 s.
    pairs = [(ours, reference[i + 3]) for i, ours in enumerate(measured.momentary) if i + 3 < len(reference)]
    assert len(pairs) >= 55
    worst = max(abs(a - b) for a, b in pairs)
    assert worst < 0.5, worst
    assert measured.momentary_max == pytest.approx(max(reference), abs=0.2)
    # The three levels are 20 dB and 6 dB apart: the measurement sees them.
    quiet, normal, loud = measured.momentary[10], measured.momentary[25], measured.momentary[45]
    assert normal - quiet == pytest.approx(20.0, abs=0.5)
    assert loud - normal == pytest.approx(6.0, abs=0.5)


def test_aac_chunk_through_the_transcode_tap(tmp_path: Path):
    """The transcode's tap gets the chunk's AAC packets; their loudness is ffmpeg's on the same TS."""
    chunk = tmp_path / "chunk.ts"
    _ffmpeg(
        "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=15:duration=6",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=6",
        "-filter_complex",
        "[1:a]volume=-30dB:enable='lt(t,3)',volume=-6dB:enable='gte(t,3)',aformat=channel_layouts=stereo[a]",
        "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
        "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", str(chunk),
    )  # fmt: skip
    tap = loudness.AudioTap()
    outputs = encoder.transcode(
        io.BytesIO(chunk.read_bytes()), [Rendition("source", 160, 90, 0, 96, copy=True)], 15, threads=1, tap=tap
    )
    assert outputs["source"]
    assert tap.codec == "aac"
    assert len(tap.packets) > 250  # 6 s of 1024-sample frames at 48 kHz: ~281
    measured = tap.measure()
    assert measured is not None
    reference = ebur128_momentary(chunk, tmp_path)
    assert measured.momentary_max == pytest.approx(max(reference), abs=1.0)
    # The quiet part is 24 LU lower.
    assert measured.momentary[5] == pytest.approx(measured.momentary_max - 24, abs=1.0)


def test_silence_and_nothing():
    silent = loudness.measure(np.zeros((2, 48000)), 48000)
    assert silent is not None
    assert silent.momentary_max == silent.mean == loudness.FLOOR_LUFS
    assert loudness.measure(np.zeros((2, 0)), 48000) is None
    short = loudness.measure(np.full((1, 4800), 0.5), 48000)  # 100 ms: shorter than a window
    assert short is not None
    assert short.momentary == []
    assert short.momentary_max == short.mean
    assert loudness.AudioTap().measure() is None
    broken = loudness.AudioTap()
    broken.add("aac", b"\x00" * 64)
    assert broken.measure() is None
