"""Scoring of a broadcast's segments for highlight suggestions (pure: no I/O).

Each segment gets three signals: chat messages per second, loudness (EBU R128 momentary
maximum, LUFS) and viewer joins per second. Each signal becomes a robust z-score against the
broadcast's own baseline: ``(x - median) / (1.4826 * MAD)``, the scale never below the signal's
floor (``Scales``: a broadcast whose chat is always silent has MAD 0, and one message must not
make a highlight). Only what is above the baseline counts; each z is capped at ``Z_CAP`` so one
signal cannot stand for all three. A segment's score is the weighted sum.

Moments are windows of ``window`` segments centred on a peak: the highest-scoring segments
first, each giving a window that overlaps no window taken before, as long as its score is at
least ``threshold``. A quiet broadcast (no signal above its baseline) gets none.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation
Z_CAP = 10.0
SIGNALS = ("chat", "loudness", "joins")


@dataclass(frozen=True)
class Scales:
    """The smallest scale (the denominator of z) of each signal."""

    chat: float = 0.5  # messages per second
    loudness: float = 2.0  # LU
    joins: float = 0.5  # joins per second (a viewer or two arriving together is no event)


@dataclass(frozen=True)
class Weights:
    chat: float = 1.0
    loudness: float = 1.0
    joins: float = 1.0


@dataclass(frozen=True)
class SegmentSignals:
    start: float  # epoch seconds (its program date-time)
    duration: float
    messages: int = 0
    loudness: float | None = None  # LUFS; None: no audio measured
    joins: int = 0
    seq: int = 0

    @property
    def end(self) -> float:
        return self.start + self.duration

    def values(self) -> dict[str, float | None]:
        per_s = max(self.duration, 1e-3)
        return {"chat": self.messages / per_s, "loudness": self.loudness, "joins": self.joins / per_s}


@dataclass(frozen=True)
class Baseline:
    median: float
    scale: float  # 1.4826 MAD, at least the signal's floor

    def z(self, value: float | None) -> float:
        if value is None:
            return 0.0
        return min(Z_CAP, max(0.0, (value - self.median) / self.scale))


@dataclass(frozen=True)
class Scored:
    segment: SegmentSignals
    z: dict[str, float]
    score: float


@dataclass(frozen=True)
class Moment:
    """A suggested window: ``first``..``last`` (indexes into the scored segments), its peak."""

    start: float
    end: float
    score: float
    peak: Scored
    segments: list[Scored] = field(default_factory=list)


def baseline(values: Sequence[float | None], floor: float) -> Baseline | None:
    """Median and scale of the measured values; None when nothing was measured."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    median = statistics.median(known)
    mad = statistics.median(abs(v - median) for v in known)
    return Baseline(median=median, scale=max(MAD_TO_SIGMA * mad, floor))


def baselines(segments: Sequence[SegmentSignals], scales: Scales = Scales()) -> dict[str, Baseline | None]:
    columns = [s.values() for s in segments]
    return {name: baseline([c[name] for c in columns], getattr(scales, name)) for name in SIGNALS}


def score(
    segments: Sequence[SegmentSignals], *, scales: Scales = Scales(), weights: Weights = Weights()
) -> tuple[list[Scored], dict[str, Baseline | None]]:
    """Every segment's z-scores and combined score, with the baselines used."""
    bases = baselines(segments, scales)
    scored = []
    for segment in segments:
        values = segment.values()
        z = {name: round(b.z(values[name]), 3) if (b := bases[name]) else 0.0 for name in SIGNALS}
        total = sum(getattr(weights, name) * z[name] for name in SIGNALS)
        scored.append(Scored(segment=segment, z=z, score=round(total, 3)))
    return scored, bases


def moments(scored: Sequence[Scored], *, threshold: float, window: int, limit: int) -> list[Moment]:
    """The top non-overlapping windows of ``window`` segments around peaks scoring at least
    ``threshold``, best first, at most ``limit``."""
    taken: list[tuple[int, int]] = []
    out: list[Moment] = []
    half = max(0, window - 1) // 2
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))
    for i in order:
        if len(out) >= limit or scored[i].score < threshold:
            break
        first = max(0, i - half)
        last = min(len(scored) - 1, first + max(1, window) - 1)
        first = max(0, min(first, last - max(1, window) + 1))
        if any(first <= b and a <= last for a, b in taken):
            # Overlaps a better moment: shift away from it if the peak still fits, else skip.
            shifted = _shift(i, first, last, taken, len(scored))
            if shifted is None:
                continue
            first, last = shifted
        taken.append((first, last))
        window_segments = list(scored[first : last + 1])
        out.append(
            Moment(
                start=window_segments[0].segment.start,
                end=window_segments[-1].segment.end,
                score=scored[i].score,
                peak=scored[i],
                segments=window_segments,
            )
        )
    return out


def _shift(peak: int, first: int, last: int, taken: list[tuple[int, int]], count: int) -> tuple[int, int] | None:
    """The window moved (keeping the peak inside) so that it overlaps none taken; None if the
    peak itself is inside a taken window or no such position exists."""
    if any(a <= peak <= b for a, b in taken):
        return None
    size = last - first + 1
    for start in range(max(0, peak - size + 1), min(peak, count - size) + 1):
        end = start + size - 1
        if not any(start <= b and a <= end for a, b in taken):
            return start, end
    # Shrink to what is free around the peak.
    lo = peak
    while lo - 1 >= 0 and not any(a <= lo - 1 <= b for a, b in taken) and peak - (lo - 1) < size:
        lo -= 1
    hi = peak
    while hi + 1 < count and not any(a <= hi + 1 <= b for a, b in taken) and hi + 1 - lo < size:
        hi += 1
    return lo, hi


def describe(scored: Scored, bases: dict[str, Baseline | None]) -> dict[str, str]:
    """What made the segment stand out, in plain words, per signal."""
    seg = scored.segment
    words: dict[str, str] = {}
    chat, loud, joins = bases["chat"], bases["loudness"], bases["joins"]
    rate = seg.messages / max(seg.duration, 1e-3)
    usual = f"{chat.median:.1f}/s" if chat else "0/s"
    words["chat"] = (
        f"{seg.messages} message{'s' if seg.messages != 1 else ''} in {seg.duration:.0f} s "
        f"({rate:.1f}/s, usually {usual})" + (" - a burst" if scored.z["chat"] >= 3 else "")
    )
    if seg.loudness is None or loud is None:
        words["loudness"] = "no audio measured"
    else:
        above = seg.loudness - loud.median
        words["loudness"] = (
            f"peak {seg.loudness:.1f} LUFS, {abs(above):.1f} LU {'above' if above >= 0 else 'below'} "
            f"the usual {loud.median:.1f} LUFS" + (" - loud" if scored.z["loudness"] >= 3 else "")
        )
    jrate = seg.joins / max(seg.duration, 1e-3)
    words["joins"] = (
        f"{seg.joins} viewer{'s' if seg.joins != 1 else ''} joined ({jrate:.2f}/s, usually "
        f"{joins.median if joins else 0:.2f}/s)" + (" - a wave of viewers" if scored.z["joins"] >= 3 else "")
    )
    return words
