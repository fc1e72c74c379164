"""Ingest edge cases through real nginx-rtmp: refused publishes, garbage bytes, reconnects."""

import contextlib
import logging
import os
import socket

import pytest

from livestream.redis import redis_client
from streams.models import SessionStatus, Stream, StreamSession
from streams.playback import replay_url
from tests.factories import make_stream
from tests.pipeline.media import parse_master

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("publish refused")]


def test_wrong_key_is_refused_without_a_session(live_stack, user, caplog):
    caplog.set_level(logging.INFO)
    stream, _key = make_stream(user)
    publisher = live_stack.publish("live_not-the-right-key-at-all", duration_s=3)
    assert publisher.wait(timeout=20) != 0
    assert _refusals(caplog) == ["publish refused: unknown stream key"]
    assert not StreamSession.objects.exists()
    assert Stream.objects.get(pk=stream.pk).status == "offline"


def test_key_of_a_live_stream_cannot_publish_twice(live_stack, user, caplog):
    caplog.set_level(logging.INFO)
    stream, key = make_stream(user)
    first = live_stack.publish(key, duration_s=30)
    try:
        live_stack.wait_live(stream.pk)
        second = live_stack.publish(key, duration_s=3)
        assert second.wait(timeout=20) != 0
        assert "publish refused: stream is already live (key in use by another publisher)" in _refusals(caplog)
        assert StreamSession.objects.filter(stream=stream).count() == 1
        assert first.poll() is None  # the first publisher is not disturbed
    finally:
        first.terminate()
        first.wait(timeout=10)
    live_stack.wait_session_ended(stream.pk)


def test_garbage_on_the_rtmp_port_is_harmless(live_stack, user):
    for payload in (os.urandom(65536), b"\x03" + os.urandom(1536) * 3, b"GET / HTTP/1.0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", live_stack.rtmp_port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                sock.recv(4096)
    assert live_stack.alive()
    assert not StreamSession.objects.exists()
    # The ingest still works afterwards.
    stream, key = make_stream(user)
    publisher = live_stack.publish(key, duration_s=4)
    live_stack.wait_live(stream.pk)
    assert publisher.wait(timeout=20) == 0
    live_stack.wait_session_ended(stream.pk)


def test_reconnect_within_grace_continues_the_session(live_stack, user, settings):
    settings.RECONNECT_GRACE_SECONDS = 8  # room for a slow restart of the publisher under load
    stream, key = make_stream(user, keep_recordings=True)
    first = live_stack.publish(key, duration_s=6)
    live_stack.wait_live(stream.pk)
    assert first.wait(timeout=20) == 0
    live_stack.wait_live(stream.pk, live=False, timeout=5)  # offline at once
    session = StreamSession.objects.get(stream=stream)
    assert session.status == SessionStatus.RECONNECTING
    second = live_stack.publish(key, duration_s=6)
    live_stack.wait_live(stream.pk)
    assert second.wait(timeout=20) == 0
    ended = live_stack.wait_session_ended(stream.pk)
    assert ended.pk == session.pk
    assert ended.connections == 2
    assert ended.is_replay
    base = replay_url(ended).rsplit("/", 1)[0]
    for variant in parse_master(live_stack.get(replay_url(ended)).text):
        text = live_stack.get(f"{base}/{variant.uri}").text
        assert text.count("#EXT-X-DISCONTINUITY\n") == 1, text
        assert "#EXT-X-ENDLIST" in text
        assert 10 <= sum(float(line[8:].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF:")) <= 13


def test_plaintext_key_is_not_in_logs_or_redis(live_stack, user, caplog):
    caplog.set_level(logging.DEBUG)
    stream, key = make_stream(user)
    publisher = live_stack.publish(key, duration_s=3)
    live_stack.wait_live(stream.pk)
    r = redis_client()
    for name in r.scan_iter("*"):
        assert key.encode() not in name
        if r.type(name) == b"string":
            assert key.encode() not in (r.get(name) or b"")
    assert publisher.wait(timeout=20) == 0
    live_stack.wait_session_ended(stream.pk)
    assert key not in caplog.text
    assert key not in live_stack.rtmp_log()
