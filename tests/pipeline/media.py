"""Helpers of the pipeline tests: HLS parsing, ffprobe checks of downloaded segments, and the
source matrix (publisher files with burnt-in frame numbers, read back from any segment)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass
class Variant:
    uri: str
    attrs: dict[str, str]


def parse_master(text: str) -> list[Variant]:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U", text
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = {k: v.strip('"') for k, v in ATTR.findall(line.split(":", 1)[1])}
            out.append(Variant(lines[i + 1], attrs))
    return out


def segment_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def extinf(text: str) -> list[float]:
    return [float(line.split(":", 1)[1].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF:")]


def download_rendition(playlist_url: str, dest: Path) -> tuple[str, list[Path]]:
    """Download a media playlist and all its segments; returns (playlist text, segment files)."""
    text = requests.get(playlist_url, timeout=5).text
    base = playlist_url.rsplit("/", 1)[0]
    files = []
    dest.mkdir(parents=True, exist_ok=True)
    for uri in segment_uris(text):
        response = requests.get(f"{base}/{uri}", timeout=10)
        assert response.status_code == 200, (uri, response.status_code)
        path = dest / uri
        path.write_bytes(response.content)
        files.append(path)
    return text, files


def decode_errors(path: Path) -> str:
    """ffmpeg's complaints while decoding ``path`` fully (empty string = clean)."""
    done = subprocess.run(
        ["ffmpeg", "-v", "warning", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.decode("utf-8", "replace").strip()


def packets(path: Path) -> dict[str, list[tuple[float, float]]]:
    """codec_type -> [(dts, duration)] in file order."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts_time,duration_time",
            "-show_entries",
            "stream=index,codec_type",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    data = json.loads(out)
    kinds = {s["index"]: s["codec_type"] for s in data["streams"]}
    result: dict[str, list[tuple[float, float]]] = {}
    for p in data["packets"]:
        if p.get("dts_time") in (None, "N/A"):
            continue
        result.setdefault(kinds[p["stream_index"]], []).append(
            (float(p["dts_time"]), float(p.get("duration_time") or 0))
        )
    return result


def largest_gap(series: list[tuple[float, float]]) -> tuple[float, bool]:
    """(largest hole between one packet's end and the next's start, dts strictly increasing)."""
    gap = 0.0
    monotonic = True
    for (dts, dur), (nxt, _) in itertools.pairwise(series):
        if nxt <= dts:
            monotonic = False
        gap = max(gap, nxt - (dts + dur))
    return gap, monotonic


# --- The source matrix: pre-encoded publisher files with burnt-in frame numbers ---------------
# Each frame carries its number (0, 1, 2...) in a strip of STRIP_BITS black/white boxes at the
# top left (most significant bit first), drawn before encoding: any rendition, any segment
# decoded on its own gives back exactly which of the publisher's frames it holds.
STRIP_BITS = 12


@dataclass(frozen=True)
class Source:
    """A publisher's file: H.264 + audio in FLV, published as is (``-c copy``)."""

    name: str
    width: int = 1280
    height: int = 720
    fps: int = 30
    kbps: int = 2500
    seconds: float = 11.0
    noise: bool = False
    audio: str = "aac"  # "aac", "mp3" or "" (none)
    audio_rate: int = 48000
    audio_channels: int = 2
    # x264 as a publisher sets it up: GOP, B-frames...
    video_args: tuple[str, ...] = ("-tune", "zerolatency", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0")

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def box(self) -> int:
        """Strip box size in pixels (scaled renditions down to 360p keep boxes >= 10 px)."""
        return max(16, self.height // 22)

    def ffmpeg_args(self, out: Path) -> list[str]:
        box = self.box
        lum = f"255*mod(floor(N/pow(2\\,{STRIP_BITS - 1}-floor(X/{box})))\\,2)"
        strip = f"color=c=black:s={box * STRIP_BITS}x{box}:r={self.fps},format=gray,geq=lum={lum},format=yuv420p"
        main = "noise=alls=20:allf=t" if self.noise else "null"
        graph = f"[0:v]{main}[m];{strip}[s];[m][s]overlay=0:0:shortest=1[out]"
        args = [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={self.width}x{self.height}:rate={self.fps}",
        ]
        if self.audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={self.audio_rate}"]
        args += ["-filter_complex", graph, "-map", "[out]"] + (["-map", "1:a"] if self.audio else [])
        args += ["-t", f"{self.seconds:g}", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"]
        args += ["-pix_fmt", "yuv420p", "-b:v", f"{self.kbps}k", "-maxrate", f"{self.kbps}k"]
        args += ["-bufsize", f"{self.kbps * 2}k", *self.video_args]
        if self.audio:
            encoder = {"aac": "aac", "mp3": "libmp3lame"}[self.audio]
            args += ["-c:a", encoder, "-b:a", "128k", "-ar", str(self.audio_rate), "-ac", str(self.audio_channels)]
        return [*args, "-f", "flv", str(out)]


def _gop(frames: int) -> tuple[str, ...]:
    return ("-g", str(frames), "-keyint_min", str(frames), "-sc_threshold", "0")


SOURCES = {
    s.name: s
    for s in (
        Source("1080p30-8M-noisy", 1920, 1080, 30, 8000, noise=True, video_args=("-tune", "zerolatency", *_gop(60))),
        Source("720p60-6M-mono44k", 1280, 720, 60, 6000, audio_rate=44100, audio_channels=1,
               video_args=("-tune", "zerolatency", *_gop(120))),
        Source("720p30-no-audio", audio=""),
        # OBS's default keyframe interval ("0 = auto"): x264's 250 frames, 8.3 s at 30 fps.
        Source("obs-auto-keyframes", video_args=("-tune", "zerolatency", *_gop(250))),
        Source("b-frames", video_args=("-bf", "3", "-b_strategy", "1", *_gop(60))),
        # Keyframes that are not IDR: x264 with open GOP flags its recovery-point I-frames as
        # keyframes (FLV frame type 1, NAL type 1, SEI recovery point) every 63 frames; IDRs
        # come every 90 frames (forced). A chunk cut at such an I-frame does not decode.
        Source("non-idr-keyframes", video_args=(
            "-x264-params", "open-gop=1:keyint=63:min-keyint=63:scenecut=0",
            "-force_key_frames", "expr:eq(mod(n,90),0)", "-forced-idr", "1")),
        Source("mp3-audio", audio="mp3", audio_rate=44100),
    )
}  # fmt: skip


def media_cache() -> Path:
    path = Path(os.environ.get("TEST_MEDIA_CACHE") or Path(tempfile.gettempdir()) / "livestream-test-media")
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_file(source: Source) -> Path:
    """The source's file, encoded once into the media cache (keyed by its ffmpeg arguments)."""
    digest = hashlib.sha256(" ".join(source.ffmpeg_args(Path("out"))).encode()).hexdigest()[:16]
    path = media_cache() / f"{source.name}-{digest}.flv"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.part.flv")
        subprocess.run(source.ffmpeg_args(partial), check=True, timeout=600)
        partial.replace(path)
    return path


def publish_file(url: str, path: Path) -> subprocess.Popen[bytes]:
    """Publish ``path`` in real time with stream copy, as the encoder produced it."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(path), "-c", "copy", "-f", "flv", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def annexb_nal_types(data: bytes) -> list[int]:
    """NAL unit types of an Annex B (start-code delimited) H.264 access unit."""
    types = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        if pos + 3 < len(data):
            types.append(data[pos + 3] & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


@dataclass
class Decoded:
    """A segment decoded on its own: the first video packet's NAL types, whether the first
    decoded frame is a keyframe, and the frame number read from each frame's strip."""

    first_nals: list[int]
    first_is_key: bool
    numbers: list[int]


def decode_segment(path: Path, source: Source) -> Decoded:
    """Decode ``path`` from its first byte (nothing before it) and read every frame's number."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first_nals: list[int] | None = None
        first_is_key: bool | None = None
        numbers = []
        for packet in container.demux(stream):
            if first_nals is None and packet.size:
                first_nals = annexb_nal_types(bytes(packet))
            for frame in packet.decode():
                if first_is_key is None:
                    first_is_key = bool(frame.key_frame)
                numbers.append(_frame_number(frame, source))
    return Decoded(first_nals or [], bool(first_is_key), numbers)


def _frame_number(frame: object, source: Source) -> int:
    plane = frame.planes[0]  # type: ignore[attr-defined]
    box = source.box * frame.height / source.height  # type: ignore[attr-defined]
    row = round(box / 2) * plane.line_size
    luma = bytes(plane)
    value = 0
    for k in range(STRIP_BITS):
        value = (value << 1) | (1 if luma[row + int((k + 0.5) * box)] > 128 else 0)
    return value
