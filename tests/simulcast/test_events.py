"""``simulcast.status`` reaches the owner's socket group (never the public one) once per status
change; a quiet retry sends nothing. Real channel layer (Redis pub/sub)."""

import time

import pytest
from django.utils import timezone

from livestream.events import owner_group, stream_group
from simulcast import services
from streams.models import StreamSession
from tests.factories import make_stream
from tests.pipeline.test_readiness import GroupListener

pytestmark = pytest.mark.django_db


def test_status_changes_reach_the_owner_group_only(user, django_capture_on_commit_callbacks):
    stream = make_stream(user)[0]
    target = services.create_target(stream, name="Twitch", url="rtmp://93.184.216.34/app", key="live_abcdefghijkl")
    owner, public = GroupListener(owner_group(stream.pk)), GroupListener(stream_group(stream.pk))
    for listener in (owner, public):
        listener.start()
        assert listener.subscribed.wait(10)
    try:
        reports = [
            (services.StatusReport(stream.pk, 9, target.pk, "Twitch", "connecting", attempt=1), True),
            (
                services.StatusReport(stream.pk, 9, target.pk, "Twitch", "failed", "connection refused by x:1935", 1),
                True,
            ),
            (services.StatusReport(stream.pk, 9, target.pk, "Twitch", "connecting", attempt=2), False),  # a retry
            (services.StatusReport(stream.pk, 9, target.pk, "Twitch", "live", attempt=2), True),
        ]
        for report, changed in reports:
            with django_capture_on_commit_callbacks(execute=True):
                services.report_status(report, changed=changed)
        deadline = time.monotonic() + 5
        while len(owner.events("simulcast.status")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # nothing more may arrive
    finally:
        for listener in (owner, public):
            listener.stop.set()
            listener.join(timeout=5)
    got = [m["data"] for m in owner.events("simulcast.status")]
    assert [(d["status"], d["attempt"]) for d in got] == [("connecting", 1), ("failed", 1), ("live", 2)]
    assert got[1]["reason"] == "connection refused by x:1935"
    assert (got[1]["target_id"], got[1]["target_name"], got[1]["stream"], got[1]["session"]) == (
        target.pk, "Twitch", stream.pk, 9,
    )  # fmt: skip
    assert "live_abcdefghijkl" not in repr(got)
    assert public.messages == []


def test_should_push_is_the_single_switch(user):
    """A private preview is not simulcast until it goes public (ADR 0034)."""
    stream = make_stream(user)[0]
    assert services.should_push(stream.pk, 1) is True
    preview = StreamSession.objects.create(stream=stream, is_preview=True, started_at=timezone.now(), status="ended")
    assert services.should_push(stream.pk, preview.pk) is False
    StreamSession.objects.filter(pk=preview.pk).update(went_public_at=timezone.now())
    assert services.should_push(stream.pk, preview.pk) is True
