"""The ingest doctor: what is wrong with a live source, in plain words, with what to change in OBS
or ffmpeg (docs/adr/0034-ingest-doctor-and-preview.md).

The ingest node hands every finished chunk (MPEG-TS, the source's own timestamps: the segmenter
copies video and keeps times, ``ffmpeg.segmenter_args``) to a ``Doctor`` thread of its segmenter,
off the chunk's path: the chunk file is hard-linked before the segmenter deletes it, and a doctor
that falls behind skips chunks instead of holding anything up. The doctor demuxes the chunk with
PyAV (packets only, no video decode) and decodes its audio for loudness, keeps the last
``INGEST_DOCTOR_WINDOW_SECONDS`` of chunk statistics and, every ``INGEST_DOCTOR_EVERY_CHUNKS``
chunks, turns the window into findings:

==========================  ==================================================================
code                        when (thresholds: ADR 0034)
==========================  ==================================================================
``keyframe_interval``       keyframes further apart than the chunk duration + 0.5 s
``b_frames``                video packets out of decode order (pts != dts) in >= 5 % of frames
``variable_frame_rate``     frame durations spread (p90 - p10) above 25 % of their median
``av_offset``               audio starts more than 0.25 s before or after the video
``av_drift``                the audio's timestamps run 0.1 s or more away from its samples
                            over the connection (two clocks that disagree: lip sync drifts)
``loudness_low``            integrated loudness (EBU R128) below -30 LUFS
``loudness_high``           integrated loudness above -9 LUFS, or clipped samples (>= 0.1 %)
``bitrate_spikes``          a second of media above 2.5x the window's median per-second bitrate
``resolution_above_ladder`` a picture taller (or wider) than the ladder's top rung
``audio_codec``             audio that is not AAC (MP3, Opus, Speex...): encoded again at ingest
==========================  ==================================================================

Findings live in Redis (``state`` key ``doctor``) while the session runs; when their set of codes
changes they are written to the session (``StreamSession.ingest_findings``: the dashboard shows
the last broadcast's) and ``ingest.findings`` goes to the owner's socket and webhooks. The
analysis functions (``analyse_chunk``, ``Window``, ``diagnose``) are pure: tests run them on media
files.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import queue
import shutil
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from transcoding import loudness

logger = logging.getLogger(__name__)

# Thresholds (ADR 0034). Seconds unless said otherwise.
KEYFRAME_SLACK_S = 0.5
KEYFRAME_ERROR_S = 4.0
B_FRAME_SHARE = 0.05
VFR_SPREAD = 0.25
AV_OFFSET_S = 0.25
AV_DRIFT_S = 0.1
AV_DRIFT_MIN_S = 8.0  # of audio timeline before drift is judged
CONTIGUOUS_S = 0.05  # chunk boundaries this close follow each other
LOUDNESS_LOW_LUFS = -30.0
LOUDNESS_HIGH_LUFS = -9.0
CLIPPED_SHARE = 0.001
CLIP_LEVEL = 0.999
SPIKE_RATIO = 2.5
SPIKE_MIN_SECONDS = 5
LOUDNESS_MIN_S = 3.0
MIN_FRAMES = 10

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # info / warning / error
    title: str
    detail: str  # with the measured numbers
    obs: str  # what to change in OBS
    ffmpeg: str  # what to change in an ffmpeg command line
    measured: dict[str, float | int | str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChunkStats:
    """What one chunk tells: video packet times (pts, dts), keyframes, sizes, picture size, audio
    codec, audio time span and loudness sub-blocks (100 ms mean squares, K-weighted)."""

    start: float
    end: float
    video_pts: list[float] = field(default_factory=list)
    video_dts: list[float] = field(default_factory=list)
    keyframes: list[float] = field(default_factory=list)
    sizes: list[tuple[float, int]] = field(default_factory=list)  # (dts, bytes) of every packet
    width: int = 0
    height: int = 0
    audio_codec: str = ""
    audio_first: float | None = None
    audio_last: float | None = None
    audio_seconds: float = 0.0
    blocks: list[float] = field(default_factory=list)  # K-weighted mean square per 100 ms
    clipped: int = 0
    samples: int = 0

    @property
    def video_first(self) -> float | None:
        return min(self.video_pts) if self.video_pts else None


# --- one chunk -------------------------------------------------------------------------------------
def analyse_chunk(path: str | Path, *, start: float = 0.0, end: float = 0.0) -> ChunkStats:  # noqa: PLR0912
    """Demux a chunk (any container PyAV reads) and decode its audio."""
    stats = ChunkStats(start=start, end=end)
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            stats.width, stats.height = video.codec_context.width, video.codec_context.height
        if audio is not None:
            codec = audio.codec_context.codec
            stats.audio_codec = getattr(codec, "canonical_name", "") or codec.name
        resampler = av.AudioResampler(format="fltp") if audio is not None else None
        pcm: list[np.ndarray] = []
        rate = 0
        streams = [s for s in (video, audio) if s is not None]
        for packet in container.demux(streams):
            if packet.size == 0 or packet.time_base is None:
                continue
            tb = float(packet.time_base)
            dts = packet.dts if packet.dts is not None else packet.pts
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None or dts is None:
                continue
            stats.sizes.append((dts * tb, packet.size))
            if packet.stream is video:
                stats.video_pts.append(pts * tb)
                stats.video_dts.append(dts * tb)
                if packet.is_keyframe:
                    stats.keyframes.append(pts * tb)
            elif packet.stream is audio and resampler is not None:
                first = pts * tb
                stats.audio_first = first if stats.audio_first is None else min(stats.audio_first, first)
                last = first + (packet.duration or 0) * tb
                stats.audio_last = last if stats.audio_last is None else max(stats.audio_last, last)
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue
                for frame in frames:
                    if not isinstance(frame, av.AudioFrame):
                        continue
                    for out in resampler.resample(frame):
                        rate = out.sample_rate
                        pcm.append(out.to_ndarray())
        if pcm and rate:
            samples = np.concatenate(pcm, axis=1).astype(np.float64)
            stats.samples = int(samples.size)
            stats.clipped = int(np.count_nonzero(np.abs(samples) >= CLIP_LEVEL))
            stats.audio_seconds = samples.shape[1] / rate
            stats.blocks = loudness.block_powers(samples, rate)
    return stats


# --- the window ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What the findings are measured against."""

    chunk_seconds: float
    top_height: int  # the ladder's top rung (``TRANSCODE_LADDER``)
    source_audio_codec: str = ""  # what the publisher sends (the chunk may hold it re-encoded)


def top_rung_height() -> int:
    from django.conf import settings

    from transcoding.ladder import parse_rung

    return max((parse_rung(spec)[1] for spec in settings.TRANSCODE_LADDER), default=0)


class Window:
    """The last ``seconds`` of chunk statistics, and the first audio/video times of the
    connection (the offset between the tracks is set at the start of a publish)."""

    def __init__(self, seconds: float = 20.0) -> None:
        self.seconds = seconds
        self.chunks: deque[ChunkStats] = deque()
        self.first_video: float | None = None
        self.first_audio: float | None = None
        # Drift: over consecutive chunks of the connection, how far the audio's timeline moved
        # against the seconds of samples it carried (equal when one clock stamps both).
        self._drift_from: float | None = None  # audio timeline where counting started
        self._drift_samples = 0.0  # seconds of samples since then, up to the latest chunk
        self._last_end: float | None = None
        self.drift: tuple[float, float] | None = None  # (timeline - samples, over seconds)

    def add(self, stats: ChunkStats) -> None:
        if self.first_video is None and stats.video_first is not None:
            self.first_video = stats.video_first
        if self.first_audio is None and stats.audio_first is not None:
            self.first_audio = stats.audio_first
        self._track_drift(stats)
        self.chunks.append(stats)
        while len(self.chunks) > 2 and self._span() > self.seconds:
            self.chunks.popleft()

    def _track_drift(self, stats: ChunkStats) -> None:
        follows = (
            self._last_end is not None and stats.end > stats.start and abs(stats.start - self._last_end) < CONTIGUOUS_S
        )
        self._last_end = stats.end if stats.end > stats.start else None
        if stats.audio_first is None or stats.audio_seconds <= 0:
            self._drift_from = None  # no audio here: nothing to count across
            return
        if not follows or self._drift_from is None:  # the first chunk, or one skipped: count anew
            self._drift_from, self._drift_samples = stats.audio_first, stats.audio_seconds
            return
        over = stats.audio_first - self._drift_from
        self.drift = (over - self._drift_samples, over)
        self._drift_samples += stats.audio_seconds

    def _span(self) -> float:
        pts = [p for c in self.chunks for p in c.video_pts]
        return (max(pts) - min(pts)) if pts else 0.0


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if math.isfinite(value) else "?"


def _fps(durations: list[float]) -> float:
    """Frames per second of the window (FLV times are whole milliseconds: the mean, not one
    frame's duration, and rounded to 0.01)."""
    total = sum(durations)
    return round(len(durations) / total, 2) if total > 0 else 30.0


def diagnose(window: Window, ctx: Context) -> list[Finding]:  # noqa: PLR0912, PLR0915 - one check after the other
    """The findings of a window, most severe first."""
    chunks = list(window.chunks)
    findings: list[Finding] = []
    pts = sorted(p for c in chunks for p in c.video_pts)
    durations = [b - a for a, b in itertools.pairwise(pts) if b > a]
    fps = _fps(durations)
    chunk_s = max(ctx.chunk_seconds, 0.5)
    gop_frames = max(1, round(fps * chunk_s))

    # Keyframe interval: the longest distance between keyframes, or from the last one to the end.
    keys = sorted({round(k, 3) for c in chunks for k in c.keyframes})
    if pts and keys:
        gaps = [b - a for a, b in itertools.pairwise(keys)]
        gaps.append(pts[-1] + (durations[-1] if durations else 0) - keys[-1])
        interval = max(gaps)
        if interval > chunk_s + KEYFRAME_SLACK_S:
            findings.append(
                Finding(
                    "keyframe_interval",
                    "error" if interval > max(KEYFRAME_ERROR_S, 2 * chunk_s) else "warning",
                    f"Keyframes every {_fmt(interval)} s: segments that long",
                    f"Your encoder sends a keyframe every {_fmt(interval)} s (measured), but this stream cuts "
                    f"{_fmt(chunk_s)} s segments and can only cut at keyframes: every segment lasts "
                    f"{_fmt(interval)} s, viewers are that much further behind and join that much later.",
                    f'OBS: Settings > Output > Streaming (Output Mode "Advanced") > Keyframe Interval = '
                    f"{max(1, round(chunk_s))} s (not 0/auto).",
                    f"ffmpeg: -g {gop_frames} -keyint_min {gop_frames} -sc_threshold 0 "
                    f"(a keyframe every {_fmt(chunk_s)} s at {_fmt(fps)} fps), or "
                    f'-force_key_frames "expr:gte(t,n_forced*{_fmt(chunk_s)})".',
                    {"interval_s": round(interval, 3), "chunk_s": chunk_s},
                )
            )

    # B-frames: packets whose presentation and decode times differ.
    pairs = [(p, d) for c in chunks for p, d in zip(c.video_pts, c.video_dts, strict=False)]
    if len(pairs) >= MIN_FRAMES:
        # A constant pts-dts shift (the muxer's start delay) is not reordering.
        shift = statistics.median(p - d for p, d in pairs)
        reordered = sum(1 for p, d in pairs if abs((p - d) - shift) > 0.001)
        share = reordered / len(pairs)
        if share >= B_FRAME_SHARE:
            findings.append(
                Finding(
                    "b_frames",
                    "warning",
                    "B-frames in the video",
                    f"{reordered} of {len(pairs)} frames ({share:.0%}) arrive out of display order (B-frames). "
                    "They add decoding delay on every viewer's player and to the live edge, and low-latency "
                    "parts cannot start on them.",
                    'OBS: Settings > Output > Streaming > x264: Profile "baseline", or keep "main"/"high" and '
                    'set "x264 Options" to bframes=0 (NVENC/QuickSync: Max B-frames = 0); also Tune "zerolatency".',
                    "ffmpeg: -bf 0 (or -tune zerolatency, or -profile:v baseline).",
                    {"reordered": reordered, "frames": len(pairs), "share": round(share, 3)},
                )
            )

    # Variable frame rate: the spread of frame durations.
    if len(durations) >= MIN_FRAMES:
        ordered = sorted(durations)
        median = statistics.median(ordered)
        p10, p90 = ordered[len(ordered) // 10], ordered[(len(ordered) * 9) // 10]
        spread = (p90 - p10) / median if median > 0 else 0.0
        if spread > VFR_SPREAD:
            findings.append(
                Finding(
                    "variable_frame_rate",
                    "warning",
                    "Variable frame rate",
                    f"Frame durations vary from {p10 * 1000:.0f} ms to {p90 * 1000:.0f} ms (10th-90th percentile, "
                    f"median {median * 1000:.0f} ms: {spread:.0%} spread). Players stutter and the renditions "
                    "drift from the source.",
                    "OBS: Settings > Video > Common FPS Values = 30 (or 60), not a fractional/custom value; check "
                    'that the source (capture card, game) runs at that rate and that "Output (Scaled) Resolution" '
                    "does not overload the encoder (Stats: skipped frames).",
                    f"ffmpeg: -r {round(fps)} -fps_mode cfr (older ffmpeg: -vsync cfr) on the output.",
                    {"p10_ms": round(p10 * 1000, 1), "p90_ms": round(p90 * 1000, 1), "spread": round(spread, 3)},
                )
            )

    # Audio/video offset at the start of the connection.
    if window.first_audio is not None and window.first_video is not None:
        offset = window.first_audio - window.first_video
        if abs(offset) > AV_OFFSET_S:
            late = "after" if offset > 0 else "before"
            findings.append(
                Finding(
                    "av_offset",
                    "warning",
                    f"Audio {abs(offset):.2f} s out of sync",
                    f"The audio's timestamps start {abs(offset):.2f} s {late} the video's: lips and sound are "
                    f"{abs(offset) * 1000:.0f} ms apart on every player.",
                    "OBS: Edit > Advanced Audio Properties > Sync Offset of the audio source: set it to 0 ms "
                    "(or compensate the capture delay); Settings > Advanced > Audio Monitoring / "
                    '"Use device timestamps" on capture sources.',
                    "ffmpeg: remove -itsoffset / adelay from the audio input, or correct it with "
                    f"-itsoffset {-offset:.2f} before that input; -af aresample=async=1 keeps it aligned.",
                    {"offset_s": round(offset, 3)},
                )
            )

    # Audio/video drift: the audio's timestamps move away from its samples (an audio clock, often a
    # capture device at another sample rate, disagrees with the one that stamps the video).
    if window.drift is not None:
        drift, over = window.drift
        if over >= AV_DRIFT_MIN_S and abs(drift) >= AV_DRIFT_S:
            per_minute = drift / over * 60
            way = "more" if drift > 0 else "less"
            findings.append(
                Finding(
                    "av_drift",
                    "warning",
                    f"Audio drifts {abs(per_minute):.1f} s a minute",
                    f"Over {over:.0f} s the audio's timestamps advanced {abs(drift):.2f} s {way} than the sound it "
                    f"carried: two clocks disagree, and lips and sound move apart by about {abs(per_minute):.1f} s "
                    "every minute (players stretch or cut the audio to catch up).",
                    "OBS: Settings > Audio > Sample Rate 48 kHz, and set the microphone / capture device to the "
                    "same rate in the system's sound settings; on a capture card or camera source, toggle "
                    '"Use Device Timestamps" in its properties.',
                    "ffmpeg: add -af aresample=async=1000 (stretches the audio to its timestamps), or stamp every "
                    "capture input with one clock (-use_wallclock_as_timestamps 1).",
                    {"drift_s": round(drift, 3), "over_s": round(over, 1), "per_minute_s": round(per_minute, 2)},
                )
            )

    # Loudness (EBU R128) and clipping.
    blocks = [b for c in chunks for b in c.blocks]
    samples = sum(c.samples for c in chunks)
    clipped = sum(c.clipped for c in chunks)
    if len(blocks) * 0.1 >= LOUDNESS_MIN_S:
        integrated, momentary = loudness.integrated(blocks)
        clipped_share = clipped / samples if samples else 0.0
        if integrated < LOUDNESS_LOW_LUFS:
            level = "silent" if integrated == -math.inf else f"{integrated:.1f} LUFS"
            findings.append(
                Finding(
                    "loudness_low",
                    "warning",
                    "Audio too quiet",
                    f"Integrated loudness {level} (EBU R128, over {len(blocks) / 10:.0f} s); streams are "
                    f"mixed around -14 to -23 LUFS, {LOUDNESS_LOW_LUFS:.0f} LUFS is the floor here.",
                    "OBS: raise the source's fader / Filters > Gain (+10 dB or more) in the Audio Mixer; "
                    "aim for the meter's yellow zone (about -20 to -10 dB) when you talk.",
                    "ffmpeg: -af loudnorm=I=-16:TP=-1.5:LRA=11 (or -af volume=15dB).",
                    {"integrated_lufs": round(integrated, 1) if integrated > -math.inf else "-inf"},
                )
            )
        elif integrated > LOUDNESS_HIGH_LUFS or clipped_share >= CLIPPED_SHARE:
            findings.append(
                Finding(
                    "loudness_high",
                    "warning",
                    "Audio too loud or clipping",
                    f"Integrated loudness {integrated:.1f} LUFS, loudest 400 ms {momentary:.1f} LUFS, "
                    f"{clipped_share:.2%} of samples at full scale (limit {LOUDNESS_HIGH_LUFS:.0f} LUFS, "
                    f"{CLIPPED_SHARE:.1%} clipped): the sound distorts.",
                    "OBS: lower the source's fader in the Audio Mixer (out of the red), add Filters > "
                    "Limiter (-6 dB) or Compressor.",
                    "ffmpeg: -af loudnorm=I=-16:TP=-1.5:LRA=11 (or -af volume=-10dB).",
                    {"integrated_lufs": round(integrated, 1), "momentary_max_lufs": round(momentary, 1)},
                )
            )

    # Bitrate spikes: per-second bitrate against the median second.
    per_second: dict[int, int] = {}
    for c in chunks:
        for t, size in c.sizes:
            per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + size
    if len(per_second) >= SPIKE_MIN_SECONDS + 2:
        seconds = sorted(per_second)[1:-1]  # the first and last second of the window are partial
        rates = [per_second[s] * 8 for s in seconds]
        median_rate = statistics.median(rates)
        peak = max(rates)
        if median_rate > 0 and peak > SPIKE_RATIO * median_rate:
            kbps = max(1, round(median_rate / 1000))
            findings.append(
                Finding(
                    "bitrate_spikes",
                    "warning",
                    "Bitrate spikes",
                    f"One second carried {peak / 1000:.0f} kbit/s against a median of {median_rate / 1000:.0f} "
                    f"kbit/s ({peak / median_rate:.1f}x): viewers on slower links rebuffer on spikes.",
                    'OBS: Settings > Output > Streaming > Rate Control: "CBR" at your bitrate (not VBR/CRF/CQP).',
                    f"ffmpeg: -b:v {kbps}k -maxrate {kbps}k -bufsize {2 * kbps}k (x264: -x264-params nal-hrd=cbr).",
                    {"peak_kbps": round(peak / 1000), "median_kbps": round(median_rate / 1000)},
                )
            )

    # Picture above the ladder's top.
    width = max((c.width for c in chunks), default=0)
    height = max((c.height for c in chunks), default=0)
    short, long = min(width, height), max(width, height)
    if ctx.top_height and short > ctx.top_height:
        top_long = round(ctx.top_height * 16 / 9)
        findings.append(
            Finding(
                "resolution_above_ladder",
                "warning",
                f"{width}x{height} is above the top quality ({ctx.top_height}p)",
                f"You send {width}x{height}; the platform's best transcoded quality is {ctx.top_height}p. "
                f"The extra pixels cost you upload bandwidth and encoder time and most viewers never get them.",
                f"OBS: Settings > Video > Output (Scaled) Resolution = {top_long}x{ctx.top_height}.",
                f"ffmpeg: -vf scale=-2:{ctx.top_height}.",
                {"width": width, "height": height, "top_height": ctx.top_height, "long_side": long},
            )
        )

    # Audio codec.
    codec = (ctx.source_audio_codec or next((c.audio_codec for c in chunks if c.audio_codec), "")).lower()
    if codec and codec != "aac":
        findings.append(
            Finding(
                "audio_codec",
                "warning",
                f"Audio codec {codec.upper()} instead of AAC",
                f"Your audio is {codec.upper()}; HLS players need AAC, so the ingest encodes it again "
                "(a second lossy generation and CPU on the platform).",
                'OBS: Settings > Output > Audio: the encoder "FFmpeg AAC" (or "CoreAudio AAC"), 160 kbit/s; '
                'with a custom FFmpeg output, Audio Encoder "aac".',
                "ffmpeg: -c:a aac -b:a 160k.",
                {"codec": codec},
            )
        )
    findings.sort(key=lambda f: -SEVERITIES.index(f.severity))
    return findings


def diagnose_file(path: str | Path, ctx: Context, *, window_seconds: float = 30.0) -> list[Finding]:
    """The findings of a whole media file (tests, a streamer's own recording)."""
    window = Window(window_seconds)
    window.add(analyse_chunk(path))
    return diagnose(window, ctx)


def codes(findings: Iterable[Finding | dict[str, Any]]) -> list[str]:
    return sorted({f.code if isinstance(f, Finding) else str(f["code"]) for f in findings})


# --- live: one thread per segmenter -----------------------------------------------------------------
class Doctor(threading.Thread):
    """Analyses a connection's chunks beside its segmenter (``submit`` never blocks: a doctor that
    is behind drops chunks) and publishes its findings every few chunks (``report``)."""

    QUEUE = 3

    def __init__(
        self,
        *,
        session_id: int,
        stream_id: int,
        conn: int,
        chunk_seconds: float,
        work_root: str | None = None,
    ) -> None:
        from django.conf import settings

        super().__init__(name=f"doctor-s{session_id}c{conn}", daemon=True)
        self.session_id, self.stream_id, self.conn = session_id, stream_id, conn
        self.chunk_seconds = chunk_seconds
        self.every = max(1, settings.INGEST_DOCTOR_EVERY_CHUNKS)
        self.window = Window(settings.INGEST_DOCTOR_WINDOW_SECONDS)
        self.top_height = top_rung_height()
        self.source_audio_codec = ""
        self.analysed = 0
        self.dropped = 0
        self._queue: queue.Queue[tuple[Path, float, float] | None] = queue.Queue(self.QUEUE)
        self._dir = Path(tempfile.mkdtemp(prefix=f"doctor-{session_id}-{conn}-", dir=work_root))
        self._n = 0

    @property
    def ctx(self) -> dict[str, object]:
        return {"stream": self.stream_id, "session": self.session_id, "ctx": {"connection": self.conn}}

    def submit(self, path: Path, start: float, end: float) -> None:
        """Take a finished chunk (hard link: the segmenter may delete its file at once)."""
        self._n += 1
        target = self._dir / f"{self._n:06d}.ts"
        try:
            os.link(path, target)
        except OSError:
            try:
                shutil.copyfile(path, target)
            except OSError:
                return
        try:
            self._queue.put_nowait((target, start, end))
        except queue.Full:
            self.dropped += 1
            target.unlink(missing_ok=True)

    def close(self) -> None:
        """No more chunks: the thread reports what it has and ends."""
        while True:
            try:
                self._queue.put(None, timeout=0.5)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    item = self._queue.get_nowait()
                    if item is not None:
                        item[0].unlink(missing_ok=True)

    def run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                path, start, end = item
                try:
                    self.window.add(analyse_chunk(path, start=start, end=end))
                    self.analysed += 1
                except Exception:  # a chunk it cannot read is not the broadcast's problem
                    logger.warning("ingest doctor could not analyse a chunk", extra=self.ctx, exc_info=True)
                finally:
                    path.unlink(missing_ok=True)
                if self.analysed and self.analysed % self.every == 0:
                    self._report_safely(final=False)
            if self.analysed:
                self._report_safely(final=True)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _report_safely(self, *, final: bool) -> None:
        try:
            findings = diagnose(
                self.window, Context(self.chunk_seconds, self.top_height, self.source_audio_codec or "")
            )
            report(self.session_id, self.stream_id, findings, final=final)
        except Exception:
            logger.warning("ingest doctor could not report", extra=self.ctx, exc_info=True)
        finally:
            from django.db import connection

            connection.close()  # this thread's own database connection


def report(session_id: int, stream_id: int, findings: list[Finding], *, final: bool = False) -> bool:
    """Publish findings: Redis always; the session row and ``ingest.findings`` when the set of
    codes changed (or at the end of a connection, so the session keeps the latest details).
    Returns whether the codes changed."""
    from transcoding import state

    payload = {
        "session": session_id,
        "updated_at": time.time(),
        "findings": [f.to_dict() for f in findings],
    }
    previous = state.get_json(session_id, "doctor")
    # Nothing reported yet counts as "no findings": a clean source sends no event.
    before = codes(previous.get("findings", [])) if isinstance(previous, dict) else []
    changed = before != codes(findings)
    if not final:
        # The final report (the connection ended) goes to the session row only: the pipeline may
        # have purged the session's keys already, and a key written after that would outlive it.
        state.set_json(session_id, "doctor", payload)
    if changed or final:
        persist(session_id, stream_id, payload, announce=changed)
    return changed


def persist(session_id: int, stream_id: int, payload: dict[str, Any], *, announce: bool) -> None:
    from django.db import transaction

    from livestream.events import send_event_on_commit
    from streams.models import StreamSession

    with transaction.atomic():
        StreamSession.objects.filter(pk=session_id).update(ingest_findings=payload)
        if announce:
            found = payload["findings"]
            logger.info(
                "ingest doctor: %s",
                ", ".join(codes(found)) or "no findings",
                extra={"stream": stream_id, "session": session_id},
            )
            send_event_on_commit(
                stream_id,
                "ingest.findings",
                {"stream": stream_id, "session": session_id, "codes": codes(found), "findings": found},
            )


def live_report(session_id: int) -> dict[str, Any] | None:
    """The findings in Redis of a running session (None when there are none, or Redis is away)."""
    from transcoding import state

    try:
        value = state.get_json(session_id, "doctor")
    except Exception:
        logger.warning("ingest doctor: Redis unreachable", exc_info=True)
        return None
    return value if isinstance(value, dict) else None
