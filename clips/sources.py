"""Where a session's source-rendition segments are listed: the published log in Redis while
the session is open (live, reconnecting, ending: segments are in S3 before they are listed),
the replay's ``source/index.m3u8`` in S3 once it ended. Both give ``hls.Entry`` values (program
date-time, duration, discontinuity, CMAF init section), read by ``transcoding`` modules only."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings

from streams import playback
from streams.models import SessionStatus, StreamSession
from transcoding import hls, state, storage

RENDITION = "source"  # clips are cut from the source rendition (stream copy of the publish)


@dataclass(frozen=True)
class Segment:
    """One source segment of a session: its object keys and timing."""

    key: str
    init_key: str  # "" for MPEG-TS
    wall: float  # program date-time of its first frame, epoch seconds
    duration: float
    disc: bool
    # Media the publisher sent just before this segment never made it out: a chunk given up
    # (transcoding fell past the live deadline, or its state was lost with Redis). A clip must
    # not join across it (the cut would skip that media silently). A reconnect is not a loss.
    lost_before: bool = False

    @property
    def end(self) -> float:
        return self.wall + self.duration


def _rendition_prefix(session: StreamSession) -> str:
    return f"{playback.prefix_of(session)}/{RENDITION}"


def is_open(session: StreamSession) -> bool:
    return session.status != SessionStatus.ENDED


def _segments(session: StreamSession, entries: list[hls.Entry], *, sized: bool) -> list[Segment]:
    """``sized``: the entries carry object sizes (the published log; a parsed playlist has 0)."""
    prefix = _rendition_prefix(session)
    out: list[Segment] = []
    previous: hls.Entry | None = None  # the previous segment kept
    listed: hls.Entry | None = None  # the previous entry, kept or not
    for entry in entries:
        # Chunks are numbered one after the other for the whole session (reconnects included):
        # a number skipped was given up; a new epoch means Redis lost the state in between.
        lost = listed is not None and (entry.epoch != listed.epoch or entry.seq != listed.seq + 1)
        listed = entry
        if sized and entry.sizes.get(RENDITION, 1) == 0:  # no object (shed): a hole
            previous = None
            continue
        init = entry.init(RENDITION)
        follows = previous is not None and entry.index == previous.index + 1 and not entry.disc
        out.append(
            Segment(
                key=f"{prefix}/{entry.name}",
                init_key=f"{prefix}/{init}" if init else "",
                wall=entry.wall,
                duration=entry.duration,
                disc=not follows,
                lost_before=lost or (bool(out) and previous is None),
            )
        )
        previous = entry
    return out


def segments(session: StreamSession, *, last_seconds: float | None = None) -> list[Segment]:
    """The session's source segments in order (``last_seconds``: at least that much from the
    live end, read with one bounded LRANGE)."""
    if is_open(session):
        if last_seconds is not None:
            # Chunks are at least 0.5 s (settings bound them): this many entries cover the span.
            entries = state.published_tail(session.pk, math.ceil(last_seconds / 0.5) + 2)
        else:
            entries = state.published(session.pk)
        if entries:
            return _segments(session, entries, sized=True)
    text = storage.get_bytes(f"{_rendition_prefix(session)}/index.m3u8")
    if text is None:
        return []
    return _segments(session, hls.parse_media(text.decode("utf-8", "replace"), [RENDITION]), sized=False)


# Program date-times are the ingest's wall-clock estimates: consecutive segments may overlap by
# a few milliseconds. A segment that holds less than this of the range is not part of it.
OVERLAP_S = 0.02


def covering(all_segments: list[Segment], start: float, end: float) -> list[Segment]:
    """The segments that hold any of ``[start, end)`` (more than ``OVERLAP_S`` of it)."""
    return [s for s in all_segments if s.wall < end - OVERLAP_S and s.end > start + OVERLAP_S]


def losses(found: list[Segment]) -> list[Segment]:
    """The segments of ``found`` (after its first) that follow media lost from the broadcast."""
    return [s for s in found[1:] if s.lost_before]


def max_seconds() -> int:
    return int(settings.CLIP_MAX_SECONDS)
