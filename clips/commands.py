"""ffmpeg/ffprobe argument lists of clips (builders only: ``transcoding.ffmpeg`` runs them).

Every clip is cut from the session's source rendition without decoding it (stream copy);
only a trimmed clip's edge segments are decoded and encoded again (``edge_args``). Pieces are
MPEG-TS (Annex B: every IDR carries its SPS/PPS in band, so pieces encoded by different
encoders join in one MP4), joined by the concat demuxer with explicit durations so their
timestamps continue each other (``concat_list``).
"""

from __future__ import annotations

from pathlib import Path

from transcoding.ffmpeg import FFMPEG, FFPROBE

_QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
# x264 profiles by ffprobe's name of the source's (the edges are encoded with the same one).
PROFILES = {"Baseline": "baseline", "Constrained Baseline": "baseline", "Main": "main", "High": "high"}


def to_ts_args(source: Path, out: Path) -> list[str]:
    """Remux (stream copy) a file into MPEG-TS with its timestamps: a CMAF run (init section and
    its segments concatenated) becomes Annex B with SPS/PPS before every IDR."""
    return [
        FFMPEG, *_QUIET, "-copyts", "-i", str(source),
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-muxdelay", "0", "-muxpreload", "0",
        "-f", "mpegts", str(out),
    ]  # fmt: skip


def probe_start_args(path: Path) -> list[str]:
    """The container's start time and the video stream's start time, profile and frame rate."""
    return [
        FFPROBE, "-v", "error", "-of", "json",
        "-show_entries", "format=start_time,duration:stream=codec_type,start_time,profile,r_frame_rate",
        str(path),
    ]  # fmt: skip


def edge_args(source: Path, out: Path, *, start: float | None, end: float | None, profile: str) -> list[str]:
    """Encode one segment again between ``start`` and ``end`` (source timestamps, seconds; None:
    from its beginning / to its end), keeping the source timestamps (``-copyts``). Video: x264
    with the source's profile, one IDR at the start and no B-frames (decode order = display
    order, so decode timestamps run on into the next piece); audio: stream copy (packets
    outside the range dropped)."""
    window = []
    if start is not None:  # output -ss shifts timestamps back by ``start``: shift them forward again
        window += ["-ss", f"{start:.6f}", "-output_ts_offset", f"{start:.6f}"]
    if end is not None:
        window += ["-to", f"{end - 0.0005:.6f}"]  # the frame at ``end`` is the next one's
    return [
        FFMPEG, *_QUIET, "-copyts", "-i", str(source), *window,
        "-map", "0:v:0", "-map", "0:a:0?",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-profile:v", PROFILES.get(profile, "high"),
        "-bf", "0",
        "-pix_fmt", "yuv420p", "-fps_mode", "passthrough",
        "-c:a", "copy", "-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", str(out),
    ]  # fmt: skip


def concat_list(pieces: list[tuple[Path, float | None]]) -> str:
    """A concat demuxer script: each piece with the duration after which the next one starts
    (None for the last, or where it is not known)."""
    lines = ["ffconcat version 1.0"]
    for path, duration in pieces:
        lines.append("file '" + str(path).replace("'", "'\\''") + "'")
        if duration is not None:
            lines.append(f"duration {duration:.6f}")
    return "\n".join(lines) + "\n"


def mp4_args(concat: Path, out: Path) -> list[str]:
    """Join the pieces listed in ``concat`` into one MP4 (stream copy, index in front)."""
    return [
        FFMPEG, *_QUIET, "-f", "concat", "-safe", "0", "-i", str(concat),
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip


def probe_clip_args(path: Path) -> list[str]:
    """Duration and per-stream sample counts of a finished clip (from its index, no decoding)."""
    return [
        FFPROBE, "-v", "error", "-of", "json",
        "-show_entries", "format=duration:stream=codec_type,nb_frames,duration,width,height",
        str(path),
    ]  # fmt: skip
