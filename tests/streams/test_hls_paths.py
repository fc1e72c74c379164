"""Unguessable session paths (ADR 0034, "Privacy of the preview"): ``live/<stream>/<session>-<tag>``
with tag = the first 16 hex digits of HMAC-SHA256(HLS_PATH_SECRET, "<stream>/<session>")."""

import hashlib
import hmac
import re

import pytest

from streams import playback, services, sessions
from streams.models import SessionStatus, StreamSession
from tests.factories import make_stream
from transcoding import state

pytestmark = pytest.mark.django_db


def test_session_prefix_is_stable_tagged_and_differs_per_session_stream_and_secret(settings):
    settings.HLS_PATH_SECRET = "first-secret-of-this-test-0123456789abcdef"
    prefix = playback.session_prefix(12, 345)
    assert re.fullmatch(r"live/12/345-[0-9a-f]{16}", prefix)
    assert playback.session_prefix(12, 345) == prefix  # stable
    expected = hmac.new(settings.HLS_PATH_SECRET.encode(), b"12/345", hashlib.sha256).hexdigest()[:16]
    assert prefix == f"live/12/345-{expected}"
    assert playback.path_tag(12, 346) != expected  # another session, another tag
    assert playback.path_tag(13, 345) != playback.path_tag(12, 345)  # another stream, another tag
    assert playback.valid_tag(12, 345, expected)
    assert not playback.valid_tag(12, 345, "0" * 16)
    assert not playback.valid_tag(12, 346, expected)
    assert not playback.valid_tag(12, 345, expected[:-1])
    settings.HLS_PATH_SECRET = "second-secret-of-this-test-fedcba987654321"
    assert playback.session_prefix(12, 345) != prefix  # another secret, another tag


def test_a_session_keeps_its_stored_prefix_when_the_secret_rotates(user, settings):
    stream, key = make_stream(user)
    grant = sessions.start_publish(key)
    stored = grant.session.storage_prefix
    assert stored == playback.session_prefix(stream.pk, grant.session.pk)
    settings.HLS_PATH_SECRET = "rotated-secret-of-this-deployment-0123456789"
    assert playback.session_prefix(stream.pk, grant.session.pk) != stored
    session = StreamSession.objects.get(pk=grant.session.pk)
    assert playback.prefix_of(session) == stored
    assert playback.replay_url(session) == f"{settings.HLS_EDGE_URL}/{stored}/master.m3u8"


def test_the_player_of_a_private_preview_plays_its_own_master_then_the_stable_one(user):
    stream, key = make_stream(user, start_in_preview=True)
    grant = sessions.start_publish(key)
    stream.refresh_from_db()
    session = StreamSession.objects.get(pk=grant.session.pk)
    assert playback.live_url(stream, session) == playback.replay_url(session)
    assert playback.live_url(stream, session) != playback.playback_url(stream)
    sessions.go_public(stream.pk)
    stream.refresh_from_db()
    session.refresh_from_db()
    assert playback.live_url(stream, session) == playback.playback_url(stream)
    assert session.status == SessionStatus.LIVE


def test_go_public_tells_the_pipeline(user):
    """``services.go_public`` clears the session's ``preview`` key: the assembler writes the
    stable master with the next chunk (tests/pipeline/test_assembler.py)."""
    stream, key = make_stream(user, start_in_preview=True)
    grant = sessions.start_publish(key)
    state.set_preview(grant.session.pk)
    assert state.in_preview(grant.session.pk)
    services.go_public(stream.pk)
    assert not state.in_preview(grant.session.pk)
    state.purge(grant.session.pk)
