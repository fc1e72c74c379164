"""SRT and RTMPS ingest end to end (docs/adr/0032-srt-and-rtmps-ingest.md), through the real live
stack (``live_stack``: nginx-rtmp, the ingest supervisor, a Celery worker, SeaweedFS, the edge)
plus the two new front doors, as ``make run`` runs them:

- RTMPS: nginx's stream module with ``deploy/nginx/rtmps.conf.template`` (a self-signed
  certificate, ``devstack.self_signed_certificate``) in front of the stack's nginx-rtmp;
- SRT: the listener of ``transcoding.srt_ingest`` (libsrt through ctypes) in a thread of the test
  process, relaying into the stack's nginx-rtmp.

A real ffmpeg publishes a file whose every frame carries its number (``media.Source``) over
``rtmps://`` and over ``srt://...?streamid=<key>`` (both stream id syntaxes); the live ladder
must appear at the edge (master and every rendition listing segments), and the replay must hold
exactly the frames sent, in order, each segment decodable, durations matching. A wrong key is
refused on each (ffmpeg exits non-zero; no session; nothing in S3); SRT refuses it during the
handshake.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from livestream import devstack
from streams.models import Stream, StreamSession
from streams.playback import playback_url, prefix_of, replay_url, stream_prefix
from tests.factories import make_stream
from tests.fixtures.pipeline import LiveStack
from tests.ingest.lossy_udp import lossy_udp
from tests.pipeline.media import (
    Source,
    decode_errors,
    decode_segment,
    download_rendition,
    extinf,
    parse_master,
    source_file,
)
from transcoding import srt_ingest, storage
from transcoding.ladder import SourceInfo, ladder_for

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# Two encoded rungs keep the CPU bounded (the copied source is always there).
LADDER = ["720p:720:2000:96", "360p:360:600:64"]
SOURCE = Source("ingest-720p30", seconds=14.0)
IDR, SPS, PPS = 5, 7, 8


@dataclass
class Doors:
    rtmps_url: str  # rtmps://127.0.0.1:<port>/live
    srt_base: str  # srt://127.0.0.1:<port>
    srt: srt_ingest.SrtIngest
    rtmps_log: Path


@pytest.fixture(scope="module")
def doors(live_stack: LiveStack) -> Iterator[Doors]:
    """The RTMPS terminator and the SRT listener in front of ``live_stack``'s nginx-rtmp."""
    var = live_stack.var / "doors"
    cert, key = devstack.self_signed_certificate(var / "tls")
    rtmps_port, srt_port = devstack.free_port(), devstack.free_port()
    prefix = var / "rtmps"
    conf = devstack.write_nginx_config(
        prefix,
        devstack.rtmps_config(
            prefix,
            bind="127.0.0.1",
            port=rtmps_port,
            cert_file=cert,
            key_file=key,
            upstream=f"127.0.0.1:{live_stack.rtmp_port}",
        ),
    )
    stop, ready = threading.Event(), threading.Event()
    listener = srt_ingest.SrtIngest(
        stop, host="127.0.0.1", port=srt_port, latency_ms=120, passphrase="", relay_url=live_stack.rtmp_url
    )
    thread = threading.Thread(target=listener.serve, args=(ready,), name="srt-listener", daemon=True)
    with devstack.running(devstack.nginx_command(prefix, conf), var / "rtmps.log"):
        thread.start()
        devstack.wait_until(lambda: devstack.port_open(rtmps_port), 10, "RTMPS listener")
        devstack.wait_until(ready.is_set, 10, "SRT listener")
        try:
            yield Doors(f"rtmps://127.0.0.1:{rtmps_port}/live", f"srt://127.0.0.1:{srt_port}", listener,
                        prefix / "logs" / "error.log")  # fmt: skip
        finally:
            stop.set()
            thread.join(timeout=20)


@pytest.fixture
def ingest_settings(settings):
    settings.TRANSCODE_LADDER = LADDER
    # Completeness is measured here, not speed: a slow shared machine must not make a gap.
    settings.LIVE_DEADLINE_SECONDS = 90.0
    return settings


def publish(path: Path, url: str, muxer: str) -> subprocess.Popen[bytes]:
    """Publish ``path`` in real time with stream copy (``-tls_verify 0``: ffmpeg's default)."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(path), "-c", "copy", "-f", muxer, url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def srt_url(doors: Doors, stream_id: str, *, linger: bool = False) -> str:
    """``linger``: ffmpeg's SRT socket waits (up to 2 s) for its unsent data when it closes;
    without it (SRT's live-mode default) the last packets of a publish may never leave it."""
    return f"{doors.srt_base}?streamid={quote(stream_id, safe='')}&latency=120000" + ("&linger=2" if linger else "")


def check_live_then_replay(
    live_stack: LiveStack, stream: Stream, publisher: subprocess.Popen[bytes], tmp: Path
) -> None:
    """The live ladder at the edge while publishing, then the replay holds every frame sent."""
    live_stack.wait_live(stream.pk, timeout=30)
    live = live_stack.wait_segments(stream.pk, 2, timeout=60)
    master = live_stack.get(playback_url(stream))
    assert master.status_code == 200, master.text
    variants = parse_master(master.text)
    probe = SourceInfo("h264", "High", SOURCE.width, SOURCE.height, SOURCE.fps, 0, "", "", 0, "", 0, 0)
    assert [v.uri.split("/")[-2] for v in variants] == [r.name for r in ladder_for(probe)], master.text
    assert len(variants) >= 2, master.text
    assert set(live) == {v.uri.split("/")[-2] for v in variants}
    for variant in variants:
        assert float(variant.attrs["FRAME-RATE"]) == pytest.approx(SOURCE.fps, abs=0.01)
        assert variant.attrs["CODECS"].endswith(",mp4a.40.2"), variant.attrs

    assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    session = live_stack.wait_session_ended(stream.pk, timeout=120)
    assert session.is_replay
    assert session.connections == 1
    replay = live_stack.get(replay_url(session))
    assert replay.status_code == 200, replay.text
    base = replay_url(session).rsplit("/", 1)[0]
    for variant in parse_master(replay.text):
        rendition = variant.uri.split("/")[0]
        text, files = download_rendition(f"{base}/{variant.uri}", tmp / rendition)
        assert "#EXT-X-ENDLIST" in text
        assert "#EXT-X-DISCONTINUITY" not in text, (rendition, text)
        numbers: list[int] = []
        for segment in files:
            decoded = decode_segment(segment, SOURCE)
            assert {IDR, SPS, PPS} <= set(decoded.first_nals), (rendition, segment.name, decoded.first_nals)
            assert decode_errors(segment) == "", (rendition, segment.name)
            numbers += decoded.numbers
        # Every frame the publisher sent, first and last included, once, in order.
        assert numbers == list(range(SOURCE.frames)), (rendition, len(numbers), numbers[:3], numbers[-3:])
        assert sum(extinf(text)) == pytest.approx(SOURCE.seconds, abs=0.25), (rendition, extinf(text))


def assert_nothing_happened(stream: Stream) -> None:
    assert not StreamSession.objects.filter(stream=stream).exists()
    assert Stream.objects.get(pk=stream.pk).status == "offline"
    assert storage.list_keys(stream_prefix(stream.pk) + "/") == []


def test_rtmps_publish_reaches_a_playable_ladder(live_stack, doors, user, ingest_settings, tmp_path):
    stream, key = make_stream(user, title="RTMPS", keep_recordings=True)
    publisher = publish(source_file(SOURCE), f"{doors.rtmps_url}/{key}", "flv")
    check_live_then_replay(live_stack, stream, publisher, tmp_path)


def test_srt_publish_reaches_a_playable_ladder(live_stack, doors, user, ingest_settings, tmp_path):
    stream, key = make_stream(user, title="SRT", keep_recordings=True)
    publisher = publish(source_file(SOURCE), srt_url(doors, key, linger=True), "mpegts")
    check_live_then_replay(live_stack, stream, publisher, tmp_path)


def test_srt_over_a_lossy_link_loses_no_frame(live_stack, doors, user, ingest_settings, tmp_path):
    """What SRT is for: 5 % of the datagrams dropped each way between the publisher and the
    listener (tests/ingest/lossy_udp.py); SRT's retransmissions within its latency (120 ms)
    deliver every frame: the replay holds them all, in order."""
    stream, key = make_stream(user, title="SRT lossy", keep_recordings=True)
    listener_port = int(doors.srt_base.rsplit(":", 1)[1])
    with lossy_udp(("127.0.0.1", listener_port), loss=0.05) as link:
        url = srt_url(doors, key, linger=True).replace(f":{listener_port}?", f":{link.port}?")
        publisher = publish(source_file(SOURCE), url, "mpegts")
        check_live_then_replay(live_stack, stream, publisher, tmp_path)
    # The link really lost packets, both ways (data up, acknowledgements down).
    assert link.dropped["up"] > 50, (link.dropped, link.forwarded)
    assert link.dropped["down"] > 5, (link.dropped, link.forwarded)


def test_srt_access_control_stream_id_and_several_publishers_at_once(live_stack, doors, user, ingest_settings):
    """``#!::r=<key>,m=publish`` and ``publish:live/<key>`` both name the key; two SRT
    publishers at once are two live streams; each publisher leaving ends its session."""
    first, first_key = make_stream(user, title="SRT one")
    second, second_key = make_stream(user, title="SRT two")
    path = source_file(Source("ingest-360p", 640, 360, 30, 800, seconds=8.0))
    publishers = [
        publish(path, srt_url(doors, f"#!::r={first_key},m=publish"), "mpegts"),
        publish(path, srt_url(doors, f"publish:live/{second_key}"), "mpegts"),
    ]
    for stream in (first, second):
        live_stack.wait_live(stream.pk, timeout=30)
        live_stack.wait_segments(stream.pk, 1, timeout=60)
    for publisher in publishers:
        assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    for stream in (first, second):
        live_stack.wait_live(stream.pk, live=False, timeout=30)
        session = live_stack.wait_session_ended(stream.pk, timeout=90)
        assert 7 <= session.duration_s <= 10, session.duration_s
    devstack.wait_until(lambda: not doors.srt.relays, 15, "the relays to end")


def test_an_srt_publish_of_a_stream_already_live_is_closed_and_the_live_one_goes_on(live_stack, doors, user):
    """Past the handshake on_publish decides, as for RTMP: the key is in use, nginx-rtmp refuses
    the relay, the SRT connection is closed; the live publish is untouched."""
    stream, key = make_stream(user, title="Busy")
    live = live_stack.publish(key, duration_s=10, width=640, height=360)
    live_stack.wait_live(stream.pk, timeout=30)
    second = publish(source_file(SOURCE), srt_url(doors, key), "mpegts")
    assert second.wait(timeout=30) != 0
    assert live.poll() is None  # still publishing
    assert live.wait(timeout=30) == 0
    session = live_stack.wait_session_ended(stream.pk, timeout=60)
    assert session.connections == 1
    devstack.wait_until(lambda: not doors.srt.relays, 15, "the refused relay to end")


@pytest.fixture
def refusals() -> Iterator[list[str]]:
    """The messages the two refusing loggers write, whatever earlier tests of the session did to
    logging (an in-process Celery worker or a dictConfig can disable loggers or stop their
    propagation to the root handler that caplog reads)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    loggers = [logging.getLogger(name) for name in ("transcoding.srt_ingest", "transcoding.views")]
    saved = [(lg, lg.disabled, lg.level) for lg in loggers]
    for lg in loggers:
        lg.disabled = False
        lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    yield messages
    for lg, disabled, level in saved:
        lg.removeHandler(handler)
        lg.disabled, lg.level = disabled, level


def test_a_wrong_key_is_refused_over_rtmps(live_stack, doors, user, refusals):
    stream, key = make_stream(user, title="RTMPS wrong key")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    publisher = publish(source_file(SOURCE), f"{doors.rtmps_url}/{wrong}", "flv")
    assert publisher.wait(timeout=30) != 0
    assert "publish refused: unknown stream key" in refusals, refusals
    assert_nothing_happened(stream)


@pytest.mark.parametrize(
    ("stream_id", "says"),
    [
        ("{wrong}", "unknown stream key"),
        ("#!::r={wrong},m=publish", "unknown stream key"),
        ("#!::r={key},m=request", "publishers only"),
        ("", "no stream id"),
        ("live_not a key!", "malformed stream key"),
    ],
)
def test_srt_refuses_at_the_handshake(live_stack, doors, user, refusals, stream_id, says):  # noqa: PLR0917
    stream, key = make_stream(user, title="SRT refused")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    started = time.monotonic()
    publisher = publish(source_file(SOURCE), srt_url(doors, stream_id.format(key=key, wrong=wrong)), "mpegts")
    assert publisher.wait(timeout=30) != 0
    stderr = publisher.stderr.read().decode(errors="replace") if publisher.stderr else ""
    # Refused in the handshake: ffmpeg never got a connection (not dropped after sending).
    assert "Connection to srt://" in stderr, stderr
    assert "failed" in stderr, stderr
    assert time.monotonic() - started < 15
    assert any(says in message for message in refusals if message.startswith("SRT caller refused")), refusals
    assert not doors.srt.relays
    assert_nothing_happened(stream)


@pytest.mark.faults
def test_the_procfile_roles_take_srt_and_rtmps_publishes_at_once(process_stack, user):
    """``manage.py run_srt`` and the RTMPS nginx as separate processes of the stack (the roles
    ``make run`` starts): an SRT and an RTMPS publisher at once, each a live stream whose
    playlists advance at the edge; the publishers leaving end both sessions."""
    from tests.fixtures.stack import latest_session, playlist_count, stream_status, wait_for
    from transcoding.golive import PublishOptions, publish_args

    stack = process_stack
    stack.start("srt")
    stack.start("rtmps")
    rtmps_port = int(stack.rtmps_url.rsplit(":", 1)[1].split("/")[0])
    devstack.wait_until(lambda: devstack.port_open(rtmps_port), 10, "RTMPS listener")
    devstack.wait_until(lambda: "SRT listener ready" in (stack.var / "srt.log").read_text(errors="replace"), 60, "srt")
    over_srt, srt_key = make_stream(user, title="SRT process")
    over_rtmps, rtmps_key = make_stream(user, title="RTMPS process")
    urls = {over_srt.pk: f"{stack.srt_url}?streamid={srt_key}", over_rtmps.pk: f"{stack.rtmps_url}/{rtmps_key}"}
    publishers = {
        stream_id: subprocess.Popen(
            publish_args(PublishOptions(url=url, duration_s=14, width=640, height=360)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for stream_id, url in urls.items()
    }
    for stream_id in urls:
        wait_for(lambda s=stream_id: stream_status(s) == "live", 30, f"stream {stream_id} live")
        url = f"{stack.edge_url}/{prefix_of(latest_session(stream_id))}/source/index.m3u8"
        wait_for(lambda u=url: playlist_count(u) >= 3, 60, f"stream {stream_id} segments at the edge")
    for publisher in publishers.values():
        assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    for stream_id in urls:
        wait_for(lambda s=stream_id: latest_session(s).status == "ended", 60, f"session of {stream_id} ended")
        assert stream_status(stream_id) == "offline"
    assert stack.alive("srt")
    assert stack.alive("rtmps")
