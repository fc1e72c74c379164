"""MongoDB aggregation pipelines behind every analytics number.

Each function runs pipelines on the collections of ``analytics.documents`` and returns plain
Python values (dicts, lists of dicts) that views and the API serialise as they are. The
pipelines use only operators that both MongoDB and mongomock (the tests) implement: time
buckets are integer arithmetic on ``{"$subtract": [date, epoch]}`` (milliseconds since the
epoch) and days are ``$dateToString``; no ``$dateTrunc``/``$median``/``$map``.

Definitions (docs/analytics.md repeats them for users of the numbers):

- watch time: sum over viewer samples of ``viewers * interval_s`` (viewer-seconds);
- average viewers: watch time / sampled seconds (time-weighted mean of the samples);
- peak viewers: the largest sample;
- rebuffer ratio: stalled seconds / (played seconds + stalled seconds), from the players'
  ``rebuffer`` and ``heartbeat`` reports;
- startup time: mean of the players' ``startup`` reports (seconds from load to first frame).

Reads only; no side effects. Callers check ``livestream.mongo.is_enabled()`` first.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.documents import ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample

# Naive on purpose: pymongo treats naive datetimes as UTC, and mongomock stores naive ones.
_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001

Pipeline = list[dict[str, Any]]


def as_utc(value: datetime | None) -> datetime | None:
    """Datetimes from MongoDB as aware UTC (mongomock and tz-naive clients return naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ms_since_epoch(field: str) -> dict[str, Any]:
    return {"$subtract": [f"${field}", _EPOCH]}


def bucket_expr(field: str, seconds: int) -> dict[str, Any]:
    """Expression: start of the ``seconds``-long bucket holding ``field``, in ms since epoch."""
    since = _ms_since_epoch(field)
    return {"$subtract": [since, {"$mod": [since, seconds * 1000]}]}


def _bucket_time(ms: float) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _aggregate(document: Any, pipeline: Pipeline) -> list[dict[str, Any]]:
    return list(document._get_collection().aggregate(pipeline))


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


# --- Per session ------------------------------------------------------------------------------


def session_viewers(session_id: int) -> dict[str, Any]:
    """Peak and time-weighted average viewers, watch time and sampled seconds of a session."""
    rows = _aggregate(
        ViewerSample,
        [
            {"$match": {"session_id": session_id}},
            {
                "$group": {
                    "_id": None,
                    "peak": {"$max": "$viewers"},
                    "watch_s": {"$sum": {"$multiply": ["$viewers", "$interval_s"]}},
                    "sampled_s": {"$sum": "$interval_s"},
                    "samples": {"$sum": 1},
                }
            },
        ],
    )
    if not rows:
        return {"peak_viewers": 0, "avg_viewers": 0.0, "watch_time_s": 0.0, "sampled_s": 0.0, "samples": 0}
    row = rows[0]
    watch, sampled = float(row["watch_s"]), float(row["sampled_s"])
    return {
        "peak_viewers": int(row["peak"] or 0),
        "avg_viewers": round(watch / sampled, 3) if sampled else 0.0,
        "watch_time_s": round(watch, 3),
        "sampled_s": round(sampled, 3),
        "samples": int(row["samples"]),
    }


def session_chat(session_id: int) -> dict[str, Any]:
    """Chat messages, deleted messages and the busiest period's chatter count of a session."""
    rows = _aggregate(
        ChatStats,
        [
            {"$match": {"session_id": session_id}},
            {
                "$group": {
                    "_id": None,
                    "messages": {"$sum": "$messages"},
                    "deleted": {"$sum": "$deleted"},
                    "peak_chatters": {"$max": "$chatters"},
                }
            },
        ],
    )
    row = rows[0] if rows else {}
    return {
        "chat_messages": int(row.get("messages") or 0),
        "chat_deleted": int(row.get("deleted") or 0),
        "peak_chatters": int(row.get("peak_chatters") or 0),
    }


def _qoe_by_kind(match: dict[str, Any]) -> dict[str, dict[str, float]]:
    rows = _aggregate(
        PlaybackEvent,
        [
            {"$match": match},
            {
                "$group": {
                    "_id": "$kind",
                    "n": {"$sum": 1},
                    "total": {"$sum": {"$ifNull": ["$value", 0]}},
                }
            },
        ],
    )
    return {row["_id"]: {"n": float(row["n"]), "total": float(row["total"])} for row in rows}


def _qoe_numbers(kinds: dict[str, dict[str, float]]) -> dict[str, Any]:
    def get(kind: str, key: str) -> float:
        return kinds.get(kind, {}).get(key, 0.0)

    played, stalled = get("heartbeat", "total"), get("rebuffer", "total")
    startups, latencies = get("startup", "n"), get("latency", "n")
    return {
        "startup_s": round(get("startup", "total") / startups, 3) if startups else None,
        "startups": int(startups),
        "played_s": round(played, 3),
        "rebuffer_s": round(stalled, 3),
        "rebuffers": int(get("rebuffer", "n")),
        "rebuffer_ratio": _ratio(stalled, played + stalled),
        "latency_s": round(get("latency", "total") / latencies, 3) if latencies else None,
        "switches": int(get("switch", "n")),
        "errors": int(get("error", "n")),
    }


def session_qoe(session_id: int) -> dict[str, Any]:
    """Player experience of a session: startup time, rebuffer ratio, distance from live, errors."""
    return _qoe_numbers(_qoe_by_kind({"session_id": session_id}))


def session_renditions(session_id: int) -> list[dict[str, Any]]:
    """Player experience per rendition (events carry the rendition playing at the time), with
    the number of distinct players that reported it. Sorted by played seconds, most first."""
    rows = _aggregate(
        PlaybackEvent,
        [
            {"$match": {"session_id": session_id, "rendition": {"$nin": [None, ""]}}},
            {
                "$group": {
                    "_id": {"rendition": "$rendition", "kind": "$kind"},
                    "n": {"$sum": 1},
                    "total": {"$sum": {"$ifNull": ["$value", 0]}},
                    "viewers": {"$addToSet": "$viewer_id"},
                }
            },
        ],
    )
    by_rendition: dict[str, dict[str, dict[str, float]]] = {}
    viewers: dict[str, set[str]] = {}
    for row in rows:
        name = row["_id"]["rendition"]
        by_rendition.setdefault(name, {})[row["_id"]["kind"]] = {"n": float(row["n"]), "total": float(row["total"])}
        viewers.setdefault(name, set()).update(v for v in row["viewers"] if v)
    result = [
        {"rendition": name, "viewers": len(viewers[name]), **_qoe_numbers(kinds)}
        for name, kinds in by_rendition.items()
    ]
    return sorted(result, key=lambda r: (-r["played_s"], r["rendition"]))


def session_summary(session_id: int, *, duration_s: float) -> dict[str, Any]:
    """Everything the session page shows in one dict.

    ``duration_s`` comes from PostgreSQL (the session row is the authority on start and end);
    gaps and the probed source come from the pipeline's ``SessionMetadata`` when it exists.
    """
    meta = SessionMetadata.objects(session_id=session_id).first()
    summary: dict[str, Any] = {"session_id": session_id, "duration_s": round(duration_s, 3)}
    summary.update(session_viewers(session_id))
    summary.update(session_chat(session_id))
    summary.update(session_qoe(session_id))
    summary["gaps"] = int(meta.gaps or 0) if meta else 0
    summary["source"] = _source(meta) if meta else None
    return summary


def _source(meta: SessionMetadata) -> dict[str, Any]:
    return {
        "video_codec": meta.video_codec,
        "video_profile": meta.video_profile,
        "width": meta.width,
        "height": meta.height,
        "fps": meta.fps,
        "video_bitrate": meta.video_bitrate,
        "audio_codec": meta.audio_codec,
        "audio_channels": meta.audio_channels,
        "audio_sample_rate": meta.audio_sample_rate,
        "chunks": meta.chunks,
        "reconnects": meta.reconnects,
        "renditions": [
            {
                "name": r.name,
                "width": r.width,
                "height": r.height,
                "video_bitrate": r.video_bitrate,
                "codecs": r.codecs,
                "segments": r.segments,
                "gaps": r.gaps,
            }
            for r in meta.renditions
        ],
    }


# --- Time series for charts -----------------------------------------------------------------------


def viewer_series(session_id: int, *, bucket_s: int = 60) -> list[dict[str, Any]]:
    """Viewers per ``bucket_s`` bucket: time-weighted mean and peak, oldest first."""
    rows = _aggregate(
        ViewerSample,
        [
            {"$match": {"session_id": session_id}},
            {
                "$group": {
                    "_id": bucket_expr("at", bucket_s),
                    "peak": {"$max": "$viewers"},
                    "watch_s": {"$sum": {"$multiply": ["$viewers", "$interval_s"]}},
                    "sampled_s": {"$sum": "$interval_s"},
                }
            },
            {"$sort": {"_id": 1}},
        ],
    )
    return [
        {
            "at": _bucket_time(row["_id"]).isoformat(),
            "avg": round(row["watch_s"] / row["sampled_s"], 3) if row["sampled_s"] else 0.0,
            "peak": int(row["peak"] or 0),
        }
        for row in rows
    ]


def ingest_series(session_id: int, *, bucket_s: int = 10) -> list[dict[str, Any]]:
    """Ingest health per bucket: mean bitrate and fps, worst lag of any rendition, dropped and
    late chunks so far (the counters are cumulative), deepest queue. Oldest first."""
    rows = _aggregate(
        IngestSample,
        [
            {"$match": {"session_id": session_id}},
            {"$addFields": {"_lags": {"$objectToArray": {"$ifNull": ["$lag_s", {}]}}}},
            {"$addFields": {"_max_lag": {"$max": "$_lags.v"}}},
            {
                "$group": {
                    "_id": bucket_expr("at", bucket_s),
                    "bitrate": {"$avg": "$bitrate"},
                    "fps": {"$avg": "$fps"},
                    "lag": {"$max": "$_max_lag"},
                    "dropped": {"$max": {"$ifNull": ["$dropped_chunks", 0]}},
                    "late": {"$max": {"$ifNull": ["$late_chunks", 0]}},
                    "queue": {"$max": "$queue_depth"},
                }
            },
            {"$sort": {"_id": 1}},
        ],
    )
    return [
        {
            "at": _bucket_time(row["_id"]).isoformat(),
            "bitrate": round(row["bitrate"]) if row["bitrate"] is not None else None,
            "fps": round(row["fps"], 3) if row["fps"] is not None else None,
            "lag_s": round(row["lag"], 3) if row["lag"] is not None else None,
            "dropped": int(row["dropped"]),
            "late": int(row["late"]),
            "queue": row["queue"],
        }
        for row in rows
    ]


# --- Per stream over days ------------------------------------------------------------------------


def _day_expr(field: str) -> dict[str, Any]:
    return {"$dateToString": {"format": "%Y-%m-%d", "date": f"${field}"}}


def stream_history(stream_id: int, *, days: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per UTC day for the last ``days`` days (today included, zeros where nothing
    happened): sessions, broadcast seconds, peak viewers, watch time, chat messages, player
    startup and rebuffer ratio. Oldest first."""
    now = now or datetime.now(UTC)
    first_day = (now - timedelta(days=days - 1)).date()
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    match = {"stream_id": stream_id}
    sessions = _aggregate(
        SessionMetadata,
        [
            {"$match": {**match, "started_at": {"$gte": since}}},
            {
                "$group": {
                    "_id": _day_expr("started_at"),
                    "sessions": {"$sum": 1},
                    "broadcast_s": {"$sum": {"$ifNull": ["$duration_s", 0]}},
                    "gaps": {"$sum": {"$ifNull": ["$gaps", 0]}},
                }
            },
        ],
    )
    viewers = _aggregate(
        ViewerSample,
        [
            {"$match": {**match, "at": {"$gte": since}}},
            {
                "$group": {
                    "_id": _day_expr("at"),
                    "peak": {"$max": "$viewers"},
                    "watch_s": {"$sum": {"$multiply": ["$viewers", "$interval_s"]}},
                }
            },
        ],
    )
    chat = _aggregate(
        ChatStats,
        [
            {"$match": {**match, "at": {"$gte": since}}},
            {"$group": {"_id": _day_expr("at"), "n": {"$sum": "$messages"}}},
        ],
    )
    qoe = _aggregate(
        PlaybackEvent,
        [
            {"$match": {**match, "at": {"$gte": since}, "kind": {"$in": ["startup", "heartbeat", "rebuffer"]}}},
            {
                "$group": {
                    "_id": {"day": _day_expr("at"), "kind": "$kind"},
                    "n": {"$sum": 1},
                    "total": {"$sum": {"$ifNull": ["$value", 0]}},
                }
            },
        ],
    )
    by_day: dict[str, dict[str, Any]] = {}
    for offset in range(days):
        day = (first_day + timedelta(days=offset)).isoformat()
        by_day[day] = {
            "day": day,
            "sessions": 0,
            "broadcast_s": 0.0,
            "gaps": 0,
            "peak_viewers": 0,
            "watch_time_s": 0.0,
            "chat_messages": 0,
            "startup_s": None,
            "rebuffer_ratio": None,
        }
    for row in sessions:
        if row["_id"] in by_day:
            by_day[row["_id"]].update(
                sessions=int(row["sessions"]), broadcast_s=round(row["broadcast_s"], 3), gaps=int(row["gaps"])
            )
    for row in viewers:
        if row["_id"] in by_day:
            by_day[row["_id"]].update(peak_viewers=int(row["peak"] or 0), watch_time_s=round(row["watch_s"], 3))
    for row in chat:
        if row["_id"] in by_day:
            by_day[row["_id"]]["chat_messages"] = int(row["n"])
    kinds: dict[str, dict[str, dict[str, float]]] = {}
    for row in qoe:
        kinds.setdefault(row["_id"]["day"], {})[row["_id"]["kind"]] = {"n": row["n"], "total": row["total"]}
    for day, day_kinds in kinds.items():
        if day in by_day:
            numbers = _qoe_numbers(day_kinds)
            by_day[day].update(startup_s=numbers["startup_s"], rebuffer_ratio=numbers["rebuffer_ratio"])
    return list(by_day.values())


# --- Platform -------------------------------------------------------------------------------------


def platform_totals(*, since: datetime, sample_s: int, top: int = 10) -> dict[str, Any]:
    """Staff view of the whole platform since ``since``: sessions, broadcast and watch hours,
    the highest concurrent viewers summed over all streams (samples aligned to ``sample_s``
    buckets), chat messages, player experience and the ``top`` streams by watch time."""
    sessions = _aggregate(
        SessionMetadata,
        [
            {"$match": {"started_at": {"$gte": since}}},
            {
                "$group": {
                    "_id": None,
                    "sessions": {"$sum": 1},
                    "broadcast_s": {"$sum": {"$ifNull": ["$duration_s", 0]}},
                    "streams": {"$addToSet": "$stream_id"},
                }
            },
        ],
    )
    viewer_facets = _aggregate(
        ViewerSample,
        [
            {"$match": {"at": {"$gte": since}}},
            {
                "$facet": {
                    "totals": [
                        {
                            "$group": {
                                "_id": None,
                                "watch_s": {"$sum": {"$multiply": ["$viewers", "$interval_s"]}},
                            }
                        }
                    ],
                    "peak": [
                        {"$group": {"_id": bucket_expr("at", sample_s), "viewers": {"$sum": "$viewers"}}},
                        {"$sort": {"viewers": -1, "_id": 1}},
                        {"$limit": 1},
                    ],
                    "top": [
                        {
                            "$group": {
                                "_id": "$stream_id",
                                "watch_s": {"$sum": {"$multiply": ["$viewers", "$interval_s"]}},
                                "peak": {"$max": "$viewers"},
                            }
                        },
                        {"$sort": {"watch_s": -1, "_id": 1}},
                        {"$limit": top},
                    ],
                }
            },
        ],
    )
    chat = _aggregate(
        ChatStats, [{"$match": {"at": {"$gte": since}}}, {"$group": {"_id": None, "n": {"$sum": "$messages"}}}]
    )
    facets = viewer_facets[0] if viewer_facets else {"totals": [], "peak": [], "top": []}
    srow = sessions[0] if sessions else {"sessions": 0, "broadcast_s": 0.0, "streams": []}
    peak = facets["peak"][0] if facets["peak"] else None
    return {
        "since": since.isoformat(),
        "sessions": int(srow["sessions"]),
        "streams": len(srow["streams"]),
        "broadcast_s": round(float(srow["broadcast_s"]), 3),
        "watch_time_s": round(float(facets["totals"][0]["watch_s"]), 3) if facets["totals"] else 0.0,
        "peak_concurrent_viewers": int(peak["viewers"]) if peak else 0,
        "peak_at": _bucket_time(peak["_id"]).isoformat() if peak else None,
        "chat_messages": int(chat[0]["n"]) if chat else 0,
        **_qoe_numbers(_qoe_by_kind({"at": {"$gte": since}})),
        "top_streams": [
            {"stream_id": int(row["_id"]), "watch_time_s": round(row["watch_s"], 3), "peak_viewers": int(row["peak"])}
            for row in facets["top"]
        ],
    }


# --- Live ---------------------------------------------------------------------------------------


def latest_ingest(session_id: int, *, window_s: int = 60) -> dict[str, Any] | None:
    """The newest ingest health sample of a session as a dict, or None. ``new_dropped`` and
    ``new_late`` are how much the cumulative counters rose over the last ``window_s`` seconds
    (against the newest sample at least that old; against zero when there is none)."""
    sample = IngestSample.objects(session_id=session_id).order_by("-at").first()
    if sample is None:
        return None
    earlier = (
        IngestSample.objects(session_id=session_id, at__lte=sample.at - timedelta(seconds=window_s))
        .order_by("-at")
        .first()
    )
    return {
        "new_dropped": (sample.dropped_chunks or 0) - ((earlier.dropped_chunks or 0) if earlier else 0),
        "new_late": (sample.late_chunks or 0) - ((earlier.late_chunks or 0) if earlier else 0),
        "at": as_utc(sample.at).isoformat() if sample.at else None,  # type: ignore[union-attr]
        "bitrate": sample.bitrate,
        "fps": sample.fps,
        "keyframe_interval_s": sample.keyframe_interval_s,
        "dropped_chunks": sample.dropped_chunks,
        "late_chunks": sample.late_chunks,
        "lag_s": dict(sample.lag_s or {}),
        "queue_depth": sample.queue_depth,
    }
