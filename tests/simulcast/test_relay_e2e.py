"""Simulcast end to end, with real processes (``process_stack``) and a second nginx-rtmp on a
loopback address of its own acting as the remote service (``tests/simulcast/remote.py``).

One broadcast, four targets:
- ``Remote`` (the second nginx-rtmp, application ``live``): receives the stream, which decodes,
  with as many frames as the publisher sent minus the relay's start-up; its status goes
  connecting -> live -> stopped, each change delivered as a ``simulcast.status`` webhook;
- ``Nobody`` (a port nobody listens on): retried (its attempt count grows) and reported failed
  with "connection refused by <host:port>", the failure delivered as a webhook;
- ``Closed`` (application ``closed``, which denies every publish): reported failed as rejected,
  then disabled mid-broadcast (stopped); ``Late``, added mid-broadcast, goes live;
- ``Secure`` (RTMPS in front of the remote, a certificate in the relays' SIMULCAST_TLS_CA_FILE)
  receives the stream; ``Untrusted`` (RTMPS, a certificate they do not know) is refused before
  the key is sent, reported failed as "not trusted".
Meanwhile the main stream's live playlist keeps advancing. No stream key appears in any webhook.
The owner's dashboard page (Chromium) follows the statuses as they change, without a reload.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from livestream import devstack
from simulcast import services
from simulcast.models import RelayStatus, Target
from streams.models import SessionStatus
from tests.factories import make_stream
from tests.fixtures.stack import (
    PY,
    ProcessStack,
    latest_session,
    live_source_url,
    playlist_count,
    stream_status,
    wait_for,
)
from tests.pipeline.media import decode_errors
from tests.simulcast.remote import RemoteTls, remote_certificates, remote_rtmp
from tests.webhooks.servers import http_receiver
from webhooks.services import create_endpoint

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

DURATION_S = 30
FPS = 30
STARTUP_GAP_S = 8  # publish accepted -> relay playing: command, sync, ffmpeg's probe of the input


@pytest.fixture
def simulcast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of the stack's processes (read from the environment when they start): targets
    and webhook receivers on loopback, quick target refresh and short retries."""
    for name, value in {
        "SIMULCAST_ALLOW_PRIVATE": "1",
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "SIMULCAST_REFRESH_S": "1",
        "SIMULCAST_RETRY_MIN_S": "1",
        "SIMULCAST_RETRY_MAX_S": "4",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def simulcast_stack(simulcast_env: None, process_stack: ProcessStack) -> Iterator[ProcessStack]:
    """``process_stack`` plus a webhooks Celery worker (queue ``webhooks``), as in production,
    and the ingest supervisor restarted with production's database pool (2 connections; its
    relay threads must give theirs back)."""
    stack = process_stack
    tls = remote_certificates(stack.var / "remote-tls", _remote_host())
    stack.role_env["ingest"] = {"DATABASE_POOL_MAX": "2", "SIMULCAST_TLS_CA_FILE": str(tls.trusted)}
    stack.kill("ingest")
    stack.start("ingest")
    stack._starters["webhooks"] = [
        str(Path(PY).parent / "celery"), "-A", "livestream", "worker", "-n", f"hooks{stack.redis_port}@%h",
        "-Q", "webhooks", "--pool", "solo", "--without-gossip", "--without-mingle", "-l", "INFO",
    ]  # fmt: skip
    proc = stack.start("webhooks")
    try:
        devstack.wait_until(
            lambda: "ready" in (stack.var / "webhooks.log").read_text(errors="replace"), 60, "webhooks worker"
        )
        yield stack
    finally:
        devstack.stop_process(proc, timeout=5)


def _status(target: Target) -> services.TargetStatus:
    target.refresh_from_db()
    return services.statuses([target])[target.pk]


def _video_frames(path: Path) -> int:
    """Video frames ffmpeg decodes from ``path`` (every one, not the container's count)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=nb_read_frames,codec_name,width,height", "-of", "json", str(path)],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    stream = json.loads(done.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1280, 720), stream
    return int(stream["nb_read_frames"])


@contextmanager
def _dashboard(stack: ProcessStack, user: User, stream_id: int) -> Iterator[Any]:
    """The owner's manage page of the stream in Chromium (signed in as ``user``)."""
    from tests.browser.harness import chromium, sign_in

    with chromium() as browser:
        sign_in(browser, stack.web_url, user)
        page = browser.new_page()
        page.goto(f"{stack.web_url}/dashboard/streams/{stream_id}/")
        yield page


def _shows(page: Any, target: Target, field: str, expected: str, timeout_s: float = 30) -> None:
    """Wait until the dashboard's row of ``target`` shows ``expected`` (a prefix) in ``field``."""
    selector = f'#simulcast tr[data-target="{target.pk}"] [data-field="{field}"]'
    page.wait_for_function(
        f"() => document.querySelector('{selector}').textContent.startsWith({json.dumps(expected)})",
        timeout=timeout_s * 1000,
    )


def _reason(target: Target) -> str:
    target.refresh_from_db()
    return target.last_reason


def _remote_host() -> str:
    """A loopback address of this run's own (slot-specific, next to its S3 address)."""
    from urllib.parse import urlparse

    last = (urlparse(settings.S3_ENDPOINT_URL).hostname or "127.0.0.1").rsplit(".", 1)[-1]
    return f"127.0.3.{last}"


def test_targets_get_the_stream_failures_retry_and_the_main_stream_goes_on(
    simulcast_stack: ProcessStack, user, settings
) -> None:
    settings.SIMULCAST_ALLOW_PRIVATE = True  # this process validates the targets' URLs
    settings.SIMULCAST_MAX_TARGETS = 6
    try:
        _broadcast_with_targets(simulcast_stack, user)
    except AssertionError as exc:  # say what the relays did
        log = (simulcast_stack.var / "ingest.log").read_text(errors="replace").splitlines()
        relays = [line for line in log if "simulcast" in line or "relay" in line]
        raise AssertionError(f"{exc}\nrelays (ingest.log):\n" + "\n".join(relays[-40:])) from exc


def _broadcast_with_targets(stack: ProcessStack, user: User) -> None:
    # In the stack's directory: nginx's workers (unprivileged) cannot enter pytest's tmp_path.
    tls = RemoteTls(*(stack.var / "remote-tls" / f"{n}.{e}" for n in ("trusted", "untrusted") for e in ("crt", "key")))
    with remote_rtmp(stack.var, _remote_host(), tls) as remote, http_receiver() as hooks, ExitStack() as pages:
        stream, key = make_stream(user, title="Simulcast")
        create_endpoint(user, url=hooks.url, events=["simulcast.status"])
        remote_key = "remote-key-5f3a9c"
        good = services.create_target(stream, name="Remote", url=f"{remote.base}/live", key=remote_key)
        refused_port = devstack.free_port()
        refused = services.create_target(
            stream, name="Nobody", url=f"rtmp://127.0.0.1:{refused_port}/live", key="refused-key-7d1e"
        )
        closed = services.create_target(stream, name="Closed", url=f"{remote.base}/closed", key="closed-key-2b8c")
        secure = services.create_target(stream, name="Secure", url=f"{remote.tls_base}/live", key="secure-key-41d7")
        untrusted = services.create_target(
            stream, name="Untrusted", url=f"{remote.untrusted_base}/live", key="untrusted-key-8e2a"
        )

        # The owner's dashboard, open from before the broadcast, follows the statuses as they
        # change (static/js/simulcast.js: the owner socket's simulcast.status and the API).
        page = pages.enter_context(_dashboard(stack, user, stream.pk))
        publisher = stack.publish_accepted(key, within_s=20, duration_s=DURATION_S)
        wait_for(lambda: stream_status(stream.pk) == "live", 30, "stream live")
        url = live_source_url(stack, stream.pk)

        wait_for(lambda: _status(good).status == RelayStatus.LIVE, 40, "the remote target live")
        # The refusing target is retried (1, 2, 4, 4 ... s apart) while the main playlist advances.
        attempts_before = _status(refused).attempt
        count_before = playlist_count(url)
        wait_for(lambda: _status(refused).attempt >= attempts_before + 2, 30, "two more attempts of the refused target")
        wait_for(lambda: playlist_count(url) >= count_before + 3, 30, "the main playlist advancing")
        failing = _status(refused)
        assert failing.status in (RelayStatus.FAILED, RelayStatus.CONNECTING)
        assert failing.reason in ("", f"connection refused by 127.0.0.1:{refused_port}")
        refused.refresh_from_db()
        assert refused.last_status == RelayStatus.FAILED
        assert refused.last_reason == f"connection refused by 127.0.0.1:{refused_port}"
        closed.refresh_from_db()
        assert closed.last_status == RelayStatus.FAILED, closed.last_reason
        assert closed.last_reason.startswith(f"publish rejected by {remote.host}:{remote.port}"), closed.last_reason
        assert _status(good).status == RelayStatus.LIVE  # the failing targets change nothing for it
        wait_for(lambda: _status(secure).status == RelayStatus.LIVE, 20, "the RTMPS target live")
        wait_for(lambda: bool(_reason(untrusted)), 20, "the untrusted RTMPS target failed")
        assert _reason(untrusted).startswith(
            f"the TLS certificate of {remote.host}:{remote.untrusted_port} is not trusted"
        ), _reason(untrusted)

        _shows(page, good, "status", "live")
        _shows(page, refused, "detail", f"connection refused by 127.0.0.1:{refused_port}")
        _shows(page, closed, "status", "failed")

        # Targets changed during the broadcast take effect: one disabled, one added.
        services.update_target(closed, enabled=False)
        _shows(page, closed, "status", "disabled")
        late = services.create_target(stream, name="Late", url=f"{remote.base}/live", key="late-key-93c0")
        wait_for(lambda: _status(closed).status == RelayStatus.STOPPED, 15, "the disabled target stopped")
        closed.refresh_from_db()
        assert closed.last_reason.startswith("the target was disabled or removed"), closed.last_reason
        wait_for(lambda: _status(late).status == RelayStatus.LIVE, 20, "the target added while live")

        assert publisher.wait(timeout=DURATION_S + 30) == 0
        wait_for(lambda: latest_session(stream.pk).status == SessionStatus.ENDED, 60, "session ended")
        for target in (good, refused, late, secure, untrusted):
            wait_for(lambda t=target: _status(t).status == RelayStatus.STOPPED, 30, f"{target.name} stopped")
        _shows(page, good, "status", "stopped")
        _shows(page, refused, "detail", "the broadcast ended")
        pages.close()
        refused.refresh_from_db()
        assert refused.last_attempt >= 3
        assert refused.last_reason.startswith("the broadcast ended; last failure: connection refused")

        # What the remote service received: one publish per key, the stream as sent, decodable.
        recordings = {path.name.split("-")[0]: path for path in remote.recordings()}
        assert sorted(recordings) == ["late", "remote", "secure"], remote.recordings()
        received = _video_frames(recordings["remote"])
        sent = DURATION_S * FPS
        assert sent - STARTUP_GAP_S * FPS <= received <= sent, (received, sent)
        assert decode_errors(recordings["remote"]) == ""
        assert 0 < _video_frames(recordings["late"]) < received
        assert _video_frames(recordings["secure"]) >= sent - STARTUP_GAP_S * FPS  # over TLS, verified
        assert decode_errors(recordings["secure"]) == ""

        # Webhooks: each change of each target, once, in order; never a key.
        def events_of(target: Target) -> list[dict]:
            bodies = [r.json() for r in hooks.requests]
            assert all(b["type"] == "simulcast.status" for b in bodies)
            return [b["data"] for b in bodies if b["data"]["target_id"] == target.pk]

        for target in (good, refused, late):
            wait_for(
                lambda t=target: [e["status"] for e in events_of(t)][-1:] == ["stopped"], 30, f"{target.name} webhooks"
            )
        assert [e["status"] for e in events_of(good)] == ["connecting", "live", "stopped"]
        assert [e["status"] for e in events_of(refused)] == ["connecting", "failed", "stopped"]
        assert [e["status"] for e in events_of(late)] == ["connecting", "live", "stopped"]
        failed = events_of(refused)[1]
        assert failed["reason"] == f"connection refused by 127.0.0.1:{refused_port}"
        assert (failed["target_name"], failed["attempt"], failed["stream"]["id"]) == ("Nobody", 1, stream.pk)
        for request in hooks.requests:
            body = request.body.decode()
            for secret in (remote_key, "refused-key-7d1e", "closed-key-2b8c", "late-key-93c0", key):
                assert secret not in body
