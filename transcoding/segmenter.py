"""The segmenter of one live publisher connection: ffmpeg (stream copy) cutting the RTMP input
into GOP-aligned MPEG-TS chunks, whose bytes go to Redis with one ``transcode_chunk`` task each.

Started by the ingest supervisor (``transcoding.ingest.serve``), one thread per connection.
Chunk files live only in this process's temporary directory; workers never see a local path.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from xml.etree import ElementTree

import kombu.exceptions
import redis.exceptions
from django.conf import settings

from livestream.devstack import dies_with_caller
from streams import playback
from transcoding import ffmpeg, metadata, playlists, state, storage

logger = logging.getLogger(__name__)
# Plays of a stream nginx-rtmp has not published yet are refused (idle_streams off): retries.
PLAY_ATTEMPTS = 3
# Redis (state, broker) unreachable: chunk files wait on disk and are sent when it is back.
OUTAGE = (redis.exceptions.RedisError, kombu.exceptions.OperationalError)


def rtmp_play_base() -> str:
    return f"rtmp://127.0.0.1:{settings.RTMP_PORT}/live"


def published_audio_codec(name: str, *, timeout_s: float = 2.0) -> str | None:
    """The audio codec nginx-rtmp reports for live stream ``name`` ("AAC", "MP3", "Speex"...),
    from its statistics page, once the publisher's metadata or first packets have arrived; ""
    for a stream without audio; None when unknown within ``timeout_s`` (stat page down)."""
    url = f"http://127.0.0.1:{settings.RTMP_STAT_PORT}/stat"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                # Our own nginx on 127.0.0.1, not untrusted input.
                root = ElementTree.fromstring(response.read())  # noqa: S314
        except (OSError, ElementTree.ParseError):
            root = None
        for stream in root.iter("stream") if root is not None else ():
            if stream.findtext("name") != name:
                continue
            audio = stream.find("meta/audio")
            codec = (audio.findtext("codec") or "").strip() if audio is not None else ""
            if codec:
                return codec
            if stream.find("meta/video/codec") is not None and time.monotonic() > deadline - timeout_s / 2:
                return ""  # video is flowing and no audio codec was announced: no audio
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class Segmenter(threading.Thread):
    """Runs the segmenter ffmpeg of one publisher connection and feeds its chunks to Redis."""

    def __init__(self, *, session_id: int, stream_id: int, conn: int, name: str, resumed: bool = False) -> None:
        super().__init__(name=f"segmenter-{name}", daemon=True)
        self.session_id = session_id
        self.stream_id = stream_id
        self.conn = conn
        self.input_name = name
        # A restart of a connection's segmenter (its ffmpeg died, or its supervisor did) while
        # the publisher stays: its first chunk follows a hole, so it carries a discontinuity.
        self.resumed = resumed
        self.epoch: int | None = None  # the numbering generation this segmenter writes (state.py)
        self._disc_next = conn > 1 or resumed
        self._queued_seq = -1
        self._outage_since: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.chunks = 0
        self.last_seq = -1
        self._anchor: float | None = None  # wall clock minus source time, per connection
        self._lines_done = 0
        # Progressive transcoding: the chunk being written, already numbered and queued, and how
        # many of its bytes went to Redis.
        self._current: tuple[int, str] | None = None
        self._sent = 0
        self._ladder_known = False
        self._stopped = False
        self._bytes_since_sample = 0
        self._durations: deque[float] = deque(maxlen=10)
        self._stderr: deque[str] = deque(maxlen=20)

    @property
    def ctx(self) -> dict[str, object]:
        return {"stream": self.stream_id, "session": self.session_id, "ctx": {"connection": self.conn}}

    def stop(self) -> None:
        self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def _read_stderr(self) -> None:
        if self.proc is None or self.proc.stderr is None:
            return
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)

    def run(self) -> None:
        try:
            self.epoch = state.ensure_epoch(self.session_id)
            state.set_ingest(self.session_id, self.conn, "running")
        except OUTAGE:
            logger.warning("Redis unreachable at segmenter start", extra=self.ctx)
        if self.conn == 1 and not self.resumed:
            # A new broadcast: the stable master must not keep pointing at the last one.
            try:
                storage.delete_key(f"{playback.stream_prefix(self.stream_id)}/master.m3u8")
            except Exception:
                logger.warning("could not remove the previous live master", extra=self.ctx, exc_info=True)
        try:
            with tempfile.TemporaryDirectory(prefix=f"ingest-{self.session_id}-{self.conn}-") as tmp:
                self._run(Path(tmp))
        except Exception:
            logger.exception("segmenter crashed", extra=self.ctx)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()  # never leave an ffmpeg behind a crashed segmenter
            try:
                state.set_ingest(self.session_id, self.conn, f"ended:{self.last_seq}")
            except OUTAGE:
                logger.warning("Redis unreachable: segmenter end not recorded", extra=self.ctx)
            logger.info("segmenter finished after %d chunks", self.chunks, extra=self.ctx)

    def _run(self, work: Path) -> None:
        codec = published_audio_codec(self.input_name)
        encode_audio = bool(codec) and codec != "AAC"
        args = ffmpeg.segmenter_args(
            f"{rtmp_play_base()}/{self.input_name}",
            work,
            settings.CHUNK_SECONDS,
            settings.SEGMENTER_RW_TIMEOUT_S,
            audio_kbps=settings.SEGMENTER_AUDIO_KBPS if encode_audio else None,
        )
        if encode_audio:
            logger.info("source audio is %s: the segmenter encodes it to AAC once", codec, extra=self.ctx)
        elif codec is None:
            logger.warning("audio codec unknown (nginx-rtmp stat unreachable): copying audio", extra=self.ctx)
        logger.info("segmenter starting", extra=self.ctx)
        for attempt in range(1, PLAY_ATTEMPTS + 1):
            started = time.monotonic()
            self._segment(args, work)
            # nginx-rtmp refuses to play a stream that is not published yet (idle_streams off):
            # a segmenter that came too early gets nothing and tries again.
            if self._lines_done or self._current is not None or time.monotonic() - started > 5:
                break
            if attempt == PLAY_ATTEMPTS or self._stopped:
                break
            logger.info("segmenter got no stream yet (attempt %d), retrying", attempt, extra=self.ctx)
            time.sleep(0.3)
        if self._current is not None:  # ffmpeg died mid-chunk: its task must not wait for it
            try:
                state.mark_gap(self.session_id, self._current[0], "ingest ended mid-chunk")
            except OUTAGE:
                logger.warning("Redis unreachable: unfinished chunk not marked", extra=self.ctx)
            self._current = None
        code = self.proc.returncode if self.proc is not None else None
        level = logging.INFO if code in (0, 255) or self.chunks else logging.WARNING
        logger.log(
            level,
            "segmenter ffmpeg exited with %s: %s",
            code,
            " | ".join(self._stderr) or "no output",
            extra=self.ctx,
        )

    def _segment(self, args: list[str], work: Path) -> None:
        """One run of the segmenter ffmpeg, feeding its chunks to Redis until it exits."""
        # Parent-death signal: the ffmpeg ends with this thread, even when the supervisor is killed.
        self.proc = subprocess.Popen(
            dies_with_caller(args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        reader = threading.Thread(target=self._read_stderr, daemon=True)
        reader.start()
        next_sample = time.monotonic() + settings.INGEST_SAMPLE_SECONDS
        while self.proc.poll() is None:
            self._drain_safely(work)
            if time.monotonic() >= next_sample:
                try:
                    self._sample()
                except Exception:  # health samples are best effort
                    logger.warning("ingest sample failed", extra=self.ctx, exc_info=True)
                next_sample = time.monotonic() + settings.INGEST_SAMPLE_SECONDS
            time.sleep(0.02)  # a finished chunk waits at most 20 ms for us
        reader.join(timeout=2)
        self._drain_safely(work, wait_s=settings.INGEST_OUTAGE_WAIT_S)

    def _drain_safely(self, work: Path, *, wait_s: float = 0.0) -> None:
        """``_drain`` through Redis outages: chunk files stay on disk until Redis answers again
        (for up to ``wait_s`` more seconds when ffmpeg has exited); a session whose state Redis
        lost continues in a new numbering generation."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if self.epoch is None:
                    self.epoch = state.ensure_epoch(self.session_id)
                self._drain(work)
            except state.StateLost:
                with contextlib.suppress(*OUTAGE):
                    self._state_lost()
                continue
            except OUTAGE as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    logger.warning("Redis unreachable (%s): chunks wait on disk", exc, extra=self.ctx)
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.5)
                continue
            if self._outage_since is not None:
                logger.info("Redis back after %.1f s", time.monotonic() - self._outage_since, extra=self.ctx)
                self._outage_since = None
            return

    def _state_lost(self) -> None:
        """Redis lost the session's state: the chunk being written is sent whole again under a
        new generation, and the next chunk carries a discontinuity."""
        self._current, self._sent, self._queued_seq = None, 0, -1
        self._ladder_known = False
        self._disc_next = True
        self.epoch = state.ensure_epoch(self.session_id)
        state.set_ingest(self.session_id, self.conn, "running")
        logger.warning("pipeline state lost; numbering generation %s", self.epoch, extra=self.ctx)

    def _drain(self, work: Path) -> None:
        listing = work / "chunks.csv"
        if not listing.exists():
            return
        lines = listing.read_text().split("\n")
        complete = lines[:-1]  # the last element is "" or a line still being written
        for line in complete[self._lines_done :]:
            name, start_s, end_s = line.rsplit(",", 2)
            self._publish_chunk(work / name, float(start_s), float(end_s))
            self._lines_done += 1  # only once sent: a Redis error retries the chunk
        if settings.PROGRESSIVE_TRANSCODE:
            self._stream_current(work / f"chunk_{self._lines_done:06d}.ts")

    def _stream_current(self, path: Path) -> None:
        """Progressive transcoding: number and queue the chunk being written as soon as it
        starts, and send its bytes as they come, so its task transcodes along (the first chunks
        wait for the ladder, decided from a whole chunk)."""
        if not self._ladder_known:
            self._ladder_known = state.ladder(self.session_id) is not None
        if not self._ladder_known or not path.exists():
            return
        if self._current is None or self._current[1] != path.name:
            seq = state.reserve_chunk(self.session_id, conn=self.conn, disc=self._disc_next, epoch=self.epoch)
            self._current, self._sent = (seq, path.name), 0
        if self._queued_seq != self._current[0]:
            self._queue(self._current[0])
        self._send_new_bytes(path)

    def _send_new_bytes(self, path: Path) -> int:
        if self._current is None:
            return 0
        with path.open("rb") as handle:
            handle.seek(self._sent)
            data = handle.read()
        if data:
            state.append_chunk_data(self.session_id, self._current[0], data, epoch=self.epoch)
            self._sent += len(data)
        return self._sent

    def _publish_chunk(self, path: Path, start: float, end: float) -> None:
        now = time.time()
        # The list line appears when the keyframe that starts the next chunk arrives, i.e. at
        # source time ``end``; the smallest offset seen is the least delayed estimate.
        offset = now - end
        self._anchor = offset if self._anchor is None else min(self._anchor, offset)
        if self._current is None or self._current[1] != path.name:  # not streamed: send it whole
            data = path.read_bytes()
            seq = state.add_chunk(
                self.session_id,
                data=data,
                start=start,
                end=end,
                wall=self._anchor + start,
                conn=self.conn,
                disc=self._disc_next,
                epoch=self.epoch,
            )
            self._current, self._sent = (seq, path.name), len(data)
        # Streamed (or retried after a Redis error): the rest of its bytes, then its timing.
        seq, size = self._current[0], self._send_new_bytes(path)
        state.complete_chunk(self.session_id, seq, start=start, end=end, wall=self._anchor + start, epoch=self.epoch)
        if self._queued_seq != seq:
            self._queue(seq)
        self._current = None
        self._disc_next = False
        path.unlink(missing_ok=True)
        self.chunks += 1
        self.last_seq = seq
        self._bytes_since_sample += size
        self._durations.append(end - start)

    def _queue(self, seq: int) -> None:
        from transcoding.tasks import transcode_chunk

        parts = max(1, settings.TRANSCODE_TASKS_PER_CHUNK)
        for part in range(parts):
            transcode_chunk.delay(self.session_id, seq, part, parts, self.epoch)
        self._queued_seq = seq

    def _sample(self) -> None:
        """One IngestSample: received bitrate, fps, keyframe interval, lag per rendition, backlog."""
        interval = settings.INGEST_SAMPLE_SECONDS
        source = state.source(self.session_id)
        entries = playlists.published(self.session_id)
        lag: dict[str, float] = {}
        if entries:
            last = entries[-1]
            behind = round(time.time() - (last.wall + last.duration), 3)
            lag = dict.fromkeys(last.sizes, behind)
        gaps = sum(1 for seq in range(state.chunk_count(self.session_id)) if state.is_gap(self.session_id, seq))
        metadata.record_sample(
            self.stream_id,
            self.session_id,
            bitrate=int(self._bytes_since_sample * 8 / interval),
            fps=source.fps if source else None,
            keyframe_interval_s=round(sum(self._durations) / len(self._durations), 3) if self._durations else None,
            dropped_chunks=gaps,
            lag_s=lag,
            queue_depth=state.chunk_count(self.session_id) - len(entries) - gaps,
        )
        self._bytes_since_sample = 0

