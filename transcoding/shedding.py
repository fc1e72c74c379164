"""Overload: when transcoding falls behind real time, the top rungs are shed for the following
chunks, and restored one by one once it keeps up again (ADR 0028).

The signal is how long a chunk waited for a worker: ``time.time() - meta.queued`` when its
transcode starts (a progressive task is queued when the chunk begins and starts at once while
the workers keep up). A wait longer than ``OVERLOAD_LATE_SECONDS``, or a transcode that took
longer than the chunk lasts, is "late": one more rung is shed (the highest encoded rung first;
``source``, a copy, never). ``OVERLOAD_RESTORE_AFTER_CHUNKS`` chunks in a row on time restore
one rung. The level lives in the session's state (``state.shed_step``), shared by every worker.

A shed rung's segment is not encoded: its output is empty, the assembler publishes the chunk
with size 0 for it, writes no object, and its media playlist marks that segment
``#EXT-X-GAP`` (the master stays the same; players switch to a rung that has the segment).
The ``source`` rendition never gaps because of load. The owner's dashboard and the metrics
(``livestream_rungs_shed``) say which rungs are shed and why.
"""

from __future__ import annotations

import logging

import redis.exceptions
from django.conf import settings

from livestream import metrics
from transcoding import state
from transcoding.ladder import Rendition

logger = logging.getLogger(__name__)


def sheddable(ladder: list[Rendition]) -> list[str]:
    """The rungs that may be shed, in the order they are: the encoded ones, highest first."""
    encoded = [r for r in ladder if not r.copy]
    return [r.name for r in sorted(encoded, key=lambda r: (r.height, r.video_kbps), reverse=True)]


def plan(session_id: int, ladder: list[Rendition], *, waited_s: float, observe: bool = True) -> set[str]:
    """The rungs to shed for a chunk whose transcode starts after waiting ``waited_s``. Only
    one task per chunk ``observe``s (with a split ladder, the other parts read the level)."""
    if not settings.OVERLOAD_SHEDDING:
        return set()
    if not observe:
        level = int(state.shed(session_id).get("level", 0))
        return set(sheddable(ladder)[:level])
    late = waited_s > settings.OVERLOAD_LATE_SECONDS
    why = f"transcoding {waited_s:.1f} s behind real time" if late else ""
    return _apply(session_id, ladder, late=late, why=why, count_calm=True)


def transcoded(session_id: int, ladder: list[Rendition], *, elapsed_s: float, duration_s: float) -> None:
    """A chunk took ``elapsed_s`` to transcode after its last byte. More than the chunk lasts plus
    ``OVERLOAD_LATE_SECONDS`` (a source heavier than the workers can encode in real time) sheds
    one more rung; a short chunk (the last of a publish) counts as a full one."""
    lasts = max(duration_s, float(settings.CHUNK_SECONDS) / 2)
    if settings.OVERLOAD_SHEDDING and elapsed_s > lasts + settings.OVERLOAD_LATE_SECONDS:
        _apply(
            session_id,
            ladder,
            late=True,
            why=f"a {duration_s:.1f} s chunk took {elapsed_s:.1f} s to transcode",
            count_calm=False,
        )


def _apply(session_id: int, ladder: list[Rendition], *, late: bool, why: str, count_calm: bool) -> set[str]:
    names = sheddable(ladder)
    before, level = state.shed_step(
        session_id,
        late=late,
        count_calm=count_calm,
        max_level=len(names),
        restore_after=settings.OVERLOAD_RESTORE_AFTER_CHUNKS,
        why=why,
    )
    shed = names[:level]
    if level != before:
        metrics.rungs_shed(session_id, shed, why if level > before else "caught up")
        if level > before:
            logger.warning("overload: shedding %s (%s)", names[level - 1], why, extra={"session": session_id})
        else:
            logger.info("overload over: %s restored", names[level], extra={"session": session_id})
    return set(shed)


def status(session_id: int) -> dict[str, object] | None:
    """What the owner's dashboard shows while the session sheds rungs (None: full ladder)."""
    try:
        info = state.shed(session_id)
        ladder = state.ladder(session_id) or []
    except redis.exceptions.RedisError:
        logger.warning("overload state unavailable", extra={"session": session_id})
        return None
    level = int(info.get("level", 0))
    if not level:
        return None
    rungs = sheddable(ladder)[:level]
    return {"rungs": rungs, "why": info.get("why", ""), "since": float(info.get("since", 0))}
