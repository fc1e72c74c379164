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

import io
import logging
import threading
from collections.abc import Iterator
from fractions import Fraction
from typing import IO, Any, cast

import av
import av.error
from av.video.reformatter import Interpolation, VideoReformatter
from django.conf import settings

from transcoding.ladder import Rendition, SourceInfo

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

    def encode(self, frame: av.VideoFrame | None) -> None:
        if frame is not None:
            pts, time_base = frame.pts, frame.time_base
            frame = _scaler(self.rendition.width, self.rendition.height).reformat(
                frame,
                width=self.rendition.width,
                height=self.rendition.height,
                format="yuv420p",
                interpolation=Interpolation.BICUBIC,
            )
            frame.pts, frame.time_base = pts, time_base
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
) -> dict[str, bytes]:
    """Transcode the MPEG-TS chunk read from ``source`` into every rendition: name -> TS bytes.
    ``threads`` for the decoder and each encoder (``transcoding.cores`` decides; 0 = FFmpeg's
    automatic count). ``media``: the probed source of the chunk's connection, whose audio
    parameters the outputs get (without it, what the chunk's short probe found). Raises
    ``TranscodeError`` for input or encoder failures; exceptions of ``source`` propagate."""
    try:
        return _transcode(source, renditions, fps, threads=threads, gop_s=gop_s, media=media)
    except av.error.FFmpegError as exc:
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc


def _transcode(
    source: IO[bytes] | io.RawIOBase,
    renditions: list[Rendition],
    fps: float,
    *,
    threads: int,
    gop_s: float,
    media: SourceInfo | None,
) -> dict[str, bytes]:
    with av.open(source, "r", format="mpegts", options=PROBE) as chunk:
        if not chunk.streams.video:
            raise TranscodeError("no video stream in the chunk")
        video_in = chunk.streams.video[0]
        audio_in = chunk.streams.audio[0] if chunk.streams.audio else None
        video_in.codec_context.thread_count = threads
        video_in.codec_context.thread_type = "AUTO"
        outputs = [
            _Output(r, video_in, audio_in, fps=fps, threads=threads, gop_s=gop_s, source=media) for r in renditions
        ]
        encoded = [o for o in outputs if not o.rendition.copy]
        copied = [o for o in outputs if o.rendition.copy]
        wanted: list[Any] = [video_in] if audio_in is None else [video_in, audio_in]
        frames = 0
        for packet in chunk.demux(wanted):
            if packet.stream is audio_in:
                if packet.size:
                    for output in outputs:
                        packet.stream = output.audio
                        output.container.mux(packet)
                continue
            if packet.size:
                for output in copied:
                    packet.stream = output.video
                    output.container.mux(packet)
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
