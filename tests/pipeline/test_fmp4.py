"""Fragmented MP4 (transcoding/fmp4.py) from real H.264 + AAC in MPEG-TS: what ffprobe, ffmpeg
and PyAV read back from init + fragments is what went in (frames, timestamps, keyframes), also
when two Fragmenters (two chunks on two workers) write the halves of one stream."""

import io
import itertools
import json
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.pipeline.media import decode_errors
from transcoding import fmp4, mpegts

WIDTH, HEIGHT = 320, 240
EVERY = 10  # video frames a fragment (an LL-HLS part of 1/3 s at 30 fps)


@dataclass(frozen=True)
class Case:
    name: str
    bframes: int
    rate: int
    channels: int
    audio_group: int  # ADTS frames handed to add_audio at once (an MPEG-TS PES may hold several)


CASES = [Case("no-bframes-48k-mono", 0, 48000, 1, 1), Case("bframes-44k-stereo", 2, 44100, 2, 3)]


@dataclass(frozen=True)
class Packet:
    kind: str  # "video" | "audio"
    data: bytes
    pts: int  # 1/90000
    dts: int
    key: bool


def source(case: Case) -> bytes:
    """3 s of testsrc 320x240@30 (x264 High, a keyframe every 15 frames) + a sine in AAC, as
    MPEG-TS in memory (timestamps start at 1.4 s: the muxer's delay, like a live chunk's)."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={WIDTH}x{HEIGHT}:rate=30",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={case.rate}", "-t", "3",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "superfast", "-g", "15", "-bf", str(case.bframes),
         "-c:a", "aac", "-ac", str(case.channels), "-f", "mpegts", "pipe:1"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip


def demux(ts: bytes) -> list[Packet]:
    packets = []
    with av.open(io.BytesIO(ts), mode="r") as container:
        assert {s.time_base for s in container.streams} == {Fraction(1, 90000)}
        for p in container.demux():
            if p.size:
                assert p.pts is not None
                assert p.dts is not None
                packets.append(Packet(p.stream.type, bytes(p), p.pts, p.dts, p.is_keyframe))
    return packets


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def media(request: pytest.FixtureRequest) -> tuple[Case, bytes, list[Packet]]:
    case: Case = request.param
    ts = source(case)
    return case, ts, demux(ts)


def configs(packets: list[Packet]) -> tuple[fmp4.VideoConfig, fmp4.AudioConfig]:
    first_key = next(p for p in packets if p.kind == "video" and p.key)
    video = fmp4.video_config(first_key.data, WIDTH, HEIGHT)
    assert video is not None
    audio = fmp4.adts_frames(next(p for p in packets if p.kind == "audio").data)[0][1]
    return video, audio


def fragment_all(packets: list[Packet], rate: int, *, sequence_start: int, audio_group: int = 1) -> list[bytes]:
    """Feed packets in demux order as the encoder would, cutting a fragment before every
    EVERY-th video frame (the next frame's dts ends the fragment's last one); the last flush
    knows no next frame. ``audio_group`` ADTS frames go in together (one PES of several)."""
    fragmenter = fmp4.Fragmenter(has_video=True, has_audio=True, audio_rate=rate, sequence_start=sequence_start)
    out: list[bytes] = []
    audio: list[Packet] = []

    def add_audio() -> None:
        if audio:
            fragmenter.add_audio(b"".join(p.data for p in audio), audio[0].pts)
            audio.clear()

    for p in packets:
        if p.kind == "audio":
            audio.append(p)
            if len(audio) == audio_group:
                add_audio()
            continue
        if fragmenter.pending_video() == EVERY:
            add_audio()
            fragment = fragmenter.flush(next_video_dts=p.dts)
            assert fragment
            out.append(fragment)
        fragmenter.add_video(p.data, p.pts, p.dts, p.key)
    add_audio()
    last = fragmenter.flush()
    assert last
    assert fragmenter.flush() is None  # nothing pending any more
    return [*out, last]


# --- reading back -----------------------------------------------------------------------------


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_packets", "-show_streams", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return json.loads(out)


def _stream(probe: dict, kind: str) -> dict:
    return next(s for s in probe["streams"] if s["codec_type"] == kind)


def _packets(probe: dict, kind: str) -> list[dict]:
    index = _stream(probe, kind)["index"]
    return [p for p in probe["packets"] if p["stream_index"] == index]


def _decoded(path: Path) -> dict[str, list[tuple[int, bool]]]:
    """kind -> [(pts in the stream's time base, key frame)] of every decoded frame (PyAV)."""
    result: dict[str, list[tuple[int, bool]]] = {"video": [], "audio": []}
    with av.open(str(path), mode="r") as container:
        for frame in container.decode(*container.streams.video, *container.streams.audio):
            assert isinstance(frame, av.VideoFrame | av.AudioFrame)
            assert frame.pts is not None
            key = isinstance(frame, av.VideoFrame) and frame.key_frame
            result["video" if isinstance(frame, av.VideoFrame) else "audio"].append((frame.pts, key))
    return result


def _boxes(data: bytes, offset: int = 0, end: int | None = None) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the boxes in data[offset:end]."""
    end = len(data) if end is None else end
    out = []
    while offset < end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        out.append((kind, data[offset + 8 : offset + size]))
        offset += size
    return out


@dataclass(frozen=True)
class Traf:
    tfdt: int
    sync: list[bool]  # per sample, from the trun's sample flags (else the tfhd default)


def _fragment(fragment: bytes) -> tuple[int, dict[int, Traf]]:
    """(mfhd sequence number, {track_ID: Traf}) of one moof + mdat; checks tfdt version 1."""
    (kind, moof), (mdat_kind, _) = _boxes(fragment)
    assert (kind, mdat_kind) == (b"moof", b"mdat")
    children = _boxes(moof)
    assert children[0][0] == b"mfhd"
    sequence = struct.unpack_from(">I", children[0][1], 4)[0]
    trafs = {}
    for kind, traf in children[1:]:
        assert kind == b"traf"
        boxes = dict(_boxes(traf))
        tfhd_flags, track = struct.unpack_from(">II", boxes[b"tfhd"])
        default_flags = struct.unpack_from(">I", boxes[b"tfhd"], len(boxes[b"tfhd"]) - 4)[0]
        assert boxes[b"tfdt"][0] == 1  # version 1: 64-bit
        flags, count = struct.unpack_from(">II", boxes[b"trun"])
        fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
        offset = 8 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)
        if flags & 0x400:
            entries = [struct.unpack_from(">I", boxes[b"trun"], offset + 4 * (i * len(fields) + fields.index(0x400)))[0]
                       for i in range(count)]  # fmt: skip
        else:
            assert tfhd_flags & 0x20  # default-sample-flags-present
            entries = [default_flags] * count
        sync = [not sample & 0x10000 for sample in entries]  # sample_is_non_sync_sample
        trafs[track] = Traf(struct.unpack_from(">Q", boxes[b"tfdt"], 4)[0], sync)
    return sequence, trafs


def _check_against_input(path: Path, ts_path: Path, case: Case, *, audio_joins: int = 0) -> None:
    """Every frame of the input is in the output: counts, pts, keyframes, codec parameters, a
    clean decode, continuous timelines. Audio pts are the input's converted to the sample rate
    (within a sample: the input's are rounded to 90 kHz); consecutive AAC frames are 1024
    samples apart, except at ``audio_joins`` places (independent Fragmenters) within a sample."""
    assert decode_errors(path) == ""
    got, want = _probe(path), _probe(ts_path)
    for kind in ("video", "audio"):
        assert _stream(got, kind)["nb_read_frames"] == _stream(want, kind)["nb_read_frames"]
    for key in ("codec_name", "profile", "width", "height", "pix_fmt"):
        assert _stream(got, "video")[key] == _stream(want, "video")[key], key
    for key in ("codec_name", "profile", "sample_rate", "channels"):
        assert _stream(got, "audio")[key] == _stream(want, "audio")[key], key

    video_out, video_in = _packets(got, "video"), _packets(want, "video")
    assert [(p["pts"], p["flags"][0]) for p in video_out] == [(p["pts"], p["flags"][0]) for p in video_in]
    assert [p["dts"] for p in video_out] == [p["dts"] for p in video_in]
    for p, nxt in itertools.pairwise(video_out):
        assert p["dts"] + p["duration"] == nxt["dts"]  # no hole, no overlap

    audio_out, audio_in = _packets(got, "audio"), _packets(want, "audio")
    assert len(audio_out) == len(audio_in)
    for out, src in zip(audio_out, audio_in, strict=True):
        assert abs(out["pts"] - src["pts"] * case.rate / 90000) <= 1, (out, src)
    assert {p["duration"] for p in audio_out} == {1024}
    assert all(p["flags"][0] == "K" for p in audio_out)

    decoded_out, decoded_in = _decoded(path), _decoded(ts_path)
    assert decoded_out["video"] == decoded_in["video"]  # both in 1/90000
    assert len(decoded_out["audio"]) == len(decoded_in["audio"])
    steps = [b - a for (a, _), (b, _) in itertools.pairwise(decoded_out["audio"])]
    assert all(abs(step - 1024) <= 1 for step in steps), steps
    assert len([step for step in steps if step != 1024]) <= audio_joins, steps


# --- tests ------------------------------------------------------------------------------------


def test_fragments_carry_every_frame(media, tmp_path):
    case, ts, packets = media
    video, audio = configs(packets)
    parts = fragment_all(packets, case.rate, sequence_start=7, audio_group=case.audio_group)
    assert len(parts) == 9  # 90 frames, 10 a fragment
    path, ts_path = tmp_path / "out.mp4", tmp_path / "in.ts"
    path.write_bytes(fmp4.init_segment(video, audio) + b"".join(parts))
    ts_path.write_bytes(ts)

    _check_against_input(path, ts_path, case)
    assert fmp4.codec_string(video) == mpegts.avc_codec_string(ts)
    assert fmp4.codec_string(video).startswith("avc1.64")  # High: avcC with its extension fields
    assert fmp4.aac_string(audio) == "mp4a.40.2"
    assert (audio.sample_rate, audio.channels) == (case.rate, case.channels)

    first_video = next(p for p in packets if p.kind == "video")
    first_audio = next(p for p in packets if p.kind == "audio")
    read = [_fragment(f) for f in parts]
    assert [sequence for sequence, _ in read] == list(range(7, 7 + len(parts)))
    first = read[0][1]
    assert (first[1].tfdt, first[2].tfdt) == (first_video.dts, round(first_audio.pts * case.rate / 90000))
    assert first_video.dts > 90000  # absolute (the source's 1.4 s start), not restarted at 0
    # Sync samples where the input had keyframes (ffmpeg re-derives key flags from the H.264
    # headers, so the sample flags are read here); every audio sample is sync.
    assert [sync for _, trafs in read for sync in trafs[1].sync] == [p.key for p in packets if p.kind == "video"]
    assert all(sync for _, trafs in read for sync in trafs[2].sync)


def test_two_workers_halves_join_continuously(media, tmp_path):
    """The halves of the stream (cut at an IDR, like two chunks) go through two Fragmenters
    with their own sequence numbers and no knowledge of each other; after one init they play
    as one stream."""
    case, ts, packets = media
    cut = next(i for i, p in enumerate(packets) if p.kind == "video" and p.key and p.dts >= packets[0].dts + 135000)
    first, second = packets[:cut], packets[cut:]
    init_a = fmp4.init_segment(*configs(first))
    init_b = fmp4.init_segment(*configs(second))
    assert init_a == init_b  # each worker derives the same init from its own chunk

    a = fragment_all(first, case.rate, sequence_start=1, audio_group=case.audio_group)
    b = fragment_all(second, case.rate, sequence_start=100, audio_group=case.audio_group)
    path, ts_path = tmp_path / "joined.mp4", tmp_path / "in.ts"
    path.write_bytes(init_a + b"".join(a + b))
    ts_path.write_bytes(ts)
    _check_against_input(path, ts_path, case, audio_joins=1)

    sequence, trafs = _fragment(b[0])
    first_audio = next(p for p in second if p.kind == "audio")
    assert sequence == 100
    assert (trafs[1].tfdt, trafs[2].tfdt) == (second[0].dts, round(first_audio.pts * case.rate / 90000))


def test_init_bytes_depend_only_on_the_config(media):
    _, _, packets = media
    video, audio = configs(packets)
    init = fmp4.init_segment(video, audio)
    same = fmp4.init_segment(
        fmp4.VideoConfig(video.width, video.height, bytes(video.sps), bytes(video.pps)),
        fmp4.AudioConfig(audio.sample_rate, audio.channels, bytes(audio.asc)),
    )
    assert init == same
    assert fmp4.init_segment(fmp4.VideoConfig(640, 480, video.sps, video.pps), audio) != init
    for text in (b"Lavf", b"x264", b"libav"):
        assert text not in init  # no encoder or muxer string
    (ftyp, brands), (moov, _) = _boxes(init)
    assert (ftyp, moov, brands[:4]) == (b"ftyp", b"moov", b"iso6")


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_single_track(media, tmp_path, kind):
    """A video-only or audio-only rendition: its init has one track and its fragments one traf."""
    case, _, packets = media
    video, audio = configs(packets)
    fragmenter = fmp4.Fragmenter(
        has_video=kind == "video", has_audio=kind == "audio", audio_rate=case.rate, sequence_start=1
    )
    fragments = []
    for p in packets:
        if p.kind != kind:
            continue
        if kind == "video":
            fragmenter.add_video(p.data, p.pts, p.dts, p.key)
        else:
            fragmenter.add_audio(p.data, p.pts)
        if kind == "audio" or fragmenter.pending_video() == EVERY:
            fragments.append(fragmenter.flush())
    fragments.append(fragmenter.flush())
    init = fmp4.init_segment(video if kind == "video" else None, audio if kind == "audio" else None)
    path = tmp_path / f"{kind}.mp4"
    path.write_bytes(init + b"".join(f for f in fragments if f))

    assert decode_errors(path) == ""
    decoded = _decoded(path)
    want = [p for p in packets if p.kind == kind]
    assert len(decoded[kind]) == len(want)
    assert not decoded["audio" if kind == "video" else "video"]
    if kind == "video":
        assert sorted(pts for pts, _ in decoded["video"]) == sorted(p.pts for p in want)
    else:  # a fragment per AAC frame: each continues the one before, despite the 90 kHz pts
        starts = [pts for pts, _ in decoded["audio"]]
        assert {b - a for a, b in itertools.pairwise(starts)} == {1024}
        assert abs(starts[0] - want[0].pts * case.rate / 90000) <= 0.5
    other = next(p for p in packets if p.kind != kind)
    add_other = (
        fragmenter.add_audio if kind == "video" else lambda data, pts: fragmenter.add_video(data, pts, pts, True)
    )
    with pytest.raises(ValueError, match=r"no (audio|video) track"):
        add_other(other.data, other.pts)


def test_annexb_and_adts_parsing():
    sps, pps, idr = b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80", b"\x65\x88\x84\x00\x21"
    aud = b"\x09\xf0"
    stream = b"\x00\x00\x00\x01" + aud + b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x01" + idr
    assert fmp4.split_annexb(stream + b"\x00\x00") == [aud, sps, pps, idr]
    config = fmp4.video_config(stream, 1920, 1080)
    assert config == fmp4.VideoConfig(1920, 1080, sps, pps)
    assert fmp4.codec_string(config) == "avc1.64001f"
    assert fmp4.video_config(b"\x00\x00\x01" + idr, 1920, 1080) is None

    # ADTS: AAC-LC 48 kHz stereo, no CRC; two frames back to back.
    def adts(payload: bytes) -> bytes:
        length = 7 + len(payload)
        return bytes([0xFF, 0xF1, 0x4C, 0x80 | (length >> 11), (length >> 3) & 0xFF, ((length & 7) << 5) | 0x1F, 0xFC])

    frames = fmp4.adts_frames(adts(b"ab") + b"ab" + adts(b"cde") + b"cde")
    assert [raw for raw, _ in frames] == [b"ab", b"cde"]
    assert frames[0][1] == fmp4.AudioConfig(48000, 2, b"\x11\x90")
    assert fmp4.aac_string(frames[0][1]) == "mp4a.40.2"
    with pytest.raises(ValueError, match="ADTS"):
        fmp4.adts_frames(b"\x00" * 9)
