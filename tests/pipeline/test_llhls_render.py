"""Low-Latency HLS rendering (``transcoding/hls.py``) against the RFC 8216bis conformance checker
(``tests/fixtures/llhls.py``): a simulated stream rendered at every moment conforms, each rule
broken by hand is caught, TS output and log entries stay what they were, the blocking reload
rules follow RFC 8216bis 6.2.5.2 on its own Low-Latency Playlist example (9.11), and Playlist
Delta Updates (6.2.5.1) of a long DVR window merge, as a client merges them, into the full
playlist of the same moment."""

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from tests.fixtures import llhls
from transcoding import hls

T0 = 1_764_000_000.0
PART_TARGET = 0.334
PARTS = (0.334, 0.333, 0.333)  # a 1 s chunk cut every 10 frames at 30 fps
INIT = "init_3f2a9c.mp4"
RENDITIONS = ("source", "360p")


@dataclass
class Stream:
    """What a low-latency session publishes, one event at a time: each part of a segment, then
    the segment itself (with ``lag``, as a separate event after its last part, the way the
    assembler commits a chunk once every rendition is out)."""

    segments: int = 12
    parts: tuple[float, ...] = PARTS
    disc_at: frozenset[int] = frozenset()  # segments that start a discontinuity (new connection)
    inits: dict[int, str] = field(default_factory=dict)  # segment -> init section from then on
    shed: frozenset[tuple[str, int]] = frozenset()  # (rendition, segment) without media
    lag: bool = False
    window: int = 6
    pending_wall: bool = True
    behind: dict[str, int] = field(default_factory=dict)  # rendition -> events it lags

    def events(self) -> list[tuple[str, int, int]]:
        """("part", segment, index) events; the segment is complete with its last part
        (kind "last") or, with ``lag``, at a "segment" event of its own."""
        out = []
        for i in range(self.segments):
            last = len(self.parts) - 1
            out += [("part" if j < last or self.lag else "last", i, j) for j in range(len(self.parts))]
            out += [("segment", i, -1)] if self.lag else []
        return out

    def init(self, i: int) -> str:
        return self.inits[max(k for k in self.inits if k <= i)] if any(k <= i for k in self.inits) else INIT

    def start(self, i: int) -> float:
        return T0 + i * sum(self.parts)

    def at(self, step: int, rendition: str) -> tuple[list[hls.Entry], hls.LowLatency, bool]:
        """The rendition's window, live edge and whether it ended after ``step`` events."""
        step = max(0, step - self.behind.get(rendition, 0))
        events = self.events()[:step]
        done = {i for kind, i, _ in events if kind in ("segment", "last")}
        produced = {i: sum(1 for kind, k, _ in events if kind != "segment" and k == i) for i in range(self.segments)}
        entries = hls.with_dseq([self._entry(i) for i in sorted(done)])
        window = entries[-self.window :]
        parts = {e.index: self._parts(rendition, e.index, len(self.parts)) for e in window}
        current = next((i for i in range(self.segments) if i not in done and produced[i]), None)
        pending = self._parts(rendition, current, produced[current]) if current is not None else []
        ended = step >= len(self.events())
        ll = hls.LowLatency(
            PART_TARGET, parts, pending, None if ended else self._next_part(current, produced, len(done)), [],
            pending_wall=self.start(current) if current is not None and self.pending_wall else None,
            pending_disc=current in self.disc_at, pending_init=self.init(current) if current is not None else "",
        )  # fmt: skip
        return window, ll, ended

    def _next_part(self, current: int | None, produced: dict[int, int], done: int) -> str:
        if current is None:
            return hls.part_name(10 + done, 0, 0)  # the next segment's first part
        if produced[current] < len(self.parts):
            return hls.part_name(10 + current, 0, produced[current])
        return hls.part_name(10 + current + 1, 0, 0)  # all its parts out, not yet committed

    def _entry(self, i: int) -> hls.Entry:
        sizes = {r: 0 if (r, i) in self.shed else 180_000 for r in RENDITIONS}
        duration = round(sum(self.parts), 3)
        return hls.Entry(
            i,
            10 + i,
            duration,
            self.start(i),
            i in self.disc_at,
            sizes,
            inits=dict.fromkeys(sizes, self.init(i)) if self.init(i) else {},
        )

    def _parts(self, rendition: str, i: int, count: int) -> list[hls.Part]:
        gap = (rendition, i) in self.shed
        return [hls.Part(hls.part_name(10 + i, 0, j), self.parts[j], j == 0, gap) for j in range(count)]

    def render(self, step: int, rendition: str, skip: hls.Skip | None = None) -> tuple[str, hls.Edge]:
        window, ll, ended = self.at(step, rendition)
        ll = dataclasses.replace(ll, reports=[self.report(step, other) for other in RENDITIONS if other != rendition])
        text = hls.render_low_latency(window, ll, target=self.target(), ended=ended, rendition=rendition, skip=skip)
        return text, hls.edge_of(window, ll, ended=ended)

    def report(self, step: int, rendition: str) -> hls.RenditionReport:
        window, ll, ended = self.at(step, rendition)
        edge = hls.edge_of(window, ll, ended=ended)
        last_msn = edge.parts_msn if edge.last_part >= 0 else edge.msn
        return hls.RenditionReport(f"../{rendition}/live.m3u8", last_msn, edge.last_part)

    def target(self) -> int:
        return hls.target_duration([self._entry(0)], 1)

    def playlists(self, step: int) -> dict[str, llhls.MediaPlaylist]:
        return {f"{r}/live.m3u8": llhls.parse(self.render(step, r)[0]) for r in RENDITIONS}


STREAMS = {
    "plain": Stream(),
    "lagging commits": Stream(lag=True),
    "reconnect with a new init section": Stream(disc_at=frozenset({5}), inits={5: "init_77e0b1.mp4"}),
    "shed rung": Stream(shed=frozenset({("360p", 3), ("360p", 4)})),
    "short last part": Stream(parts=(0.334, 0.334, 0.12)),
}


def _step(stream, *, last=None, pending=None, after=0, rendition="source"):
    """The first step after ``after`` whose window ends with segment ``last`` and whose segment
    in progress has ``pending`` parts (None: any number, at least one)."""
    for step in range(after + 1, len(stream.events())):
        window, ll, _ = stream.at(step, rendition)
        if last is not None and (not window or window[-1].index != last):
            continue
        if (pending is None and ll.pending) or len(ll.pending) == pending:
            return step
    raise AssertionError("no such step")


@pytest.mark.parametrize("name", STREAMS)
def test_a_low_latency_stream_conforms_at_every_moment(name):
    stream = STREAMS[name]
    previous: dict[str, llhls.MediaPlaylist] = {}
    for step in range(1, len(stream.events()) + 1):
        for rendition in RENDITIONS:
            text, edge = stream.render(step, rendition)
            pl = llhls.parse(text)
            where = f"step {step} {rendition}:\n{text}"
            assert llhls.violations(pl, previous.get(rendition)) == [], where
            assert llhls.warnings(pl, previous.get(rendition)) == [], where
            assert pl.edge() == edge, where  # what the origin blocks on is what was written
            _assert_parts_kept_as_long_as_allowed(stream, step, rendition, pl)
            previous[rendition] = pl
        assert llhls.reports_consistent(stream.playlists(step)) == [], step
    assert pl.ended
    assert not pl.hints
    assert pl.in_progress is None


def _assert_parts_kept_as_long_as_allowed(stream, step, rendition, pl):
    """The renderer drops a segment's parts only once the segment starts more than three target
    durations before the end of the playlist (RFC 8216bis 6.2.2), not earlier."""
    _, ll, _ = stream.at(step, rendition)
    end = sum(s.duration for s in pl.segments) + sum(p.duration for p in pl.pending)
    start = 0.0
    for s in pl.segments:
        if s.msn in ll.parts and not s.parts:
            assert end - start > 3 * pl.target, (step, s.msn)
        start += s.duration


def test_the_tags_of_a_low_latency_playlist():
    stream = STREAMS["reconnect with a new init section"]
    step = _step(stream, last=4)  # segment 5 (a new connection, a new init) in progress
    window, ll, _ = stream.at(step, "source")
    text, _ = stream.render(step, "source")
    pl = llhls.parse(text)
    assert pl.version == 6  # EXT-X-MAP (RFC 8216bis 8); the LL tags need none
    assert pl.maps == [INIT, "init_77e0b1.mp4"]
    assert pl.in_progress.map_uri == "init_77e0b1.mp4"
    assert pl.in_progress.discontinuity
    assert pl.in_progress.pdt.timestamp() == stream.start(5)
    assert pl.part_target == PART_TARGET
    assert pl.seconds("PART-HOLD-BACK") == hls.part_hold_back(PART_TARGET) >= 3 * PART_TARGET
    assert pl.server_control["CAN-BLOCK-RELOAD"] == "YES"
    assert "HOLD-BACK" not in pl.server_control  # its absence means three target durations
    assert pl.seconds("CAN-SKIP-UNTIL") == 6 * pl.target  # the least RFC 8216bis 4.4.3.8 allows
    assert pl.skip is None  # a full playlist unless _HLS_skip asks for a delta
    assert [p.uri for p in pl.pending] == [p.name for p in ll.pending]
    assert pl.hint == ll.hint == hls.part_name(15, 0, len(ll.pending))
    assert [(r.uri, r.last_msn, r.last_part) for r in pl.reports] == [("../360p/live.m3u8", 5, len(ll.pending) - 1)]
    assert [s.uri for s in pl.segments] == [e.name for e in window]
    assert all(s.uri.endswith(".m4s") for s in pl.segments)


def test_a_shed_rung_lists_its_parts_as_gaps():
    stream = Stream(shed=frozenset({("360p", 4)}))
    step = _step(stream, last=4, rendition="360p")
    shed, kept = (llhls.parse(stream.render(step, r)[0]) for r in ("360p", "source"))
    gap = next(s for s in shed.segments if s.msn == 4)
    assert gap.gap
    assert gap.parts
    assert all(p.gap and not p.independent for p in gap.parts)
    assert not any(p.gap for s in kept.segments for p in s.parts)
    pending = Stream(shed=frozenset({("360p", 5)}))
    step = _step(pending, last=4, rendition="360p")
    assert all(p.gap for p in llhls.parse(pending.render(step, "360p")[0]).pending)


def test_an_ended_low_latency_playlist_has_no_hint_and_no_parts_after_its_last_segment():
    stream = Stream()
    window, ll, _ = stream.at(len(stream.events()) - 2, "source")  # last segment in progress
    assert ll.pending
    text = hls.render_low_latency(window, ll, target=1, ended=True)
    pl = llhls.parse(text)
    assert pl.ended
    assert not pl.hints
    assert pl.in_progress is None
    assert llhls.violations(pl) == []
    assert hls.edge_of(window, ll, ended=True) == pl.edge()


# -- Unchanged: TS playlists and the published log -----------------------------------------------


def _entries(init=""):
    return hls.with_dseq(
        [
            hls.Entry(0, 10 + i, 2.0, T0 + 2 * i, i == 3, {"source": 9}, inits={"source": init} if init else {})
            for i in range(6)
        ]
    )


def test_ts_log_entries_serialize_as_before_and_old_entries_load():
    ts = _entries()[2]
    assert set(json.loads(ts.to_json())) == {"i", "seq", "dur", "wall", "disc", "r", "e", "ds"}
    old = json.dumps({"i": 2, "seq": 12, "dur": 2.0, "wall": T0, "disc": False, "r": {"a": 1}}, separators=(",", ":"))
    assert hls.Entry.from_json(old).inits == {}
    assert hls.Entry.from_json(old).name == "seg_000012.ts"
    fmp4 = _entries(INIT)[2]
    assert json.loads(fmp4.to_json())["m"] == {"source": INIT}
    assert hls.Entry.from_json(fmp4.to_json()) == fmp4
    assert fmp4.name == "seg_000012.m4s"
    assert hls.NAME_RE.match(fmp4.name)[2] == hls.NAME_RE.match(ts.name)[2] == "000012"
    assert hls.NAME_RE.match(hls.segment_name(3, 2, "m4s"))[1] == "2"


def test_fmp4_playlists_differ_from_ts_only_by_names_version_and_map():
    ts = hls.render_window(_entries(), target=2, ended=False).splitlines()
    fmp4 = hls.render_window(_entries(INIT), target=2, ended=False).splitlines()
    assert ts[1] == "#EXT-X-VERSION:3"
    assert fmp4[1] == "#EXT-X-VERSION:6"
    assert fmp4.count(f'#EXT-X-MAP:URI="{INIT}"') == 1
    first_segment = next(i for i, line in enumerate(ts) if line.startswith("#EXT-X-PROGRAM-DATE-TIME"))
    expected = [*ts[:1], fmp4[1], *ts[2:first_segment], f'#EXT-X-MAP:URI="{INIT}"', *ts[first_segment:]]
    assert fmp4 == [line.replace(".ts", ".m4s") for line in expected]
    assert not any(line.startswith("#EXT-X-MAP") for line in ts)


def test_the_map_is_written_again_when_the_init_section_changes_and_survives_a_replay_parse():
    entries = [dataclasses.replace(e, inits={"source": INIT if e.index < 3 else "init_b.mp4"}) for e in _entries()]
    text = hls.render_media(entries, 0, 0, target=2, kind="event", ended=True, rendition="source")
    assert llhls.parse(text).maps == [INIT, "init_b.mp4"]
    assert llhls.violations(llhls.parse(text)) == []
    back = hls.parse_media(text, ["source"])
    assert [(e.inits, e.name) for e in back] == [(e.inits, e.name) for e in entries]
    with pytest.raises(ValueError, match="MPEG-TS segment cannot follow fMP4"):
        hls.render_window([*entries, dataclasses.replace(_entries()[5], index=6)], target=2, ended=False)


def test_part_hold_back_is_three_part_targets_as_written_rounded_up_to_the_ms():
    for part_target in (0.2, 0.25, 0.3333, 0.334, 0.3336, 0.5, 0.9999, 1.0, 2.00004):
        window, ll, _ = Stream().at(5, "source")
        pl = llhls.parse(
            hls.render_low_latency(window, dataclasses.replace(ll, part_target=part_target), target=1, ended=False)
        )
        assert pl.part_target >= part_target
        assert pl.part_target < part_target + 0.001
        held = pl.seconds("PART-HOLD-BACK")
        assert held == hls.part_hold_back(part_target)
        assert 3 * pl.part_target - 1e-9 <= held < 3 * pl.part_target + 0.001


# -- The checker catches each rule broken once -------------------------------------------------


def _baseline(stream=None, step=None, rendition="source"):
    """A playlist in the middle of a stream: complete segments with and without parts, a
    segment in progress with two parts, a hint and a report."""
    stream = stream or Stream()
    step = step or _step(stream, pending=2, after=25, rendition=rendition)
    return stream.render(step, rendition)[0]


def _edit(text, old, new, count=1):
    assert old in text, old
    return text.replace(old, new, count)


def _line(text, *needles):
    return next(line for line in text.splitlines() if all(n in line for n in needles))


def _pending_first_part(text):
    return _line(text, "#EXT-X-PART:", llhls.parse(text).pending[0].uri)


def _segment_with_parts(text, k=0):
    return [s for s in llhls.parse(text).segments if s.parts][k]


def _drop_parts_of(text, segment):
    return "\n".join(line for line in text.splitlines() if not any(f'"{p.uri}"' in line for p in segment.parts)) + "\n"


def _untrimmed():
    window, ll, _ = Stream().at(40, "source")
    text = hls.render_low_latency(window, ll, target=3, ended=False)  # keeps every window segment's parts
    return _edit(text, "#EXT-X-TARGETDURATION:3", "#EXT-X-TARGETDURATION:1")


def _misplaced_date(text):
    lines = text.splitlines()
    first = lines.index(_pending_first_part(text))
    date = next(i for i in range(first, 0, -1) if lines[i].startswith("#EXT-X-PROGRAM-DATE-TIME"))
    lines.insert(first, lines.pop(date))
    return "\n".join(lines) + "\n"


def _sub(old, new):
    return lambda t: _edit(t, old, new)


def _in_pending_first_part(old, new):
    return lambda t: _edit(t, _pending_first_part(t), _pending_first_part(t).replace(old, new))


def _longer_extinf_than_parts(t):
    uri = _segment_with_parts(t).uri
    return _edit(t, f"#EXTINF:1.000,\n{uri}", f"#EXTINF:0.900,\n{uri}")


def _hint_skips_a_part(t):
    return _edit(t, llhls.parse(t).hint, llhls.parse(t).pending[0].uri.replace(".p0.", ".p3."))


def _without(needle):
    return lambda t: "\n".join(x for x in t.splitlines() if needle not in x) + "\n"


def _gap_part_not_gap(t):
    text = _baseline(Stream(shed=frozenset({("source", 7)})))
    return _edit(text, ',URI="seg_000017.p1.m4s",GAP=YES', ',URI="seg_000017.p1.m4s"')


M, S = llhls.MUST, llhls.SHOULD
BROKEN = {  # rule: (level, the baseline broken once)
    "EXTM3U first": (M, lambda t: t.split("\n", 1)[1]),
    "once per playlist": (M, _sub("#EXT-X-PART-INF:", "#EXT-X-PART-INF:PART-TARGET=0.334\n#EXT-X-PART-INF:")),
    "version": (M, _sub("#EXT-X-VERSION:6", "#EXT-X-VERSION:5")),
    "version no higher than needed": (S, _sub("#EXT-X-VERSION:6", "#EXT-X-VERSION:7")),
    "EXTINF <= TARGETDURATION": (M, _sub("#EXTINF:1.000,", "#EXTINF:1.600,")),
    "PART-INF required": (M, _sub("#EXT-X-PART-INF:PART-TARGET=0.334\n", "")),
    "PART-HOLD-BACK required": (M, _sub(",PART-HOLD-BACK=1.002", "")),
    "PART-HOLD-BACK >= 2 x PART-TARGET": (M, _sub("PART-HOLD-BACK=1.002", "PART-HOLD-BACK=0.600")),
    "PART-HOLD-BACK >= 3 x PART-TARGET": (S, _sub("PART-HOLD-BACK=1.002", "PART-HOLD-BACK=0.900")),
    "HOLD-BACK >= 3 x TARGETDURATION": (M, _sub("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=YES,HOLD-BACK=2.5")),
    "CAN-SKIP-UNTIL >= 6 x TARGETDURATION": (M, _sub("CAN-SKIP-UNTIL=6.000", "CAN-SKIP-UNTIL=5.900")),
    "CAN-SKIP-DATERANGES needs CAN-SKIP-UNTIL": (M, _sub("CAN-SKIP-UNTIL=6.000", "CAN-SKIP-DATERANGES=YES")),
    "blocking reload": (M, _sub("CAN-BLOCK-RELOAD=YES,", "")),
    "part <= PART-TARGET": (M, _in_pending_first_part("DURATION=0.334", "DURATION=0.335")),
    "part >= 85% of PART-TARGET": (M, _sub("DURATION=0.333,URI", "DURATION=0.280,URI")),
    "parts add up to their segment": (M, _longer_extinf_than_parts),
    "first part independent": (M, _in_pending_first_part("INDEPENDENT=YES,", "")),
    "part names": (M, lambda t: _edit(t, _segment_with_parts(t).parts[1].uri, "seg_000099.p1.m4s")),
    "segment tags before its first part": (M, _misplaced_date),
    "EXT-X-MAP for fMP4": (M, _sub(f'#EXT-X-MAP:URI="{INIT}"\n', "")),
    "hint present": (M, _without("#EXT-X-PRELOAD-HINT")),
    "hint names the next part": (M, _hint_skips_a_part),
    "hint TYPE": (M, _sub("TYPE=PART", "TYPE=SEGMENT")),
    "one hint per TYPE": (S, lambda t: t + _line(t, "#EXT-X-PRELOAD-HINT") + "\n"),
    "no hint after ENDLIST": (M, lambda t: t + "#EXT-X-ENDLIST\n"),
    "parts belong to the next segment": (M, lambda t: t + "#EXT-X-ENDLIST\n"),
    "parts removed in order": (M, lambda t: _drop_parts_of(t, _segment_with_parts(t, 1))),
    "parts within 3 target durations": (S, lambda t: _untrimmed()),
    "program date time": (M, _without("PROGRAM-DATE-TIME")),
    "report URI relative": (M, _sub('URI="../360p/live.m3u8"', 'URI="https://cdn.example/360p/live.m3u8"')),
    "parts of a gap are gaps": (M, _gap_part_not_gap),
}


def test_the_baseline_playlist_passes():
    assert llhls.findings(llhls.parse(_baseline())) == []
    assert llhls.findings(llhls.parse(_baseline(Stream(shed=frozenset({("source", 7)}))))) == []


@pytest.mark.parametrize("rule", BROKEN)
def test_each_rule_broken_once_is_caught(rule):
    level, breaking = BROKEN[rule]
    good = _baseline()
    broken = breaking(good)
    assert broken != good
    found = [f for f in llhls.findings(llhls.parse(broken)) if f.rule == rule]
    assert found, llhls.findings(llhls.parse(broken))
    assert {f.level for f in found} == {level}
    assert all(str(f).startswith(("RFC 8216bis ", "project ")) for f in found)


def _two_moments(stream=None, gap=1):
    stream = stream or Stream()
    step = _step(stream, pending=1, after=20)
    return stream.render(step, "source")[0], stream.render(step + gap, "source")[0]


def _rule_against(rule, before, after):
    return [f for f in llhls.findings(llhls.parse(after), llhls.parse(before)) if f.rule == rule]


def test_updates_may_only_grow_at_the_end():
    before, after = _two_moments()
    assert llhls.findings(llhls.parse(after), llhls.parse(before)) == []
    # Going back in time: the live edge and (further back) the media sequence.
    assert _rule_against("live edge never goes back", after, before)
    early, late = Stream().render(10, "source")[0], Stream().render(40, "source")[0]
    assert _rule_against("media sequence never decreases", late, early)
    # A listed part changed.
    part = llhls.parse(before).pending[0]
    assert _rule_against(
        "parts only appended",
        _edit(
            before,
            f'DURATION=0.334,INDEPENDENT=YES,URI="{part.uri}"',
            f'DURATION=0.320,INDEPENDENT=YES,URI="{part.uri}"',
        ),
        after,
    )
    # A listed segment renamed.
    last = llhls.parse(before).segments[-1].uri
    assert _rule_against("segments unchanged", before, _edit(after, f"\n{last}\n", "\nseg_000099.m4s\n"))
    # The target duration changed; the discontinuity sequence went down.
    assert _rule_against(
        "target duration constant", before, _edit(after, "#EXT-X-TARGETDURATION:1", "#EXT-X-TARGETDURATION:2")
    )
    assert _rule_against(
        "discontinuity sequence never decreases",
        _edit(before, "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-MEDIA-SEQUENCE"),
        after,
    )
    # The hint promised another part than the one listed next (allowed when plans change).
    hinted = llhls.parse(before).hint
    found = _rule_against("hinted URI used", _edit(before, f'"{hinted}"', '"seg_000099.p0.m4s"'), after)
    assert [f.level for f in found] == [llhls.SHOULD]


def test_the_segment_in_progress_carries_its_date_from_its_first_part():
    """Without the date of the segment in progress, its EXT-X-PROGRAM-DATE-TIME would appear
    before parts already listed once it completes: an insertion, which RFC 8216bis 6.2.1 does
    not allow (the playlist only grows at its end)."""
    stream = Stream(pending_wall=False)
    step = _step(stream, pending=2, after=20)
    before, after = stream.render(step, "source")[0], stream.render(step + 1, "source")[0]
    assert llhls.parse(after).segments[-1].msn == llhls.parse(before).in_progress.msn
    assert _rule_against("tags before listed lines unchanged", before, after)


# -- Rendition reports ---------------------------------------------------------------------------


def test_rendition_reports_within_one_part_of_the_playlists_they_describe():
    for behind in (1, 2):
        stream = Stream(behind={"360p": behind})
        for step in range(4, len(stream.events()), 3):
            playlists = stream.playlists(step)
            # Each report is computed from the other rendition's own state: consistent.
            assert llhls.reports_consistent(playlists) == []
            # The source's report of 360p, as if 360p had been fetched at the source's moment.
            ahead = stream.playlists(step + behind)
            mixed = {"source/live.m3u8": playlists["source/live.m3u8"], "360p/live.m3u8": ahead["360p/live.m3u8"]}
            moved = len(ahead["360p/live.m3u8"].parts) and _distance(
                playlists["360p/live.m3u8"], ahead["360p/live.m3u8"]
            )
            problems = [
                v
                for v in llhls.reports_consistent(mixed)
                if "report matches rendition" in v and v.startswith("RFC") and "source/live.m3u8 reports" in v
            ]
            assert bool(problems) == (moved > 1), (behind, step, problems)


def _distance(a, b):
    """Parts between the ends of two versions of a playlist."""
    ea, eb = a.edge(), b.edge()
    return sum(
        1
        for p in b.parts
        if (p.msn, p.index) > (ea.parts_msn, ea.last_part) and (p.msn, p.index) <= (eb.parts_msn, eb.last_part)
    )


def test_rendition_report_rules():
    playlists = Stream().playlists(30)
    source = "source/live.m3u8"
    text = Stream().render(30, "source")[0]
    report = _line(text, "#EXT-X-RENDITION-REPORT")
    missing = dict(playlists, **{source: llhls.parse(_edit(text, report + "\n", ""))})
    assert any("[one report per other rendition]" in v for v in llhls.reports_consistent(missing))
    twice = dict(playlists, **{source: llhls.parse(text + report + "\n")})
    assert any("[one report per other rendition]" in v for v in llhls.reports_consistent(twice))
    # A server MAY omit an attribute whose value is its own playlist's (4.4.5.4): both are at
    # the same part here, so LAST-PART can go; with a different value it cannot.
    same = dict(playlists, **{source: llhls.parse(_edit(text, report, report.rsplit(",LAST-PART=", 1)[0]))})
    assert llhls.reports_consistent(same) == []
    last_part = int(report.rsplit("=", 1)[1])
    wrong = _edit(text, report, report.replace(f"LAST-PART={last_part}", f"LAST-PART={last_part + 2}"))
    assert any(
        "[report matches rendition]" in v
        for v in llhls.reports_consistent(dict(playlists, **{source: llhls.parse(wrong)}))
    )
    other = dict(playlists, **{source: llhls.parse(_edit(text, "PART-HOLD-BACK=1.002", "PART-HOLD-BACK=1.5"))})
    assert any("[same SERVER-CONTROL]" in v for v in llhls.reports_consistent(other))
    longer = dict(playlists, **{source: llhls.parse(_edit(text, "#EXT-X-TARGETDURATION:1", "#EXT-X-TARGETDURATION:2"))})
    assert any("[same TARGETDURATION]" in v for v in llhls.reports_consistent(longer))


# -- Blocking playlist reload (RFC 8216bis 6.2.5.2) ---------------------------------------------

# RFC 8216bis 9.11 "Low-Latency Playlist", as printed (its header is elided there).
RFC_EXAMPLE = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXTINF:4.00008,
fileSequence268.mp4
#EXTINF:4.00008,
fileSequence269.mp4
#EXTINF:4.00008,
fileSequence270.mp4
#EXT-X-PART:DURATION=2.00004,INDEPENDENT=YES,URI="filePart271.0.mp4"
#EXT-X-PART:DURATION=2.00004,URI="filePart271.1.mp4"
#EXTINF:4.00008,
fileSequence271.mp4
#EXT-X-PART:DURATION=2.00004,INDEPENDENT=YES,URI="filePart272.0.mp4"
#EXT-X-PART:DURATION=0.50001,URI="filePart272.1.mp4"
#EXTINF:2.50005,
fileSequence272.mp4
#EXT-X-DISCONTINUITY
#EXT-X-PART:DURATION=2.00004,INDEPENDENT=YES,URI="midRoll273.0.mp4"
#EXT-X-PART:DURATION=2.00004,URI="midRoll273.1.mp4"
#EXTINF:4.00008,
midRoll273.mp4
#EXT-X-PART:DURATION=2.00004,INDEPENDENT=YES,URI="midRoll274.0.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="midRoll274.1.mp4"
#EXT-X-RENDITION-REPORT:URI="/1M/LL-HLS.m3u8",LAST-MSN=274,LAST-PART=1
"""


def test_the_checker_finds_nothing_but_our_naming_to_object_to_in_the_rfc_example():
    """The checker is no stricter than the RFC: its own example, with the header it elides
    (PART-TARGET from its parts, PART-HOLD-BACK three of them, a map and a date), breaks only
    our naming convention (its parts are not called <segment>.p<index>.m4s)."""
    header = (
        "#EXT-X-VERSION:6\n#EXT-X-MEDIA-SEQUENCE:268\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=6.001\n"
        '#EXT-X-PART-INF:PART-TARGET=2.00004\n#EXT-X-MAP:URI="init.mp4"\n#EXT-X-PROGRAM-DATE-TIME:2020-01-01T00:00:00Z\n'
    )
    pl = llhls.parse(RFC_EXAMPLE.replace("#EXT-X-TARGETDURATION:4\n", "#EXT-X-TARGETDURATION:4\n" + header))
    found = llhls.findings(pl)
    assert found
    assert {(f.section, f.rule) for f in found} == {("project", "part names")}


def test_blocking_reload_rules_on_the_rfc_example():
    # The example starts at MSN 0 (no EXT-X-MEDIA-SEQUENCE): number its segments as it does.
    text = RFC_EXAMPLE.replace("#EXTM3U\n", "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:268\n")
    pl = llhls.parse(text)
    assert [s.uri for s in pl.segments][-1] == "midRoll273.mp4"
    assert pl.segments[-1].msn == 273
    # Its parts are 2.00004 s, so its PART-TARGET is at least that: an Advance Part Limit of 3.
    edge = dataclasses.replace(pl.edge(), part_target=2.00004)
    assert (edge.msn, edge.parts_msn, edge.last_part) == (273, 274, 0)
    ok = hls.blocking_satisfied
    # _HLS_msn alone: a complete segment with that MSN or later.
    assert ok(edge, 273, None)
    assert ok(edge, 200, None)  # no longer in the playlist: deliver at once
    assert not ok(edge, 274, None)  # only its first part is out
    # With _HLS_part: that part or a later one.
    assert ok(edge, 274, 0)
    assert not ok(edge, 274, 1)  # the hinted part
    assert ok(edge, 273, 1)
    assert ok(edge, 270, 0)  # its parts were removed: later ones are listed
    # Part Index beyond the final part of a Parent Segment: part 0 of the next one.
    assert ok(edge, 273, 2)  # 273 has parts 0-1: 274.0, listed
    assert ok(edge, 272, 7)  # 273.0
    # Bad requests: _HLS_msn beyond the last segment plus two, _HLS_part beyond the last part by
    # the Advance Part Limit (3 here), _HLS_part without _HLS_msn.
    err = hls.blocking_error
    assert err(edge, 275, None, None) is None
    assert "plus two" in err(edge, 276, None, None)
    assert err(edge, 274, 2, None) is None  # 2 parts ahead
    assert "Advance Part Limit" in err(edge, 274, 3, None)  # 3 ahead
    assert err(edge, 275, 1, None) is None  # at least 2 ahead: 274 may end after its part 0
    assert "Advance Part Limit" in err(edge, 275, 2, None)
    assert "without _HLS_msn" in err(edge, None, 0, None)
    assert err(edge, None, None, "YES") is None  # _HLS_skip never makes a request bad
    assert err(edge, 274, 1, "v2") is None
    assert err(edge, 274, 1, "v3") is None
    assert "decimal-integer" in err(edge, -1, None, None)
    # Once segment 274 is complete with parts 0-1 and nothing of 275 is out, 274.2 means 275.0.
    done = llhls.parse(
        text.replace(
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="midRoll274.1.mp4"',
            '#EXT-X-PART:DURATION=2.00004,URI="midRoll274.1.mp4"\n#EXTINF:4.00008,\nmidRoll274.mp4\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="midRoll275.0.mp4"',
        )
    )
    edge = dataclasses.replace(done.edge(), part_target=2.00004)
    assert (edge.msn, edge.parts_msn, edge.last_part) == (274, 274, 1)
    assert ok(edge, 274, 1)
    assert not ok(edge, 274, 2)
    assert ok(dataclasses.replace(edge, parts_msn=275, last_part=0), 274, 2)  # once 275.0 is out
    assert err(edge, 274, 9, None) is None  # means 275.0: one part ahead
    assert err(edge, 276, 0, None) is None  # 275.x then 276.0: at least 2 ahead
    assert "Advance Part Limit" in err(edge, 276, 1, None)
    assert "Advance Part Limit" in err(edge, 275, 2, None)
    # An ended playlist ignores _HLS_msn and _HLS_part.
    ended = llhls.parse(text.split("#EXT-X-PRELOAD-HINT")[0].rsplit("#EXT-X-PART", 1)[0] + "#EXT-X-ENDLIST\n")
    assert ended.ended
    assert ended.in_progress is None
    assert ok(ended.edge(), 999, 3)
    assert err(ended.edge(), None, 4, None) is None
    assert err(ended.edge(), 999, None, None) is None


def test_sub_second_parts_allow_three_seconds_of_parts_ahead():
    assert hls.advance_part_limit(0.334) == pytest.approx(3 / 0.334)
    assert hls.advance_part_limit(2.0) == 3
    edge = hls.Edge(msn=20, parts_msn=21, last_part=1, part_target=0.334)
    assert hls.blocking_error(edge, 21, 9, None) is None  # 8 parts ahead < 8.98
    assert hls.blocking_error(edge, 21, 10, None) is not None  # 9 ahead


def test_blocking_satisfied_matches_what_the_rendered_playlist_contains():
    """For every moment of a stream and every request around its edge, the rule agrees with the
    playlist as parsed: _HLS_msn alone needs a complete segment M or later; with _HLS_part, part
    (M, N) or a later one is listed, N beyond a complete segment's final part meaning (M+1, 0)."""
    stream = Stream(lag=True)
    for step in range(1, len(stream.events())):
        text, edge = stream.render(step, "source")
        pl = llhls.parse(text)
        counts = {s.msn: len(s.parts) for s in pl.segments if s.parts}
        positions = [(p.msn, p.index) for p in pl.parts]
        for msn in range(max(0, edge.msn - 3), edge.msn + 4):
            assert hls.blocking_satisfied(edge, msn, None) == any(s.msn >= msn for s in pl.segments)
            for part in range(5):
                want = (msn + 1, 0) if msn in counts and part >= counts[msn] else (msn, part)
                listed = any(p >= want for p in positions) or any(s.msn > msn for s in pl.segments)
                assert hls.blocking_satisfied(edge, msn, part) == listed, (step, msn, part)


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("0", 0), ("274", 274), ("18446744073709551615", 2**64 - 1)])
def test_directive_values(raw, value):
    assert hls.directive(raw) == value


@pytest.mark.parametrize("raw", ["", "-1", "1.0", "0x10", " 3", "abc", "18446744073709551616", "1" * 21])
def test_directive_values_that_are_not_decimal_integers(raw):
    with pytest.raises(ValueError, match="decimal-integer"):
        hls.directive(raw)


# -- Playlist Delta Updates (RFC 8216bis 6.2.5.1) -----------------------------------------------

INIT_B, INIT_C = "init_77e0b1.mp4", "init_c4d5e6.mp4"
# A long DVR window (30 one-second segments; the Skip Boundary is 6 s): reconnects (a
# discontinuity) before the window, in the part a delta skips (with a new init section) and in
# the part it keeps (another init section).
DVR = {
    "reconnects in the skipped and the kept part": Stream(
        segments=40, window=30, disc_at=frozenset({5, 12, 36}), inits={12: INIT_B, 36: INIT_C}
    ),
    "lagging commits, a shed rung in the skipped part": Stream(
        segments=40, window=30, lag=True, disc_at=frozenset({12}), inits={12: INIT_B}, shed=frozenset({("360p", 14)})
    ),
}


def _delta_moment(skip="YES"):
    """The DVR window ending with segment 38, one part of segment 39 out: (delta, full) texts."""
    stream = DVR["reconnects in the skipped and the kept part"]
    step = _step(stream, last=38, pending=1)
    return stream.render(step, "source", skip=skip)[0], stream.render(step, "source")[0]


def test_a_delta_update_of_a_long_dvr_window():
    delta_text, full_text = _delta_moment()
    delta, full = llhls.parse(delta_text), llhls.parse(full_text)
    assert [s.msn for s in full.segments] == list(range(9, 39))
    assert (full.media_sequence, full.discontinuity_sequence) == (9, 1)  # the reconnect at 5 left
    # Replaced: the segments ending more than CAN-SKIP-UNTIL (6 s) before the end of segment 38.
    beyond = [s.msn for i, s in enumerate(full.segments) if sum(x.duration for x in full.segments[i + 1 :]) > 6.0]
    assert delta.skip == {"SKIPPED-SEGMENTS": str(len(beyond))}
    assert delta.skipped == len(beyond) == 23
    assert [s.msn for s in delta.segments] == list(range(32, 39))  # they keep their numbers
    assert (delta.media_sequence, delta.discontinuity_sequence) == (9, 1)  # 4.4.5.2: unchanged
    assert delta.version == 9  # section 8: EXT-X-SKIP
    assert full.version == 6
    # The reconnect at 12 (discontinuity, new init section) is skipped; the first segment kept
    # gets the EXT-X-MAP in effect written again (a tag of its own); the reconnect at 36 is kept.
    skipped = full.segments[: delta.skipped]
    assert any(s.msn == 12 and s.discontinuity and s.map_uri == INIT_B for s in skipped)
    assert (delta.segments[0].map_uri, delta.segments[0].discontinuity) == (INIT_B, False)
    assert delta.maps == [INIT_B, INIT_C]
    assert [(s.msn, s.map_uri) for s in delta.segments if s.discontinuity] == [(36, INIT_C)]
    assert delta.segments == full.segments[delta.skipped :]  # dates, parts, maps and all
    assert (delta.in_progress, delta.hints, delta.reports) == (full.in_progress, full.hints, full.reports)
    assert delta.edge() == full.edge()  # blocking reloads wait for the same end
    assert llhls.findings(delta) == []
    assert llhls.delta_consistent(delta, full) == []
    assert len(delta_text) < len(full_text) / 2
    # What a client does with it (RFC 8216bis 6.3.7): the playlist it had, brought up to date.
    merged = llhls.merge_delta(full, delta)
    assert [(s.msn, s.uri, s.pdt, s.discontinuity, s.map_uri) for s in merged.segments] == [
        (s.msn, s.uri, s.pdt, s.discontinuity, s.map_uri) for s in full.segments
    ]
    # v2 (date ranges too): the same delta, with the RECENTLY-REMOVED-DATERANGES it requires.
    v2 = llhls.parse(_delta_moment("v2")[0])
    assert v2.skip == {"SKIPPED-SEGMENTS": "23", "RECENTLY-REMOVED-DATERANGES": ""}
    assert dataclasses.replace(v2, skip=delta.skip) == delta
    assert v2.version == 9  # 10 only when an EXT-X-SKIP replaces EXT-X-DATERANGE tags


@pytest.mark.parametrize("name", DVR)
@pytest.mark.parametrize("every", [1, 8])
def test_a_client_merging_delta_updates_has_the_full_playlist_at_every_moment(name, every):
    """A client that loads the full playlist once, then asks for a delta every ``every`` events
    (8 parts: 2.7 s, under half the 6 s Skip Boundary as 6.3.7 asks) and merges each into its
    copy, holds at every moment the segments of the full playlist; every delta conforms on its
    own and against the full playlist of its moment."""
    stream = DVR[name]
    most = 0
    for rendition in RENDITIONS:
        client: llhls.MediaPlaylist | None = None
        for step in range(1, len(stream.events()) + 1):
            text, edge = stream.render(step, rendition)
            full = llhls.parse(text)
            if client is None:
                client = full
                continue
            if step % every and step != len(stream.events()):
                continue
            for skip in ("YES", "v2"):
                delta_text, delta_edge = stream.render(step, rendition, skip=skip)
                delta = llhls.parse(delta_text)
                where = f"step {step} {rendition} {skip}:\n{delta_text}"
                assert delta_edge == edge == delta.edge(), where
                assert llhls.violations(delta, client) == [], where
                # (A hint is only compared with the next version: 8 events on, its part may be gone.)
                assert llhls.warnings(delta, client if every == 1 else None) == [], where
                assert llhls.delta_consistent(delta, full, client) == [], where
            client = llhls.merge_delta(client, delta)
            most = max(most, delta.skipped)
        assert client.ended
        assert client == full  # the ended playlist ignores _HLS_skip: the full one replaced the copy
    assert most == 23


def test_an_ended_playlist_ignores_skip_and_a_short_window_skips_nothing():
    stream = DVR["reconnects in the skipped and the kept part"]
    last = len(stream.events())
    assert stream.render(last, "source", skip="YES") == stream.render(last, "source")  # 6.2.5.1
    short = Stream()  # six 1 s segments: the first ends 5 s before the end, within the boundary
    step = _step(short, last=8, pending=2)
    delta, full = (llhls.parse(short.render(step, "source", skip=s)[0]) for s in ("YES", None))
    assert delta.skip == {"SKIPPED-SEGMENTS": "0"}  # still a delta update: the client asked for one
    assert delta.segments == full.segments
    assert llhls.findings(delta) == []
    assert llhls.delta_consistent(delta, full) == []


def test_a_client_whose_copy_lacks_skipped_segments_must_reload_the_full_playlist():
    stream = DVR["reconnects in the skipped and the kept part"]
    old = llhls.parse(stream.render(20, "source")[0])  # segments 0..5
    delta = llhls.parse(_delta_moment()[0])
    with pytest.raises(ValueError, match="lacks skipped segments"):
        llhls.merge_delta(old, delta)
    full = llhls.parse(_delta_moment()[1])
    assert any("[merge gives the full playlist]" in v for v in llhls.delta_consistent(delta, full, old))


@pytest.mark.parametrize(
    ("raw", "value"),
    [("YES", "YES"), ("v2", "v2"), (None, None), ("NO", None), ("yes", None), ("v3", None), ("", None)],
)
def test_skip_directive_values(raw, value):
    """YES and v2 ask for a delta (6.2.5.1); anything else gets the full playlist, not an error."""
    assert hls.skip_directive(raw) == value


def test_ts_playlists_advertise_no_delta_updates():
    for entries in (_entries(), _entries(INIT)):
        text = hls.render_window(entries, target=2, ended=False)
        assert "SKIP" not in text
        assert llhls.parse(text).server_control == {}


def _move_skip_after_first_segment(t):
    lines = t.splitlines()
    skip = lines.pop(next(i for i, x in enumerate(lines) if x.startswith("#EXT-X-SKIP")))
    lines.insert(next(i for i, x in enumerate(lines) if x and not x.startswith("#")) + 1, skip)
    return "\n".join(lines) + "\n"


def _skip_one_more(t):
    """The first segment kept skipped as well (its lines gone, the count one up)."""
    first = llhls.parse(t).segments[0]
    lines = t.split("\n")
    at = lines.index(first.uri)
    start = max(i for i in range(at) if lines[i].startswith("#EXT-X-SKIP")) + 1
    count = int(llhls.parse(t).skip["SKIPPED-SEGMENTS"])
    kept = [x for x in lines[start : at + 1] if x.startswith("#EXT-X-MAP")]
    lines[start : at + 1] = kept
    return "\n".join(lines).replace(f"SKIPPED-SEGMENTS={count}", f"SKIPPED-SEGMENTS={count + 1}")


def _full_as_delta_skipping_nothing(_):
    full = _delta_moment()[1]
    return _edit(
        full, "#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n"
    ).replace("#EXT-X-VERSION:6", "#EXT-X-VERSION:9")


def _twice(needle):
    return lambda t: _edit(t, _line(t, needle), _line(t, needle) + "\n" + _line(t, needle))


def _drop_line(*needles):
    return lambda t: _edit(t, _line(t, *needles) + "\n", "")


_NO_MAP_AFTER_SKIP = (f'#EXT-X-SKIP:SKIPPED-SEGMENTS=23\n#EXT-X-MAP:URI="{INIT_B}"', "#EXT-X-SKIP:SKIPPED-SEGMENTS=23")

DELTA_BROKEN = {  # what is broken: (rule, level, the delta broken once)
    "version below 9": ("version", M, _sub("#EXT-X-VERSION:9", "#EXT-X-VERSION:6")),
    "version above 9": ("version no higher than needed", S, _sub("#EXT-X-VERSION:9", "#EXT-X-VERSION:10")),
    "two EXT-X-SKIP": ("one EXT-X-SKIP", M, _twice("#EXT-X-SKIP")),
    "no SKIPPED-SEGMENTS": ("SKIPPED-SEGMENTS required", M, _sub("SKIPPED-SEGMENTS=", "SKIPPED=")),
    "EXT-X-SKIP after a segment": ("skip replaces the first segments", M, _move_skip_after_first_segment),
    "no CAN-SKIP-UNTIL": ("delta only where skipping applies", M, _sub(",CAN-SKIP-UNTIL=6.000", "")),
    "an ended delta": ("delta only where skipping applies", M, lambda t: t + "#EXT-X-ENDLIST\n"),
    "one segment too many skipped": ("skipped segments beyond the boundary", M, _skip_one_more),
    "segments beyond the boundary kept": ("skipped segments beyond the boundary", M, _full_as_delta_skipping_nothing),
    "no EXT-X-MAP after EXT-X-SKIP": ("EXT-X-MAP for fMP4", M, _sub(*_NO_MAP_AFTER_SKIP)),
}


@pytest.mark.parametrize("broken", DELTA_BROKEN)
def test_each_delta_rule_broken_once_is_caught(broken):
    rule, level, breaking = DELTA_BROKEN[broken]
    good = _delta_moment()[0]
    assert llhls.findings(llhls.parse(good)) == []
    bad = breaking(good)
    assert bad != good
    found = [f for f in llhls.findings(llhls.parse(bad)) if f.rule == rule]
    assert found, llhls.findings(llhls.parse(bad))
    assert {f.level for f in found} == {level}


AGAINST_FULL = {  # what is broken: (rule, the delta broken once)
    "a full playlist answered": ("delta update answered", lambda t: _delta_moment()[1]),
    "one segment too many skipped": ("skipped segments beyond the boundary", _skip_one_more),
    "a kept segment's date dropped": ("tags not skipped remain", _drop_line("PROGRAM-DATE-TIME", ":37.000Z")),
    "a kept reconnect's discontinuity dropped": ("tags not skipped remain", _sub("#EXT-X-DISCONTINUITY\n", "")),
    "the rendition report dropped": ("tags not skipped remain", _drop_line("#EXT-X-RENDITION-REPORT")),
    "the skipped discontinuity counted": (
        "discontinuity sequence unchanged",
        _sub("#EXT-X-DISCONTINUITY-SEQUENCE:1", "#EXT-X-DISCONTINUITY-SEQUENCE:2"),
    ),
    "numbered as if the skipped were removed": (
        "merge gives the full playlist",
        _sub("#EXT-X-MEDIA-SEQUENCE:9", "#EXT-X-MEDIA-SEQUENCE:32"),
    ),
}


@pytest.mark.parametrize("broken", AGAINST_FULL)
def test_each_delta_rule_against_the_full_playlist_broken_once_is_caught(broken):
    rule, breaking = AGAINST_FULL[broken]
    good, full = _delta_moment()
    assert llhls.delta_consistent(llhls.parse(good), llhls.parse(full)) == []
    bad = breaking(good)
    assert bad != good
    found = llhls.delta_consistent(llhls.parse(bad), llhls.parse(full))
    assert any(f"[{rule}]" in v for v in found), found
    assert all(v.startswith("RFC 8216bis ") for v in found)
