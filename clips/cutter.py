"""Cut a clip out of downloaded segments of a session's source rendition (local files).

Pure media work in a working directory: no database, no S3 (``clips/tasks.py`` downloads the
segments and uploads the result). The segments are joined without decoding them (stream copy),
so a clip starts and ends on segment boundaries. With ``trim`` the first and last segments are
encoded again from/to the requested instants (a short re-encode of the edges, same codec and
profile) and the middle stays stream copy; the pieces are joined by the concat demuxer with
explicit durations, so timestamps run on without a hole or an overlap.

Segment formats: MPEG-TS (``seg_<seq>.ts``) and CMAF (``init_<sha>.mp4`` + ``seg_<seq>.m4s``;
init and segments concatenated make a fragmented MP4, remuxed to MPEG-TS for the join).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clips import commands
from transcoding import ffmpeg

logger = logging.getLogger(__name__)

EPSILON_S = 0.001  # requested instants this close to a segment boundary are that boundary
FFMPEG_TIMEOUT_S = 300


class CutError(Exception):
    """The segments could not be made into a clip (the reason is for the clip's status)."""


@dataclass(frozen=True)
class Segment:
    path: Path  # an MPEG-TS segment, or a CMAF media segment (with ``init``)
    wall: float  # program date-time of its first frame, epoch seconds
    duration: float
    disc: bool = False  # does not continue the previous segment's timestamps (reconnect, gap)
    init: Path | None = None  # CMAF: the init section it follows


@dataclass(frozen=True)
class Cut:
    path: Path  # the MP4
    start: float  # program date-time of its first frame, epoch seconds
    duration: float
    frames: int
    width: int
    height: int

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class _Piece:
    segments: list[Segment]
    path: Path
    start: float = 0.0  # container start time (source seconds)
    video_start: float = 0.0
    profile: str = ""
    edge: bool = False


def _probe(args: list[str], context: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(ffmpeg.run(args, timeout=60, context=context) or "{}")
    return data if isinstance(data, dict) else {}


def _float(value: object, default: float = 0.0) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _groups(segments: list[Segment], *, split_edges: bool) -> list[list[Segment]]:
    """Segments in runs that continue each other (same init section, no discontinuity); with
    ``split_edges`` the first and the last segment are groups of their own."""
    groups: list[list[Segment]] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        edge = split_edges and i in (1, last)  # the segment after the first edge, and the last
        if not groups or seg.disc or seg.init != groups[-1][-1].init or edge:
            groups.append([seg])
        else:
            groups[-1].append(seg)
    return groups


def _piece(group: list[Segment], workdir: Path, index: int, context: dict[str, Any]) -> _Piece:
    out = workdir / f"piece_{index:04d}.ts"
    init = group[0].init
    if init is None:
        with out.open("wb") as dst:
            for seg in group:
                with seg.path.open("rb") as src:
                    shutil.copyfileobj(src, dst)
    else:
        joined = workdir / f"piece_{index:04d}.mp4"
        with joined.open("wb") as dst:
            for part in [init, *(seg.path for seg in group)]:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst)
        ffmpeg.run(commands.to_ts_args(joined, out), timeout=FFMPEG_TIMEOUT_S, context=context)
        joined.unlink()
    piece = _Piece(group, out)
    _read_starts(piece, context)
    return piece


def _read_starts(piece: _Piece, context: dict[str, Any]) -> None:
    data = _probe(commands.probe_start_args(piece.path), context)
    video = next((s for s in data.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise CutError("a segment has no video")
    piece.video_start = _float(video.get("start_time"))
    piece.start = _float(data.get("format", {}).get("start_time"), piece.video_start)
    piece.profile = str(video.get("profile", ""))


def cut(
    segments: list[Segment],
    workdir: Path,
    *,
    start: float | None = None,
    end: float | None = None,
    context: dict[str, Any] | None = None,
) -> Cut:
    """Join ``segments`` (in order) into ``workdir/clip.mp4``. ``start``/``end`` (program
    date-times, epoch seconds) trim the first/last segment exactly; None keeps its boundary."""
    if not segments:
        raise CutError("no segments in the requested range")
    ctx = context or {}
    first, last = segments[0], segments[-1]
    trim_start = start is not None and start > first.wall + EPSILON_S
    trim_end = end is not None and end < last.wall + last.duration - EPSILON_S
    groups = _groups(segments, split_edges=trim_start or trim_end)
    pieces = [_piece(group, workdir, i, ctx) for i, group in enumerate(groups)]

    head, tail = pieces[0], pieces[-1]
    clip_start = first.wall
    if trim_start or trim_end:
        for piece in {id(p): p for p in (head, tail)}.values():
            seg = piece.segments[0]
            cut_in = (start - seg.wall) if piece is head and trim_start and start is not None else None
            cut_out = (end - seg.wall) if piece is tail and trim_end and end is not None else None
            if cut_in is None and cut_out is None:
                continue
            out = piece.path.with_name(piece.path.stem + "_edge.ts")
            args = commands.edge_args(
                piece.path,
                out,
                start=None if cut_in is None else piece.video_start + cut_in,
                end=None if cut_out is None else piece.video_start + cut_out,
                profile=piece.profile,
            )
            before = piece.video_start
            ffmpeg.run(args, timeout=FFMPEG_TIMEOUT_S, context=ctx)
            piece.path, piece.edge = out, True
            _read_starts(piece, ctx)
            if piece is head:
                clip_start = seg.wall + (piece.video_start - before)

    listing: list[tuple[Path, float | None]] = []
    for i, piece in enumerate(pieces):
        following = pieces[i + 1] if i + 1 < len(pieces) else None
        continues = following is not None and not following.segments[0].disc
        continues = continues and following is not None and following.segments[0].init == piece.segments[-1].init
        duration = following.start - piece.start if following is not None and continues else None
        listing.append((piece.path, duration if duration is None or duration > 0 else None))
    concat = workdir / "pieces.ffconcat"
    concat.write_text(commands.concat_list(listing))
    out = workdir / "clip.mp4"
    ffmpeg.run(commands.mp4_args(concat, out), timeout=FFMPEG_TIMEOUT_S, context=ctx)

    data = _probe(commands.probe_clip_args(out), ctx)
    video = next((s for s in data.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise CutError("the clip has no video")
    duration = _float(video.get("duration")) or _float(data.get("format", {}).get("duration"))
    return Cut(
        path=out,
        start=clip_start,
        duration=duration,
        frames=int(video.get("nb_frames") or 0),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
    )
