"""What the ingest doctor and clips cost, against the work beside them measured in the same run.

One 30 s 720p30 source (3.5 Mbit/s, noisy, keyframes every 2 s, AAC), cut into 2 s chunks as the
segmenter cuts them:
- ingest doctor (ADR 0034): ``doctor.analyse_chunk`` (packet timing, audio decode + loudness)
  and the window's ``diagnose``, per chunk; baseline: the worker's transcode of the same chunk
  (``encoder.transcode``, whole ladder, one thread). Printed: ms per chunk, the doctor's cost as
  a share of the transcode's and of one core in real time;
- clips (ADR 0036): a clip of every segment (30 s) cut by ``clips.cutter.cut`` with stream copy,
  and trimmed (edges encoded again); baseline: ffmpeg's plain remux of the same segments into
  one MP4 (``-c copy``). Printed: seconds and the ratios (1.0 = as cheap as a remux).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

SECONDS = 30


def _chunks(work: Path, seconds: int) -> list[tuple[Path, float, float]]:
    from transcoding import ffmpeg
    from transcoding.golive import PublishOptions, publish_args

    source = work / "source.flv"
    args = publish_args(PublishOptions(url=str(source), duration_s=seconds, noise=True, gop_s=2.0, video_kbps=3500))
    subprocess.run([a for a in args if a != "-re"], check=True, timeout=600)
    out = work / "chunks"
    out.mkdir()
    with source.open("rb") as stdin:
        subprocess.run(ffmpeg.segmenter_args(out, 2.0), stdin=stdin, check=True, timeout=300)
    chunks = []
    for line in (out / "chunks.csv").read_text().split():
        name, start, end = line.rsplit(",", 2)
        chunks.append((out / name, float(start), float(end)))
    return chunks


def _doctor(chunks: list[tuple[Path, float, float]]) -> float:
    from transcoding import doctor

    window = doctor.Window(20.0)
    ctx = doctor.Context(2.0, 1080, "AAC")
    start = time.process_time()
    for path, begin, end in chunks:
        window.add(doctor.analyse_chunk(path, start=begin, end=end))
        doctor.diagnose(window, ctx)
    return time.process_time() - start


def _transcode(chunks: list[tuple[Path, float, float]]) -> float:
    from transcoding import encoder
    from transcoding.ladder import SourceInfo, ladder_for

    ladder = ladder_for(SourceInfo("h264", "High", 1280, 720, 30.0, 3_500_000, "aac", "LC", 2, "stereo", 48000, 128000))
    start = time.monotonic()
    for path, _, _ in chunks:
        encoder.transcode(io.BytesIO(path.read_bytes()), ladder, 30.0, threads=1)
    return time.monotonic() - start


def _clips(chunks: list[tuple[Path, float, float]], work: Path) -> tuple[float, float, float]:
    from clips import cutter

    segments = [cutter.Segment(path, 1_800_000_000.0 + begin, end - begin) for path, begin, end in chunks]
    first, last = segments[0], segments[-1]
    timings = []
    for trim in (False, True):
        workdir = work / f"cut-{trim}"
        workdir.mkdir()
        start = first.wall + 0.5 if trim else None
        end = last.wall + last.duration - 0.5 if trim else None
        started = time.monotonic()
        cutter.cut(segments, workdir, start=start, end=end)
        timings.append(time.monotonic() - started)
    joined = work / "joined.ts"
    with joined.open("wb") as dst:
        for path, _, _ in chunks:
            dst.write(path.read_bytes())
    started = time.monotonic()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(joined), "-c", "copy", "-movflags", "+faststart",
                    str(work / "remux.mp4")], check=True, timeout=300)  # fmt: skip
    remux = time.monotonic() - started
    return timings[0], timings[1], remux


def run(args: Any) -> list[str]:
    seconds = 12 if getattr(args, "quick", False) else SECONDS
    with tempfile.TemporaryDirectory(prefix="streamer-tools-") as tmp:
        work = Path(tmp)
        chunks = _chunks(work, seconds)
        doctor_s = _doctor(chunks)
        transcode_s = _transcode(chunks)
        copy_s, trim_s, remux_s = _clips(chunks, work)
    n = len(chunks)
    per_doctor, per_transcode = doctor_s / n * 1000, transcode_s / n * 1000
    return [
        f"ingest doctor: {per_doctor:.1f} ms CPU per 2 s chunk (720p30, 3.5 Mbit/s, {n} chunks) = "
        f"{per_doctor / 2000:.2%} of one core in real time",
        f"  baseline, the worker's transcode of the same chunk (whole ladder, 1 thread): {per_transcode:.0f} ms; "
        f"doctor/transcode = {per_doctor / per_transcode:.3f}",
        f"clip of {seconds} s, stream copy: {copy_s:.2f} s; trimmed (edges encoded): {trim_s:.2f} s",
        f"  baseline, ffmpeg remux of the same segments to MP4: {remux_s:.2f} s; "
        f"copy/remux = {copy_s / remux_s:.2f}x, trimmed/remux = {trim_s / remux_s:.2f}x",
    ]
