"""The segmenter of one live publisher connection: the publish's recording, from its first frame,
cut into MPEG-TS chunks at IDR frames, whose bytes go to Redis with one ``transcode_chunk`` task
each.

Started by the ingest supervisor (``transcoding.ingest.serve``), one thread per connection.

- **Input**: nginx-rtmp records every publish from its first frame (``transcoding.recording``);
  the segmenter follows the file and feeds its FLV tags to one ffmpeg (stream copy,
  ``ffmpeg.segmenter_args``) on stdin. Joining nginx-rtmp as a player instead lost the first
  GOP of every broadcast (a late player gets video from the next keyframe), and all of the video
  with OBS's default 8.3 s keyframe interval (docs/adr/0014-ingest-from-the-first-frame.md).
  The publish is over when nginx-rtmp releases the recording's lock: stdin is closed and ffmpeg
  finishes the last chunk at once, with the publisher's last frame.
- **Cuts at IDR frames only**: each video tag's keyframe flag is set from its NAL units (IDR or
  not) before ffmpeg sees it. Publishers flag I-frames that are not IDR (open GOP, recovery
  points) as keyframes; a chunk cut there does not decode from its start. Each chunk starts
  with an IDR, and ffmpeg's ``h264_mp4toannexb`` puts the SPS/PPS in front of it. A keyframe
  interval longer than ``CHUNK_SECONDS`` gives longer chunks; the dashboard then advises 1-2 s.
- **The source is probed once per connection**: the first whole chunk, before its task is
  queued. Its parameters (``state.store_source``) go with every chunk's transcode (a short
  probe of a high-bitrate chunk ends before its first audio packet). A source the pipeline
  cannot handle or that is above the caps (``SOURCE_MAX_*``) is refused there, with the reason
  in the log and on the stream's dashboard (``streams.problems``), and its publisher dropped
  (``rtmp_control``). A chunk that grows past ``CHUNK_MAX_SECONDS``/``CHUNK_MAX_MB`` (no
  keyframe) or a bitrate above ``SOURCE_MAX_KBPS`` ends the publish the same way.
- **Restartable**: where the chunk being written starts in the recording is kept next to it
  (``recording.save_resume``: local, like the recording, and untouched by a Redis restart); a
  segmenter started again for the same connection continues there (the
  chunk the dead one was writing becomes a gap, its media is ingested again under a new number),
  so nothing is lost or ingested twice. Its ffmpeg dies with it (parent-death signal).
- **Rides out Redis outages** (docs/pipeline.md "Faults"): finished chunk files wait on disk
  until Redis answers again; a chunk is counted only once Redis took it. When Redis comes back
  without the session's state, numbering continues in a new generation (``state.ensure_epoch``),
  so no published object is ever written twice, and the next chunk carries a discontinuity.

Chunk files live only in this process's temporary directory; workers never see a local path.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.db import connection

from livestream import devstack
from streams import playback, problems
from transcoding import doctor, ffmpeg, flv, metadata, recording, rtmp_control, state, storage
from transcoding.ladder import SourceInfo, ladder_for

logger = logging.getLogger(__name__)

# The loop wakes up when the recording or ffmpeg's output changes (inotify), at the latest after
# POLL_S (housekeeping; the polling interval where inotify is missing).
POLL_S = 0.05
RECORDING_WAIT_S = 10.0  # nginx-rtmp creates the recording when it accepts the publish
AUDIO_WAIT_MS = 1000  # media time after the first IDR within which a source's audio shows up
NO_VIDEO_S = 10.0  # wall time without an IDR frame before a new publish is refused
BITRATE_WINDOW_MS = 10_000
ADVICE_SLACK_S = 0.5
# Redis (state, broker) unreachable: chunk files wait on disk and are sent when it is back.
OUTAGE = (redis.exceptions.RedisError, kombu.exceptions.OperationalError)
PIX_FMTS = {"yuv420p", "yuvj420p"}  # what every player decodes (the source rendition is a copy)


def rtmp_play_base() -> str:
    """This node's nginx-rtmp application, as a process on the same host reaches it (its
    ``RTMP_BIND`` address: another loopback address per node in the multi-node stack)."""
    return f"rtmp://{devstack.local_address(settings.RTMP_BIND)}:{settings.RTMP_PORT}/live"


class Refusal(Exception):  # noqa: N818 - a refusal, not an error of ours
    """The publish cannot go on; ``str(exc)`` is the reason told to the streamer."""


def _kbps(bits_per_s: float) -> str:
    return f"{bits_per_s / 1000:,.0f} kbit/s"


def source_problem(source: SourceInfo, pix_fmt: str) -> str | None:
    """Why the pipeline will not take this probed source (None = fine): codec, pixel format, and
    the ``SOURCE_MAX_*`` caps (width/height cap the long/short side, so portrait passes)."""
    if source.video_codec != "h264":
        return f"video codec {source.video_codec or 'unknown'} is not supported: set your encoder to H.264 (x264)"
    if pix_fmt and pix_fmt not in PIX_FMTS:
        return (
            f"video format {pix_fmt} is not supported (players decode 8-bit 4:2:0 only): "
            "set your encoder's color format to NV12 or I420, 8-bit"
        )
    long_side, short_side = max(source.width, source.height), min(source.width, source.height)
    max_long = max(settings.SOURCE_MAX_WIDTH, settings.SOURCE_MAX_HEIGHT)
    max_short = min(settings.SOURCE_MAX_WIDTH, settings.SOURCE_MAX_HEIGHT)
    if long_side > max_long or short_side > max_short:
        return (
            f"resolution {source.width}x{source.height} is above this platform's maximum of "
            f"{settings.SOURCE_MAX_WIDTH}x{settings.SOURCE_MAX_HEIGHT}: lower your output resolution"
        )
    if source.fps > settings.SOURCE_MAX_FPS + 0.5:
        return (
            f"frame rate {source.fps:g} fps is above this platform's maximum of {settings.SOURCE_MAX_FPS:g} fps: "
            "lower your encoder's frame rate"
        )
    return None


class _Feed:
    """The recording's tags on their way to ffmpeg, and what the segmenter learns from them.

    ``take`` returns a tag's bytes for ffmpeg (keyframe flag set iff the access unit holds an
    IDR; nothing for video before the first IDR, which cannot be decoded) or None, and raises
    ``Refusal`` when the publish must end: video that is not H.264, no IDR for longer than
    ``CHUNK_MAX_SECONDS`` or ``CHUNK_MAX_MB`` of data, a bitrate above ``SOURCE_MAX_KBPS``."""

    def __init__(self) -> None:
        self.configs: dict[int, flv.Tag] = {}  # tag type -> its latest sequence header
        self.length_size = 4
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.first_idr: int | None = None  # timestamps in ms
        self.last_idr: int | None = None
        self.last_ts = 0
        self.since_idr = 0  # bytes since the last IDR
        self.idrs: deque[tuple[int, int]] = deque(maxlen=512)  # (pts ms, file offset) of IDR tags
        self.interval_ms = 0  # the latest keyframe interval
        self.false_keyframes = 0
        self._window: deque[tuple[int, int]] = deque()
        self._window_bytes = 0
        self.max_chunk_ms = int(settings.CHUNK_MAX_SECONDS * 1000)
        self.max_chunk_bytes = int(settings.CHUNK_MAX_MB) << 20
        self.max_bits_per_s = int(settings.SOURCE_MAX_KBPS) * 1000

    def ready(self) -> bool:
        """Enough is known to start ffmpeg: an IDR, and audio or ``AUDIO_WAIT_MS`` without it."""
        if self.first_idr is None:
            return False
        return self.audio_codec is not None or self.last_ts - self.first_idr >= AUDIO_WAIT_MS

    def take(self, tag: flv.Tag) -> bytes | None:
        if tag.type == flv.VIDEO:
            out = self._video(tag)
        elif tag.type == flv.AUDIO:
            if len(tag.raw) <= flv.TAG_HEADER + 4 + 1:
                return None
            if self.audio_codec is None:
                self.audio_codec = tag.audio_codec
            if tag.is_config:
                self.configs[flv.AUDIO] = tag
            out = bytes(tag.raw)
        else:
            return None  # script data (metadata): nothing ffmpeg needs
        if out is None:
            return None
        self.last_ts = max(self.last_ts, tag.timestamp)
        self._limits(tag.timestamp, len(out))
        return out

    def _video(self, tag: flv.Tag) -> bytes | None:
        if len(tag.raw) <= flv.TAG_HEADER + 4 + 1:
            return None
        if self.video_codec is None:
            self.video_codec = tag.video_codec
        if not tag.is_avc:
            raise Refusal(f"video codec {tag.video_codec} is not supported: set your encoder to H.264 (x264)")
        if tag.avc_packet_type == flv.AVC_SEQUENCE_HEADER:
            self.configs[flv.VIDEO] = tag
            self.length_size = flv.avc_length_size(tag)
            return bytes(tag.raw)
        if tag.avc_packet_type != flv.AVC_NALU or len(tag.raw) <= flv.TAG_HEADER + 5 + 4:
            return bytes(tag.raw)  # end of sequence
        if tag.frame_type not in (flv.KEYFRAME, flv.INTER, 3):
            return None  # video info/command frames: no picture
        idr = flv.NAL_IDR in tag.nal_types(self.length_size)
        if tag.frame_type == flv.KEYFRAME and not idr:
            self.false_keyframes += 1
        if idr:
            if self.first_idr is None:
                self.first_idr = tag.timestamp
            if self.last_idr is not None:
                self.interval_ms = tag.timestamp - self.last_idr
            self.last_idr = tag.timestamp
            self.since_idr = 0
            cts = int.from_bytes(tag.raw[flv.TAG_HEADER + 2 : flv.TAG_HEADER + 5], "big", signed=True)
            self.idrs.append((tag.timestamp + cts, tag.offset))
        elif self.first_idr is None:
            return None
        wanted = flv.KEYFRAME if idr else flv.INTER
        if tag.frame_type != wanted:
            tag.set_frame_type(wanted)
        return bytes(tag.raw)

    def _limits(self, ts: int, size: int) -> None:
        self.since_idr += size
        if self.last_idr is not None and (
            ts - self.last_idr > self.max_chunk_ms or self.since_idr > self.max_chunk_bytes
        ):
            why = (
                f"{self.false_keyframes} keyframes were not IDR frames (open GOP): turn open GOP off"
                if self.false_keyframes
                else "set your encoder's keyframe interval to 2 s"
            )
            raise Refusal(
                f"no keyframe (IDR) for more than {settings.CHUNK_MAX_SECONDS:g} s or {settings.CHUNK_MAX_MB} MB; {why}"
            )
        self._window.append((ts, size))
        self._window_bytes += size
        while self._window and ts - self._window[0][0] > BITRATE_WINDOW_MS:
            self._window_bytes -= self._window.popleft()[1]
        span = ts - self._window[0][0]
        if span >= BITRATE_WINDOW_MS * 0.9:
            rate = self._window_bytes * 8 * 1000 / span
            if rate > self.max_bits_per_s:
                raise Refusal(
                    f"bitrate {_kbps(rate)} is above this platform's maximum of "
                    f"{_kbps(self.max_bits_per_s)}: lower your encoder's bitrate"
                )

    def idr_at(self, pts_s: float) -> tuple[int, int] | None:
        """(presentation time in ms, recording offset) of the IDR at ``pts_s`` (a chunk start)."""
        target = round(pts_s * 1000)
        for pts, offset in self.idrs:
            if abs(pts - target) <= 1:
                return pts, offset
        return None


class Segmenter(threading.Thread):
    """Feeds the recording of one publisher connection to the segmenter ffmpeg and its chunks
    to Redis (see the module docstring)."""

    def __init__(
        self,
        *,
        session_id: int,
        stream_id: int,
        conn: int,
        name: str,
        chunk_seconds: float | None = None,
        resumed: bool = False,
    ) -> None:
        super().__init__(name=f"segmenter-{name}", daemon=True)
        self.session_id = session_id
        # The chunk duration of the stream's latency mode (the ingest command's "chunk_s");
        # CHUNK_SECONDS for commands queued before latency modes existed.
        self.chunk_seconds = float(chunk_seconds) if chunk_seconds else settings.CHUNK_SECONDS
        self.stream_id = stream_id
        self.conn = conn
        self.input_name = name
        # Started again by the supervisor for a connection whose publisher stays (its ffmpeg or
        # the supervisor died): it continues from the resume point kept in Redis.
        self.resumed = resumed
        self.epoch: int | None = None  # the numbering generation this segmenter writes (state.py)
        self._disc_next = conn > 1  # the next chunk follows a hole (set again after a restart)
        self._queued_seq = -1
        self._outage_since: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.chunks = 0
        self.last_seq = -1
        self.refused: str | None = None
        self._anchor: float | None = None  # wall clock minus source time, per connection
        self._lines_done = 0
        # Progressive transcoding: the chunk being written, already numbered and queued, and how
        # many of its bytes went to Redis.
        self._current: tuple[int, str] | None = None
        self._sent = 0
        self._probed = False  # this connection's source is probed and the session's ladder known
        self._unfit = False  # the probe refused the source: no chunk of it is published
        self._stopped = False
        self._advised = False
        self._feed = _Feed()
        self._resume_offset = 0  # where the chunk being written starts in the recording
        self._resume_pts = 0  # and its presentation time in ms
        # A resumed ffmpeg reports 0 as its first chunk's start: the resume point's time instead.
        self._first_start: float | None = None
        self._bytes_since_sample = 0
        self._durations: deque[float] = deque(maxlen=10)
        self._stderr: deque[str] = deque(maxlen=20)
        # The ingest doctor (transcoding/doctor.py): analyses finished chunks beside this thread.
        self.doctor: doctor.Doctor | None = None

    @property
    def ctx(self) -> dict[str, object]:
        return {"stream": self.stream_id, "session": self.session_id, "ctx": {"connection": self.conn}}

    def stop(self) -> None:
        """Stop (supervisor shutdown): the recording and the resume point are kept, so a
        segmenter started again for this connection continues where this one stopped."""
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
        fresh = not self.resumed and not recording.load_resume(self.input_name)
        try:
            self.epoch = state.ensure_epoch(self.session_id)
            state.set_ingest(self.session_id, self.conn, "running")
        except OUTAGE:
            logger.warning("Redis unreachable at segmenter start", extra=self.ctx)
        if self.conn == 1 and fresh:
            # A new broadcast: the stable master must not keep pointing at the last one.
            try:
                storage.delete_key(f"{playback.stream_prefix(self.stream_id)}/master.m3u8")
            except Exception:
                logger.warning("could not remove the previous live master", extra=self.ctx, exc_info=True)
        try:
            recording.sweep()
            with tempfile.TemporaryDirectory(prefix=f"ingest-{self.session_id}-{self.conn}-") as tmp:
                self._run(Path(tmp))
        except Exception:
            logger.exception("segmenter crashed", extra=self.ctx)
        finally:
            if self.doctor is not None:
                self.doctor.close()  # it reports what it has, then ends
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()  # never leave an ffmpeg behind a crashed segmenter
            try:
                state.set_ingest(self.session_id, self.conn, f"ended:{self.last_seq}")
            except OUTAGE:
                logger.warning("Redis unreachable: segmenter end not recorded", extra=self.ctx)
            logger.info("segmenter finished after %d chunks", self.chunks, extra=self.ctx)

    # --- the recording -> ffmpeg -------------------------------------------------------------
    def _run(self, work: Path) -> None:
        resume = recording.load_resume(self.input_name)
        if resume.get("refused") or resume.get("over"):  # a segmenter of this connection finished it
            logger.info("connection already ingested: %s", resume.get("refused") or "publish over", extra=self.ctx)
            return
        rec = recording.Recording(recording.path_for(self.input_name))
        if not rec.open(RECORDING_WAIT_S, lambda: self._stopped):
            logger.error(
                "no recording of the publish at %s: nginx-rtmp must record into RTMP_RECORD_DIR",
                rec.path,
                extra=self.ctx,
            )
            return
        over = False
        try:
            over = self._ingest(rec, work, resume)
        except Refusal as refusal:
            self._refuse(str(refusal))
            over = True
        finally:
            if self._current is not None:  # ffmpeg died mid-chunk: its task must not wait for it
                try:
                    state.mark_gap(self.session_id, self._current[0], "ingest ended mid-chunk")
                except OUTAGE:
                    logger.warning("Redis unreachable: unfinished chunk not marked", extra=self.ctx)
                self._current = None
            if over:  # nothing left to resume: the recording goes (nginx frees it on close)
                rec.delete()
                if self.refused is None:
                    recording.save_resume(self.input_name, {"over": True})
            else:
                rec.close()
        code = self.proc.returncode if self.proc is not None else None
        level = logging.INFO if code in (0, 255, None) or self.chunks else logging.WARNING
        logger.log(
            level,
            "segmenter ffmpeg exited with %s: %s",
            code,
            " | ".join(self._stderr) or "no output",
            extra=self.ctx,
        )

    def _ingest(self, rec: recording.Recording, work: Path, resume: dict[str, Any]) -> bool:
        """Feed the recording to ffmpeg until the publish is over; True when it is (everything
        ingested), False when stopped or ffmpeg died first. Raises ``Refusal``."""
        if resume:
            reader = flv.TagReader(int(resume["offset"]), has_header=False)
            self._restore(resume)
            self._disc_next = self.conn > 1 and self.chunks == 0
            initial = bytearray(flv.header(audio=bool(self._feed.audio_codec), video=True))
            for raw in resume.get("configs", []):
                initial += base64.b64decode(raw)
        else:
            reader = flv.TagReader()
            initial = bytearray()
            if not self._analyse(rec, reader, initial):
                return not self._stopped  # over: the publish ended before its first video frame
            initial[:0] = flv.header(audio=bool(self._feed.audio_codec), video=True)
            self._save_resume()
        encode_audio = self._feed.audio_codec not in (None, "AAC")
        if encode_audio:
            logger.info(
                "source audio is %s: the segmenter encodes it to AAC once", self._feed.audio_codec, extra=self.ctx
            )
        args = ffmpeg.segmenter_args(
            work, self.chunk_seconds, audio_kbps=settings.SEGMENTER_AUDIO_KBPS if encode_audio else None
        )
        logger.info("segmenter starting%s", " (resumed)" if resume else "", extra=self.ctx)
        # Parent-death signal: the ffmpeg ends with this thread, even when the supervisor is killed.
        self.proc = ffmpeg.spawn(args)
        stderr = threading.Thread(target=self._read_stderr, daemon=True)
        stderr.start()
        stdin = self._write(self.proc.stdin, bytes(initial))
        over = False
        next_sample = time.monotonic() + settings.INGEST_SAMPLE_SECONDS
        waker = recording.Waker()
        waker.watch(rec.path)
        waker.watch(work)
        try:
            while self.proc.poll() is None and not self._stopped:
                if stdin is not None:
                    stdin, over = self._pump(rec, reader, stdin)
                self._drain_safely(work)
                rec.release(self._resume_offset)
                if time.monotonic() >= next_sample:
                    self._sample_safely()
                    next_sample = time.monotonic() + settings.INGEST_SAMPLE_SECONDS
                waker.wait(POLL_S)
        finally:  # whatever raised (Redis, S3...), ffmpeg does not outlive its segmenter
            waker.close()
            self._stop_ffmpeg()
        stderr.join(timeout=2)
        self._drain_safely(work, wait_s=settings.INGEST_OUTAGE_WAIT_S)
        if self.refused is not None:
            raise Refusal(self.refused)
        return over and self.proc.returncode == 0

    def _stop_ffmpeg(self) -> None:
        if self.proc is not None:
            ffmpeg.stop(self.proc, timeout=5)

    def _sample_safely(self) -> None:
        try:
            self._sample()
        except Exception:  # health samples are best effort
            logger.warning("ingest sample failed", extra=self.ctx, exc_info=True)

    def _analyse(self, rec: recording.Recording, reader: flv.TagReader, out: bytearray) -> bool:
        """Read the start of the publish until its codecs are known (``_Feed.ready``), keeping
        the tags for ffmpeg in ``out``. False when the publish ended before any video frame."""
        started = time.monotonic()
        while not self._feed.ready():
            data = rec.read(reader.position)
            for tag in reader.feed(data):
                raw = self._feed.take(tag)
                if raw is not None:
                    out += raw
            if data:
                continue
            if not rec.writing():
                for tag in reader.feed(rec.read(reader.position)):  # the last tags before the end
                    raw = self._feed.take(tag)
                    if raw is not None:
                        out += raw
                if self._feed.first_idr is not None:
                    return True
                logger.info("the publish ended before its first video frame", extra=self.ctx)
                return False
            if self._stopped:
                return False
            if time.monotonic() - started > NO_VIDEO_S:
                raise Refusal(
                    f"no video keyframe within {NO_VIDEO_S:g} s of going live"
                    + ("" if self._feed.video_codec else ": the platform needs H.264 video")
                )
            time.sleep(0.01)
        return True

    def _pump(self, rec: recording.Recording, reader: flv.TagReader, stdin: IO[bytes]) -> tuple[IO[bytes] | None, bool]:
        """Move what the recording got since the last call to ffmpeg. Returns (stdin, or None once
        closed; whether the publish is over). A refusal ends the feed: ffmpeg then finishes the
        chunk it has, and the publisher is dropped."""
        if self.refused is not None:  # refused at the probe: ffmpeg finishes what it has
            stdin.close()
            return None, False
        data = rec.read(reader.position)
        ended = False
        if not data and not rec.writing():
            data, ended = rec.read(reader.position), True  # what came before the lock's release
        out = bytearray()
        try:
            for tag in reader.feed(data):
                raw = self._feed.take(tag)
                if raw is not None:
                    out += raw
        except Refusal as refusal:
            self._refuse(str(refusal))
            ended = True
        if self._feed.interval_ms and not self._advised:
            self._advise(self._feed.interval_ms / 1000)
        written = self._write(stdin, bytes(out)) if out else stdin
        if ended and written is not None:
            written.close()
            written = None
        return written, ended and self.refused is None

    def _write(self, stdin: IO[bytes] | None, data: bytes) -> IO[bytes] | None:
        if stdin is None:
            return None
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError):  # ffmpeg is gone: the loop sees it exit
            return None
        return stdin

    # --- chunks -> Redis -----------------------------------------------------------------------
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
        new generation, the source is probed again (its parameters and the ladder were there),
        and the next chunk carries a discontinuity."""
        self._current, self._sent, self._queued_seq = None, 0, -1
        self._probed = False
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
            self._lines_done += 1  # only once Redis took it: an outage retries the chunk
        if settings.PROGRESSIVE_TRANSCODE and self.refused is None:
            self._stream_current(work / f"chunk_{self._lines_done:06d}.ts")

    def _stream_current(self, path: Path) -> None:
        """Progressive transcoding: number and queue the chunk being written as soon as it
        starts, and send its bytes as they come, so its task transcodes along (the connection's
        first chunk waits: it is probed whole)."""
        if not self._probed or not path.exists():
            return
        if self._current is None or self._current[1] != path.name:
            expect = self._durations[-1] if self._durations else 0.0
            seq = state.reserve_chunk(
                self.session_id, conn=self.conn, disc=self._disc_next, epoch=self.epoch, expect=expect
            )
            self._current, self._sent = (seq, path.name), 0
            self._save_resume()
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
        """Hand a finished chunk to Redis and queue its task. Safe to call again for the same
        chunk after a Redis error: nothing is counted before Redis took it."""
        if self._first_start is not None:
            start = max(start, self._first_start)
        now = time.time()
        # The list line appears when the keyframe that starts the next chunk arrives, i.e. at
        # source time ``end``; the smallest offset seen is the least delayed estimate.
        offset = now - end
        self._anchor = offset if self._anchor is None else min(self._anchor, offset)
        if not self._probed and (self._unfit or not self._probe(path, start, end)):
            path.unlink(missing_ok=True)
            self._first_start = None
            return
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
        # Redis has the chunk: from here on nothing must fail for Redis (a retry would repeat it).
        self._examine(path, start, end)
        self._current = None
        self._disc_next = False
        self._first_start = None
        path.unlink(missing_ok=True)
        self.chunks += 1
        self.last_seq = seq
        self._bytes_since_sample += size
        self._durations.append(end - start)
        next_start = self._feed.idr_at(end)
        if next_start is not None:
            self._resume_pts, self._resume_offset = next_start
        self._save_resume()

    def _probe(self, path: Path, start: float, end: float) -> bool:
        """Probe this connection's first chunk: the source's parameters for every chunk's
        transcode, the session's ladder, and the caps. False (and the publish ends) when the
        source is refused."""
        try:
            data = ffmpeg.probe_json(path, context=self.ctx)
            source = ffmpeg.parse_probe(data)
        except (ffmpeg.FFmpegError, ValueError) as exc:
            self._unfit = True
            self._refuse(f"the stream could not be read ({exc}): check your encoder's video settings")
            return False
        video: dict[str, Any] = next((s for s in data.get("streams", []) if s.get("codec_type") == "video"), {})
        if not source.video_bitrate and end > start:
            source = SourceInfo(**{**source.__dict__, "video_bitrate": int(path.stat().st_size * 8 / (end - start))})
        problem = source_problem(source, str(video.get("pix_fmt", "")))
        if problem:
            self._unfit = True
            self._refuse(problem)
            return False
        state.store_source(self.session_id, source, conn=self.conn)
        known = state.ladder(self.session_id) is not None
        renditions = state.decide_ladder(self.session_id, ladder_for(source))
        logger.info(
            "source probed: %s %sx%s@%s, audio %s; ladder %s",
            source.video_codec,
            source.width,
            source.height,
            source.fps,
            source.audio_codec or "none",
            ",".join(r.name for r in renditions),
            extra=self.ctx,
        )
        if not known:
            metadata.record_source(self.stream_id, self.session_id, source, renditions)
        self._probed = True
        return True

    def _examine(self, path: Path, start: float, end: float) -> None:
        """Hand the finished chunk to the ingest doctor (a hard link; never blocks, never fails)."""
        if not settings.INGEST_DOCTOR:
            return
        try:
            if self.doctor is None:
                self.doctor = doctor.Doctor(
                    session_id=self.session_id,
                    stream_id=self.stream_id,
                    conn=self.conn,
                    chunk_seconds=self.chunk_seconds,
                    work_root=str(path.parent.parent),
                )
                self.doctor.start()
            # The chunk's audio may be AAC encoded here: the doctor judges what the publisher sends.
            self.doctor.source_audio_codec = self._feed.audio_codec or ""
            self.doctor.submit(path, start, end)
        except Exception:
            logger.warning("ingest doctor unavailable", extra=self.ctx, exc_info=True)

    def _queue(self, seq: int) -> None:
        from transcoding.tasks import transcode_chunk

        parts = max(1, settings.TRANSCODE_TASKS_PER_CHUNK)
        for part in range(parts):
            transcode_chunk.delay(self.session_id, seq, part, parts, self.epoch)
        self._queued_seq = seq

    # --- the streamer --------------------------------------------------------------------------
    def _tell_streamer(self, reason: str) -> None:
        try:
            problems.record(self.stream_id, reason)
        except Exception:
            logger.exception("could not record the publish problem", extra=self.ctx)
        finally:
            connection.close()  # this thread's own database connection

    def _refuse(self, reason: str) -> None:
        """End the publish: the reason goes to the log and the dashboard; nginx-rtmp drops the
        publisher; the connection will not be resumed."""
        if self.refused is not None:
            return
        self.refused = reason
        logger.error("publish ended by the ingest: %s", reason, extra=self.ctx)
        recording.save_resume(self.input_name, {"refused": reason})
        self._tell_streamer(reason)
        rtmp_control.drop_publisher(self.input_name)

    def _advise(self, interval_s: float) -> None:
        """Tell the streamer once when keyframes come further apart than segments should last."""
        self._advised = True
        if interval_s <= max(self.chunk_seconds, 2.0) + ADVICE_SLACK_S:
            return
        false = (
            " Its other keyframes are not IDR frames (open GOP) and cannot start a segment: turn open GOP off."
            if self._feed.false_keyframes
            else ""
        )
        self._tell_streamer(
            f"Your encoder sends a keyframe every {interval_s:.1f} s, so each segment lasts that long and "
            f"viewers are that much further behind. Set its keyframe interval to 1-2 s "
            f"(OBS: Settings > Output > Keyframe Interval = {max(1, round(self.chunk_seconds))}).{false}"
        )

    # --- restarts ------------------------------------------------------------------------------
    def _save_resume(self) -> None:
        """Where a segmenter started again for this connection continues: the recording offset of
        the chunk being written, the codec headers, the chunk it would abandon."""
        feed = self._feed
        if self.refused is not None:
            return
        if not self._resume_offset and feed.idrs:
            self._resume_pts, self._resume_offset = feed.idrs[0]
        recording.save_resume(
            self.input_name,
            {
                "offset": self._resume_offset,
                "pts": self._resume_pts,
                "configs": [base64.b64encode(bytes(tag.raw)).decode() for tag in feed.configs.values()],
                "audio": feed.audio_codec,
                "video": feed.video_codec,
                "idr": feed.last_idr,
                "chunks": self.chunks,
                "last_seq": self.last_seq,
                "anchor": self._anchor,
                "probed": self._probed,
                "current": self._current[0] if self._current else None,
                "durations": list(self._durations),
            },
        )

    def _restore(self, resume: dict[str, Any]) -> None:
        feed = self._feed
        feed.audio_codec, feed.video_codec = resume.get("audio"), resume.get("video")
        feed.first_idr = feed.last_idr = resume.get("idr")
        for raw in resume.get("configs", []):
            tag = flv.Tag(0, bytearray(base64.b64decode(raw)))
            feed.configs[tag.type] = tag
            if tag.type == flv.VIDEO:
                feed.length_size = flv.avc_length_size(tag)
        self._resume_offset, self._resume_pts = int(resume["offset"]), int(resume.get("pts", 0))
        self._first_start = self._resume_pts / 1000
        self.chunks, self.last_seq = int(resume.get("chunks", 0)), int(resume.get("last_seq", -1))
        self._anchor = resume.get("anchor")
        self._probed = bool(resume.get("probed")) and state.ladder(self.session_id) is not None
        self._durations.extend(resume.get("durations", []))
        abandoned = resume.get("current")
        if abandoned is not None and state.mark_gap(self.session_id, int(abandoned), "segmenter restarted mid-chunk"):
            logger.warning("chunk %s abandoned by a restarted segmenter", abandoned, extra=self.ctx)

    # --- health --------------------------------------------------------------------------------
    def _sample(self) -> None:
        """One IngestSample: received bitrate, fps, keyframe interval, lag per rendition, backlog."""
        interval = settings.INGEST_SAMPLE_SECONDS
        source = state.source(self.session_id, self.conn)
        win = state.window(self.session_id).entries
        lag: dict[str, float] = {}
        if win:
            last = win[-1]
            behind = round(time.time() - (last.wall + last.duration), 3)
            lag = dict.fromkeys(last.sizes, behind)
        published = (win[-1].index + 1) if win else 0
        gaps = state.gap_count(self.session_id)
        metadata.record_sample(
            self.stream_id,
            self.session_id,
            bitrate=int(self._bytes_since_sample * 8 / interval),
            fps=source.fps if source else None,
            keyframe_interval_s=round(sum(self._durations) / len(self._durations), 3) if self._durations else None,
            dropped_chunks=gaps,
            lag_s=lag,
            queue_depth=state.chunk_count(self.session_id) - published - gaps,
        )
        self._bytes_since_sample = 0
