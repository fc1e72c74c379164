"""The segmenter's parts without the live stack: FLV tags, the feed that corrects keyframe flags
and enforces the limits, the source caps, following a recording, and the segmenter ffmpeg on
a corrected feed (chunks cut at IDR frames only)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.media import SOURCES, annexb_nal_types, decode_errors, source_file
from transcoding import ffmpeg, flv, recording
from transcoding.ladder import SourceInfo
from transcoding.segmenter import Refusal, _Feed, source_problem

SOURCE_1080 = SourceInfo("h264", "High", 1920, 1080, 30.0, 6_000_000, "aac", "LC", 2, "stereo", 48000, 128_000)


def _tags(path: Path) -> list[flv.Tag]:
    reader = flv.TagReader()
    data = path.read_bytes()
    tags = []
    for start in range(0, len(data), 65_536):  # as a growing file is read: tags split across reads
        tags += reader.feed(data[start : start + 65_536])
    assert reader.position == len(data)
    return tags


def _fed(tags: list[flv.Tag]) -> tuple[_Feed, list[flv.Tag]]:
    feed = _Feed()
    out = []
    for tag in tags:
        raw = feed.take(tag)
        if raw is not None:
            out.append(flv.Tag(tag.offset, bytearray(raw)))
    return feed, out


def test_keyframe_flags_are_set_on_idr_access_units_only():
    tags = _tags(source_file(SOURCES["non-idr-keyframes"]))
    flagged = [t for t in tags if t.is_avc and t.avc_packet_type == flv.AVC_NALU and t.frame_type == flv.KEYFRAME]
    assert [flv.NAL_IDR in t.nal_types() for t in flagged] == [True, False, True, False, True, False, True]
    feed, out = _fed(tags)
    video = [t for t in out if t.is_avc and t.avc_packet_type == flv.AVC_NALU]
    assert len(video) == 330  # every frame, from the first
    keys = [t.timestamp for t in video if t.frame_type == flv.KEYFRAME]
    assert keys == [0, 3000, 6000, 9000]
    assert all((t.frame_type == flv.KEYFRAME) == (flv.NAL_IDR in t.nal_types()) for t in video)
    assert feed.false_keyframes == 3
    assert feed.interval_ms == 3000
    # Where each IDR starts in the recording, by presentation time (a chunk's start in the CSV).
    idr = next(t for t in tags if t.timestamp == 3000 and t.type == flv.VIDEO)
    assert feed.idr_at(3.067) == (3067, idr.offset)


def test_video_before_the_first_idr_is_not_fed():
    tags = _tags(source_file(SOURCES["720p30-no-audio"]))
    configs = [t for t in tags if t.is_config]
    first_idr = next(i for i, t in enumerate(tags) if t.is_avc and t.avc_packet_type == flv.AVC_NALU)
    mid_gop = configs + tags[first_idr + 10 :]  # a recording that would start mid-GOP
    feed, out = _fed(mid_gop)
    video = [t for t in out if t.is_avc and t.avc_packet_type == flv.AVC_NALU]
    assert flv.NAL_IDR in video[0].nal_types()
    assert feed.first_idr == 2000


def test_other_video_codecs_are_refused():
    header = bytes([flv.VIDEO, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0])
    vp6 = flv.Tag(0, bytearray(header + bytes([0x14, 0, 0, 0, 0, 0]) + bytes(4)))
    with pytest.raises(Refusal, match=r"video codec On2 VP6 is not supported: set your encoder to H\.264"):
        _Feed().take(vp6)
    hevc = flv.Tag(0, bytearray(header + b"\x91hvc1\x00" + bytes(4)))  # enhanced RTMP
    with pytest.raises(Refusal, match="video codec hvc1 is not supported"):
        _Feed().take(hevc)


def test_a_chunk_that_grows_past_its_limits_ends_the_publish(settings):
    tags = _tags(source_file(SOURCES["obs-auto-keyframes"]))  # IDRs at 0 and 8.33 s
    settings.CHUNK_MAX_SECONDS = 5
    with pytest.raises(Refusal, match=r"no keyframe \(IDR\) for more than 5 s or 64 MB; set your encoder"):
        _fed(tags)
    settings.CHUNK_MAX_SECONDS, settings.CHUNK_MAX_MB = 20, 1
    with pytest.raises(Refusal, match="for more than 20 s or 1 MB"):
        _fed(tags)
    settings.CHUNK_MAX_MB = 64
    feed, _ = _fed(tags)
    assert feed.interval_ms == 8333


def test_a_bitrate_above_the_cap_ends_the_publish(settings):
    tags = _tags(source_file(SOURCES["720p30-no-audio"]))  # 2.5 Mbit/s
    settings.SOURCE_MAX_KBPS = 2000
    with pytest.raises(Refusal, match=r"bitrate 2,\d{3} kbit/s is above this platform's maximum of 2,000 kbit/s"):
        _fed(tags)
    settings.SOURCE_MAX_KBPS = 3000
    _fed(tags)


def test_source_caps(settings):
    settings.SOURCE_MAX_WIDTH, settings.SOURCE_MAX_HEIGHT, settings.SOURCE_MAX_FPS = 1920, 1080, 60
    assert source_problem(SOURCE_1080, "yuv420p") is None
    portrait = SourceInfo(**{**SOURCE_1080.__dict__, "width": 1080, "height": 1920})
    assert source_problem(portrait, "yuv420p") is None
    uhd = SourceInfo(**{**SOURCE_1080.__dict__, "width": 3840, "height": 2160})
    assert "resolution 3840x2160 is above this platform's maximum of 1920x1080" in str(source_problem(uhd, ""))
    fast = SourceInfo(**{**SOURCE_1080.__dict__, "fps": 120.0})
    assert "frame rate 120 fps is above this platform's maximum of 60 fps" in str(source_problem(fast, ""))
    assert source_problem(SourceInfo(**{**SOURCE_1080.__dict__, "fps": 59.94}), "") is None
    assert "8-bit 4:2:0" in str(source_problem(SOURCE_1080, "yuv420p10le"))
    assert "H.264" in str(source_problem(SourceInfo(**{**SOURCE_1080.__dict__, "video_codec": "hevc"}), ""))


def test_segmenter_ffmpeg_cuts_the_corrected_feed_at_idr_frames_only(tmp_path):
    """The segmenter's own ffmpeg on the feed of a publisher that flags non-IDR I-frames as
    keyframes: every chunk starts with IDR + SPS + PPS and decodes on its own."""
    path = source_file(SOURCES["non-idr-keyframes"])
    _, out = _fed(_tags(path))
    data = flv.header(audio=True, video=True) + b"".join(bytes(t.raw) for t in out)
    subprocess.run(ffmpeg.segmenter_args(tmp_path, 2.0), input=data, check=True, timeout=60)
    lines = (tmp_path / "chunks.csv").read_text().split()
    assert [tuple(line.split(",")[1:]) for line in lines] == [
        ("0.000000", "3.067000"),
        ("3.067000", "6.067000"),
        ("6.067000", "9.067000"),
        ("9.067000", "11.067000"),
    ]
    import av

    for line in lines:
        chunk = tmp_path / line.split(",")[0]
        assert decode_errors(chunk) == "", chunk
        with av.open(str(chunk)) as container:
            first = next(p for p in container.demux(container.streams.video[0]) if p.size)
            assert {5, 7, 8} <= set(annexb_nal_types(bytes(first)))


def _locker(path: Path) -> subprocess.Popen[bytes]:
    """Another process holding a write lock on ``path``, as nginx-rtmp does (record_lock on)."""
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"locked\n"
    return proc


def test_a_recording_is_followed_until_its_writer_releases_the_lock(tmp_path, settings):
    path = tmp_path / "s1c1.flv"
    path.write_bytes(b"x" * 100)
    locker = _locker(path)
    rec = recording.Recording(path)
    try:
        assert rec.open(1, lambda: False)
        assert rec.read(0) == b"x" * 100
        assert rec.writing()
        assert rec.read(100) == b""
    finally:
        locker.kill()
        locker.wait()
    assert not rec.writing()  # the publish is over
    rec.delete()
    assert not path.exists()
    # A recording that never appears.
    assert not recording.Recording(tmp_path / "missing.flv").open(0.1, lambda: False)
    # Without record_lock: over once the file stops growing for SEGMENTER_RW_TIMEOUT_S.
    settings.SEGMENTER_RW_TIMEOUT_S = 0.3
    path.write_bytes(b"y")
    unlocked = recording.Recording(path)
    assert unlocked.open(1, lambda: False)
    assert unlocked.writing()
    time.sleep(0.4)
    assert not unlocked.writing()
    unlocked.close()


def test_read_parts_of_a_recording_are_released(tmp_path):
    path = tmp_path / "s1c2.flv"
    data = os.urandom(12 << 20)
    path.write_bytes(data)
    os.sync()
    rec = recording.Recording(path)
    assert rec.open(1, lambda: False)
    before = path.stat().st_blocks
    rec.release(9 << 20)  # released in 4 MB steps: 8 MB
    assert rec.released == 8 << 20
    assert path.stat().st_size == len(data)  # offsets stay valid
    assert path.stat().st_blocks <= before - (8 << 20) // 512 + 64
    assert rec.read(8 << 20)[:4096] == data[8 << 20 : (8 << 20) + 4096]
    rec.close()


def test_stale_recordings_are_swept(tmp_path, settings):
    settings.RTMP_RECORD_DIR = tmp_path
    old, fresh, busy = tmp_path / "s1c1.flv", tmp_path / "s2c1.flv", tmp_path / "s3c1.flv"
    for path in (old, fresh, busy):
        path.write_bytes(b"FLV")
    past = time.time() - 2 * recording.STALE_S
    os.utime(old, (past, past))
    os.utime(busy, (past, past))
    locker = _locker(busy)
    try:
        assert recording.sweep() == 1
    finally:
        locker.kill()
        locker.wait()
    assert not old.exists()
    assert fresh.exists()
    assert busy.exists()


def test_resume_points_live_next_to_their_recording(tmp_path, settings):
    settings.RTMP_RECORD_DIR = tmp_path
    assert recording.load_resume("s4c1") == {}
    recording.save_resume("s4c1", {"offset": 1234, "chunks": 3})
    recording.save_resume("s4c1", {"offset": 5678, "chunks": 4})
    assert recording.load_resume("s4c1") == {"offset": 5678, "chunks": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s4c1.resume.json"]  # replaced atomically
    recording.save_resume("s5c1", {"over": True})
    (tmp_path / "s5c1.flv").write_bytes(b"FLV")
    past = time.time() - 2 * recording.STALE_S
    for path in tmp_path.iterdir():
        os.utime(path, (past, past))
    recording.sweep()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the stale recording, then its resume point


def test_nginx_rtmp_records_every_publish_where_the_ingest_reads_it(tmp_path, settings):
    import yaml

    from livestream import devstack

    settings.RTMP_RECORD_DIR = tmp_path / "record"
    text = devstack.rtmp_config(
        tmp_path / "rtmp", bind="127.0.0.1", port=1935, callback_base="http://127.0.0.1:8000", secret="", stat_port=1936
    )
    for line in ("record all;", f"record_path {tmp_path / 'record'};", "record_unique off;", "record_lock on;"):
        assert line in text
    assert recording.path_for("s12c3") == tmp_path / "record" / "s12c3.flv"
    assert (tmp_path / "record").stat().st_mode & 0o1777 == 0o1777  # nginx's workers may run unprivileged
    # compose: nginx-rtmp and the ingest share the recordings (a volume at RTMP_RECORD_DIR's default).
    services = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())["services"]
    assert "rtmp-record:/app/var/rtmp-record" in services["rtmp"]["volumes"]
    assert "rtmp-record:/app/var/rtmp-record" in services["ingest"]["volumes"]
