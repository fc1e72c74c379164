"""Follow MongoDB analytics changes and feed them to live dashboards.

``follow()`` prefers MongoDB change streams (``db.watch()``: replica sets and sharded
clusters). Where the server cannot (a standalone ``mongod`` answers "only supported on replica
sets", mongomock raises NotImplementedError) it falls back to polling. Either way each new
document becomes one event on the stream's channel-layer group through
``livestream.events.send_event_on_commit`` (the only broadcaster), for the stream's OWNER only
(group ``stream.<id>.owner``, relayed to the owner's analytics socket ``/ws/streams/<id>/owner/``;
never to the public ``stream.<id>`` room that every watch page, anonymous ones included, hears):

- ``ingest_samples``   -> ``analytics.ingest``   (bitrate, fps, lag per rendition, queue depth)
- ``viewer_samples``   -> ``analytics.viewers``  (viewers, per rendition)
- ``session_metadata`` -> ``analytics.session``  (probed source, counters) - change streams only

Polling sees inserts (ObjectIds are time-ordered), not in-place updates, so the session
metadata feed needs change streams; the live health panel polls its API as well.
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure

from analytics.aggregations import as_utc
from analytics.documents import IngestSample, ViewerSample
from livestream import events, metrics

logger = logging.getLogger(__name__)

EVENT_NAMES = {
    "ingest_samples": "analytics.ingest",
    "viewer_samples": "analytics.viewers",
    "session_metadata": "analytics.session",
}
POLLED = ("ingest_samples", "viewer_samples")
# Server answers meaning "no change streams here" (standalone server, old storage engine).
_UNSUPPORTED_CODES = frozenset({40573, 40324, 115})

Publisher = Callable[[int, str, dict[str, Any]], None]
Stop = Callable[[], bool]


class ChangeStreamsUnsupportedError(Exception):
    """The server cannot watch changes; poll instead."""


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if isinstance(value, datetime) else value  # type: ignore[union-attr]


def to_event(collection: str, doc: dict[str, Any]) -> tuple[int, str, dict[str, Any]] | None:
    """(stream id, event name, payload) for a changed document; None if it has no stream."""
    stream_id = doc.get("stream_id")
    name = EVENT_NAMES.get(collection)
    if not isinstance(stream_id, int) or name is None:
        return None
    if collection == "ingest_samples":
        fields: tuple[str, ...] = ("session_id", "at", "bitrate", "fps", "keyframe_interval_s", "dropped_chunks")
        data = {key: _iso(doc.get(key)) for key in (*fields, "late_chunks")}
        data["lag_s"] = dict(doc.get("lag_s") or {})
        data["queue_depth"] = doc.get("queue_depth")
    elif collection == "viewer_samples":
        data = {
            "session_id": doc.get("session_id"),
            "at": _iso(doc.get("at")),
            "viewers": doc.get("viewers"),
            "per_rendition": dict(doc.get("per_rendition") or {}),
        }
    else:
        data = {
            key: doc.get(key)
            for key in ("session_id", "video_codec", "width", "height", "fps", "chunks", "gaps", "reconnects")
        }
    return stream_id, name, data


def publish(stream_id: int, name: str, data: dict[str, Any]) -> None:
    events.send_event_on_commit(stream_id, name, data, audience="owner")


def _emit(collection: str, doc: dict[str, Any], publisher: Publisher) -> bool:
    event = to_event(collection, doc)
    if event is None:
        return False
    publisher(*event)
    metrics.change_emitted(collection)
    return True


def watch_changes(*, publisher: Publisher, stop: Stop) -> int:
    """Follow inserts/updates with a change stream until ``stop()``; returns events sent.

    Raises ChangeStreamsUnsupportedError when the server (or mongomock) cannot watch.
    """
    db = IngestSample._get_db()
    pipeline = [
        {"$match": {"operationType": {"$in": ["insert", "update", "replace"]}, "ns.coll": {"$in": list(EVENT_NAMES)}}}
    ]
    if getattr(type(db), "watch", None) is None:  # mongomock: no change streams at all
        raise ChangeStreamsUnsupportedError(f"{type(db).__module__}.{type(db).__name__} has no watch()")
    sent = 0
    try:
        with db.watch(pipeline, full_document="updateLookup", max_await_time_ms=1000) as stream:
            logger.info("following MongoDB changes with a change stream")
            while not stop():
                change = stream.try_next()
                if change is None:
                    continue
                doc = change.get("fullDocument")
                if doc and _emit(change["ns"]["coll"], doc, publisher):
                    sent += 1
    except NotImplementedError as exc:
        raise ChangeStreamsUnsupportedError(str(exc) or "watch() not implemented") from exc
    except OperationFailure as exc:
        if exc.code in _UNSUPPORTED_CODES or "replica set" in str(exc).lower():
            raise ChangeStreamsUnsupportedError(str(exc)) from exc
        raise
    return sent


class Poller:
    """Finds documents inserted since the previous poll in the polled collections.

    ObjectIds start with their creation second, so each poll asks for ids from a few seconds
    before the previous poll (ids made by other processes within one second are not ordered)
    and skips the ids it has already sent.
    """

    def __init__(self, *, overlap_s: float = 5.0, batch: int = 1000, now: datetime | None = None) -> None:
        self.overlap = timedelta(seconds=overlap_s)
        self.batch = batch
        self.since = now or datetime.now(UTC)
        self.seen: dict[ObjectId, datetime] = {}
        self.collections: dict[str, Any] = {"ingest_samples": IngestSample, "viewer_samples": ViewerSample}

    def poll_once(self, publisher: Publisher) -> int:
        started = datetime.now(UTC)
        floor = ObjectId.from_datetime(self.since - self.overlap)
        sent = 0
        for name, document in self.collections.items():
            cursor = document._get_collection().find({"_id": {"$gte": floor}}).sort("_id", 1).limit(self.batch)
            for doc in cursor:
                if doc["_id"] in self.seen:
                    continue
                self.seen[doc["_id"]] = started
                if _emit(name, doc, publisher):
                    sent += 1
        self.since = started
        cutoff = started - 2 * self.overlap
        self.seen = {oid: at for oid, at in self.seen.items() if at >= cutoff}
        return sent


def poll_changes(*, publisher: Publisher, stop: Stop, interval_s: float, poller: Poller | None = None) -> int:
    """Poll every ``interval_s`` until ``stop()``; returns events sent."""
    poller = poller or Poller()
    logger.info("following MongoDB changes by polling", extra={"ctx": {"interval_s": interval_s}})
    sent = 0
    while not stop():
        sent += poller.poll_once(publisher)
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline and not stop():
            time.sleep(min(0.1, interval_s))
    return sent


def follow(*, mode: str = "auto", interval_s: float = 1.0, stop: Stop, publisher: Publisher = publish) -> str:
    """Follow changes until ``stop()``. ``mode``: "watch" (change streams only), "poll", or
    "auto" (change streams, polling when unsupported). Returns the mode that ran."""
    if mode in ("auto", "watch"):
        try:
            watch_changes(publisher=publisher, stop=stop)
        except ChangeStreamsUnsupportedError as exc:
            if mode == "watch":
                raise
            logger.warning(
                "MongoDB change streams unsupported here (%s); falling back to polling every %.1f s", exc, interval_s
            )
        else:
            return "watch"
    poll_changes(publisher=publisher, stop=stop, interval_s=interval_s)
    return "poll"
