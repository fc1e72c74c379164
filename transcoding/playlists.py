"""HLS playlists (RFC 8216) and the assembler that publishes segments strictly in order.

Per session and rendition two media playlists are written next to the segments:

- ``<rendition>/live.m3u8``: the live sliding window (``PLAYLIST_WINDOW`` segments), referenced
  by the stream's stable master ``live/<stream>/master.m3u8``; gets ``#EXT-X-ENDLIST`` at the end.
- ``<rendition>/index.m3u8``: an ``EVENT`` playlist holding every segment so far (DVR while
  live); at the end it gets ``#EXT-X-ENDLIST`` and is the replay, referenced by the session
  master ``live/<stream>/<session>/master.m3u8``.

The assembler keeps a log of published segments in Redis (``state`` module). It advances over
settled chunks only in sequence order; a chunk that is still missing after its live deadline
is given up (a gap) and the next published segment carries ``#EXT-X-DISCONTINUITY``, so the
live edge never stalls. The first chunk of a reconnect also carries a discontinuity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
from django.conf import settings

from livestream.redis import redis_client
from transcoding import metadata, mpegts, readiness, state, storage
from transcoding.ladder import Rendition, SourceInfo
from transcoding.mpegts import aac_codec_string

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One published segment (the same seq in every rendition)."""

    index: int  # media sequence number (position in the session's published log)
    seq: int  # chunk number (names the segment files)
    duration: float
    wall: float  # ingest wall clock of the first frame, epoch seconds
    disc: bool
    sizes: dict[str, int] = field(default_factory=dict)
    epoch: int = 0  # numbering generation (state.py): part of the segment's name when not 0

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.epoch)

    def to_json(self) -> str:
        return json.dumps(
            {
                "i": self.index,
                "seq": self.seq,
                "dur": self.duration,
                "wall": self.wall,
                "disc": self.disc,
                "r": self.sizes,
                "e": self.epoch,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        d = json.loads(raw)
        return cls(d["i"], d["seq"], d["dur"], d["wall"], d["disc"], d["r"], d.get("e", 0))


def segment_name(seq: int, epoch: int = 0) -> str:
    """``seg_<seq>.ts``; after Redis lost a session's state its numbering restarts in a new
    generation, named ``seg_<epoch>_<seq>.ts`` so no published object is ever written again."""
    return f"seg_{seq:06d}.ts" if not epoch else f"seg_{epoch}_{seq:06d}.ts"


NAME_RE = re.compile(r"^seg_(?:(\d+)_)?(\d+)\.ts$")


def parse_media(text: str, renditions: list[str]) -> list[Entry]:
    """Entries of a media playlist we wrote (``index.m3u8``): how the published log of a session
    is recovered from S3 when Redis lost it. Sizes are unknown (0)."""
    entries: list[Entry] = []
    wall, duration, disc = 0.0, 0.0, False
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif (match := NAME_RE.match(line.strip())) is not None:
            epoch, seq = int(match[1] or 0), int(match[2])
            sizes = dict.fromkeys(renditions, 0)
            entries.append(Entry(len(entries), seq, duration, wall, disc, sizes, epoch))
            disc = False
    return entries


def target_duration(entries: list[Entry], floor: int) -> int:
    """EXT-X-TARGETDURATION: no segment's duration rounded to the nearest integer may exceed it."""
    longest = max((e.duration for e in entries), default=0.0)
    return max(floor, math.floor(longest + 0.5))


def _pdt(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_media(
    entries: list[Entry], window_start: int, discontinuities_before: int, *, target: int, kind: str, ended: bool
) -> str:
    """Render ``entries[window_start:]``. ``discontinuities_before`` counts the discontinuity
    tags of segments that left the window (EXT-X-DISCONTINUITY-SEQUENCE, RFC 8216 4.3.3.3)."""
    shown = entries[window_start:]
    media_sequence = shown[0].index if shown else len(entries)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuities_before:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities_before}")
    if kind == "event":
        lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if ended else "EVENT"))
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for entry in shown:
        if entry.disc and entry.index != 0:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(entry.wall)}")
        lines.append(f"#EXTINF:{entry.duration:.3f},")
        lines.append(entry.name)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def extinf_total(text: str) -> float:
    """Sum of the EXTINF durations of a media playlist."""
    return sum(float(line[8:].split(",")[0]) for line in text.splitlines() if line.startswith("#EXTINF:"))


def bandwidths(entries: list[Entry], rendition: Rendition) -> tuple[int, int]:
    """(peak, average) bits/s measured over published segments; configured values before."""
    measured = [
        (e.sizes.get(rendition.name, 0) * 8, e.duration)
        for e in entries
        if e.duration >= 0.2 and e.sizes.get(rendition.name, 0) > 0  # recovered entries: size unknown
    ]
    if not measured:
        fallback = rendition.peak_bandwidth or 1_000_000
        return fallback, int(fallback / 1.1)
    peak = max(int(bits / dur) for bits, dur in measured)
    average = int(sum(b for b, _ in measured) / sum(d for _, d in measured))
    return max(peak, average), average


def render_master(
    renditions: list[Rendition], entries: list[Entry], codecs: dict[str, str], source: SourceInfo, *, uri: str
) -> str:
    """Master playlist; ``uri`` is a template with ``{name}`` for each rendition's playlist."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio = aac_codec_string(source.audio_profile) if source.has_audio else ""
    for rendition in renditions:
        peak, average = bandwidths(entries, rendition)
        codec_list = [c for c in (codecs.get(rendition.name, "avc1.640028"), audio) if c]
        attrs = [
            f"BANDWIDTH={peak}",
            f"AVERAGE-BANDWIDTH={average}",
            f"RESOLUTION={rendition.width}x{rendition.height}",
            f'CODECS="{",".join(codec_list)}"',
        ]
        if source.fps:
            attrs.append(f"FRAME-RATE={source.fps:.3f}")
        attrs.append(f'NAME="{rendition.name}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(uri.format(name=rendition.name))
    return "\n".join(lines) + "\n"


def published(session_id: int) -> list[Entry]:
    return [Entry.from_json(raw) for raw in redis_client().lrange(state.key(session_id, "published"), 0, -1)]


@dataclass(frozen=True)
class Layout:
    """Where a session's objects live (see streams.playback)."""

    stream_prefix: str  # live/<stream>
    session_prefix: str  # live/<stream>/<session>
    session_id: int


def _settle(session_id: int, nxt: int, *, force: bool) -> str:
    """'done', 'gap', 'ready' (transcoded, to commit) or 'wait' for chunk ``nxt``; gives it up
    past its deadline (or if forced)."""
    if state.done(session_id, nxt) is not None:
        return "done"
    if state.is_gap(session_id, nxt):
        return "gap"
    if state.has_outputs(session_id, nxt):
        return "ready"
    meta = state.chunk_meta(session_id, nxt)
    overdue = meta is None or time.time() > meta.deadline
    if force or overdue:
        reason = "forced at end of stream" if force else "missed the live deadline"
        if state.mark_gap(session_id, nxt, reason):
            logger.warning("chunk given up: %s", reason, extra={"session": session_id, "seq": nxt})
            return "gap"
        return "done" if state.done(session_id, nxt) is not None else "gap"
    return "wait"


def _commit(layout: Layout, seq: int, epoch: int) -> bool:
    """Continue the TS continuity counters of chunk ``seq``'s segments from the previous
    committed chunk, PUT them (immutable, deterministic keys) and mark the chunk done. Runs under
    the assembler lock, strictly in order, so no worker ever waits for another chunk."""
    session_id = layout.session_id
    taken = state.take_outputs(session_id, seq)
    if taken is None:
        return False
    outputs, transcode_ms = taken
    previous = state.get_json(session_id, "ccstate") or {}
    counters: dict[str, dict[str, int]] = {}
    fixed: dict[str, bytes] = {}
    for name, data in outputs.items():
        start = {int(pid): cc for pid, cc in previous.get(name, {}).items()}
        fixed[name], after = mpegts.continue_counters(data, start)
        counters[name] = {str(pid): cc for pid, cc in after.items()}
    name = segment_name(seq, epoch)
    with ThreadPoolExecutor(max_workers=len(fixed)) as pool:
        list(
            pool.map(
                lambda item: storage.put_segment(f"{layout.session_prefix}/{item[0]}/{name}", item[1]),
                fixed.items(),
            )
        )
    state.set_json(session_id, "ccstate", counters)
    sizes = {name: {"bytes": len(data)} for name, data in fixed.items()}
    state.mark_done(session_id, seq, {"renditions": sizes, "ms": transcode_ms, "at": time.time()})
    state.drop_outputs(session_id, seq)
    metadata.record_chunk(session_id, transcode_ms)
    return True


def advance(layout: Layout, *, final: bool = False, force: bool = False) -> int:
    """Publish every newly settled chunk in order and rewrite the playlists.

    Serialised per session by a Redis lock (any worker may call it after any chunk). With
    ``final`` the playlists get ``#EXT-X-ENDLIST``; with ``force`` chunks still missing are
    given up. Returns the number of segments published in total.
    """
    session_id = layout.session_id
    r = redis_client()
    again = state.key(session_id, "advance_again")
    # Waiting long for the lock would pin worker processes while the holder waits for S3: a
    # caller that cannot get it soon asks the holder to go round once more, and returns.
    lock = r.lock(state.key(session_id, "assemble"), timeout=60, blocking_timeout=60 if final else 2)
    if not lock.acquire():
        r.set(again, "1", ex=60)
        return int(r.llen(state.key(session_id, "published")))
    try:
        while True:
            total = _advance_locked(layout, final=final, force=force)
            if not r.delete(again):
                return total
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _advance_locked(layout: Layout, *, final: bool, force: bool) -> int:
    session_id = layout.session_id
    r = redis_client()
    # A missing generation means Redis lost the session's state: a new one starts here.
    epoch = state.ensure_epoch(session_id)
    _recover_log(layout)
    nxt = int(r.get(state.key(session_id, "next")) or 0)
    pending_disc = r.get(state.key(session_id, "pending_disc")) == b"1"
    total = state.chunk_count(session_id)
    log_len = int(r.llen(state.key(session_id, "published")))
    new: list[Entry] = []
    while nxt < total:
        outcome = _settle(session_id, nxt, force=force)
        if outcome == "wait":
            break
        if outcome == "gap":
            pending_disc = True
            nxt += 1
            continue
        if outcome == "ready" and not _commit(layout, nxt, epoch):
            pending_disc = True
            nxt += 1
            continue
        meta = state.chunk_meta(session_id, nxt)
        result = state.done(session_id, nxt) or {}
        if meta is None:
            pending_disc = True
            nxt += 1
            continue
        entry = Entry(
            index=log_len + len(new),
            seq=nxt,
            duration=round(meta.duration, 3),
            wall=meta.wall,
            disc=meta.disc or pending_disc,
            sizes={name: int(info["bytes"]) for name, info in result.get("renditions", {}).items()},
            epoch=epoch,
        )
        new.append(entry)
        pending_disc = False
        nxt += 1
    pipe = r.pipeline()
    for entry in new:
        pipe.rpush(state.key(session_id, "published"), entry.to_json())
    pipe.set(state.key(session_id, "next"), nxt, ex=settings.PIPELINE_STATE_TTL_SECONDS)
    pipe.set(
        state.key(session_id, "pending_disc"), "1" if pending_disc else "0", ex=settings.PIPELINE_STATE_TTL_SECONDS
    )
    pipe.expire(state.key(session_id, "published"), settings.PIPELINE_STATE_TTL_SECONDS)
    pipe.execute()
    entries = published(session_id)
    if new or final:
        write_playlists(layout, entries, ended=final)
    readiness.segments_published(layout, new)  # stream.ready once every rendition is listed (issue 14)
    for entry in new:
        logger.debug("segment published", extra={"session": session_id, "seq": entry.seq})
    return len(entries)


def _recover_log(layout: Layout) -> None:
    """After Redis lost the session's state (its numbering generation is not the first and no
    log exists), reload the published log from the session's ``index.m3u8`` in S3 so the
    playlists keep every segment published before the loss; the next segment carries a
    discontinuity. Runs under the assembler lock."""
    session_id = layout.session_id
    r = redis_client()
    marker = state.key(session_id, "recovered")
    if not state.epoch(session_id) or r.exists(marker) or r.exists(state.key(session_id, "published")):
        return
    renditions = [x.name for x in state.ladder(session_id) or []]
    if not renditions:
        return  # nothing to publish before the new generation's ladder is known
    entries: list[Entry] = []
    for name in renditions:
        text = storage.get_bytes(f"{layout.session_prefix}/{name}/index.m3u8")
        if text is not None:
            entries = parse_media(text.decode("utf-8", "replace"), renditions)
            break
    pipe = r.pipeline()
    for entry in entries:
        pipe.rpush(state.key(session_id, "published"), entry.to_json())
    if entries:
        pipe.set(state.key(session_id, "pending_disc"), "1", ex=settings.PIPELINE_STATE_TTL_SECONDS)
    pipe.set(marker, str(len(entries)), ex=settings.PIPELINE_STATE_TTL_SECONDS)
    pipe.execute()
    if entries:
        logger.warning(
            "published log recovered from S3 (%d segments) after the live state was lost",
            len(entries),
            extra={"session": session_id},
        )


def write_playlists(layout: Layout, entries: list[Entry], *, ended: bool) -> None:
    """PUT media playlists of every rendition, then the masters (so a master never points at a
    playlist that does not exist yet)."""
    session_id = layout.session_id
    renditions = state.ladder(session_id)
    source = state.source(session_id)
    if not renditions or source is None or not entries:
        return
    r = redis_client()
    floor = math.ceil(settings.CHUNK_SECONDS)
    target = max(target_duration(entries, floor), int(r.get(state.key(session_id, "target")) or 0))
    r.set(state.key(session_id, "target"), target, ex=settings.PIPELINE_STATE_TTL_SECONDS)
    window_start = max(0, len(entries) - settings.PLAYLIST_WINDOW)
    # Discontinuity tags that left the window with their segments (RFC 8216 4.3.3.3).
    disc_before = sum(1 for e in entries[:window_start] if e.disc and e.index != 0)
    live = {
        r.name: render_media(entries, window_start, disc_before, target=target, kind="live", ended=ended)
        for r in renditions
    }
    event = {r.name: render_media(entries, 0, 0, target=target, kind="event", ended=ended) for r in renditions}
    puts = [(f"{layout.session_prefix}/{name}/live.m3u8", text) for name, text in live.items()]
    puts += [(f"{layout.session_prefix}/{name}/index.m3u8", text) for name, text in event.items()]
    with ThreadPoolExecutor(max_workers=len(puts)) as pool:
        list(pool.map(lambda item: storage.put_playlist(*item), puts))
    # Masters change only with the measured bandwidths: refresh them early, then now and then.
    written = r.exists(state.key(session_id, "masters"))
    if written and not ended and len(entries) % 10:
        return
    r.set(state.key(session_id, "masters"), "1", ex=settings.PIPELINE_STATE_TTL_SECONDS)
    codecs = state.codecs(session_id)
    storage.put_playlist(
        f"{layout.session_prefix}/master.m3u8",
        render_master(renditions, entries, codecs, source, uri="{name}/index.m3u8"),
    )
    session_dir = layout.session_prefix.rsplit("/", 1)[1]
    storage.put_playlist(
        f"{layout.stream_prefix}/master.m3u8",
        render_master(renditions, entries, codecs, source, uri=session_dir + "/{name}/live.m3u8"),
    )


def summary(session_id: int) -> dict[str, Any]:
    """Counters for metadata: segments per rendition (as in the playlists), gaps."""
    entries = published(session_id)
    renditions = state.ladder(session_id) or []
    gaps = sum(1 for seq in range(state.chunk_count(session_id)) if state.is_gap(session_id, seq))
    return {
        "segments": {r.name: sum(1 for e in entries if r.name in e.sizes) for r in renditions},
        "gaps": gaps,
        "duration_s": round(sum(e.duration for e in entries), 3),
    }
