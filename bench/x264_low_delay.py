"""x264 for partial segments (ADR 0031): what lookahead and B-frames cost in delay, and what
turning them off costs in speed and bits.

The same 30 s 720p30 noisy source (keyframes every 2 s), cut into 2 s chunks like the segmenter
cuts them, goes through the worker's encoder one chunk after another in this process, one thread
(as a worker under full load runs), the whole ladder (source copy + 480p + 360p):
- standard: ``encoder.transcode`` (MPEG-TS, x264 ``X264_PRESET`` with its lookahead and B-frames);
- low delay: ``encoder.transcode_cmaf`` (CMAF cut into parts, no lookahead, no B-frames).
Printed: real-time factor of each and their ratio (the speed the low-latency mode keeps), the
bytes per rendition (same bitrate target: how rate control fares without lookahead), and the
encoder delay: frames fed to x264 before its first packet comes out (a part cannot be cut
before its frames are out).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings

SECONDS = 30


def _chunks(work: Path, seconds: int) -> list[bytes]:
    from transcoding.golive import PublishOptions, publish_args

    source = work / "source.flv"
    args = publish_args(PublishOptions(url=str(source), duration_s=seconds, noise=True, gop_s=2.0, video_kbps=3500))
    subprocess.run([a for a in args if a != "-re"], check=True, timeout=600)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-c", "copy", "-f", "segment", "-segment_time", "2",
         "-reset_timestamps", "0", str(work / "c%04d.ts")],
        check=True, timeout=300,
    )  # fmt: skip
    return [p.read_bytes() for p in sorted(work.glob("c*.ts"))]


def _ladder() -> list[Any]:
    from transcoding.ladder import SourceInfo, ladder_for

    return ladder_for(SourceInfo("h264", "High", 1280, 720, 30.0, 3_500_000, "aac", "LC", 2, "stereo", 48000, 128000))


def _run(chunks: list[bytes], *, low_delay: bool) -> tuple[float, dict[str, int]]:
    from transcoding import encoder

    sizes: dict[str, int] = {}
    start = time.monotonic()
    for chunk in chunks:
        if low_delay:
            out = encoder.transcode_cmaf(
                io.BytesIO(chunk), _ladder(), 30.0, threads=1, part_s=settings.LL_PART_SECONDS, sink=lambda _: None
            )
        else:
            out = encoder.transcode(io.BytesIO(chunk), _ladder(), 30.0, threads=1)
        for name, data in out.items():
            sizes[name] = sizes.get(name, 0) + len(data)
    return time.monotonic() - start, sizes


def _delay(options: dict[str, str]) -> int:
    """Frames x264 takes in before its first packet comes out, with ``options``."""
    from fractions import Fraction

    import av

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 854, 480, "yuv420p"
    codec.time_base = Fraction(1, 90000)
    codec.framerate = Fraction(30)
    codec.bit_rate = 1_400_000
    codec.thread_count = 1
    codec.options = options
    frame = av.VideoFrame(854, 480, "yuv420p")
    for n in range(200):
        frame.pts = n * 3000
        if codec.encode(frame):
            return n
    return 200


def run(args: Any) -> list[str]:
    from transcoding import encoder

    seconds = 10 if getattr(args, "quick", False) else SECONDS
    rung = next(r for r in _ladder() if not r.copy)
    with tempfile.TemporaryDirectory(prefix="x264-") as tmp:
        chunks = _chunks(Path(tmp), seconds)
        standard, standard_sizes = _run(chunks, low_delay=False)
        low, low_sizes = _run(chunks, low_delay=True)
    held = _delay(encoder.x264_options(rung, 30.0))
    part_s = settings.LL_PART_SECONDS
    held_low = _delay(encoder.low_delay_options(rung, 30.0))
    lines = [
        f"x264 standard (TS, preset lookahead + B-frames): {seconds / standard:.2f}x real time "
        f"(ladder {', '.join(_ladder_names())}, 1 thread, {len(chunks)} chunks of 2 s)",
        f"x264 low delay (CMAF parts, no lookahead, no B-frames): {seconds / low:.2f}x real time",
        f"x264 low delay vs standard speed: {standard / low:.2f}x (1.00 = as fast; the low-latency mode keeps "
        "the speed if >= 0.95)",
    ]
    for name in standard_sizes:
        a, b = standard_sizes[name], low_sizes.get(name, 0)
        lines.append(
            f"  {name}: {a * 8 / seconds / 1000:.0f} kbit/s standard vs {b * 8 / seconds / 1000:.0f} kbit/s low delay"
        )
    lines.append(
        f"x264 encoder delay: {held} frames before the first packet ({held / 30:.2f} s at 30 fps) with the preset; "
        f"{held_low} with low delay (a part of {part_s} s = {round(part_s * 30)} frames)"
    )
    return lines


def _ladder_names() -> list[str]:
    return [r.name for r in _ladder()]
