"""The assembler: publishes a session's transcoded chunks strictly in order (ADR 0016, 0017).

One assembler per session at a time: ``state.Assembly`` holds a lease with a fencing token, and
every step it takes is one fenced Lua script (``Assembly.step``), so an assembler whose lease
lapsed cannot publish anything twice, and a chunk is published or a gap, never both. S3 and
MongoDB calls run between steps, never inside one.

The assembler alternates a step (Redis, one round trip) and a pass (this module):

    step: commit what the last pass staged; read the ready chunks, the log part, the masters' inputs
    pass: continue the TS counters (``mpegts``), render the playlists due (``hls``), PUT all of it
          (``storage``), stage the commits; then the hooks of the commits (metadata, metrics,
          ``readiness``)

until a step with nothing staged releases the session. Per chunk the work is constant,
whatever the broadcast's length: one PUT per rendition (immutable, deterministic bytes), one
PUT of the current part of the published log (``<session>/log/<part>.jsonl``, at most
``state.LOG_PART_SEGMENTS`` entries: what a Redis loss recovers from), the masters every 10
segments, and two or three steps.

Live media playlists are not written to S3: the origin view (``transcoding/views.py``) renders
them from the window in Redis behind the edge cache (``live_playlist``). At the end
(``advance(final=True)``) every rendition's ``index.m3u8`` (the replay, VOD) and ``live.m3u8``
(ENDLIST) are written to S3 once, from the whole log.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from livestream import metrics
from transcoding import hls, metadata, mpegts, readiness, state, storage
from transcoding.hls import Entry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a session's objects live (see streams.playback)."""

    stream_prefix: str  # live/<stream>
    session_prefix: str  # live/<stream>/<session>-<tag>
    session_id: int


def advance(layout: Layout, *, final: bool = False, force: bool = False) -> int:
    """Publish every newly settled chunk in order; returns how many segments are published.

    Any worker may call it after any chunk. One at a time holds the session (``state.Assembly``);
    a caller that finds it held asks the holder to go round once more and returns at once (with
    ``final`` it waits up to 60 s to hold it itself). Each pass works on what the previous step
    read and stages what the next step applies: the chunk path is
    ``state`` (outputs) -> ``mpegts`` (counters) -> ``hls`` (text) -> ``storage`` (S3) -> ``state``
    (commit). With ``final`` the session's replay and ENDLIST playlists are written; with
    ``force`` chunks still missing are given up.
    """
    assembly = state.Assembly(layout.session_id, wait_s=60 if final else 0)
    step: state.Step | None = None
    with assembly:
        while True:
            staged = _pass(layout, step, final=final, force=force)
            try:
                step = assembly.step(staged)
            except state.FenceLost as lost:
                logger.warning(
                    "assembler lease lapsed: another assembler took over", extra={"session": layout.session_id}
                )
                return lost.published
            if not step.holding:
                return step.published


def _pass(  # noqa: PLR0912, PLR0915 - one pass reads top to bottom in the order a frame travels
    layout: Layout, step: state.Step | None, *, final: bool, force: bool
) -> state.Staged:
    """One pass over what ``step`` read, in the order a frame travels: the ready chunks'
    segments get their continuity counters (``mpegts``), the playlists due are rendered
    (``hls``), both go to S3 with the log checkpoint (``storage``); what was published or given
    up is staged for the next step to commit. Then the hooks of what ``step`` committed:
    metadata, metrics, and ``stream.ready`` once the masters list a segment of every rendition."""
    staged = state.Staged()
    if step is None:  # the first step only reads
        return staged
    session_id, prefix = layout.session_id, layout.session_prefix
    last, pending_disc, counters = step.last, step.pending_disc, step.ccstate
    segments: list[tuple[str, bytes]] = []
    for chunk in step.chunks:
        meta = chunk.meta
        if chunk.outputs is not None and meta is not None:
            entry = Entry(
                index=(last.index + 1) if last else step.published,
                seq=meta.seq,
                duration=round(meta.duration, 3),
                wall=_wall(chunk, meta, last, disc=meta.disc or pending_disc),
                disc=meta.disc or pending_disc,
                sizes={name: len(data) for name, data in chunk.outputs.items()},
                epoch=step.epoch,
                dseq=last.after() if last else 0,
                inits=dict(chunk.inits),
            )
            after: dict[str, dict[str, int]] = {}
            for name, data in chunk.outputs.items():
                end: dict[int, int] = {}
                if chunk.inits:  # CMAF (low latency): tfdt carries the timeline, no counters
                    fixed = data
                else:
                    fixed, end = mpegts.continue_counters(
                        data, {int(p): cc for p, cc in counters.get(name, {}).items()}
                    )
                after[name] = {str(pid): cc for pid, cc in end.items()}
                if fixed:  # a rung shed under overload has no segment (EXT-X-GAP)
                    segments.append((f"{name}/{entry.name}", fixed))
            record = {
                "renditions": {n: {"bytes": s} for n, s in entry.sizes.items()},
                "ms": chunk.transcode_ms,
                "at": time.time(),  # published
                "completed": meta.completed,  # the segmenter finished the chunk (ingest clock)
                "duration": entry.duration,
            }
            staged.publish(entry, after, record, chunk.transcode_ms)
            last, pending_disc, counters = entry, False, after
            continue
        if chunk.gap:
            reason = "given up"
        elif meta is None:
            reason = "chunk expired"
        elif force or time.time() > meta.deadline:
            reason = "forced at end of stream" if force else "missed the live deadline"
        else:
            break  # not transcoded yet, still in time
        if not chunk.gap:
            logger.warning("chunk given up: %s", reason, extra={"session": session_id, "seq": chunk.seq})
        staged.give_up(chunk.seq, reason)
        pending_disc = True
    # Playable once a segment lists every rendition with bytes for the source (a rung shed under
    # overload is listed with EXT-X-GAP; players take that segment from another rung).
    names = [r.name for r in step.ladder]
    needed = [r.name for r in step.ladder if r.copy] or names
    staged.claim_ready = bool(names) and any(
        all(n in e.sizes for n in names) and all(e.sizes[n] for n in needed) for e, _ in staged.published
    )
    nothing_left = not staged.decisions and not step.chunks and not step.recover
    staged.finish = final and nothing_left and not step.final and not step.replay

    # Playlists due after what ``step`` committed: at the end, every rendition's replay and
    # ENDLIST live playlist (media playlists before the masters that point at them); the masters
    # when their inputs are due (first segment, every 10, the end).
    playlists: list[tuple[str, str]] = []
    if step.replay:
        entries = [Entry.from_json(line) for line in step.log]
        target = max(_floor(), step.target, hls.target_duration(entries, _floor()))
        window = entries[max(0, len(entries) - settings.PLAYLIST_WINDOW) :]
        for r in step.ladder:
            live = hls.render_window(window, target=target, ended=True, rendition=r.name)
            replay = hls.render_media(entries, 0, 0, target=target, kind="event", ended=True, rendition=r.name)
            playlists += [(f"{r.name}/live.m3u8", live), (f"{r.name}/index.m3u8", replay)]
        staged.finished = True
    if step.masters is not None:
        inputs, session_dir = step.masters, prefix.rsplit("/", 1)[1]
        args = (inputs.renditions, inputs.rates, inputs.codecs, inputs.source)
        playlists.append(("master.m3u8", hls.render_master(*args, uri="{name}/index.m3u8")))
        if not step.preview:  # a private preview has no stable (guessable) master, ADR 0034
            live_uri = session_dir + "/{name}/live.m3u8"
            playlists.append(("../master.m3u8", hls.render_master(*args, uri=live_uri)))

    # The published log's checkpoint: the parts that changed (usually the current one).
    logs: list[tuple[str, bytes]] = []
    if step.log and not step.replay:
        for part in range(
            step.log_from // state.LOG_PART_SEGMENTS, (step.published - 1) // state.LOG_PART_SEGMENTS + 1
        ):
            first = part * state.LOG_PART_SEGMENTS - step.log_from
            lines = step.log[max(0, first) : first + state.LOG_PART_SEGMENTS]
            logs.append((f"log/{part:06d}.jsonl", "".join(x + "\n" for x in lines).encode()))
        staged.checkpointed = step.published

    storage.put_batch(prefix, segments, logs, playlists)
    if step.recover:
        # Redis lost the session: its published log comes back from the checkpoint.
        by_index = {json.loads(line)["i"]: line for line in storage.read_log(f"{prefix}/log/")}
        staged.restore = [by_index[i] for i in sorted(by_index)]
        staged.restore_target = _floor()

    if step.committed:
        metadata.record_chunks(session_id, [ms for _, ms in step.committed])
        metrics.segments_published(session_id, [e.wall + e.duration for e, _ in step.committed])
    if step.announce:
        readiness.announce(layout, names, preview=step.preview)
    return staged


def _wall(chunk: state.Pending, meta: state.ChunkMeta, last: Entry | None, *, disc: bool) -> float:
    """The segment's EXT-X-PROGRAM-DATE-TIME. A low-latency segment that continues the previous
    one starts where it ended: its parts were listed under that date before it was complete (the
    live origin), and a listed date never changes (RFC 8216bis 6.2.1)."""
    if chunk.inits and last is not None and last.inits and not disc:
        return round(last.wall + last.duration, 3)
    return meta.wall


def _floor() -> int:
    return math.ceil(settings.CHUNK_SECONDS)


floor_target = _floor  # the origin's LL playlists use the same EXT-X-TARGETDURATION floor


def live_playlist(stream_id: int, session_id: int, rendition: str, kind: str) -> str | None:
    """A media playlist of a session being published, rendered from Redis for the origin view:
    ``live`` (the sliding window of ``PLAYLIST_WINDOW`` segments: constant work) or ``index``
    (the DVR window: the last ``DVR_WINDOW_SECONDS`` of the broadcast, ``dvr_window``). None
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
        return hls.render_window(win.entries, target=target, ended=win.final, rendition=rendition)
    if settings.DVR_WINDOW_SECONDS <= 0:  # no bound: the whole log, an EVENT playlist (ADR 0029)
        entries = state.published(session_id)
        return hls.render_media(entries, 0, 0, target=target, kind="event", ended=win.final, rendition=rendition)
    entries = dvr_window(state.published_tail(session_id, dvr_entries()), settings.DVR_WINDOW_SECONDS)
    return hls.render_window(entries or win.entries, target=target, ended=win.final, rendition=rendition)


def dvr_entries() -> int:
    """How many log entries one DVR read takes: the window over the shortest chunk the
    segmenter cuts (``DVR_MIN_SEGMENT_SECONDS``), plus the live window. Shorter segments (after a
    reconnect) shorten the window a little rather than making the read unbounded."""
    return math.ceil(settings.DVR_WINDOW_SECONDS / DVR_MIN_SEGMENT_SECONDS) + settings.PLAYLIST_WINDOW


# The shortest chunk a latency mode cuts (streams.models.LatencyMode bounds it).
DVR_MIN_SEGMENT_SECONDS = 0.5


def dvr_window(tail: list[Entry], seconds: float) -> list[Entry]:
    """The newest entries of ``tail`` whose durations add up to at most ``seconds`` (the newest
    ``PLAYLIST_WINDOW`` always). A sliding window: its first entry's ``index`` and ``dseq`` are
    the playlist's MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE (``hls.render_window``)."""
    total, start = 0.0, len(tail)
    while start > 0:
        total += tail[start - 1].duration
        if total > seconds and len(tail) - start >= settings.PLAYLIST_WINDOW:
            break
        start -= 1
    return tail[start:]


def summary(session_id: int) -> dict[str, Any]:
    """Counters for metadata: segments per rendition (as in the playlists), gaps."""
    entries = state.published(session_id)
    renditions = state.ladder(session_id) or []
    return {
        "segments": {r.name: sum(1 for e in entries if r.name in e.sizes) for r in renditions},
        "gaps": state.gap_count(session_id),
        "duration_s": round(sum(e.duration for e in entries), 3),
    }
