"""The highlights' Redis keys: one module knows them (the transcode worker writes, the scoring
task reads).

- ``hl:{<session>}:seg``   hash seq -> JSON ``{"wall", "dur", "m", "mean"}``: each published
  chunk's ingest wall clock (its EXT-X-PROGRAM-DATE-TIME, epoch s), duration and EBU R128
  loudness (momentary maximum and mean, LUFS; null without audio). Written by the transcode
  worker (``transcoding.tasks``), kept ``HIGHLIGHTS_SIGNAL_TTL_S`` after the last write: outside
  the pipeline's keys, so the session's purge at its end leaves it for the final scoring.
- ``hl:{<session>}:lock``  one scoring run of a session at a time (``HIGHLIGHTS_LOCK_S``).
- ``hl:{<session>}:final`` the final scoring after the broadcast ended was done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings

from livestream.redis import redis_client
from transcoding.loudness import Loudness


def _key(session_id: int, name: str) -> str:
    return f"hl:{{{session_id}}}:{name}"


@dataclass(frozen=True)
class Segment:
    """One published segment's times and loudness."""

    seq: int
    wall: float  # epoch seconds of its first frame (EXT-X-PROGRAM-DATE-TIME)
    duration: float
    loudness: float | None  # momentary maximum, LUFS; None without audio
    mean: float | None = None

    @property
    def end(self) -> float:
        return self.wall + self.duration


def record_segment(session_id: int, seq: int, *, wall: float, duration: float, loudness: Loudness | None) -> None:
    value = {
        "wall": round(wall, 3),
        "dur": round(duration, 3),
        "m": loudness.momentary_max if loudness else None,
        "mean": loudness.mean if loudness else None,
    }
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(_key(session_id, "seg"), str(seq), json.dumps(value))
    pipe.expire(_key(session_id, "seg"), settings.HIGHLIGHTS_SIGNAL_TTL_S)
    pipe.execute()


def segments(session_id: int) -> list[Segment]:
    """The session's recorded segments in time order (the latest record of a seq wins)."""
    out = []
    for seq, raw in redis_client().hgetall(_key(session_id, "seg")).items():
        value = json.loads(raw)
        if value.get("dur", 0) <= 0:
            continue
        out.append(Segment(int(seq), float(value["wall"]), float(value["dur"]), value.get("m"), value.get("mean")))
    return sorted(out, key=lambda s: (s.wall, s.seq))


def claim_run(session_id: int) -> bool:
    return bool(redis_client().set(_key(session_id, "lock"), "1", nx=True, ex=settings.HIGHLIGHTS_LOCK_S))


def release_run(session_id: int) -> None:
    redis_client().delete(_key(session_id, "lock"))


def is_final(session_id: int) -> bool:
    return bool(redis_client().exists(_key(session_id, "final")))


def mark_final(session_id: int) -> None:
    redis_client().set(_key(session_id, "final"), "1", ex=settings.HIGHLIGHTS_SIGNAL_TTL_S)
