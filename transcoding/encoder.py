"""One chunk into its renditions, in the worker process, with PyAV (FFmpeg's libraries and
x264, bundled in the ``av`` wheel).

The chunk is demuxed and decoded once; every encoded rendition gets the decoded frame scaled
(bicubic) and encoded by x264; ``copy`` renditions get the source packets; audio packets are
copied into every rendition; each rendition is muxed to MPEG-TS in memory. Timestamps are the
source's, untouched (what ``-copyts -muxdelay 0 -muxpreload 0`` did for the ffmpeg CLI), so
chunks transcoded independently on any worker join into one continuous stream.

The chunk is demuxed with a short probe (it may still be being written), which at high
bitrates ends before the chunk's first audio packet: the audio stream's parameters come from the
session's probed source (``SourceInfo``, probed once per connection by the segmenter), never
from the chunk.

Why in-process (measured on 2 cores, docs/pipeline.md): an ffmpeg process per 2 s chunk costs
~70 ms of CPU just to start (Debian's ffmpeg loads 215 shared libraries) and probes the chunk
by decoding frames twice; chunked CLI transcoding took 16% more CPU than one process for the
whole source, in-process 5%. The libraries load once per worker and the scalers stay warm.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any, cast

import av
import av.error
from av.video.reformatter import Interpolation, VideoReformatter
from django.conf import settings

from transcoding import fmp4
from transcoding.ladder import Rendition, SourceInfo
from transcoding.loudness import AudioTap

logger = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)  # MPEG-TS clock
# Reading a chunk while it is being written: probe only what is needed to know the streams
# (~0.5 s of media), so that encoding follows the data instead of waiting for the end.
PROBE = {"probesize": "150000", "analyzeduration": "500000"}


class TranscodeError(RuntimeError):
    """The chunk could not be transcoded (corrupt input, encoder failure)."""


def x264_options(rendition: Rendition, fps: float, gop_s: float = 10.0) -> dict[str, str]:
    """x264 settings of an encoded rendition, as FFmpeg option names (the same for the CLI).
    A chunk is one GOP (the encoder starts it with an IDR), so the default ``gop_s`` is longer
    than any chunk; with no scene-cut keyframes, a longer input gets an IDR every ``gop_s``."""
    kbps = rendition.video_kbps
    return {
        "preset": settings.X264_PRESET,
        "profile": "high",
        "b": f"{kbps}k",
        "maxrate": f"{int(kbps * 1.1)}k",
        "bufsize": f"{int(kbps * 1.5)}k",
        "g": str(max(1, round(fps * gop_s))),
        "sc_threshold": "0",
    }


class FeedReader(io.RawIOBase):
    """A file object over byte blocks as they arrive (progressive transcoding: the chunk is
    read while the segmenter is still writing it). Exceptions of the iterator propagate."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        super().__init__()
        self._blocks = blocks
        self._pending = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._ended:
            try:
                self._pending = next(self._blocks)
            except StopIteration:
                self._ended = True
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


# Scaler contexts are costly to set up and stateless between frames: one per output size, kept
# for the life of the worker. Per thread: a context must never scale two frames at once
# (Celery's thread pool, the tests' in-process worker).
_local = threading.local()


def _scaler(width: int, height: int) -> VideoReformatter:
    scalers: dict[tuple[int, int], VideoReformatter] | None = getattr(_local, "scalers", None)
    if scalers is None:
        scalers = _local.scalers = {}
    return scalers.setdefault((width, height), VideoReformatter())


def _scaled(frame: av.VideoFrame, rendition: Rendition) -> av.VideoFrame:
    """``frame`` at the rendition's size (bicubic, yuv420p), its timestamps kept."""
    pts, time_base = frame.pts, frame.time_base
    scaled = _scaler(rendition.width, rendition.height).reformat(
        frame,
        width=rendition.width,
        height=rendition.height,
        format="yuv420p",
        interpolation=Interpolation.BICUBIC,
    )
    scaled.pts, scaled.time_base = pts, time_base
    return scaled


def _audio_output(container: Any, audio_in: Any, source: SourceInfo | None) -> Any:
    """The rendition's audio stream (packets are copied into it). With the source's parameters
    when it is AAC (what the segmenter always delivers, unless the source has none): a short
    probe of a chunk may have seen no audio packet, and a stream without sample rate and frame
    size cannot be muxed ("Invalid argument")."""
    if source is None or source.audio_codec != "aac" or not source.audio_sample_rate:
        return container.add_stream_from_template(audio_in)
    layout: str | int = source.audio_layout or source.audio_channels or "stereo"
    try:
        stream = container.add_stream("aac", rate=source.audio_sample_rate, layout=layout)
    except (ValueError, av.error.FFmpegError):  # a layout name this build does not know
        stream = container.add_stream("aac", rate=source.audio_sample_rate, layout=source.audio_channels or 2)
    # The muxer only needs the parameters (the packets keep their own ADTS headers); the
    # encoder context it opens at the header is never fed.
    stream.time_base = audio_in.time_base
    return stream


class _Output:
    """One rendition's muxer (MPEG-TS in memory), its video stream and its audio stream."""

    def __init__(
        self,
        rendition: Rendition,
        video_in: Any,
        audio_in: Any,
        *,
        fps: float,
        threads: int,
        gop_s: float,
        source: SourceInfo | None = None,
    ) -> None:
        self.rendition = rendition
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, "w", format="mpegts")
        if rendition.copy:
            self.video = self.container.add_stream_from_template(video_in)
        else:
            fps = fps or 30.0  # unknown frame rate: x264's rate control and GOP assume 30
            stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            codec = stream.codec_context
            codec.width, codec.height, codec.pix_fmt = rendition.width, rendition.height, "yuv420p"
            codec.time_base = TIME_BASE
            codec.bit_rate = rendition.video_kbps * 1000
            codec.thread_count = threads
            codec.options = x264_options(rendition, fps, gop_s)
            stream.time_base = TIME_BASE
            self.video = stream
        self.audio: Any = _audio_output(self.container, audio_in, source) if audio_in is not None else None

    def copy_audio(self, packet: Any) -> None:
        packet.stream = self.audio
        self.container.mux(packet)

    def copy_video(self, packet: Any) -> None:
        packet.stream = self.video
        self.container.mux(packet)

    def encode(self, frame: av.VideoFrame | None) -> None:
        if frame is not None:
            frame = _scaled(frame, self.rendition)
        stream = cast(Any, self.video)
        for packet in stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> bytes:
        self.container.close()
        return self.buffer.getvalue()


def transcode(
    source: IO[bytes] | io.RawIOBase,
    renditions: list[Rendition],
    fps: float,
    *,
    threads: int,
    gop_s: float = 10.0,
    media: SourceInfo | None = None,
    tap: AudioTap | None = None,
) -> dict[str, bytes]:
    """Transcode the MPEG-TS chunk read from ``source`` into every rendition: name -> TS bytes.
    ``threads`` for the decoder and each encoder (``transcoding.cores`` decides; 0 = FFmpeg's
    automatic count). ``media``: the probed source of the chunk's connection, whose audio
    parameters the outputs get (without it, what the chunk's short probe found). ``tap`` gets a
    copy of every audio packet (loudness, measured by the caller afterwards). Raises
    ``TranscodeError`` for input or encoder failures; exceptions of ``source`` propagate."""
    try:
        make = _output_factory(fps, threads=threads, gop_s=gop_s, media=media)
        return _transcode(source, renditions, threads=threads, make=make, tap=tap)
    except av.error.FFmpegError as exc:
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc


_Out = Any  # _Output or _CmafOutput: encode(frame), copy_video(packet), copy_audio(packet), close()
_Make = Callable[[Rendition, Any, Any], _Out]


def _output_factory(fps: float, *, threads: int, gop_s: float, media: SourceInfo | None) -> _Make:
    def make(rendition: Rendition, video_in: Any, audio_in: Any) -> _Out:
        return _Output(rendition, video_in, audio_in, fps=fps, threads=threads, gop_s=gop_s, source=media)

    return make


def _audio_sinks(outputs: list[_Out], audio_in: Any, tap: AudioTap | None) -> list[Callable[[Any], None]]:
    """Where each audio packet goes: every output, and the loudness tap first (copying into an
    output re-assigns the packet's stream)."""
    sinks: list[Callable[[Any], None]] = [o.copy_audio for o in outputs]
    if tap is not None and audio_in is not None:
        sinks.insert(0, functools.partial(tap.add, audio_in.codec_context.name))
    return sinks


def _transcode(
    source: IO[bytes] | io.RawIOBase,
    renditions: list[Rendition],
    *,
    threads: int,
    make: _Make,
    tap: AudioTap | None = None,
) -> dict[str, bytes]:
    with av.open(source, "r", format="mpegts", options=PROBE) as chunk:
        if not chunk.streams.video:
            raise TranscodeError("no video stream in the chunk")
        video_in = chunk.streams.video[0]
        audio_in = chunk.streams.audio[0] if chunk.streams.audio else None
        video_in.codec_context.thread_count = threads
        video_in.codec_context.thread_type = "AUTO"
        outputs = [make(r, video_in, audio_in) for r in renditions]
        encoded = [o for o in outputs if not o.rendition.copy]
        copied = [o for o in outputs if o.rendition.copy]
        wanted: list[Any] = [video_in] if audio_in is None else [video_in, audio_in]
        audio_sinks = _audio_sinks(outputs, audio_in, tap)
        frames = 0
        for packet in chunk.demux(wanted):
            if packet.stream is audio_in:
                if packet.size:
                    for copy in audio_sinks:
                        copy(packet)
                continue
            if packet.size:
                for output in copied:
                    output.copy_video(packet)
                packet.stream = video_in
            if encoded:
                for frame in video_in.decode(packet):  # the empty last packet flushes the decoder
                    frames += 1
                    for output in encoded:
                        output.encode(frame)
        if encoded and not frames:
            raise TranscodeError("the chunk has no decodable video frame")
        for output in encoded:
            output.encode(None)  # flush the encoder
        return {o.rendition.name: o.close() for o in outputs}


# --- Low-latency HLS: CMAF output cut into partial segments (ADR 0031) ----------------------


@dataclass(frozen=True)
class PartOut:
    """One partial segment of one rendition, handed to the caller while the chunk encodes."""

    rendition: str
    index: int  # in the chunk (part 0 starts with the chunk's IDR)
    data: bytes  # moof + mdat
    duration: float  # seconds of video
    independent: bool
    init: bytes  # the rendition's init section (the same object for every part of a connection)
    codec: str  # RFC 6381 video codecs string of the rendition ("avc1.64001f")


PartSink = Callable[[PartOut], None]


def low_delay_options(rendition: Rendition, fps: float, gop_s: float = 10.0) -> dict[str, str]:
    """x264 for partial segments: a frame in, its packet out. Lookahead and B-frames hold frames
    back (at veryfast ~13 frames, 0.4 s at 30 fps: more than a part), so both are off; frame
    threads would hold ``threads`` frames, slices do not (``sliced-threads``)."""
    options = x264_options(rendition, fps, gop_s)
    options["x264-params"] = "bframes=0:rc-lookahead=0:sync-lookahead=0:sliced-threads=1"
    return options


class _CmafOutput:
    """One rendition as CMAF (fMP4): x264 (or the source's packets for ``copy``) into a
    ``fmp4.Fragmenter``, cut into a part every ``part_s`` of video, each part handed to ``sink``
    at once. Timestamps are the source's (absolute ``tfdt``), so parts of chunks encoded on any
    worker join into one stream."""

    def __init__(
        self,
        rendition: Rendition,
        video_in: Any,
        audio_in: Any,
        *,
        fps: float,
        threads: int,
        gop_s: float,
        source: SourceInfo | None,
        part_s: float,
        sink: PartSink,
    ) -> None:
        self.rendition = rendition
        self.source = source
        self.sink = sink
        self.part_ticks = int(part_s * 90000)
        self.codec: Any = None
        if not rendition.copy:
            fps = fps or 30.0
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height, codec.pix_fmt = rendition.width, rendition.height, "yuv420p"
            codec.time_base = TIME_BASE
            codec.framerate = Fraction(fps).limit_denominator(1001)
            codec.bit_rate = rendition.video_kbps * 1000
            codec.thread_count = threads
            codec.options = low_delay_options(rendition, fps, gop_s)
            self.codec = codec
        self.audio_rate = (source.audio_sample_rate if source else 0) or (
            audio_in.codec_context.sample_rate if audio_in is not None else 0
        )
        self.has_audio = audio_in is not None
        self.fragmenter = fmp4.Fragmenter(
            has_video=True, has_audio=self.has_audio, audio_rate=self.audio_rate or 48000, sequence_start=0
        )
        self.video_config: fmp4.VideoConfig | None = None
        self.audio_config: fmp4.AudioConfig | None = None
        self.init = b""
        self.audio: list[tuple[bytes, int]] = []  # ADTS packets not yet in a part (pts 90 kHz)
        self.audio_next: int | None = None  # where the last audio packet ends (90 kHz)
        self.part_start: int | None = None  # dts of the current part's first frame
        self.spacing = 3000  # the largest frame spacing seen (90 kHz), 30 fps until measured
        self.last_dts: int | None = None
        self.parts: list[bytes] = []

    # Input ----------------------------------------------------------------------------------
    def audio_packet(self, data: bytes, pts: int) -> None:
        frames = fmp4.adts_frames(data)
        if frames and self.audio_config is None:
            self.audio_config = frames[0][1]
        rate = frames[0][1].sample_rate if frames else (self.audio_rate or 48000)
        self.audio_next = pts + round(len(frames) * 1024 * 90000 / rate)
        self.audio.append((data, pts))

    def copy_audio(self, packet: Any) -> None:
        # A PES holding several AAC frames comes out of the demuxer as packets of which only the
        # first has a time: the others follow the previous one's end.
        pts = int(packet.pts) if packet.pts is not None else self.audio_next
        if pts is not None:
            self.audio_packet(bytes(packet), pts)

    def copy_video(self, packet: Any) -> None:
        pts = packet.pts if packet.pts is not None else packet.dts
        dts = packet.dts if packet.dts is not None else pts
        if pts is None:
            return
        self.video_packet(bytes(packet), int(pts), int(dts), key=bool(packet.is_keyframe))

    def video_packet(self, data: bytes, pts: int, dts: int, *, key: bool) -> None:
        if self.video_config is None:
            if not key:
                return  # nothing decodes before the chunk's IDR
            self.video_config = fmp4.video_config(data, self.rendition.width, self.rendition.height)
            if self.video_config is None:
                raise TranscodeError(f"{self.rendition.name}: no SPS/PPS before the first IDR")
        if self.last_dts is not None:
            self.spacing = max(self.spacing, min(dts - self.last_dts, 9000)) if dts > self.last_dts else self.spacing
        # Cut before this frame when taking it would make the part longer than its target.
        if self.part_start is not None and dts + self.spacing - self.part_start > self.part_ticks:
            self._cut(dts)
        if self.part_start is None:
            self.part_start = dts
        self.fragmenter.add_video(data, pts, dts, key)
        self.last_dts = dts
        # Full: one more frame would not fit. Cut now rather than when the next frame arrives
        # (a frame sooner at the edge); the part ends where the next frame is expected.
        if dts + 2 * self.spacing - self.part_start > self.part_ticks:
            self._cut(dts + self.spacing)

    def encode(self, frame: av.VideoFrame | None) -> None:
        if frame is not None:
            frame = _scaled(frame, self.rendition)
        for packet in self.codec.encode(frame):
            self.video_packet(bytes(packet), int(packet.pts), int(packet.dts), key=bool(packet.is_keyframe))

    # Output ---------------------------------------------------------------------------------
    def _cut(self, boundary: int | None) -> None:
        """Write the current part: its video, and the audio before ``boundary`` (all at the end)."""
        if self.part_start is None:
            return
        if not self.init:
            probed = self.source
            if self.has_audio and probed is not None and probed.audio_profile.upper() == "LC":
                # The connection's probed parameters, not the chunk's first ADTS header: the same
                # init section for every chunk of the connection, whether or not an audio packet
                # came before its first cut.
                self.audio_config = (
                    fmp4.aac_lc_config(probed.audio_sample_rate, probed.audio_channels) or self.audio_config
                )
            self.init = fmp4.init_segment(self.video_config, self.audio_config if self.has_audio else None)
        keep: list[tuple[bytes, int]] = []
        for data, pts in self.audio:
            if boundary is None or pts < boundary:
                self.fragmenter.add_audio(data, pts)
            else:
                keep.append((data, pts))
        self.audio = keep
        end = boundary if boundary is not None else (self.last_dts or self.part_start) + self.spacing
        data = self.fragmenter.flush(next_video_dts=boundary) or b""
        self.sink(
            PartOut(
                rendition=self.rendition.name,
                index=len(self.parts),
                data=data,
                duration=round((end - self.part_start) / 90000, 3),
                independent=not self.parts,
                init=self.init,
                codec=fmp4.codec_string(self.video_config) if self.video_config else "",
            )
        )
        self.parts.append(data)
        self.part_start = None

    def close(self) -> bytes:
        """Write the last part (the encoder was flushed); the whole segment (its parts, in order)."""
        self._cut(None)
        return b"".join(self.parts)


def transcode_cmaf(
    source: IO[bytes] | io.RawIOBase,
    renditions: list[Rendition],
    fps: float,
    *,
    threads: int,
    part_s: float,
    sink: PartSink,
    gop_s: float = 10.0,
    media: SourceInfo | None = None,
    tap: AudioTap | None = None,
) -> dict[str, bytes]:
    """Like ``transcode``, into CMAF: every ``part_s`` of video each rendition's newest part goes
    to ``sink`` (in the calling thread, while the chunk encodes); returns each rendition's whole
    segment (its parts in order; the init section is in every ``PartOut``)."""

    def make(rendition: Rendition, video_in: Any, audio_in: Any) -> _Out:
        return _CmafOutput(
            rendition,
            video_in,
            audio_in,
            fps=fps,
            threads=threads,
            gop_s=gop_s,
            source=media,
            part_s=part_s,
            sink=sink,
        )

    try:
        return _transcode(source, renditions, threads=threads, make=make, tap=tap)
    except av.error.FFmpegError as exc:
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc
