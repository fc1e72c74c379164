"""Each aggregation on generated data; the expected answers are computed here independently
(plain Python loops over the same generated rows), never copied from the code under test."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics import aggregations
from analytics.documents import ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample

T0 = datetime(2026, 11, 20, 18, 0, 0, tzinfo=UTC)


def _viewer_rows(rng: random.Random, *, stream_id: int, session_id: int, start: datetime, n: int) -> list[dict]:
    rows, at = [], start
    for _ in range(n):
        interval = rng.choice([15.0, 15.0, 30.0])  # uneven periods: weighted mean != plain mean
        rows.append(
            {
                "stream_id": stream_id,
                "session_id": session_id,
                "at": at,
                "viewers": rng.randint(0, 500),
                "interval_s": interval,
            }
        )
        at += timedelta(seconds=interval)
    ViewerSample.objects.insert([ViewerSample(**row) for row in rows])
    return rows


def _playback_rows(rng: random.Random, *, stream_id: int, session_id: int, start: datetime, n: int) -> list[dict]:
    kinds = ["startup", "heartbeat", "heartbeat", "heartbeat", "rebuffer", "latency", "switch", "error"]
    rows = []
    for i in range(n):
        kind = rng.choice(kinds)
        value = None if kind in ("switch", "error") else round(rng.uniform(0.1, 12.0), 3)
        rows.append(
            {
                "stream_id": stream_id,
                "session_id": session_id,
                "viewer_id": f"v{rng.randint(1, 12)}",
                "kind": kind,
                "at": start + timedelta(seconds=i),
                "rendition": rng.choice(["source", "720p", "480p", ""]),
                "value": value,
                "detail": "fatal: networkError" if kind == "error" else None,
            }
        )
    PlaybackEvent.objects.insert(
        [PlaybackEvent(**{k: (v or None) if k == "rendition" else v for k, v in row.items()}) for row in rows]
    )
    return rows


def _expected_qoe(rows: list[dict]) -> dict:
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for row in rows:
        count[row["kind"]] += 1
        total[row["kind"]] += row["value"] or 0.0
    played, stalled = total["heartbeat"], total["rebuffer"]
    return {
        "startup_s": total["startup"] / count["startup"] if count["startup"] else None,
        "rebuffer_s": stalled,
        "played_s": played,
        "rebuffer_ratio": stalled / (played + stalled) if played + stalled else None,
        "latency_s": total["latency"] / count["latency"] if count["latency"] else None,
        "errors": count["error"],
        "switches": count["switch"],
        "startups": count["startup"],
        "rebuffers": count["rebuffer"],
    }


def test_session_summary_matches_independent_computation() -> None:
    rng = random.Random(7)
    rows = _viewer_rows(rng, stream_id=1, session_id=10, start=T0, n=240)
    _viewer_rows(rng, stream_id=1, session_id=11, start=T0 + timedelta(days=1), n=50)  # another session: ignored
    chat = [rng.randint(0, 40) for _ in range(120)]
    ChatStats.objects.insert(
        [
            ChatStats(
                stream_id=1,
                session_id=10,
                at=T0 + timedelta(seconds=15 * i),
                messages=m,
                chatters=m // 3,
                deleted=m % 2,
            )
            for i, m in enumerate(chat)
        ]
        + [ChatStats(stream_id=1, session_id=11, at=T0 + timedelta(days=1), messages=999)]
    )
    events = _playback_rows(rng, stream_id=1, session_id=10, start=T0, n=400)
    _playback_rows(rng, stream_id=1, session_id=11, start=T0 + timedelta(days=1), n=50)
    SessionMetadata(stream_id=1, session_id=10, started_at=T0, gaps=3, fps=30.0, width=1280, height=720).save()

    summary = aggregations.session_summary(10, duration_s=3723.5)

    watch = sum(r["viewers"] * r["interval_s"] for r in rows)
    sampled = sum(r["interval_s"] for r in rows)
    assert summary["duration_s"] == 3723.5
    assert summary["peak_viewers"] == max(r["viewers"] for r in rows)
    assert summary["watch_time_s"] == pytest.approx(watch)
    assert summary["avg_viewers"] == pytest.approx(watch / sampled, abs=1e-3)
    assert summary["avg_viewers"] != pytest.approx(sum(r["viewers"] for r in rows) / len(rows), abs=1e-3)
    assert summary["chat_messages"] == sum(chat)
    assert summary["chat_deleted"] == sum(m % 2 for m in chat)
    assert summary["peak_chatters"] == max(m // 3 for m in chat)
    assert summary["gaps"] == 3
    assert summary["source"]["width"] == 1280
    expected = _expected_qoe(events)
    for key, value in expected.items():
        assert summary[key] == (pytest.approx(value, abs=1e-3) if value is not None else None), key


def test_session_without_data_is_all_zeros() -> None:
    summary = aggregations.session_summary(404, duration_s=0)
    assert summary["peak_viewers"] == 0
    assert summary["watch_time_s"] == 0
    assert summary["chat_messages"] == 0
    assert summary["startup_s"] is None
    assert summary["rebuffer_ratio"] is None
    assert summary["source"] is None


def test_per_rendition_experience() -> None:
    rng = random.Random(11)
    events = _playback_rows(rng, stream_id=2, session_id=20, start=T0, n=600)
    result = {row["rendition"]: row for row in aggregations.session_renditions(20)}

    names = {e["rendition"] for e in events if e["rendition"]}
    assert set(result) == names
    for name in names:
        mine = [e for e in events if e["rendition"] == name]
        expected = _expected_qoe(mine)
        assert result[name]["viewers"] == len({e["viewer_id"] for e in mine})
        for key, value in expected.items():
            assert result[name][key] == (pytest.approx(value, abs=1e-3) if value is not None else None), (name, key)
    played = [result[n]["played_s"] for n in sorted(result, key=lambda n: -result[n]["played_s"])]
    assert [row["played_s"] for row in aggregations.session_renditions(20)] == played


def test_viewer_series_buckets() -> None:
    rng = random.Random(3)
    rows = _viewer_rows(rng, stream_id=3, session_id=30, start=T0 + timedelta(seconds=7), n=100)
    series = aggregations.viewer_series(30, bucket_s=60)

    buckets: dict[datetime, list[dict]] = defaultdict(list)
    for row in rows:
        start = row["at"].replace(second=0)
        buckets[start].append(row)
    assert [point["at"] for point in series] == [b.isoformat() for b in sorted(buckets)]
    for point in series:
        mine = buckets[datetime.fromisoformat(point["at"])]
        assert point["peak"] == max(r["viewers"] for r in mine)
        expected_avg = sum(r["viewers"] * r["interval_s"] for r in mine) / sum(r["interval_s"] for r in mine)
        assert point["avg"] == pytest.approx(expected_avg, abs=1e-3)


def test_ingest_series_worst_lag_and_counters() -> None:
    rng = random.Random(5)
    rows: list[dict[str, Any]] = []
    for i in range(90):
        lag = {
            name: round(rng.uniform(0, 9), 3) for name in rng.sample(["source", "720p", "480p"], k=rng.randint(0, 3))
        }
        rows.append(
            {
                "stream_id": 4,
                "session_id": 40,
                "at": T0 + timedelta(seconds=2 * i),
                "bitrate": rng.randint(2_000_000, 6_000_000),
                "fps": rng.choice([29.97, 30.0, 24.0]),
                "lag_s": lag,
                "dropped_chunks": i // 17,  # cumulative counters, as the pipeline writes them
                "late_chunks": i // 23,
                "queue_depth": rng.randint(0, 20),
            }
        )
    IngestSample.objects.insert([IngestSample(**row) for row in rows])
    series = aggregations.ingest_series(40, bucket_s=10)

    buckets: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        buckets[int(row["at"].timestamp()) // 10].append(row)
    assert len(series) == len(buckets)
    for point, key in zip(series, sorted(buckets), strict=True):
        mine = buckets[key]
        assert point["at"] == datetime.fromtimestamp(key * 10, tz=UTC).isoformat()
        assert point["bitrate"] == round(sum(r["bitrate"] for r in mine) / len(mine))
        assert point["fps"] == pytest.approx(sum(r["fps"] for r in mine) / len(mine), abs=1e-3)
        lags = [v for r in mine for v in r["lag_s"].values()]
        assert point["lag_s"] == (pytest.approx(max(lags)) if lags else None)
        assert point["dropped"] == max(r["dropped_chunks"] for r in mine)
        assert point["late"] == max(r["late_chunks"] for r in mine)
        assert point["queue"] == max(r["queue_depth"] for r in mine)


def test_stream_history_over_days() -> None:
    rng = random.Random(13)
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    sessions: list[dict[str, Any]] = []
    viewers: list[dict[str, Any]] = []
    chats: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for day in range(9):  # 9 days back: the first two fall outside a 7-day window
        start = now - timedelta(days=day, hours=rng.randint(0, 9))
        for k in range(rng.randint(0, 2)):
            sid = 1000 + day * 10 + k
            duration = float(rng.randint(60, 7200))
            sessions.append(
                {
                    "stream_id": 5,
                    "session_id": sid,
                    "started_at": start,
                    "duration_s": duration,
                    "gaps": rng.randint(0, 2),
                }
            )
            viewers += _viewer_rows(rng, stream_id=5, session_id=sid, start=start + timedelta(minutes=k * 60), n=10)
            events += _playback_rows(rng, stream_id=5, session_id=sid, start=start, n=30)
            for i in range(5):
                chats.append(
                    {
                        "stream_id": 5,
                        "session_id": sid,
                        "at": start + timedelta(seconds=15 * i + k),
                        "messages": rng.randint(0, 30),
                    }
                )
    SessionMetadata.objects.insert([SessionMetadata(**s) for s in sessions])
    ChatStats.objects.insert([ChatStats(**c) for c in chats])
    _viewer_rows(rng, stream_id=6, session_id=7777, start=now - timedelta(hours=1), n=20)  # other stream
    SessionMetadata(stream_id=6, session_id=7777, started_at=now - timedelta(hours=1), duration_s=50).save()

    history = aggregations.stream_history(5, days=7, now=now)

    first = (now - timedelta(days=6)).date()
    assert [row["day"] for row in history] == [(first + timedelta(days=i)).isoformat() for i in range(7)]
    for row in history:
        day = row["day"]
        day_sessions = [s for s in sessions if s["started_at"].date().isoformat() == day]
        day_viewers = [v for v in viewers if v["at"].date().isoformat() == day]
        day_events = [
            e for e in events if e["at"].date().isoformat() == day and e["kind"] in ("startup", "heartbeat", "rebuffer")
        ]
        assert row["sessions"] == len(day_sessions), day
        assert row["broadcast_s"] == pytest.approx(sum(s["duration_s"] for s in day_sessions)), day
        assert row["gaps"] == sum(s["gaps"] for s in day_sessions), day
        assert row["peak_viewers"] == max((v["viewers"] for v in day_viewers), default=0), day
        assert row["watch_time_s"] == pytest.approx(sum(v["viewers"] * v["interval_s"] for v in day_viewers)), day
        assert row["chat_messages"] == sum(c["messages"] for c in chats if c["at"].date().isoformat() == day), day
        expected = _expected_qoe(day_events)
        for key in ("startup_s", "rebuffer_ratio"):
            assert row[key] == (pytest.approx(expected[key], abs=1e-3) if expected[key] is not None else None), (
                day,
                key,
            )
    in_window = [s for s in sessions if s["started_at"].date() >= first]
    assert sum(row["sessions"] for row in history) == len(in_window)
    assert len(in_window) < len(sessions)  # the generated data does reach outside the window


def test_platform_totals() -> None:
    rng = random.Random(17)
    since = T0 - timedelta(hours=1)
    series = {}
    for stream_id in (1, 2, 3):
        series[stream_id] = [rng.randint(0, 100) for _ in range(40)]
        ViewerSample.objects.insert(
            [
                ViewerSample(
                    stream_id=stream_id,
                    session_id=stream_id * 100,
                    at=T0 + timedelta(seconds=15 * i),
                    viewers=v,
                    interval_s=15.0,
                )
                for i, v in enumerate(series[stream_id])
            ]
        )
        SessionMetadata(stream_id=stream_id, session_id=stream_id * 100, started_at=T0, duration_s=600.0).save()
        ChatStats(stream_id=stream_id, session_id=stream_id * 100, at=T0, messages=stream_id * 10).save()
    SessionMetadata(stream_id=1, session_id=99, started_at=since - timedelta(days=3), duration_s=5000).save()  # too old
    ViewerSample(stream_id=9, at=since - timedelta(days=3), viewers=100000, interval_s=15).save()  # too old
    events = _playback_rows(rng, stream_id=1, session_id=100, start=T0, n=200)

    totals = aggregations.platform_totals(since=since, sample_s=15)

    concurrent = [sum(series[s][i] for s in series) for i in range(40)]
    watch = {s: 15.0 * sum(v) for s, v in series.items()}
    assert totals["sessions"] == 3
    assert totals["streams"] == 3
    assert totals["broadcast_s"] == pytest.approx(1800.0)
    assert totals["watch_time_s"] == pytest.approx(sum(watch.values()))
    assert totals["peak_concurrent_viewers"] == max(concurrent)
    assert totals["peak_at"] == (T0 + timedelta(seconds=15 * concurrent.index(max(concurrent)))).isoformat()
    assert totals["chat_messages"] == 60
    assert [row["stream_id"] for row in totals["top_streams"]] == sorted(watch, key=lambda s: -watch[s])
    assert totals["top_streams"][0]["watch_time_s"] == pytest.approx(max(watch.values()))
    expected = _expected_qoe(events)
    assert totals["errors"] == expected["errors"]
    assert totals["rebuffer_ratio"] == pytest.approx(expected["rebuffer_ratio"], abs=1e-3)
