"""Scoring of segments (highlights.scoring): robust baselines, z-scores, windows, threshold."""

import pytest

from highlights import scoring
from highlights.scoring import SegmentSignals

T0 = 1_800_000_000.0


def broadcast(
    n: int = 20,
    *,
    messages: dict[int, int] | None = None,
    loud: dict[int, float] | None = None,
    joins: dict[int, int] | None = None,
    base_lufs: float = -40.0,
) -> list[SegmentSignals]:
    """``n`` segments of 2 s: quiet chat (one message every other segment), loudness around
    ``base_lufs`` (+-0.2 LU), no joins; ``messages``/``loud``/``joins`` override segments."""
    messages, loud, joins = messages or {}, loud or {}, joins or {}
    return [
        SegmentSignals(
            start=T0 + 2 * i,
            duration=2.0,
            messages=messages.get(i, i % 2),
            loudness=loud.get(i, base_lufs + (0.2 if i % 3 == 0 else -0.2 if i % 3 == 1 else 0.0)),
            joins=joins.get(i, 0),
            seq=i,
        )
        for i in range(n)
    ]


def test_baseline_is_median_and_mad():
    base = scoring.baseline([1, 2, 3, 4, 100], floor=0.1)
    assert base is not None
    assert base.median == 3
    assert base.scale == pytest.approx(1.4826)  # MAD = median(2, 1, 0, 1, 97) = 1
    # An outlier moves neither: the 100 scores (100 - 3) / 1.4826, capped.
    assert base.z(100) == scoring.Z_CAP
    assert base.z(4.4826) == pytest.approx(1.0)
    assert base.z(1) == 0  # below the baseline counts nothing
    assert scoring.baseline([None, None], floor=1) is None


def test_floor_bounds_the_scale():
    # A chat that is always silent: MAD 0, the floor (0.5 msg/s) is the scale.
    base = scoring.baseline([0.0] * 10, floor=0.5)
    assert base is not None
    assert (base.median, base.scale) == (0.0, 0.5)
    assert base.z(1.0) == pytest.approx(2.0)


def test_scores_against_the_broadcasts_own_baseline():
    segments = broadcast(messages={7: 24}, loud={14: -8.0})
    scored, bases = scoring.score(segments)
    chat, loud = bases["chat"], bases["loudness"]
    assert chat is not None
    assert loud is not None
    # Chat: rates 0 and 0.5 msg/s alternate (and 12 msg/s once): median 0.25... of 20 values
    # (10 zeros, 9 halves, one 12): the 10th and 11th sorted are 0 and 0.5.
    assert chat.median == pytest.approx(0.25)
    assert chat.scale == pytest.approx(0.5)  # MAD 0.25 * 1.4826 = 0.37 < floor 0.5
    assert scored[7].z["chat"] == scoring.Z_CAP  # (12 - 0.25) / 0.5 = 23.5, capped
    # Loudness: -40 +-0.2 LU, the floor (2 LU) is the scale; -8 LUFS is 32 LU above: capped.
    assert loud.median == pytest.approx(-40.0)
    assert loud.scale == 2.0
    assert scored[14].z["loudness"] == scoring.Z_CAP
    assert scored[3].z["loudness"] == pytest.approx(0.1)  # -39.8: 0.2 LU / 2 LU
    assert max(s.score for i, s in enumerate(scored) if i not in (7, 14)) < 1.5


def test_top_moments_are_the_burst_and_the_loud_passage():
    segments = broadcast(messages={7: 24}, loud={14: -8.0, 15: -9.0}, joins={3: 2})
    scored, _ = scoring.score(segments)
    found = scoring.moments(scored, threshold=4.0, window=3, limit=5)
    peaks = sorted(m.peak.segment.seq for m in found)
    # Two viewers joining together (segment 3: 1/s, z 2 over the 0.5/s floor) is no event;
    # 14 and 15 are both loud (z capped at 10), 15 has one chat message more: it is the peak.
    assert peaks == [7, 15]
    by_peak = {m.peak.segment.seq: m for m in found}
    assert [s.segment.seq for s in by_peak[7].segments] == [6, 7, 8]
    assert (by_peak[7].start, by_peak[7].end) == (T0 + 12, T0 + 18)
    assert by_peak[7].score == scoring.Z_CAP  # chat capped; its loudness (-40.2) is below the median
    # 14 is loud too but inside 15's window: one moment, not two overlapping ones.
    assert [s.segment.seq for s in by_peak[15].segments] == [14, 15, 16]


def test_joins_count():
    segments = broadcast(joins={10: 12})  # 6 joins/s when nobody usually joins
    scored, bases = scoring.score(segments)
    assert bases["joins"] is not None
    assert bases["joins"].median == 0
    assert scored[10].z["joins"] == pytest.approx(scoring.Z_CAP)
    found = scoring.moments(scored, threshold=4.0, window=3, limit=5)
    assert [m.peak.segment.seq for m in found] == [10]


def test_a_quiet_broadcast_gets_nothing():
    scored, _ = scoring.score(broadcast(40))
    assert scoring.moments(scored, threshold=4.0, window=3, limit=5) == []
    # Nor one whose chat and sound are steadily busy: busy is its baseline.
    busy = [
        SegmentSignals(start=T0 + 2 * i, duration=2, messages=10 + i % 3, loudness=-12 - (i % 2)) for i in range(30)
    ]
    scored, _ = scoring.score(busy)
    assert scoring.moments(scored, threshold=4.0, window=3, limit=5) == []


def test_windows_at_the_edges_and_the_limit():
    segments = broadcast(10, loud={0: -5.0, 9: -6.0, 4: -7.0})
    scored, _ = scoring.score(segments)
    found = scoring.moments(scored, threshold=4.0, window=3, limit=5)
    windows = sorted((m.segments[0].segment.seq, m.segments[-1].segment.seq) for m in found)
    assert windows == [(0, 2), (3, 5), (7, 9)]  # full-size windows inside the broadcast
    assert len(scoring.moments(scored, threshold=4.0, window=3, limit=2)) == 2
    # Adjacent peaks: the second one's window shifts away from the first one's.
    scored, _ = scoring.score(broadcast(12, loud={5: -5.0, 7: -6.0}))
    found = scoring.moments(scored, threshold=4.0, window=3, limit=5)
    windows = sorted((m.segments[0].segment.seq, m.segments[-1].segment.seq) for m in found)
    assert windows == [(4, 6), (7, 9)]


def test_reasons_in_plain_words():
    segments = broadcast(messages={7: 24}, loud={7: -10.0})
    scored, bases = scoring.score(segments)
    words = scoring.describe(scored[7], bases)
    assert words["chat"] == "24 messages in 2 s (12.0/s, usually 0.2/s) - a burst"
    assert words["loudness"] == "peak -10.0 LUFS, 30.0 LU above the usual -40.0 LUFS - loud"
    assert words["joins"] == "0 viewers joined (0.00/s, usually 0.00/s)"
    silent = SegmentSignals(start=T0, duration=2, loudness=None)
    scored, bases = scoring.score([silent])
    assert scoring.describe(scored[0], bases)["loudness"] == "no audio measured"
