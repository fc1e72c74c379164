"""HLS rendering (RFC 8216, and 8216bis for Low-Latency HLS): media and master playlists from
published entries. Pure: no Redis, no S3, no clock. The assembler (``transcoding/assembler.py``)
decides what is published; this module only says how it is written down.

Two segment formats: MPEG-TS (``seg_000012.ts``, the normal latency mode, written exactly as
before) and CMAF/fMP4 (``seg_000012.m4s`` after an ``EXT-X-MAP`` init section). A low-latency
stream's live edge also lists partial segments (``seg_000012.p3.m4s``), a preload hint and
rendition reports (``render_low_latency``), and answers ``_HLS_skip`` with a Playlist Delta
Update (the same playlist with its older segments replaced by ``EXT-X-SKIP``: a 30-minute DVR
window of 2 s segments reloaded for every part is ~73 kB, its delta ~2 kB); the origin holds
blocking reloads with the pure rules at the end of this module (``edge_of``,
``blocking_satisfied``, ``blocking_error``, ``skip_directive``).
Every rule cites its section of draft-pantos-hls-rfc8216bis-22 (May 2026).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

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
    # fMP4 segments: rendition -> URI of its Media Initialization Section (EXT-X-MAP, RFC
    # 8216bis 3.1.2, relative to that rendition's media playlist); empty for MPEG-TS.
    inits: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.epoch, "m4s" if self.inits else "ts")

    def init(self, rendition: str | None) -> str:
        """The EXT-X-MAP URI of this segment in ``rendition`` ("" for TS)."""
        if not self.inits:
            return ""
        if rendition is None:
            return next(iter(self.inits.values()))
        return self.inits.get(rendition, "")

    @property
    def tagged(self) -> bool:
        """Whether this entry is written with ``#EXT-X-DISCONTINUITY`` (never the first)."""
        return self.disc and self.index != 0

    def after(self) -> int:
        """``dseq`` of the entry that follows this one."""
        return self.dseq + (1 if self.tagged else 0)

    def to_json(self) -> str:
        d: dict[str, object] = {
            "i": self.index,
            "seq": self.seq,
            "dur": self.duration,
            "wall": self.wall,
            "disc": self.disc,
            "r": self.sizes,
            "e": self.epoch,
            "ds": self.dseq,
        }
        if self.inits:  # TS entries stay byte for byte what they were
            d["m"] = self.inits
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        d = json.loads(raw)
        return cls(
            d["i"], d["seq"], d["dur"], d["wall"], d["disc"], d["r"], d.get("e", 0), d.get("ds", 0), d.get("m") or {}
        )


def segment_name(seq: int, epoch: int = 0, ext: str = "ts") -> str:
    """``seg_<seq>.ts`` (``.m4s`` for fMP4); after Redis lost a session's state its numbering
    restarts in a new generation, named ``seg_<epoch>_<seq>.ts`` so no published object is ever
    written again."""
    return f"seg_{seq:06d}.{ext}" if not epoch else f"seg_{epoch}_{seq:06d}.{ext}"


def part_name(seq: int, epoch: int, part: int) -> str:
    """``seg_<seq>.p<part>.m4s``: partial segment ``part`` (its Part Index, RFC 8216bis 3.2) of
    the fMP4 segment ``segment_name(seq, epoch, "m4s")``."""
    return segment_name(seq, epoch, f"p{part}.m4s")


NAME_RE = re.compile(r"^seg_(?:(\d+)_)?(\d+)\.(?:ts|m4s)$")


def with_dseq(entries: list[Entry]) -> list[Entry]:
    """The entries with ``index`` = position and ``dseq`` counted from the start."""
    out: list[Entry] = []
    for i, e in enumerate(entries):
        dseq = out[-1].after() if out else 0
        out.append(Entry(i, e.seq, e.duration, e.wall, e.disc, e.sizes, e.epoch, dseq, e.inits))
    return out


def parse_media(text: str, renditions: list[str]) -> list[Entry]:
    """Entries of a media playlist we wrote (a replay ``index.m3u8``). Sizes are unknown (0)."""
    entries: list[Entry] = []
    wall, duration, disc, init = 0.0, 0.0, False, ""
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = attributes(line[len("#EXT-X-MAP:") :]).get("URI", "")
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif (match := NAME_RE.match(line.strip())) is not None:
            epoch, seq = int(match[1] or 0), int(match[2])
            sizes = dict.fromkeys(renditions, 0)
            inits = dict.fromkeys(renditions, init) if init else {}
            entries.append(Entry(len(entries), seq, duration, wall, disc, sizes, epoch, inits=inits))
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


def attributes(text: str) -> dict[str, str]:
    """An attribute-list (RFC 8216bis 4.2) as a dict; quoted-strings without their quotes."""
    return {m[1]: m[2].strip('"') for m in _ATTRIBUTE.finditer(text)}


_ATTRIBUTE = re.compile(r'(?:^|,)([A-Z0-9-]+)=("[^"\r\n]*"|[^,]*)')


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
    lines = _header(version(shown), media_sequence, discontinuities_before, target=target, kind=kind, ended=ended)
    in_effect = ""
    for entry in shown:
        lines += _segment_head(entry.init(rendition), entry.wall, in_effect, tagged=entry.tagged)
        in_effect = entry.init(rendition)
        lines += _segment_tail(entry, rendition)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_window(window: list[Entry], *, target: int, ended: bool, rendition: str | None = None) -> str:
    """A live sliding-window playlist from its entries alone (each carries its ``dseq``)."""
    dseq = window[0].dseq if window else 0
    return render_media(window, 0, dseq, target=target, kind="live", ended=ended, rendition=rendition)


def _header(
    number: int, media_sequence: int, dseq: int, *, target: int, kind: str, ended: bool, ll: tuple[str, ...] = ()
) -> list[str]:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{number}",
        f"#EXT-X-TARGETDURATION:{target}",
        *ll,
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if dseq:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}")
    if kind == "event":
        lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if ended else "EVENT"))
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    return lines


def version(shown: list[Entry]) -> int:
    """EXT-X-VERSION: the least the playlist needs (RFC 8216bis 6.2.1: SHOULD NOT be greater).
    Section 8: 3 for floating-point EXTINF durations, 6 for EXT-X-MAP in a playlist that is not
    I-frames only. The low-latency tags (EXT-X-PART-INF, -SERVER-CONTROL, -PART, -PRELOAD-HINT,
    -RENDITION-REPORT) require no version; a Playlist Delta Update's EXT-X-SKIP requires 9
    (``DELTA_VERSION``)."""
    return 6 if any(e.inits for e in shown) else 3


def _segment_head(init: str, wall: float | None, in_effect: str, *, tagged: bool) -> list[str]:
    """Media Segment tags written before a segment and, when it has parts, before its first
    EXT-X-PART (RFC 8216bis 4.4.4.9). EXT-X-MAP applies until the next one (4.4.4.5): written
    again only when the init section changes. A TS segment cannot follow fMP4 ones in a
    playlist: the map would apply to it, and no tag lifts a map."""
    if in_effect and not init:
        raise ValueError("an MPEG-TS segment cannot follow fMP4 segments in one playlist (EXT-X-MAP applies to it)")
    lines = ["#EXT-X-DISCONTINUITY"] if tagged else []
    if init != in_effect:
        lines.append(f'#EXT-X-MAP:URI="{init}"')
    if wall is not None:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(wall)}")
    return lines


def _segment_tail(entry: Entry, rendition: str | None) -> list[str]:
    lines = [f"#EXTINF:{entry.duration:.3f},"]
    if _gap(entry, rendition):
        lines.append("#EXT-X-GAP")
    lines.append(entry.name)
    return lines


def _gap(entry: Entry, rendition: str | None) -> bool:
    return rendition is not None and entry.sizes.get(rendition) == 0


# -- Low-Latency HLS (RFC 8216bis) -------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A partial segment (RFC 8216bis 3.2, EXT-X-PART 4.4.4.9)."""

    name: str  # URI relative to the media playlist
    duration: float  # seconds
    independent: bool  # starts with an IDR
    # Not available (the rung is shed for this segment): GAP=YES, RFC 8216bis 6.2.1. The parts
    # of a segment written with EXT-X-GAP are GAP=YES whatever this says.
    gap: bool = False


@dataclass(frozen=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT (RFC 8216bis 4.4.5.4) of one of the session's other renditions."""

    uri: str  # that rendition's media playlist, relative to the playlist carrying the report
    last_msn: int  # MSN of its last partial segment (of its last segment when it lists no parts)
    last_part: int  # Part Index of that partial segment; -1 when it lists no parts (no LAST-PART)


@dataclass(frozen=True)
class LowLatency:
    """The live edge of a low-latency rendition, besides its window of complete segments."""

    part_target: float  # PART-TARGET, seconds: no part is longer
    # msn -> parts of complete segments of the window still listed with their parts (the
    # caller passes those within the last 3 target durations; the renderer trims further).
    parts: dict[int, list[Part]]
    pending: list[Part]  # parts of the segment being produced (msn = last window entry + 1)
    hint: str | None  # URI of the next part (EXT-X-PRELOAD-HINT TYPE=PART); None once ended
    reports: list[RenditionReport]  # the session's other renditions
    # The Media Segment tags of the segment being produced apply to its first part, so they
    # come before it (RFC 8216bis 4.4.4.9) and cannot be inserted once its parts are listed
    # (6.2.1 only lets a playlist grow at its end): its ingest wall clock (EXT-X-PROGRAM-DATE-TIME;
    # pass it, with None the date is missing until the segment completes), whether it starts a
    # discontinuity, its init section ("": the last window entry's).
    pending_wall: float | None = None
    pending_disc: bool = False
    pending_init: str = ""


def part_hold_back(part_target: float) -> float:
    """PART-HOLD-BACK: RFC 8216bis 4.4.3.8 requires at least twice the Part Target Duration and
    recommends three times; three times the PART-TARGET as written, rounded up to the ms."""
    return _ceil_ms(3 * _ceil_ms(part_target))


def _ceil_ms(seconds: float) -> float:
    return math.ceil(round(seconds * 1000, 6)) / 1000


def render_low_latency(
    window: list[Entry],
    ll: LowLatency,
    *,
    target: int,
    ended: bool,
    rendition: str | None = None,
    skip: Skip | None = None,
) -> str:
    """The live window of a low-latency rendition: what ``render_window`` writes plus
    EXT-X-SERVER-CONTROL (blocking reload; PART-HOLD-BACK; CAN-SKIP-UNTIL, ``skip_boundary``),
    EXT-X-PART-INF, the parts of the last segments (``listed_parts``) before each segment's
    EXTINF, the parts of the segment in progress after the last one, the preload hint of the
    next part and a report per other rendition. An ended playlist lists complete segments only,
    and no hint (4.4.5.3).

    ``skip`` (``skip_directive``: the request's ``_HLS_skip``) asks for the Playlist Delta Update
    (6.2.5.1) of the same moment: the segments beyond the Skip Boundary (``skipped_segments``)
    and the tags applied to them give way to one ``EXT-X-SKIP`` (4.4.5.2); EXT-X-MEDIA-SEQUENCE
    and EXT-X-DISCONTINUITY-SEQUENCE stay (the skipped segments keep their numbers, and
    "Replacing segments with the EXT-X-SKIP tag does not change the value of the
    EXT-X-DISCONTINUITY-SEQUENCE tag"); EXT-X-VERSION is 9 (section 8). "All tags that were not
    skipped MUST remain": the EXT-X-MAP in effect for the first segment kept applies to it too,
    so it is written again before it; its own EXT-X-DISCONTINUITY and EXT-X-PROGRAM-DATE-TIME
    are its tags and stay. Ignored once ended (6.2.5.1: a Server MUST ignore _HLS_skip in a
    Playlist with EXT-X-ENDLIST). The end of the playlist, what blocking reloads wait for
    (``edge_of``), is the same either way."""
    dseq = window[0].dseq if window else 0
    media_sequence = window[0].index if window else 0
    boundary = skip_boundary(target)
    control = [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={part_hold_back(ll.part_target):.3f},CAN-SKIP-UNTIL={boundary:.3f}",
        f"#EXT-X-PART-INF:PART-TARGET={_ceil_ms(ll.part_target):.3f}",
    ]
    pending = [] if ended else ll.pending
    pending_init = (ll.pending_init or (window[-1].init(rendition) if window else "")) if pending else ""
    delta = skip is not None and not ended
    skipped = skipped_segments(window, boundary) if delta else 0
    number = DELTA_VERSION if delta else max(version(window), 6 if pending_init else 3)
    lines = _header(number, media_sequence, dseq, target=target, kind="live", ended=ended, ll=tuple(control))
    if delta:
        lines.append(_skip_line(skipped, dateranges=skip == "v2"))
    listed = listed_parts(window, ll, target=target, ended=ended)
    in_effect = ""  # after EXT-X-SKIP as well: the first segment kept gets its EXT-X-MAP again
    for entry in window[skipped:]:
        lines += _segment_head(entry.init(rendition), entry.wall, in_effect, tagged=entry.tagged)
        in_effect = entry.init(rendition)
        gap = _gap(entry, rendition)
        lines += [_part_line(p, gap=gap) for p in listed.get(entry.index, [])]
        lines += _segment_tail(entry, rendition)
    if pending:
        msn = window[-1].index + 1 if window else 0
        lines += _segment_head(pending_init, ll.pending_wall, in_effect, tagged=ll.pending_disc and msn != 0)
        lines += [_part_line(p, gap=False) for p in pending]
    if not ended and ll.hint is not None:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{ll.hint}"')
    for report in ll.reports:
        last_part = f",LAST-PART={report.last_part}" if report.last_part >= 0 else ""
        lines.append(f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",LAST-MSN={report.last_msn}{last_part}')
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


# -- Playlist Delta Updates (RFC 8216bis 6.2.5.1) ------------------------------------------------

# ``_HLS_skip`` values that ask for a Playlist Delta Update: YES skips older Media Segments, v2
# older EXT-X-DATERANGE tags as well (6.2.5.1).
Skip = Literal["YES", "v2"]

# Section 8: "A Playlist MUST indicate an EXT-X-VERSION of 9 or higher if it contains: The
# EXT-X-SKIP tag." (10 only for an EXT-X-SKIP that replaces EXT-X-DATERANGE tags: we write none.)
DELTA_VERSION = 9

# CAN-SKIP-UNTIL in target durations: 4.4.3.8 "The Skip Boundary MUST be at least six times the
# Target Duration"; the least it allows keeps deltas smallest.
SKIP_TARGETS = 6


def skip_boundary(target: int) -> float:
    """CAN-SKIP-UNTIL (the Skip Boundary, seconds) of a low-latency playlist whose
    EXT-X-TARGETDURATION is ``target``. Every low-latency playlist advertises it (the same value
    in every rendition: 6.2.4 wants identical EXT-X-SERVER-CONTROL tags), so a client can always
    ask for a delta; one asks only while its copy is younger than half of it (6.3.7), which a
    client reloading for every part always is."""
    return float(SKIP_TARGETS * target)


def skipped_segments(window: list[Entry], boundary: float) -> int:
    """How many of the window's first segments a Playlist Delta Update replaces: "Media Segments
    that are further from the end of the last (Parent) Media Segment in the Playlist than the
    Skip Boundary" (6.2.5.1). A segment is further when its end is (all of it lies beyond the
    boundary; one the boundary cuts is kept), distances summed from the durations as written
    (whole milliseconds), so that a client's arithmetic on the playlist agrees. The parts of the
    segment in progress do not count: the distance is from the end of the last complete one."""
    limit = round(boundary * 1000)
    distance, kept = 0, 0
    for entry in reversed(window):
        if distance > limit:
            break
        distance += round(round(entry.duration, 3) * 1000)
        kept += 1
    return len(window) - kept


def _skip_line(count: int, *, dateranges: bool) -> str:
    """EXT-X-SKIP (4.4.5.2). RECENTLY-REMOVED-DATERANGES "is REQUIRED if the Client requested an
    update that skips EXT-X-DATERANGE tags" (``_HLS_skip=v2``) and "MAY be empty": we write no
    date ranges, so none were removed."""
    removed = ',RECENTLY-REMOVED-DATERANGES=""' if dateranges else ""
    return f"#EXT-X-SKIP:SKIPPED-SEGMENTS={count}{removed}"


def skip_directive(value: str | None) -> Skip | None:
    """The Playlist Delta Update an ``_HLS_skip`` query parameter asks for: "YES" or "v2"
    (6.2.5.1: "whose value is YES or v2, it MUST respond with a Playlist Delta Update"; v2 even
    though we advertise no CAN-SKIP-DATERANGES: the rule does not depend on it). Anything else
    (absent, "NO", "yes", a later "v3") is None, a full playlist: the RFC defines no error for
    it, and a full playlist is always an answer a client can use (it replaces its copy)."""
    if value == "YES":
        return "YES"
    if value == "v2":
        return "v2"
    return None


def _part_line(part: Part, *, gap: bool) -> str:
    attrs = [f"DURATION={part.duration:.3f}"]
    if gap or part.gap:
        attrs += [f'URI="{part.name}"', "GAP=YES"]  # no media: nothing independent in it
    else:
        attrs += [*(["INDEPENDENT=YES"] if part.independent else []), f'URI="{part.name}"']
    return "#EXT-X-PART:" + ",".join(attrs)


def listed_parts(window: list[Entry], ll: LowLatency, *, target: int, ended: bool = False) -> dict[int, list[Part]]:
    """The complete segments whose parts are written: the last segments of the window whose
    start is at most 3 target durations from the end of the playlist (RFC 8216bis 6.2.2: parts
    SHOULD be removed beyond that), and only a run that reaches the last segment (parts MUST be
    removed in playlist order). The last segment always qualifies: it and the segment in
    progress each last at most a target duration plus half a second (4.4.3.1)."""
    distance = sum(p.duration for p in ([] if ended else ll.pending))
    listed: dict[int, list[Part]] = {}
    for entry in reversed(window):
        distance += entry.duration
        parts = ll.parts.get(entry.index)
        if not parts or distance > 3 * target + 1e-6:
            break
        listed[entry.index] = parts
    return listed


@dataclass(frozen=True)
class Edge:
    """What a rendered low-latency playlist contains at its end."""

    msn: int  # MSN of the last complete segment (-1 if none)
    parts_msn: int  # MSN the last listed part belongs to (msn + 1 while a segment is in progress)
    last_part: int  # Part Index of the last listed part in parts_msn (-1 if none)
    part_target: float = 0.0  # its PART-TARGET (the Advance Part Limit depends on it)
    ended: bool = False  # it has EXT-X-ENDLIST: delivery directives are ignored


def edge_of(window: list[Entry], ll: LowLatency, *, ended: bool = False) -> Edge:
    """The ``Edge`` of ``render_low_latency(window, ll, ended=ended, ...)``."""
    msn = window[-1].index if window else -1
    pending = [] if ended else ll.pending
    part_target = _ceil_ms(ll.part_target)
    if pending:
        return Edge(msn, msn + 1, len(pending) - 1, part_target, ended)
    return Edge(msn, msn, len(ll.parts.get(msn, [])) - 1, part_target, ended)


def blocking_satisfied(edge: Edge, want_msn: int, want_part: int | None) -> bool:
    """Whether a blocking reload (RFC 8216bis 6.2.5.2) can be answered with this playlist.
    ``_HLS_msn=M`` alone: it contains a Media Segment with MSN M or later (a complete one; the
    parts of the segment in progress do not count). With ``_HLS_part=N``: it contains Partial
    Segment N of MSN M, or a later one. A Part Index beyond the final part of segment M is the
    request for part 0 of M + 1; the final part is known once M is complete, so while M is in
    progress the request waits. Either way the order of (MSN, Part Index) decides. An ended
    playlist ignores the directives."""
    if edge.ended:
        return True
    if want_part is None:
        return edge.msn >= want_msn
    return (want_msn, want_part) <= (edge.parts_msn, edge.last_part)


def advance_part_limit(part_target: float) -> float:
    """RFC 8216bis 6.2.5.2: three divided by the Part Target Duration if it is less than one
    second, or three otherwise (parts in about 3 s)."""
    return 3 / part_target if part_target < 1 else 3.0


def blocking_error(edge: Edge, want_msn: int | None, want_part: int | None, skip: str | None) -> str | None:
    """Why a playlist request's delivery directives (RFC 8216bis 6.2.5) get 400 Bad Request, or
    None when the request is acceptable (answer at once, or hold it until
    ``blocking_satisfied``; 503 after blocking more than three target durations). Ended
    playlists ignore ``_HLS_msn`` and ``_HLS_part``. ``_HLS_skip`` never makes a request bad:
    it only chooses the answer's form (``skip_directive``), a Playlist Delta Update that is held
    exactly as the full playlist would be (6.2.5.1 and 6.2.5.2 combine: the delta of the
    playlist that contains the requested segment or part). Values come from ``directive``."""
    if edge.ended or (want_msn is None and want_part is None):
        return None
    if want_msn is None:
        return "_HLS_part without _HLS_msn (RFC 8216bis 6.2.5.2: the server MUST return Bad Request)"
    return _range_error(edge, want_msn, want_part)


def _range_error(edge: Edge, want_msn: int, want_part: int | None) -> str | None:
    if want_msn < 0 or (want_part is not None and want_part < 0):
        return "_HLS_msn and _HLS_part are decimal-integers (RFC 8216bis 4.2)"
    if want_msn > edge.msn + 2:
        return (
            f"_HLS_msn={want_msn} is beyond the last segment ({edge.msn}) plus two "
            "(RFC 8216bis 6.2.5.2: the server SHOULD return Bad Request)"
        )
    if want_part is not None and edge.part_target > 0:
        limit = advance_part_limit(edge.part_target)
        if _parts_ahead(edge, want_msn, want_part) >= limit:
            return (
                f"_HLS_part={want_part} of _HLS_msn={want_msn} exceeds the last part "
                f"({edge.parts_msn}.{edge.last_part}) by the Advance Part Limit {limit:.2f} "
                "(RFC 8216bis 6.2.5.2: the server SHOULD return Bad Request)"
            )
    return None


def _parts_ahead(edge: Edge, msn: int, part: int) -> int:
    """How many parts the requested one is (at least) after the last listed part."""
    if msn < edge.parts_msn:
        return 0
    if msn == edge.parts_msn:
        if edge.parts_msn == edge.msn and part > edge.last_part:
            return 1  # beyond the final part of a complete segment: part 0 of the next one
        return part - edge.last_part
    # A later segment: each segment between has at least one part, and segment msn N + 1 of them.
    return (msn - edge.parts_msn - 1) + part + 1


_DECIMAL_INTEGER = re.compile(r"[0-9]{1,20}")


def directive(value: str | None) -> int | None:
    """The value of a ``_HLS_msn`` or ``_HLS_part`` query parameter (a decimal-integer, RFC
    8216bis 4.2), None when absent; ValueError (answer 400) for anything else."""
    if value is None:
        return None
    if not _DECIMAL_INTEGER.fullmatch(value) or int(value) >= 2**64:
        raise ValueError(f"not a decimal-integer: {value!r}")
    return int(value)


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
