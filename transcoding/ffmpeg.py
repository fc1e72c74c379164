"""ffmpeg/ffprobe argument builders and runners. Argument lists only, never shell strings.

- ``segmenter_args``: the ingest side; stream copy of the RTMP input into GOP-aligned MPEG-TS
  chunks with timestamps preserved and a CSV list of finished chunks.
- ``transcode_args``: one chunk, decoded once (``split`` filter), every rendition encoded
  (x264) or remuxed (``source``); audio copied; ``-copyts -muxdelay 0 -muxpreload 0`` so the
  outputs of independent chunks join without gaps or drift.
- ``probe``: ffprobe of a chunk into a ``SourceInfo``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from django.conf import settings

from transcoding.ladder import Rendition, SourceInfo

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


class FFmpegError(RuntimeError):
    """ffmpeg/ffprobe failed; ``stderr`` holds the tail of its log."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def segmenter_args(
    input_url: str, out_dir: Path, chunk_seconds: float, rw_timeout_s: float, *, audio_kbps: int | None = None
) -> list[str]:
    """Cut ``input_url`` into ``out_dir/chunk_NNNNNN.ts`` on keyframes (stream copy).

    ``out_dir/chunks.csv`` gets one line ``file,start,end`` per finished chunk (the ingest
    supervisor tails it). ``-rw_timeout`` makes ffmpeg exit once the publisher is gone.
    ``audio_kbps``: encode the audio to AAC here, once for the whole stream (a source whose audio
    is not AAC); chunk tasks always copy audio, since re-encoding AAC per chunk breaks its
    timestamps at every boundary (FIELD-NOTES).
    """
    codecs = ["-c", "copy"] if audio_kbps is None else ["-c:v", "copy", "-c:a", "aac", "-b:a", f"{audio_kbps}k"]
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-rw_timeout",
        str(int(rw_timeout_s * 1_000_000)),
        "-analyzeduration",
        "1000000",
        "-fflags",
        "+genpts",
        "-i",
        input_url,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        *codecs,
        "-f",
        "segment",
        "-segment_time",
        f"{chunk_seconds:g}",
        "-reset_timestamps",
        "0",
        "-segment_format",
        "mpegts",
        "-segment_list",
        str(out_dir / "chunks.csv"),
        "-segment_list_type",
        "csv",
        str(out_dir / "chunk_%06d.ts"),
    ]


def _x264_args(rendition: Rendition, fps: float, threads: int) -> list[str]:
    kbps = rendition.video_kbps
    return [
        "-c:v",
        "libx264",
        "-preset",
        settings.X264_PRESET,
        "-profile:v",
        "high",
        "-threads",
        str(threads),
        "-b:v",
        f"{kbps}k",
        "-maxrate",
        f"{int(kbps * 1.1)}k",
        "-bufsize",
        f"{int(kbps * 1.5)}k",
        # The chunk is one GOP: the encoder starts it with an IDR; no extra scene-cut keyframes.
        "-g",
        str(max(1, round(fps * 10))),
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
    ]


# Reading a chunk from a pipe while it is being written: probe only what is needed to know the
# streams (~0.5 s of media), so that encoding follows the data instead of waiting for the end.
STREAMING_INPUT = ["-probesize", "150000", "-analyzeduration", "500000", "-f", "mpegts"]


def transcode_args(
    input_path: Path | None,
    renditions: Sequence[Rendition],
    out_dir: Path,
    fps: float,
    *,
    has_audio: bool,
    threads: int = 1,
) -> list[str]:
    """One ffmpeg for a chunk: decode once, split, encode every encoded rendition; remux ``copy``
    renditions. Outputs ``out_dir/<rendition>.ts``. ``threads``: for the decoder, the filters
    and each encoder (``transcoding.cores`` decides). ``input_path`` None: the chunk arrives on
    stdin while the segmenter is still writing it (progressive transcoding, ``run_fed``)."""
    encoded = [r for r in renditions if not r.copy]
    source = ["-i", str(input_path)] if input_path is not None else [*STREAMING_INPUT, "-i", "pipe:0"]
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", "-threads", str(threads), *source]
    if encoded:
        labels = "".join(f"[s{i}]" for i in range(len(encoded)))
        graph = [f"[0:v:0]split={len(encoded)}{labels}"]
        graph += [f"[s{i}]scale={r.width}:{r.height}:flags=bicubic[v{i}]" for i, r in enumerate(encoded)]
        args += ["-filter_threads", str(threads), "-filter_complex", ";".join(graph)]
    index = 0
    for rendition in renditions:
        if rendition.copy:
            args += ["-map", "0:v:0", "-c:v", "copy"]
        else:
            args += ["-map", f"[v{index}]", *_x264_args(rendition, fps, threads)]
            index += 1
        if has_audio:
            args += ["-map", "0:a:0", "-c:a", "copy"]
        args += ["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", str(out_dir / f"{rendition.name}.ts")]
    return args


def run(args: list[str], *, timeout: float, context: dict[str, Any]) -> str:
    """Run ffmpeg/ffprobe; return stdout. Raises ``FFmpegError`` (stderr logged) on failure."""
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")[-2000:]
        logger.error("%s timed out after %ss", args[0], timeout, extra={"ctx": {**context, "stderr": stderr}})
        raise FFmpegError(f"{args[0]} timed out", stderr) from exc
    stderr = done.stderr.decode("utf-8", "replace")[-2000:]
    if done.returncode != 0:
        logger.error(
            "%s failed with exit code %s", args[0], done.returncode, extra={"ctx": {**context, "stderr": stderr}}
        )
        raise FFmpegError(f"{args[0]} exited {done.returncode}", stderr)
    if stderr.strip():
        logger.info("%s said: %s", args[0], stderr.strip()[-500:], extra={"ctx": context})
    return done.stdout.decode("utf-8", "replace")


def run_fed(args: list[str], feed: Iterator[bytes], *, timeout: float, context: dict[str, Any]) -> None:
    """Run ffmpeg with ``feed``'s bytes on its stdin as they come (progressive transcoding).
    Raises ``FFmpegError`` (stderr logged) on failure, on timeout, or when ``feed`` raises it."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stdin, err = proc.stdin, proc.stderr
    if stdin is None or err is None:  # pragma: no cover - Popen with PIPE always sets them
        raise FFmpegError("no pipes to ffmpeg")
    stderr_parts: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_parts.append(err.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    failure: str | None = None
    try:
        for data in feed:
            if time.monotonic() > deadline:
                failure = f"{args[0]} timed out"
                break
            if data:
                stdin.write(data)
    except BrokenPipeError:
        pass  # ffmpeg gave up reading: its exit code and stderr say why
    except FFmpegError as exc:
        failure = str(exc)
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
    if failure is not None:
        proc.kill()
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        failure = failure or f"{args[0]} timed out"
    reader.join(timeout=5)
    stderr = b"".join(stderr_parts).decode("utf-8", "replace")[-2000:]
    if failure is None and proc.returncode != 0:
        failure = f"{args[0]} exited {proc.returncode}"
    if failure is not None:
        logger.error("%s", failure, extra={"ctx": {**context, "stderr": stderr}})
        raise FFmpegError(failure, stderr)
    if stderr.strip():
        logger.info("%s said: %s", args[0], stderr.strip()[-500:], extra={"ctx": context})


def probe_args(path: Path) -> list[str]:
    return [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]


def _rate(value: str | None) -> float:
    try:
        rate = Fraction(value or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate)


def parse_probe(data: dict[str, Any]) -> SourceInfo:
    """``SourceInfo`` from ffprobe's JSON; ValueError when there is no video stream."""
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise ValueError("no video stream in the source")
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    # RTMP has whole-millisecond timestamps: snap 29.97-ish noise to the nominal rate.
    nominal = _rate(video.get("r_frame_rate"))
    if nominal and abs(nominal - fps) < 0.5:
        fps = nominal
    audio = audio or {}
    return SourceInfo(
        video_codec=str(video.get("codec_name", "")),
        video_profile=str(video.get("profile", "")),
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        fps=round(fps, 3),
        video_bitrate=int(video.get("bit_rate") or 0),
        audio_codec=str(audio.get("codec_name", "")),
        audio_profile=str(audio.get("profile", "")),
        audio_channels=int(audio.get("channels") or 0),
        audio_layout=str(audio.get("channel_layout", "")),
        audio_sample_rate=int(audio.get("sample_rate") or 0),
        audio_bitrate=int(audio.get("bit_rate") or 0),
    )


def probe(path: Path, *, context: dict[str, Any]) -> SourceInfo:
    out = run(probe_args(path), timeout=20, context=context)
    return parse_probe(json.loads(out))
