"""ffmpeg/ffprobe argument builders and runners. Argument lists only, never shell strings.
(Chunks are transcoded in-process: ``transcoding.encoder``.)

- ``segmenter_args``: the ingest side; stream copy of the publish (FLV on stdin) into MPEG-TS
  chunks cut at IDR frames, timestamps preserved, and a CSV list of finished chunks.
- ``probe``: ffprobe of a chunk into a ``SourceInfo`` (``probe_json``: ffprobe's whole answer).
"""

from __future__ import annotations

import json
import logging
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

from transcoding.ladder import SourceInfo

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


class FFmpegError(RuntimeError):
    """ffmpeg/ffprobe failed; ``stderr`` holds the tail of its log."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def segmenter_args(out_dir: Path, chunk_seconds: float, *, audio_kbps: int | None = None) -> list[str]:
    """Cut the FLV read on stdin into ``out_dir/chunk_NNNNNN.ts`` at keyframes (stream copy).

    The FLV is the publish's recording as the segmenter feeds it (``transcoding.segmenter``):
    its keyframe flags are set on IDR access units only, and ``-fflags +noparse`` makes FFmpeg
    keep them (its H.264 parser would also flag I-frames that carry a recovery point, which do
    not start a decodable segment). ``-copyts``: chunk times are the recording's, so a restarted
    segmenter continues them. ``out_dir/chunks.csv`` gets one line ``file,start,end`` per
    finished chunk (the segmenter tails it); ffmpeg ends when the segmenter closes stdin.
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
        "-analyzeduration",
        "1000000",
        "-fflags",
        "+genpts+noparse",
        "-f",
        "flv",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        *codecs,
        "-copyts",
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


def probe_json(path: Path, *, context: dict[str, Any]) -> dict[str, Any]:
    """ffprobe's streams and format of ``path``. Raises ``FFmpegError``."""
    data = json.loads(run(probe_args(path), timeout=20, context=context))
    return data if isinstance(data, dict) else {}


def probe(path: Path, *, context: dict[str, Any]) -> SourceInfo:
    return parse_probe(probe_json(path, context=context))
