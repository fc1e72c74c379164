"""The assembler: publishes a session's transcoded chunks strictly in order (ADR 0016, 0017).

One assembler per session at a time (a lease with a fencing token, ``state.acquire_assembler``);
every step it takes is a fenced Lua script in ``state`` (``commit`` / ``skip``), so an assembler
whose lease lapsed cannot publish anything twice, and a chunk is published or a gap, never both.
S3 and MongoDB calls run outside those steps.

Per chunk the work is constant, whatever the broadcast's length:

- the segments, one PUT per rendition (immutable, deterministic bytes);
- one fenced commit: the entry goes onto the published log and the live window in Redis;
- one PUT of the current part of the published log (``<session>/log/<part>.jsonl``, at most
  ``LOG_PART_SEGMENTS`` entries): what a Redis loss recovers from;
- the masters every 10 segments.

Live media playlists are not written to S3: the origin view (``transcoding/views.py``) renders
them from the window in Redis behind the edge cache (``live_playlist``). At the end
(``advance(final=True)``) every rendition's ``index.m3u8`` (the replay, VOD) and ``live.m3u8``
(ENDLIST) are written to S3 once, from the whole log.

The path of a chunk through this module: ``advance`` -> ``_round`` (plan from ``state``) ->
``_publish_chunk`` (counters: ``mpegts``, segments: ``storage``, commit: ``state``) ->
``_published`` -> ``_checkpoint`` / ``_write_masters`` (rendering: ``hls``, PUT: ``storage``).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from livestream import metrics
from transcoding import hls, metadata, mpegts, readiness, state, storage
from transcoding.hls import Entry

logger = logging.getLogger(__name__)

# Entries per object of the published log's checkpoint in S3: the current part is rewritten
# after each round (bounded bytes), earlier parts are never written again.
LOG_PART_SEGMENTS = 60


@dataclass(frozen=True)
class Layout:
    """Where a session's objects live (see streams.playback)."""

    stream_prefix: str  # live/<stream>
    session_prefix: str  # live/<stream>/<session>
    session_id: int


def advance(layout: Layout, *, final: bool = False, force: bool = False) -> int:
    """Publish every newly settled chunk in order.

    Any worker may call it after any chunk: one at a time becomes the session's assembler; a
    caller that cannot within 2 s (60 s with ``final``) asks the holder to go round once more
    and returns. With ``final`` the replay playlists are written (ENDLIST); with ``force``
    chunks still missing are given up. Returns the number of segments published in total.
    """
    session_id = layout.session_id
    token = state.acquire_assembler(session_id, wait_s=60 if final else 2)
    if token is None:
        state.ask_assembler_again(session_id)
        return state.published_count(session_id)
    try:
        while True:
            total = _round(layout, token, force=force)
            if not state.take_again(session_id):
                break
        if final:
            write_replay(layout)
        return total
    except state.FenceLost:
        logger.warning("assembler lease lapsed: another assembler took over", extra={"session": session_id})
        return state.published_count(session_id)
    finally:
        state.release_assembler(session_id, token)


def _round(layout: Layout, token: int, *, force: bool) -> int:
    session_id = layout.session_id
    plan = state.begin_round(session_id)
    if plan.recover:
        _recover_log(layout, token)
        plan = state.begin_round(session_id)
    cursor = _Cursor(plan.last, plan.pending_disc, plan.ccstate)
    new: list[Entry] = []
    for seq in range(plan.next, plan.count):
        ready = state.take_ready(session_id, seq)
        meta = ready.meta
        if ready.outcome == "wait" and meta is not None and not force and time.time() <= meta.deadline:
            break
        if ready.outcome == "ready" and meta is not None:
            if _publish_chunk(layout, token, ready, meta=meta, epoch=plan.epoch, cursor=cursor) and cursor.last:
                new.append(cursor.last)  # set by _publish_chunk
                continue
            reason = "given up while being published"
        elif meta is None:
            reason = "chunk expired"
        else:
            reason = "forced at end of stream" if force else "missed the live deadline"
        if state.skip(session_id, token, seq, reason):
            logger.warning("chunk given up: %s", reason, extra={"session": session_id, "seq": seq})
        cursor.pending_disc = True
    last = cursor.last
    if new:
        _checkpoint(layout, last)
        _write_masters(layout, (last.index + 1) if last else 0, final=False)
        # The master and every media playlist now list these segments: once every rendition
        # has one, waiting viewers are told the stream is playable (stream.ready, ADR 0018).
        readiness.segments_published(layout, new)
    return (last.index + 1) if last else plan.published


@dataclass
class _Cursor:
    """A round's running state: the last published entry, whether the next one follows a gap,
    the continuity counters after the last published chunk."""

    last: Entry | None
    pending_disc: bool
    counters: dict[str, dict[str, int]]


def _publish_chunk(
    layout: Layout, token: int, ready: state.Ready, *, meta: state.ChunkMeta, epoch: int, cursor: _Cursor
) -> bool:
    """Continue the TS continuity counters of the chunk's segments from the previous
    published chunk, PUT them (immutable, deterministic keys: an assembler that lost its lease
    writes the same bytes) and commit (fenced). False when the chunk was not published."""
    session_id = layout.session_id
    last = cursor.last
    fixed: dict[str, bytes] = {}
    after_counters: dict[str, dict[str, int]] = {}
    for name, data in ready.outputs.items():
        start = {int(pid): cc for pid, cc in cursor.counters.get(name, {}).items()}
        fixed[name], after = mpegts.continue_counters(data, start)
        after_counters[name] = {str(pid): cc for pid, cc in after.items()}
    entry = Entry(
        index=(last.index + 1) if last else 0,
        seq=meta.seq,
        duration=round(meta.duration, 3),
        wall=meta.wall,
        disc=meta.disc or cursor.pending_disc,
        sizes={name: len(data) for name, data in fixed.items()},
        epoch=epoch,
        dseq=last.after() if last else 0,
    )
    with ThreadPoolExecutor(max_workers=len(fixed)) as pool:
        list(
            pool.map(
                lambda item: storage.put_segment(f"{layout.session_prefix}/{item[0]}/{entry.name}", item[1]),
                fixed.items(),
            )
        )
    ms = ready.transcode_ms
    result = {
        "renditions": {n: {"bytes": s} for n, s in entry.sizes.items()},
        "ms": ms,
        "at": time.time(),  # published
        "completed": meta.completed,  # the segmenter finished the chunk (ingest clock)
        "duration": entry.duration,
    }
    if state.commit(session_id, token, entry, after_counters, result) < 0:
        return False
    cursor.last, cursor.pending_disc, cursor.counters = entry, False, after_counters
    _published(layout, entry, ms)
    return True


def _published(layout: Layout, entry: Entry, transcode_ms: int) -> None:
    """Segment ``entry.seq`` is published for ALL renditions (the one place this happens):
    hooks that react to a published segment (the first one: the stream is playable) go here."""
    logger.debug("segment published", extra={"session": layout.session_id, "seq": entry.seq})
    metadata.record_chunk(layout.session_id, transcode_ms)
    metrics.segments_published(layout.session_id, [entry.wall + entry.duration])


def _log_part_key(layout: Layout, part: int) -> str:
    return f"{layout.session_prefix}/log/{part:06d}.jsonl"


def _checkpoint(layout: Layout, last: Entry | None) -> None:
    """PUT the parts of the published log that changed since the last checkpoint (usually the
    current one only, at most LOG_PART_SEGMENTS entries; a part left behind by a failed PUT is
    written again with the next one)."""
    if last is None:
        return
    session_id = layout.session_id
    done = state.checkpointed(session_id)
    first = (min(done, last.index) // LOG_PART_SEGMENTS) * LOG_PART_SEGMENTS
    entries = state.published(session_id, first)
    for part in range(first // LOG_PART_SEGMENTS, last.index // LOG_PART_SEGMENTS + 1):
        lines = [e.to_json() + "\n" for e in entries if e.index // LOG_PART_SEGMENTS == part]
        storage.put_log(_log_part_key(layout, part), "".join(lines))
    state.set_checkpointed(session_id, last.index + 1)


def _write_masters(layout: Layout, count: int, *, final: bool) -> None:
    """The session master (replay: ``index.m3u8``) and the stream's stable master (live:
    ``live.m3u8``); they change only with the measured bandwidths: early, then every 10
    segments, and at the end."""
    inputs = state.master_inputs(layout.session_id, count, final=final) if count else None
    if inputs is None:
        return
    renditions, rates, codecs, source = inputs.renditions, inputs.rates, inputs.codecs, inputs.source
    session_dir = layout.session_prefix.rsplit("/", 1)[1]
    replay = hls.render_master(renditions, rates, codecs, source, uri="{name}/index.m3u8")
    live = hls.render_master(renditions, rates, codecs, source, uri=session_dir + "/{name}/live.m3u8")
    for name, text in ((f"{layout.session_prefix}/master.m3u8", replay), (f"{layout.stream_prefix}/master.m3u8", live)):
        storage.put_playlist(name, text)


def _floor() -> int:
    return math.ceil(settings.CHUNK_SECONDS)


def write_replay(layout: Layout) -> None:
    """The end: every rendition's replay ``index.m3u8`` (VOD) and final ``live.m3u8`` (ENDLIST)
    to S3, from the whole log (once per session), then the masters. Media playlists first, so a
    master never points at a playlist that does not exist."""
    session_id = layout.session_id
    state.mark_final(session_id)
    entries = state.published(session_id)
    renditions = state.ladder(session_id)
    if not renditions or not entries:
        return
    target = max(_floor(), state.target(session_id), hls.target_duration(entries, _floor()))
    start = max(0, len(entries) - settings.PLAYLIST_WINDOW)
    live = hls.render_window(entries[start:], target=target, ended=True)
    replay = hls.render_media(entries, 0, 0, target=target, kind="event", ended=True)
    puts = [(f"{layout.session_prefix}/{r.name}/live.m3u8", live) for r in renditions]
    puts += [(f"{layout.session_prefix}/{r.name}/index.m3u8", replay) for r in renditions]
    with ThreadPoolExecutor(max_workers=len(puts)) as pool:
        list(pool.map(lambda item: storage.put_playlist(*item), puts))
    _write_masters(layout, len(entries), final=True)


def live_playlist(stream_id: int, session_id: int, rendition: str, kind: str) -> str | None:
    """A media playlist of a session being published, rendered from Redis for the origin view:
    ``live`` (the sliding window: constant work) or ``index`` (DVR: the whole log so far). None
    when the session has no such live state (ended and purged: S3 has the playlists)."""
    if state.stream_of(session_id) != stream_id:
        return None
    renditions = state.ladder(session_id) or []
    if rendition not in {r.name for r in renditions}:
        return None
    win = state.window(session_id)
    if not win.entries:
        return None
    target = max(_floor(), win.target)
    if kind == "live":
        return hls.render_window(win.entries, target=target, ended=win.final)
    return hls.render_media(state.published(session_id), 0, 0, target=target, kind="event", ended=win.final)


def _recover_log(layout: Layout, token: int) -> None:
    """After Redis lost the session's state (its numbering generation is not the first and no
    log exists), reload the published log from its checkpoint in S3 (``log/*.jsonl``; a replay
    ``index.m3u8`` for sessions written before checkpoints) so the playlists keep every segment
    published before the loss; the next segment carries a discontinuity."""
    session_id = layout.session_id
    renditions = [x.name for x in state.ladder(session_id) or []]
    if not renditions:
        return  # nothing to publish before the new generation's ladder is known
    entries: list[Entry] = []
    for name in sorted(storage.list_keys(f"{layout.session_prefix}/log/")):
        raw = storage.get_bytes(name) or b""
        entries += [Entry.from_json(line) for line in raw.decode().splitlines() if line.strip()]
    if not entries:
        for name in renditions:
            text = storage.get_bytes(f"{layout.session_prefix}/{name}/index.m3u8")
            if text is not None:
                entries = hls.parse_media(text.decode("utf-8", "replace"), renditions)
                break
    entries = hls.with_dseq(sorted({e.index: e for e in entries}.values(), key=lambda e: e.index))
    restored = state.restore_log(session_id, token, entries, hls.target_duration(entries, _floor()))
    if restored:
        state.set_checkpointed(session_id, len(entries))
    if restored and entries:
        logger.warning(
            "published log recovered from S3 (%d segments) after the live state was lost",
            len(entries),
            extra={"session": session_id},
        )


def summary(session_id: int) -> dict[str, Any]:
    """Counters for metadata: segments per rendition (as in the playlists), gaps."""
    entries = state.published(session_id)
    renditions = state.ladder(session_id) or []
    return {
        "segments": {r.name: sum(1 for e in entries if r.name in e.sizes) for r in renditions},
        "gaps": state.gap_count(session_id),
        "duration_s": round(sum(e.duration for e in entries), 3),
    }
