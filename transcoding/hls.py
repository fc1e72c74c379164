"""HLS rendering (RFC 8216): media and master playlists from published entries. Pure: no Redis,
no S3, no clock. The assembler (``transcoding/assembler.py``) decides what is published; this
module only says how it is written down.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from transcoding.ladder import Rendition, SourceInfo
from transcoding.mpegts import aac_codec_string


@dataclass(frozen=True)
class Entry:
    """One published segment (the same seq in every rendition)."""

    index: int  # media sequence number (position in the session's published log)
    seq: int  # chunk number (names the segment files)
    duration: float
    wall: float  # ingest wall clock of the first frame, epoch seconds
    disc: bool
    sizes: dict[str, int] = field(default_factory=dict)
    epoch: int = 0  # numbering generation (state.py): part of the segment's name when not 0
    # Discontinuity tags of the entries before this one (EXT-X-DISCONTINUITY-SEQUENCE of a
    # window that starts here, RFC 8216 4.3.3.3), so a window renders without the whole log.
    dseq: int = 0

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.epoch)

    @property
    def tagged(self) -> bool:
        """Whether this entry is written with ``#EXT-X-DISCONTINUITY`` (never the first)."""
        return self.disc and self.index != 0

    def after(self) -> int:
        """``dseq`` of the entry that follows this one."""
        return self.dseq + (1 if self.tagged else 0)

    def to_json(self) -> str:
        return json.dumps(
            {
                "i": self.index,
                "seq": self.seq,
                "dur": self.duration,
                "wall": self.wall,
                "disc": self.disc,
                "r": self.sizes,
                "e": self.epoch,
                "ds": self.dseq,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        d = json.loads(raw)
        return cls(d["i"], d["seq"], d["dur"], d["wall"], d["disc"], d["r"], d.get("e", 0), d.get("ds", 0))


def segment_name(seq: int, epoch: int = 0) -> str:
    """``seg_<seq>.ts``; after Redis lost a session's state its numbering restarts in a new
    generation, named ``seg_<epoch>_<seq>.ts`` so no published object is ever written again."""
    return f"seg_{seq:06d}.ts" if not epoch else f"seg_{epoch}_{seq:06d}.ts"


NAME_RE = re.compile(r"^seg_(?:(\d+)_)?(\d+)\.ts$")


def with_dseq(entries: list[Entry]) -> list[Entry]:
    """The entries with ``index`` = position and ``dseq`` counted from the start."""
    out: list[Entry] = []
    for i, e in enumerate(entries):
        dseq = out[-1].after() if out else 0
        out.append(Entry(i, e.seq, e.duration, e.wall, e.disc, e.sizes, e.epoch, dseq))
    return out


def parse_media(text: str, renditions: list[str]) -> list[Entry]:
    """Entries of a media playlist we wrote (a replay ``index.m3u8``). Sizes are unknown (0)."""
    entries: list[Entry] = []
    wall, duration, disc = 0.0, 0.0, False
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif (match := NAME_RE.match(line.strip())) is not None:
            epoch, seq = int(match[1] or 0), int(match[2])
            sizes = dict.fromkeys(renditions, 0)
            entries.append(Entry(len(entries), seq, duration, wall, disc, sizes, epoch))
            disc = False
    return with_dseq(entries)


def rounded(duration: float) -> int:
    """A duration as EXT-X-TARGETDURATION compares it: rounded to the nearest integer."""
    return math.floor(duration + 0.5)


def target_duration(entries: list[Entry], floor: int) -> int:
    """EXT-X-TARGETDURATION: no segment's duration rounded to the nearest integer may exceed it."""
    longest = max((e.duration for e in entries), default=0.0)
    return max(floor, rounded(longest))


def _pdt(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_media(
    entries: list[Entry],
    window_start: int,
    discontinuities_before: int,
    *,
    target: int,
    kind: str,
    ended: bool,
    rendition: str | None = None,
) -> str:
    """Render ``entries[window_start:]`` for ``rendition``. ``discontinuities_before`` counts
    the discontinuity tags of segments that left the window (EXT-X-DISCONTINUITY-SEQUENCE,
    RFC 8216 4.3.3.3). An entry whose size for ``rendition`` is 0 (the rung was shed under
    overload: no object) is written with ``#EXT-X-GAP`` (RFC 8216bis 4.4.4.7): players do not
    load it and take that segment from another rung."""
    shown = entries[window_start:]
    media_sequence = shown[0].index if shown else len(entries)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuities_before:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities_before}")
    if kind == "event":
        lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if ended else "EVENT"))
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for entry in shown:
        if entry.tagged:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(entry.wall)}")
        lines.append(f"#EXTINF:{entry.duration:.3f},")
        if rendition is not None and entry.sizes.get(rendition) == 0:
            lines.append("#EXT-X-GAP")
        lines.append(entry.name)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_window(window: list[Entry], *, target: int, ended: bool, rendition: str | None = None) -> str:
    """A live sliding-window playlist from its entries alone (each carries its ``dseq``)."""
    dseq = window[0].dseq if window else 0
    return render_media(window, 0, dseq, target=target, kind="live", ended=ended, rendition=rendition)


def extinf_total(text: str) -> float:
    """Sum of the EXTINF durations of a media playlist."""
    return sum(float(line[8:].split(",")[0]) for line in text.splitlines() if line.startswith("#EXTINF:"))


@dataclass
class Rates:
    """Measured bitrate of one rendition, kept as running sums (constant work per segment)."""

    peak: int = 0  # bits/s of the densest segment
    bits: int = 0
    seconds: float = 0.0

    def add(self, size: int, duration: float) -> None:
        if duration >= 0.2 and size > 0:  # recovered entries: size unknown
            self.peak = max(self.peak, int(size * 8 / duration))
            self.bits += size * 8
            self.seconds += duration

    def bandwidths(self, rendition: Rendition) -> tuple[int, int]:
        """(peak, average) bits/s; the configured values before any measured segment."""
        if not self.seconds:
            fallback = rendition.peak_bandwidth or 1_000_000
            return fallback, int(fallback / 1.1)
        average = int(self.bits / self.seconds)
        return max(self.peak, average), average


def bandwidths(entries: list[Entry], rendition: Rendition) -> tuple[int, int]:
    """(peak, average) bits/s measured over published segments; configured values before."""
    rates = Rates()
    for e in entries:
        rates.add(e.sizes.get(rendition.name, 0), e.duration)
    return rates.bandwidths(rendition)


def render_master(
    renditions: list[Rendition],
    rates: dict[str, Rates] | list[Entry],
    codecs: dict[str, str],
    source: SourceInfo,
    *,
    uri: str,
) -> str:
    """Master playlist; ``uri`` is a template with ``{name}`` for each rendition's playlist.
    ``rates``: measured rates per rendition (or the entries to measure them from)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio = aac_codec_string(source.audio_profile) if source.has_audio else ""
    for rendition in renditions:
        if isinstance(rates, dict):
            peak, average = rates.get(rendition.name, Rates()).bandwidths(rendition)
        else:
            peak, average = bandwidths(rates, rendition)
        codec_list = [c for c in (codecs.get(rendition.name, "avc1.640028"), audio) if c]
        attrs = [
            f"BANDWIDTH={peak}",
            f"AVERAGE-BANDWIDTH={average}",
            f"RESOLUTION={rendition.width}x{rendition.height}",
            f'CODECS="{",".join(codec_list)}"',
        ]
        if source.fps:
            attrs.append(f"FRAME-RATE={source.fps:.3f}")
        attrs.append(f'NAME="{rendition.name}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(uri.format(name=rendition.name))
    return "\n".join(lines) + "\n"
