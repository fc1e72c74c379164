"""Regenerating a key or deleting a stream disconnects a live publisher: real nginx-rtmp, a
real ffmpeg publisher, the dashboard and API paths (the ``live_stack`` fixture)."""

import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from livestream import devstack
from streams import keys, services
from streams.models import SessionStatus, Stream, StreamSession
from streams.playback import stream_prefix
from tests.factories import DEFAULT_PASSWORD, make_stream
from transcoding import state, storage
from transcoding.golive import PublishOptions, publish_args

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# How long the publisher may keep streaming after the request returned.
DROP_WITHIN_S = 5


def _exit_after(publisher, start: float) -> tuple[int, float]:
    code = publisher.wait(timeout=30)
    return code, time.monotonic() - start


def _refused(live_stack, key: str) -> bool:
    """A publish with ``key`` is refused: ffmpeg fails within seconds instead of streaming."""
    attempt = live_stack.publish(key, duration_s=30)
    try:
        return attempt.wait(timeout=15) != 0
    finally:
        if attempt.poll() is None:
            attempt.kill()
            attempt.wait()


def test_regenerating_the_key_on_the_dashboard_drops_the_publisher(live_stack, user):
    stream, old_key = make_stream(user, title="Rotated live", keep_recordings=False)
    publisher = live_stack.publish(old_key, duration_s=120)
    try:
        live_stack.wait_live(stream.pk)
        session = StreamSession.objects.get(stream=stream)
        client = Client()
        assert client.login(username=user.username, password=DEFAULT_PASSWORD)

        start = time.monotonic()
        response = client.post(reverse("streams:regenerate_key", args=[stream.pk]), follow=True)
        new_key = response.context["revealed_key"]
        code, elapsed = _exit_after(publisher, start)
        assert elapsed < DROP_WITHIN_S, f"publisher still streaming {elapsed:.1f} s after the new key"
        assert code != 0  # cut off, not finished
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()

    live_stack.wait_live(stream.pk, live=False, timeout=10)
    session.refresh_from_db()
    assert session.status in (SessionStatus.RECONNECTING, SessionStatus.ENDING, SessionStatus.ENDED)
    assert _refused(live_stack, old_key)
    assert Stream.objects.get(pk=stream.pk).status == "offline"
    assert keys.matches(new_key, Stream.objects.get(pk=stream.pk).key_hash)
    ended = live_stack.wait_session_ended(stream.pk, timeout=60)
    assert ended.pk == session.pk
    assert StreamSession.objects.filter(stream=stream).count() == 1  # the old key started nothing


def test_regenerating_the_key_through_the_api_drops_the_publisher(live_stack, user):
    stream, old_key = make_stream(user, title="Rotated by API", keep_recordings=False)
    publisher = live_stack.publish(old_key, duration_s=120)
    try:
        live_stack.wait_live(stream.pk)
        api = APIClient()
        api.force_authenticate(user)
        start = time.monotonic()
        response = api.post(f"/api/v1/streams/{stream.pk}/regenerate-key/")
        assert response.status_code == 200
        code, elapsed = _exit_after(publisher, start)
        assert elapsed < DROP_WITHIN_S
        assert code != 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    live_stack.wait_live(stream.pk, live=False, timeout=10)
    # The new key goes live again (within the grace period it continues the same session).
    again = live_stack.publish(response.json()["stream_key"], duration_s=4)
    live_stack.wait_live(stream.pk)
    assert again.wait(timeout=30) == 0
    live_stack.wait_session_ended(stream.pk, timeout=60)


def test_deleting_a_live_stream_drops_the_publisher_and_ends_everything(live_stack, user):
    stream, key = make_stream(user, title="Deleted live", keep_recordings=True)
    stream_id = stream.pk
    publisher = live_stack.publish(key, duration_s=120)
    try:
        live_stack.wait_live(stream_id)
        live_stack.wait_segments(stream_id, 1)
        session_id = StreamSession.objects.get(stream=stream).pk
        assert state.ingest_running(session_id)
        api = APIClient()
        api.force_authenticate(user)
        start = time.monotonic()
        assert api.delete(f"/api/v1/streams/{stream_id}/").status_code == 204
        code, elapsed = _exit_after(publisher, start)
        assert elapsed < DROP_WITHIN_S, f"publisher still streaming {elapsed:.1f} s after the delete"
        assert code != 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()

    assert not Stream.objects.filter(pk=stream_id).exists()
    assert not StreamSession.objects.filter(pk=session_id).exists()
    # The ingest of the session stops, and its objects go (also chunks that were in flight).
    devstack.wait_until(lambda: not state.ingest_running(session_id), 15, "the session's segmenter to stop")
    devstack.wait_until(lambda: storage.list_keys(stream_prefix(stream_id) + "/") == [], 60, "objects purged")
    assert _refused(live_stack, key)


def test_deleting_on_the_dashboard_drops_the_publisher(live_stack, user):
    stream, key = make_stream(user, title="Deleted on the dashboard", keep_recordings=False)
    publisher = live_stack.publish(key, duration_s=120)
    try:
        live_stack.wait_live(stream.pk)
        client = Client()
        assert client.login(username=user.username, password=DEFAULT_PASSWORD)
        start = time.monotonic()
        assert client.post(reverse("streams:delete", args=[stream.pk])).status_code == 302
        code, elapsed = _exit_after(publisher, start)
        assert elapsed < DROP_WITHIN_S
        assert code != 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    assert not Stream.objects.filter(pk=stream.pk).exists()
    assert _refused(live_stack, key)


def test_a_publish_over_the_live_limit_is_refused_at_the_ingest(live_stack, user, settings):
    settings.MAX_LIVE_PER_USER = 1
    first, first_key = make_stream(user, title="Live one", keep_recordings=False)
    second, second_key = make_stream(user, title="One too many", keep_recordings=False)
    publisher = live_stack.publish(first_key, duration_s=15)
    try:
        live_stack.wait_live(first.pk)
        assert _refused(live_stack, second_key)
        second.refresh_from_db()
        assert "1 stream live at once" in second.publish_problem
        assert second.status == "offline"
    finally:
        publisher.kill()
        publisher.wait()
    live_stack.wait_session_ended(first.pk, timeout=60)


def test_a_web_role_on_another_host_drops_the_publisher_through_the_control_listener(live_server, settings, user):
    """The compose layout: web and nginx-rtmp in different containers. nginx-rtmp serves
    /control on RTMP_CONTROL_BIND (here 127.0.0.3) to requests carrying the callback secret;
    the web role reaches it at RTMP_CONTROL_URL, not at its own 127.0.0.1."""
    secret = secrets.token_urlsafe(16)
    settings.RTMP_CALLBACK_SECRET = secret
    rtmp_port, stat_port, control_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
    var = Path(tempfile.mkdtemp(prefix="rtmp-control-"))
    var.chmod(0o755)
    prefix = var / "rtmp"
    config = devstack.write_nginx_config(
        prefix,
        devstack.rtmp_config(
            prefix,
            bind="127.0.0.1",
            port=rtmp_port,
            callback_base=live_server.url,
            secret=secret,
            stat_port=stat_port,
            control_bind="127.0.0.3",
            control_port=control_port,
        ),
    )
    try:
        with devstack.running(devstack.nginx_command(prefix, config), var / "nginx.log"):
            devstack.wait_until(lambda: devstack.port_open(control_port, "127.0.0.3"), 10, "control listener")
            control = f"http://127.0.0.3:{control_port}"
            drop = f"{control}/control/drop/publisher?app=live&name=s1c1"
            assert requests.get(drop, timeout=5).status_code == 403
            assert requests.get(drop, headers={"X-Rtmp-Control-Secret": "wrong"}, timeout=5).status_code == 403
            assert requests.get(f"{control}/stat", timeout=5).status_code == 404  # /control only

            settings.RTMP_STAT_PORT = devstack.free_port()  # nothing there: only the control URL works
            # What the node's supervisor registers: its control URL, reached by the web role.
            state.register_node(settings.INGEST_NODE_ID, control_url=f"{control}/control", ttl_s=600)
            stream, key = make_stream(user, title="Remote control", keep_recordings=False)
            publisher = subprocess.Popen(
                publish_args(PublishOptions(url=f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", duration_s=60)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                devstack.wait_until(
                    lambda: Stream.objects.get(pk=stream.pk).status == "live", 20, "the publisher to go live"
                )
                session = StreamSession.objects.get(stream=stream)
                assert session.status == SessionStatus.LIVE
                start = time.monotonic()
                services.regenerate_key(stream)
                code, elapsed = _exit_after(publisher, start)
                assert elapsed < DROP_WITHIN_S
                assert code != 0
            finally:
                if publisher.poll() is None:
                    publisher.kill()
                    publisher.wait()
    finally:
        shutil.rmtree(var, ignore_errors=True)
