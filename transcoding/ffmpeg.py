"""The one module that runs the ffmpeg and ffprobe programs for the application: argument
builders and runners. Argument lists only, never shell strings. (Chunks are transcoded
in-process with FFmpeg's libraries, not by this module: ``transcoding.encoder``.)

Runners:

- ``run`` / ``run_bytes``: a short job with a timeout; stdout returned, ``FFmpegError`` with the
  tail of stderr (logged) when it fails or times out.
- ``spawn`` / ``stop``: a long-running ffmpeg fed on stdin (the segmenter's), which gets SIGTERM
  from the kernel when the thread that started it dies (parent-death signal).
- ``call``: an interactive ffmpeg on the caller's terminal until it ends (``manage.py golive``).

Argument builders:

- ``srt_relay_args``: an SRT publish (MPEG-TS on stdin) relayed into nginx-rtmp as RTMP,
  stream copy (``transcoding.srt_ingest``).
- ``segmenter_args``: the ingest side; stream copy of the publish (FLV on stdin) into MPEG-TS
  chunks cut at IDR frames, timestamps preserved, and a CSV list of finished chunks.
- ``jpeg_frame_args``: the first video frame of an MPEG-TS stream on stdin as a JPEG (thumbnails).
- ``raw_strip_args``: a strip of the first video frame of a file or URL as raw grey pixels (the
  burnt-in clock of ``transcoding.golive``).
- ``probe``: ffprobe of a chunk into a ``SourceInfo`` (``probe_json``: ffprobe's whole answer).
- ``relay_args`` / ``spawn_relay``: a restream relay (simulcast): the live stream played from
  this node's nginx-rtmp, stream copied to a remote RTMP(S) server, progress on stdout.
"""

from __future__ import annotations

import json
import logging
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

from livestream.devstack import dies_with_caller
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
    timestamps at every boundary (docs/pipeline.md, "Audio that is not AAC").
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


def srt_relay_args(rtmp_url: str) -> list[str]:
    """Relay the MPEG-TS of an SRT publish, read on stdin, to ``rtmp_url`` (nginx-rtmp, with
    the stream key as the stream name) as FLV: stream copy of the first video and audio stream
    (FFmpeg adds the ADTS-to-ASC filter AAC needs in FLV). A short probe so the publish starts
    as soon as the first keyframe and audio frame are in. ``+discardcorrupt``: a PES cut short
    (an SRT publisher closing drops what it has not sent yet) is dropped, not relayed as a
    broken audio frame. Ends when stdin closes (the SRT publisher left) or when nginx-rtmp
    refuses or drops the publish."""
    return [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-probesize", "2000000", "-analyzeduration", "2000000", "-fflags", "+genpts+discardcorrupt",
        "-f", "mpegts", "-i", "pipe:0",
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy",
        "-f", "flv", "-flvflags", "no_duration_filesize", rtmp_url,
    ]  # fmt: skip


STDERR_TAIL = 2000  # characters of ffmpeg's log kept in FFmpegError and the error log


def run_bytes(
    args: list[str],
    *,
    timeout: float,
    context: dict[str, Any],
    input: bytes | None = None,  # noqa: A002 - subprocess's name
    failure_level: int | None = logging.ERROR,
) -> bytes:
    """Run ffmpeg/ffprobe to the end (``input`` on its stdin); return its stdout.

    Raises ``FFmpegError`` holding the tail of stderr when it exits non-zero or runs longer than
    ``timeout`` seconds (it is killed then); the failure is logged at ``failure_level`` (None:
    not logged, the caller decides). A successful run's stderr, if any, is logged at INFO."""
    try:
        done = subprocess.run(args, input=input, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")[-STDERR_TAIL:]
        if failure_level is not None:
            logger.log(
                failure_level,
                "%s timed out after %ss",
                args[0],
                timeout,
                extra={"ctx": {**context, "stderr": stderr}},
            )
        raise FFmpegError(f"{args[0]} timed out", stderr) from exc
    stderr = done.stderr.decode("utf-8", "replace")[-STDERR_TAIL:]
    if done.returncode != 0:
        if failure_level is not None:
            logger.log(
                failure_level,
                "%s failed with exit code %s",
                args[0],
                done.returncode,
                extra={"ctx": {**context, "stderr": stderr}},
            )
        raise FFmpegError(f"{args[0]} exited {done.returncode}", stderr)
    if stderr.strip():
        logger.info("%s said: %s", args[0], stderr.strip()[-500:], extra={"ctx": context})
    return done.stdout


def run(args: list[str], *, timeout: float, context: dict[str, Any]) -> str:
    """Run ffmpeg/ffprobe; return stdout as text. Raises ``FFmpegError`` (stderr logged) on failure."""
    return run_bytes(args, timeout=timeout, context=context).decode("utf-8", "replace")


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """Start a long-running ffmpeg that reads stdin (a pipe) and reports on stderr (a pipe; the
    caller reads it); stdout is discarded. It gets SIGTERM when the thread that started it dies
    (Linux's parent-death signal, ``devstack.dies_with_caller``), so it never outlives its
    segmenter, even when the whole supervisor process is killed: start it from a thread that
    outlives it."""
    return subprocess.Popen(
        dies_with_caller(args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 5) -> None:
    """End a spawned ffmpeg: SIGTERM if it still runs, SIGKILL after ``timeout`` s; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def call(args: list[str]) -> int:
    """Run ffmpeg in the foreground on the caller's terminal (stdin, stdout and stderr inherited)
    until it ends; its exit status. No timeout: it is the user's program (Ctrl-C ends it)."""
    return subprocess.call(args)


def jpeg_frame_args(width: int, *, container: str = "mpegts") -> list[str]:
    """The first video frame of a segment on stdin (``container``: ``mpegts``, or ``mp4`` for
    CMAF: its init section, then the segment), scaled to ``width`` px, as a JPEG on stdout."""
    return [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", container, "-i", "pipe:0",
        "-map", "0:v:0", "-frames:v", "1", "-vf", f"scale={width}:-2",
        "-q:v", "5", "-f", "image2", "-c:v", "mjpeg", "pipe:1",
    ]  # fmt: skip


def raw_strip_args(source: str, width: int, height: int) -> list[str]:
    """The top-left ``width`` x ``height`` pixels of the first video frame of ``source`` (a file
    or URL) as raw 8-bit grey on stdout."""
    return [
        FFMPEG, "-v", "error", "-i", source, "-frames:v", "1", "-vf", f"crop={width}:{height}:0:0",
        "-pix_fmt", "gray", "-f", "rawvideo", "-",
    ]  # fmt: skip


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


def relay_args(source_url: str, target_url: str, *, timeout_s: float = 10.0, ca_file: str = "") -> list[str]:
    """Push ``source_url`` (the live stream played from this node's nginx-rtmp) to ``target_url``
    (server URL + key) unchanged: ``-c copy`` into FLV, no re-encoding. ``timeout_s``: a
    connection silent that long (either side) ends ffmpeg. Progress (``total_size=...``) goes
    to stdout once a second, warnings and errors to stderr (``simulcast.relay`` reads both).
    An ``rtmps://`` target's certificate chain and host name are verified against ``ca_file``
    (ffmpeg's TLS does not verify unless told; the stream key travels inside that TLS)."""
    rw_timeout = str(int(timeout_s * 1_000_000))
    tls = ["-tls_verify", "1", "-ca_file", ca_file] if target_url.startswith("rtmps://") and ca_file else []
    return [
        FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
        "-progress", "pipe:1", "-stats_period", "1",
        "-rw_timeout", rw_timeout, "-rtmp_live", "live", "-i", source_url,
        "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy",
        "-rw_timeout", rw_timeout, *tls, "-flvflags", "no_duration_filesize", "-f", "flv", target_url,
    ]  # fmt: skip


def spawn_relay(args: list[str]) -> subprocess.Popen[bytes]:
    """Start a relay ffmpeg (``relay_args``): stdin closed, stdout and stderr pipes. Like
    ``spawn``, it gets SIGTERM when the thread that started it dies."""
    return subprocess.Popen(
        dies_with_caller(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
