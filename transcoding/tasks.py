"""Celery tasks of the live pipeline. They take ids, re-read state and are idempotent.

- ``transcode_chunk(session_id, seq)`` (queue ``transcode``): one chunk, every rendition from a
  single decode; segments PUT under deterministic keys; then the assembler advances.
- ``finalize_session(session_id)``: runs after the reconnect grace period; finishes the
  session (ENDLIST + replay, or deletion of its objects).
- ``purge_stream_objects(stream_id)`` / ``purge_session_objects(session_id, stream_id=None)``:
  delete stored HLS objects (stream deletion, replay deletion).
- ``reconcile_live_sessions()`` (Celery beat, every ``RECONCILE_INTERVAL_SECONDS``): the
  database against the ingest, without relying on any callback: ends live sessions whose ingest
  is silent, finalises sessions whose countdown task was lost, re-queues chunks whose transcode
  lease expired (a worker died).
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import redis.exceptions
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from livestream import metrics
from streams import playback, sessions
from streams.models import SessionStatus, StreamSession
from transcoding import (
    assembler,
    cores,
    encoder,
    ffmpeg,
    fmp4,
    loudness,
    metadata,
    mpegts,
    services,
    shedding,
    state,
    storage,
)
from transcoding.ladder import Rendition, SourceInfo, ladder_for

logger = logging.getLogger(__name__)

TRANSIENT = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# S3 errors that no retry fixes (credentials, bucket, request): the task fails at once.
PERMANENT_S3 = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "InvalidRequest"}
# How long finalisation waits for the ingest and the last chunks before forcing the end.
FINALIZE_MAX_ATTEMPTS = 90
# The reconciler finalises a session whose grace ended this long ago (its countdown was lost).
FINALIZE_LATE_S = 5


def layout_for(session_id: int) -> assembler.Layout | None:
    """The session's object layout; cached in Redis so hot paths skip the database."""
    stream_id = state.stream_of(session_id)
    if stream_id is None:
        session = StreamSession.objects.filter(pk=session_id).only("stream_id").first()
        if session is None:
            return None
        stream_id = session.stream_id
        state.remember_stream(session_id, stream_id)
    return assembler.Layout(
        stream_prefix=playback.stream_prefix(stream_id),
        session_prefix=playback.session_prefix(stream_id, session_id),
        session_id=session_id,
    )


def _probe_source(session_id: int, chunk_path: Path, meta: state.ChunkMeta, ctx: dict[str, Any]) -> SourceInfo:
    source = ffmpeg.probe(chunk_path, context=ctx)
    if not source.video_bitrate and meta.duration > 0:
        bits = chunk_path.stat().st_size * 8
        source = SourceInfo(**{**source.__dict__, "video_bitrate": int(bits / meta.duration)})
    return source


def _ladder(
    session_id: int, stream_id: int, chunk_path: Path, meta: state.ChunkMeta, ctx: dict[str, Any]
) -> tuple[list[Rendition], SourceInfo]:
    renditions = state.ladder(session_id)
    source = state.source(session_id)
    if renditions is not None and source is not None:
        return renditions, source
    probed = _probe_source(session_id, chunk_path, meta, ctx)
    state.store_source(session_id, probed, conn=meta.conn)
    renditions = state.decide_ladder(session_id, ladder_for(probed))
    source = state.source(session_id) or probed
    logger.info(
        "source probed: %s %sx%s@%s, audio %s; ladder %s",
        source.video_codec,
        source.width,
        source.height,
        source.fps,
        source.audio_codec or "none",
        ",".join(r.name for r in renditions),
        extra={"session": session_id},
    )
    metadata.record_source(stream_id, session_id, source, renditions)
    return renditions, source


def _give_up(session_id: int, seq: int, reason: str) -> None:
    if state.mark_gap(session_id, seq, reason):
        logger.warning("chunk dropped: %s", reason, extra={"session": session_id, "seq": seq})
    layout = layout_for(session_id)
    if layout is not None:
        assembler.advance(layout)


def _describe(exc: BaseException) -> str:
    """An error as an operator reads it: the class, and the S3 error code and operation."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return f"{exc.__class__.__name__} {code} on {exc.operation_name}"
    return exc.__class__.__name__


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "") in PERMANENT_S3
    return False


@shared_task(
    bind=True,
    acks_late=True,
    max_retries=settings.TRANSCODE_PUBLISH_RETRIES,
    soft_time_limit=settings.TRANSCODE_TIMEOUT_S + 30,
    time_limit=settings.TRANSCODE_TIMEOUT_S + 60,
)
def transcode_chunk(  # noqa: PLR0917 - Celery task arguments are positional in messages
    self: Any, session_id: int, seq: int, part: int = 0, parts: int = 1, epoch: int | None = None
) -> str:
    """Transcode chunk ``seq`` of ``session_id`` into its renditions and publish what is ready.

    With ``parts`` > 1 (TRANSCODE_TASKS_PER_CHUNK) this task encodes only every ``parts``-th
    rendition starting at ``part``; the assembler commits the chunk once every rendition is in.
    Idempotent: a settled chunk is skipped; segment keys are deterministic. A chunk past its live
    deadline (or whose bytes expired) becomes a gap. A transcode failure (FFmpeg's message) is
    logged with the stream and chunk and the chunk becomes a gap (a corrupt chunk would fail
    again on retry).

    ``epoch``: the numbering generation the segmenter queued it in (state.py); a task of an
    older generation (Redis lost the session's state meanwhile) does nothing. Outputs are kept
    in Redis until uploaded: when S3 or Redis fails the task is retried with backoff
    (``TRANSCODE_PUBLISH_RETRIES``) and the retry only publishes, it never transcodes again,
    and a chunk whose outputs are ready never becomes a gap.
    """
    try:
        return _transcode_chunk(session_id, seq, part, parts, epoch)
    except TRANSIENT as exc:
        if _is_permanent(exc) or self.request.retries >= settings.TRANSCODE_PUBLISH_RETRIES:
            raise
        countdown = min(4.0, 0.5 * 2**self.request.retries)
        logger.warning(
            "chunk not published yet (%s): retrying in %.1f s",
            _describe(exc),
            countdown,
            extra={"session": session_id, "seq": seq},
        )
        raise self.retry(exc=exc, countdown=countdown) from None


def _transcode_chunk(session_id: int, seq: int, part: int, parts: int, epoch: int | None) -> str:  # noqa: PLR0911
    ctx = {"session": session_id, "seq": seq, "part": f"{part + 1}/{parts}"}
    if epoch is not None and state.epoch(session_id) != epoch:
        return "stale"  # queued before Redis lost the session's state: its chunk is gone
    if state.is_settled(session_id, seq):
        return "settled"
    meta = state.chunk_meta(session_id, seq)
    layout = layout_for(session_id)
    if meta is None or layout is None:
        _give_up(session_id, seq, "chunk expired or session gone")
        return "gap"
    if state.has_part_outputs(session_id, seq, part, parts):
        # A retry after S3/Redis failed while publishing: the outputs are there, just publish.
        assembler.advance(layout)
        return "published"
    if time.time() > meta.deadline:
        _give_up(session_id, seq, "missed the live deadline before transcoding")
        return "gap"
    stream_id = int(layout.stream_prefix.rsplit("/", 1)[1])
    feed = ChunkFeed(session_id, seq)
    started = time.monotonic()
    threads = 0
    lease = state.Lease(session_id, seq, part)
    # Loudness for highlight suggestions: one task per chunk copies its audio packets.
    tap = loudness.AudioTap() if part == 0 and settings.HIGHLIGHTS_LOUDNESS else None
    try:
        data, ladder, source = _input(stream_id, meta, feed, ctx)
        renditions = ladder[part::parts]
        if not renditions:  # more tasks than renditions: this part has nothing to do
            return "idle"
        # Overload: the top rungs are shed while the workers fall behind (shedding.py).
        shed = shedding.plan(session_id, ladder, waited_s=time.time() - meta.queued, observe=part == 0)
        encode = [r for r in renditions if r.name not in shed]
        reader = io.BytesIO(data) if data is not None else encoder.FeedReader(iter(feed))
        outputs, sink, threads = _encode(reader, encode, source, layout, seq, tap=tap)
        if sink is not None:
            sink.end([r.name for r in renditions])  # shed rungs have no parts either
        outputs.update({r.name: b"" for r in renditions if r.name in shed})
    except (encoder.TranscodeError, ffmpeg.FFmpegError, ValueError) as exc:
        logger.error("transcode failed: %s", exc, extra={**ctx, "ctx": {"threads": threads}})
        _give_up(session_id, seq, f"transcode failed: {exc}")
        return "gap"
    finally:
        lease.release()
    if epoch is not None and state.epoch(session_id) != epoch:
        return "stale"
    codecs = (
        sink.codecs
        if sink is not None
        else {name: c for name, out in outputs.items() if (c := mpegts.avc_codec_string(out))}
    )
    state.set_codecs(session_id, codecs)
    transcoded = time.monotonic()
    # Progressive: what counts is the time after the chunk's last byte arrived.
    elapsed_ms = int((transcoded - (feed.finished_at or started)) * 1000)
    if part == 0 and meta.seq > 0 and not meta.disc:  # a connection's first chunk starts cold (probe)
        lasts = meta.duration or meta.expect or float(settings.CHUNK_SECONDS)
        shedding.transcoded(session_id, ladder, elapsed_s=elapsed_ms / 1000, duration_s=lasts)
    metrics.observe_transcode(elapsed_ms / 1000, outputs)
    state.store_outputs(session_id, seq, outputs, elapsed_ms, part=part, inits=sink.inits if sink else None)
    # The assembler commits (counters, upload) every chunk that is ready, in order.
    assembler.advance(layout)
    publish_ms = int((time.monotonic() - transcoded) * 1000)
    logger.info(
        "chunk transcoded in %d ms%s",
        elapsed_ms,
        " after its last byte (progressive)" if feed.finished_at is not None else "",
        extra={**ctx, "ctx": {"publish_ms": publish_ms, "threads": threads}},
    )
    _record_loudness(session_id, tap)
    return "done"


def _record_loudness(session_id: int, tap: loudness.AudioTap | None) -> None:
    """Measure the published chunk's loudness (its audio decoded once, after publication: off
    the latency path) and keep it with the segment's times for highlight suggestions. Best
    effort: a failure is logged, the chunk is published anyway."""
    from highlights import keys as highlight_keys

    meta = tap.chunk if tap is not None else None
    if tap is None or not isinstance(meta, state.ChunkMeta):
        return
    try:
        measured = tap.measure()
        highlight_keys.record_segment(session_id, meta.seq, wall=meta.wall, duration=meta.duration, loudness=measured)
    except Exception as exc:
        logger.warning("loudness not recorded: %s", _describe(exc), extra={"session": session_id, "seq": meta.seq})


def _encode(
    reader: io.RawIOBase | io.BytesIO,
    renditions: list[Rendition],
    source: SourceInfo,
    layout: assembler.Layout,
    seq: int,
    *,
    tap: loudness.AudioTap | None = None,
) -> tuple[dict[str, bytes], _PartSink | None, int]:
    """The chunk's segments in ``renditions`` (none: nothing to encode, every rung is shed):
    MPEG-TS, or CMAF cut into partial segments for a low-latency session (ADR 0031). Returns
    the segments, the part sink of a low-latency session, and the encoder threads used.
    ``tap`` gets the chunk's audio packets and, once it is read whole, its meta (loudness)."""
    encoded = _encode_with(reader, renditions, source, layout, seq, tap)
    if tap is not None:  # the chunk is read whole now: its start, end and wall clock are known
        tap.chunk = state.chunk_meta(layout.session_id, seq)
    return encoded


def _encode_with(  # noqa: PLR0917 - _encode's arguments, passed on
    reader: io.RawIOBase | io.BytesIO,
    renditions: list[Rendition],
    source: SourceInfo,
    layout: assembler.Layout,
    seq: int,
    tap: loudness.AudioTap | None,
) -> tuple[dict[str, bytes], _PartSink | None, int]:
    part_target = state.low_latency(layout.session_id)
    sink = _PartSink(layout, seq) if part_target else None
    if not renditions:
        return {}, sink, 0
    fps = source.fps or 30
    with cores.core_share() as threads:
        if sink is None or not part_target:
            return encoder.transcode(reader, renditions, fps, threads=threads, media=source, tap=tap), None, threads
        outputs = encoder.transcode_cmaf(
            reader, renditions, fps, threads=threads, part_s=part_target, sink=sink, media=source, tap=tap
        )
        return outputs, sink, threads


class _PartSink:
    """Where a low-latency transcode's partial segments go as they are cut (ADR 0031): each
    rendition's init section to S3 once (named by its content: never rewritten with other
    bytes), each part into Redis, which wakes the origin's held requests."""

    def __init__(self, layout: assembler.Layout, seq: int) -> None:
        self.layout, self.seq = layout, seq
        self.inits: dict[str, str] = {}
        self.codecs: dict[str, str] = {}

    def __call__(self, part: encoder.PartOut) -> None:
        session_id = self.layout.session_id
        if part.rendition not in self.inits:
            name = fmp4.init_name(part.init)
            if not state.init_written(session_id, f"{part.rendition}/{name}"):
                storage.put_segment(f"{self.layout.session_prefix}/{part.rendition}/{name}", part.init)
                state.mark_init_written(session_id, f"{part.rendition}/{name}")
            self.inits[part.rendition] = name
            self.codecs[part.rendition] = part.codec
        state.add_partial(
            session_id,
            self.seq,
            part.rendition,
            index=part.index,
            data=part.data,
            duration=part.duration,
            independent=part.independent,
            init=self.inits[part.rendition],
        )

    def end(self, renditions: list[str]) -> None:
        for name in renditions:
            state.end_partials(self.layout.session_id, self.seq, name)


def _input(
    stream_id: int, meta: state.ChunkMeta, feed: ChunkFeed, ctx: dict[str, Any]
) -> tuple[bytes | None, list[Rendition], SourceInfo]:
    """The chunk's bytes, or None = read them from ``feed`` while the segmenter is still writing
    the chunk; the ladder and the source of the chunk's connection (the segmenter probes each
    connection's first chunk; if it did not, the chunk is read whole and probed here)."""
    session_id = feed.session_id
    ladder, source = state.ladder(session_id), state.source(session_id, meta.conn)
    if not meta.complete and ladder is not None and source is not None:
        return None, ladder, source
    data = state.chunk_data(session_id, meta.seq) if meta.complete else b"".join(feed)
    if data is None:
        raise encoder.TranscodeError("chunk expired or session gone")
    if ladder is None or source is None:
        meta = state.chunk_meta(session_id, meta.seq) or meta
        with tempfile.TemporaryDirectory(prefix=f"chunk-{session_id}-{meta.seq}-") as tmp:
            chunk_path = Path(tmp) / "chunk.ts"
            chunk_path.write_bytes(data)
            ladder, source = _ladder(session_id, stream_id, chunk_path, meta, ctx)
            source = state.source(session_id, meta.conn) or source
    return data, ladder, source


class ChunkFeed:
    """A chunk's bytes as the segmenter appends them to Redis, until it marks the chunk complete
    (progressive transcoding). Raises ``TranscodeError`` when the chunk is abandoned (gap, expired),
    when its connection's segmenter is gone without completing it, or after
    ``TRANSCODE_TIMEOUT_S`` without a byte. (A publisher that leaves mid-chunk makes the
    segmenter wait ``SEGMENTER_RW_TIMEOUT_S`` or more before it writes the last chunk.)"""

    def __init__(self, session_id: int, seq: int) -> None:
        self.session_id = session_id
        self.seq = seq
        self.finished_at: float | None = None  # monotonic time the last byte was read

    def __iter__(self) -> Iterator[bytes]:
        offset = 0
        idle_since = time.monotonic()
        while True:
            data = state.chunk_data_from(self.session_id, self.seq, offset)
            if data:
                offset += len(data)
                idle_since = time.monotonic()
                yield data
                continue
            meta = state.chunk_meta(self.session_id, self.seq)
            if meta is None or state.is_gap(self.session_id, self.seq):
                raise encoder.TranscodeError("chunk abandoned by the ingest")
            if meta.complete:  # the segmenter appends the last bytes before completing
                rest = state.chunk_data_from(self.session_id, self.seq, offset)
                if rest:
                    yield rest
                self.finished_at = time.monotonic()
                return
            idle = time.monotonic() - idle_since
            if idle > settings.CHUNK_SECONDS * 2 and (
                state.ingest_status(self.session_id, meta.conn) != "running"
                or not state.connection_node_alive(self.session_id, meta.conn)
            ):  # its segmenter ended, or died with its ingest node
                raise encoder.TranscodeError("the segmenter ended without finishing the chunk")
            if idle > settings.TRANSCODE_TIMEOUT_S:
                raise encoder.TranscodeError("no chunk data from the ingest for too long")
            # Blocks until the segmenter appends, completes or abandons the chunk.
            state.wait_for_feed(self.session_id, self.seq, 1.0)


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=1, max_retries=5)
def finalize_session(session_id: int, attempt: int = 0) -> str:  # noqa: PLR0911 - one exit per state
    """End a session whose publisher did not come back within the grace period.

    Reschedules itself while the grace period runs or the last chunks are still being
    transcoded (bounded), then writes ENDLIST playlists and either keeps the replay or deletes
    the session's objects. A no-op for a resumed or already ended session.
    """
    session = StreamSession.objects.filter(pk=session_id).first()
    if session is None:
        state.purge(session_id)
        return "gone"
    if session.status == SessionStatus.RECONNECTING:
        remaining = sessions.grace_remaining(session)
        if remaining > 0:
            finalize_session.apply_async((session_id, attempt), countdown=remaining + 0.2)
            return "waiting"
        if sessions.begin_ending(session_id) is None:
            return "resumed"
    elif session.status != SessionStatus.ENDING:
        return "not ending"
    layout = layout_for(session_id)
    if layout is None:
        return "gone"
    busy = state.ingest_running(session_id) or assembler.advance(layout) < _settled_target(session_id)
    if busy and attempt < FINALIZE_MAX_ATTEMPTS:
        finalize_session.apply_async((session_id, attempt + 1), countdown=1)
        return "draining"
    assembler.advance(layout, final=True, force=True)
    summary = assembler.summary(session_id)
    ended = sessions.end_session(session_id, duration_s=summary["duration_s"])
    if ended is None:
        return "not ending"
    metadata.record_final(session_id, summary, state.codecs(session_id), ended.connections - 1)
    if not ended.is_replay:
        _delete_session_objects(ended.stream_id, session_id, ended.storage_prefix)
    state.purge(session_id)
    logger.info(
        "session finalised (%s)",
        "replay kept" if ended.is_replay else "objects deleted",
        extra={"stream": ended.stream_id, "session": session_id, "ctx": summary},
    )
    return "ended"


def _settled_target(session_id: int) -> int:
    """Segments the session will publish if every chunk succeeds (for the drain check)."""
    return state.chunk_count(session_id) - state.gap_count(session_id)


def master_points_at(master: bytes, session_id: int) -> bool:
    """Whether a stable master's variant URIs (``<session>-<tag>/<rendition>/live.m3u8``) are
    this session's: the session id before the tag must be exactly it (``1-`` is not ``11-``);
    any tag (a rotated ``HLS_PATH_SECRET``), or none (sessions from before the tags)."""
    wanted = str(session_id)
    for raw in master.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and line.split("/", 1)[0].split("-", 1)[0] == wanted:
            return True
    return False


def _delete_session_objects(stream_id: int, session_id: int, stored_prefix: str = "") -> int:
    """Delete the session's objects: everything under ``live/<stream>/<session>-`` (its
    directory whatever secret tagged it) and under ``stored_prefix`` (its
    ``StreamSession.storage_prefix``, which may predate the tags), and the stable master if it
    still points at the session."""
    # "<session>-" ends the session id: no other session's directory starts with it.
    keys = set(storage.list_keys(f"{playback.stream_prefix(stream_id)}/{session_id}-"))
    if stored_prefix:
        keys.update(storage.list_keys(stored_prefix.rstrip("/") + "/"))
    deleted = storage.delete_keys(sorted(keys))
    stable = f"{playback.stream_prefix(stream_id)}/master.m3u8"
    master = storage.get_bytes(stable)
    if master is not None and master_points_at(master, session_id):
        storage.delete_key(stable)
        deleted += 1
    return deleted


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=5)
def purge_stream_objects(stream_id: int) -> int:
    """Delete every stored object of a (deleted) stream. Idempotent."""
    deleted = storage.delete_prefix(playback.stream_prefix(stream_id) + "/")
    logger.info("stream objects purged", extra={"stream": stream_id, "ctx": {"objects": deleted}})
    return deleted


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=5)
def purge_session_objects(session_id: int, stream_id: int | None = None) -> int:
    """Delete a session's (replay's) objects. Pass ``stream_id`` when the session row is already
    deleted; otherwise it is read from the database. Idempotent."""
    session = StreamSession.objects.filter(pk=session_id).only("stream_id", "storage_prefix").first()
    if stream_id is None:
        if session is None:
            logger.warning("purge_session_objects: unknown session and no stream id", extra={"session": session_id})
            return 0
        stream_id = session.stream_id
    deleted = _delete_session_objects(stream_id, session_id, session.storage_prefix if session is not None else "")
    logger.info(
        "session objects purged", extra={"stream": stream_id, "session": session_id, "ctx": {"objects": deleted}}
    )
    return deleted


@shared_task(ignore_result=True)
def reconcile_live_sessions() -> dict[str, int]:
    """Make the database agree with the ingest, whatever callbacks were lost (Celery beat).

    - a ``live`` session whose segmenter has been silent for ``INGEST_SILENCE_SECONDS`` (no
      heartbeat: nginx-rtmp or the ingest node died, Django missed on_publish_done) is
      disconnected: stream offline, ``reconnecting``, finalised after the grace period;
    - ``reconnecting`` sessions past their grace and ``ending`` sessions that stopped moving are
      finalised again (their countdown task may have been lost with a Redis restart);
    - a chunk whose transcode lease expired without a result (its worker died) is queued again
      while it can still make the live deadline.
    """
    counts = {"ended": 0, "finalised": 0, "requeued": 0}
    state.reconciled()  # compose's health check of beat
    for session in StreamSession.objects.filter(status=SessionStatus.LIVE).only(
        "pk", "stream_id", "connections", "updated_at", "status"
    ):
        silent = services.ingest_silent_for(session)
        if silent > settings.INGEST_SILENCE_SECONDS:
            if sessions.disconnect(session.pk, session.connections) is not None:
                node = state.ingest_node(session.pk, session.connections)
                logger.warning(
                    "ingest silent for %.0f s: publisher considered gone",
                    silent,
                    extra={
                        "stream": session.stream_id,
                        "session": session.pk,
                        "ctx": {"node": node, "node_alive": node is not None and state.node_is_alive(node)},
                    },
                )
                counts["ended"] += 1
                finalize_session.apply_async((session.pk,), countdown=settings.RECONNECT_GRACE_SECONDS + 0.5)
            continue
        counts["requeued"] += _requeue_lost_chunks(session.pk)
        # Publish what is ready even when no task is left to do it (all gave up while S3 was down).
        layout = layout_for(session.pk)
        if layout is not None and state.ladder(session.pk) is not None:
            try:
                assembler.advance(layout)
            except TRANSIENT as exc:
                logger.warning(
                    "reconciler could not publish: %s", exc.__class__.__name__, extra={"session": session.pk}
                )
    stuck_before = timezone.now() - timedelta(seconds=FINALIZE_MAX_ATTEMPTS + 30)
    grace = settings.RECONNECT_GRACE_SECONDS
    for session in StreamSession.objects.filter(status__in=[SessionStatus.RECONNECTING, SessionStatus.ENDING]).only(
        "pk", "status", "disconnected_at", "updated_at"
    ):
        # Reconnecting: its own countdown task normally finalises it when the grace ends; this
        # is for a countdown lost with Redis, so it waits FINALIZE_LATE_S more.
        due = (
            session.disconnected_at is not None
            and timezone.now() - session.disconnected_at > timedelta(seconds=grace + FINALIZE_LATE_S)
            if session.status == SessionStatus.RECONNECTING
            else session.updated_at < stuck_before
        )
        # One finalisation at a time per session: its own reschedules keep it going.
        if due and state.claim_finalizing(session.pk, FINALIZE_MAX_ATTEMPTS + 30):
            finalize_session.delay(session.pk)
            counts["finalised"] += 1
    return counts


def _requeue_lost_chunks(session_id: int) -> int:
    """Queue again the chunks of a live session whose transcode lease lapsed without a result."""
    now = time.time()
    count = state.chunk_count(session_id)
    nxt = state.next_to_publish(session_id)
    ladder = state.ladder(session_id)
    parts = max(1, settings.TRANSCODE_TASKS_PER_CHUNK)
    requeued = 0
    epoch = state.epoch(session_id)
    for seq in range(nxt, count):
        meta = state.chunk_meta(session_id, seq)
        if meta is None or state.is_settled(session_id, seq):
            continue
        if now > meta.queued + settings.LIVE_DEADLINE_SECONDS:
            continue  # the assembler gives it up
        for part in range(parts):
            if ladder is not None and state.has_part_outputs(session_id, seq, part, parts):
                continue
            if not state.Lease.lapsed(session_id, seq, part) or not state.Lease.claim_requeue(session_id, seq, part):
                continue
            logger.warning("transcode lease lapsed: chunk queued again", extra={"session": session_id, "seq": seq})
            transcode_chunk.delay(session_id, seq, part, parts, epoch)
            requeued += 1
    return requeued
