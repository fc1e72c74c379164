"""The streamer helper behind ``manage.py golive``: ffmpeg publishing a test pattern (or a
file, or a V4L2 camera) over RTMP (or RTMPS, or SRT: an ``srt://`` URL), for demos, tests and
benchmarks.

The test pattern is 720p30 by default with 1 s keyframes (fits both 2 s and 1 s chunks), a
sine tone as AAC audio, and a burnt-in clock. ``clock_boxes`` adds a strip of 32 black/white
boxes (each ``BOX`` px wide, top-left corner, MSB first) encoding the publisher's wall clock
in milliseconds modulo 2**32 at the moment the frame was produced: a viewer decodes the bits
from a rendered frame and subtracts from its own clock for glass-to-glass latency.

The clock is read per frame (``RTCTIME`` in the filter graph, when the frame meets the test
pattern on its way to the encoder), not computed as launch time + frame time: ffmpeg's start-up
and any moment it falls behind real time would otherwise be counted as latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transcoding import ffmpeg

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
BOX = 16  # pixels per clock bit (square)
BITS = 32


@dataclass(frozen=True)
class PublishOptions:
    url: str
    source: str = "testsrc"  # "testsrc", a file path, or a /dev/video* device
    duration_s: float | None = None
    width: int = 1280
    height: int = 720
    fps: int = 30
    gop_s: float = 1.0
    video_kbps: int = 2500
    noise: bool = False
    clock_boxes: bool = False
    audio: str = "aac"  # "aac", or "mp3" (as some encoders send; the segmenter makes it AAC)


AUDIO_ENCODERS = {"aac": ("aac", 48000), "mp3": ("libmp3lame", 44100)}


def clock_strip_filter(fps: int) -> str:
    """lavfi source of the clock strip: bit k (MSB first) of the wall clock in ms mod 2**32.

    The strip's frames are stamped with the wall clock (microsecond time base, ``RTCTIME``),
    ``geq`` draws the bits of that time, then the frames get their regular timestamps back so
    that ``overlay`` pairs them with the pattern's frames as they arrive."""
    lum = f"255*mod(floor(mod(floor(T*1000)\\,{2**BITS})/pow(2\\,{BITS - 1}-floor(X/{BOX})))\\,2)"
    return (
        f"color=c=black:s={BOX * BITS}x{BOX}:r={fps},format=gray,settb=1/1000000,setpts=RTCTIME,"
        f"geq=lum={lum},setpts=N/({fps}*TB),format=yuv420p"
    )


def decode_clock_boxes(bits: list[int]) -> int:
    """Inverse of the strip (for viewers/tests): 32 bits MSB first -> ms modulo 2**32."""
    value = 0
    for bit in bits:
        value = (value << 1) | (1 if bit else 0)
    return value


def read_clock(source: str, *, width: int = 1280) -> int | None:
    """The clock strip of the first video frame of ``source`` (a file or URL ffmpeg can read),
    in ms modulo 2**32; None when there is no frame. ``width``: the source's width (boxes scale)."""
    box = BOX * width / 1280
    strip_w, strip_h = max(BITS, round(box * BITS)), max(1, round(box))
    try:
        pixels = ffmpeg.run_bytes(
            ffmpeg.raw_strip_args(source, strip_w, strip_h), timeout=30, context={}, failure_level=None
        )
    except ffmpeg.FFmpegError:
        return None
    row = pixels[(strip_h // 2) * strip_w : (strip_h // 2 + 1) * strip_w]
    if len(row) < strip_w:
        return None
    return decode_clock_boxes([1 if row[int((k + 0.5) * box)] > 128 else 0 for k in range(BITS)])


def publish_args(opts: PublishOptions) -> list[str]:
    """ffmpeg arguments that publish ``opts.source`` to ``opts.url`` in real time (-re); run them
    with ``ffmpeg.call`` (interactive) or any runner of ``transcoding.ffmpeg``."""
    args = [ffmpeg.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error"]
    if opts.source == "testsrc":
        args += ["-re", "-f", "lavfi", "-i", f"testsrc2=size={opts.width}x{opts.height}:rate={opts.fps}"]
        args += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    elif opts.source.startswith("/dev/video"):
        args += ["-f", "v4l2", "-framerate", str(opts.fps), "-i", opts.source]
        args += ["-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=48000"]
    else:
        args += ["-re", "-stream_loop", "-1", "-i", opts.source]
    inputs = 2 if opts.source == "testsrc" or opts.source.startswith("/dev/video") else 1
    chain = [f"scale={opts.width}:{opts.height}", f"fps={opts.fps}"]
    if opts.noise:
        chain.append("noise=alls=12:allf=t")
    if FONT.exists():
        chain.append(
            f"drawtext=fontfile={FONT}:fontsize=40:fontcolor=white:box=1:boxcolor=black@0.6:x=20:y=h-70:"
            "text='%{gmtime\\:%H\\\\\\:%M\\\\\\:%S} UTC  t=%{pts\\:hms}'"
        )
    graph = f"[0:v]{','.join(chain)}[main]"
    if opts.clock_boxes:
        graph += f";{clock_strip_filter(opts.fps)}[clock];[main][clock]overlay=0:0:shortest=1[out]"
    else:
        graph += ";[main]null[out]"
    audio_map = "1:a:0" if inputs == 2 else "0:a:0?"
    gop = max(1, round(opts.fps * opts.gop_s))
    args += ["-filter_complex", graph, "-map", "[out]", "-map", audio_map]
    if opts.duration_s:
        args += ["-t", f"{opts.duration_s:g}"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-b:v",
        f"{opts.video_kbps}k",
        "-maxrate",
        f"{opts.video_kbps}k",
        "-bufsize",
        f"{opts.video_kbps * 2}k",
        "-c:a",
        AUDIO_ENCODERS[opts.audio][0],
        "-b:a",
        "128k",
        "-ar",
        str(AUDIO_ENCODERS[opts.audio][1]),
        "-ac",
        "2",
        "-f",
        "mpegts" if opts.url.startswith("srt://") else "flv",  # SRT carries MPEG-TS (ADR 0032)
        opts.url,
    ]
    return args
