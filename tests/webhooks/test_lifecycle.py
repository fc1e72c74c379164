"""The pipeline's real session lifecycle (``streams.sessions``) produces the three webhook
events, delivered by a real worker to a real receiver, each signed with the endpoint's secret."""

import pytest

from streams import sessions
from streams.playback import session_prefix
from tests.factories import UserFactory, make_stream
from webhooks import services, signing
from webhooks.models import Delivery, DeliveryStatus


@pytest.mark.usefixtures("allow_private", "celery_worker")
def test_live_offline_and_replay_ready_reach_the_receiver(receiver, settings):
    settings.RECONNECT_GRACE_SECONDS = 0
    user = UserFactory.create()
    stream, key = make_stream(user, title="Lifecycle")
    created = services.create_endpoint(user, url=receiver.url, events=["stream.live", "stream.offline", "replay.ready"])

    grant = sessions.start_publish(key)
    sessions.disconnect(grant.session.pk, grant.connection)
    assert sessions.begin_ending(grant.session.pk) is not None
    assert sessions.end_session(grant.session.pk, duration_s=12.0) is not None

    received = receiver.wait_for(3)
    assert sorted(r.headers["X-Livestream-Event"] for r in received) == [
        "replay.ready",
        "stream.live",
        "stream.offline",
    ]
    for request in received:
        assert signing.verify(
            created.secret,
            request.body,
            request.headers["X-Livestream-Timestamp"],
            request.headers["X-Livestream-Signature"],
        )
        body = request.json()
        assert body["data"]["stream"]["id"] == stream.pk
        assert body["data"]["session"] == grant.session.pk
    ready = next(r.json() for r in received if r.headers["X-Livestream-Event"] == "replay.ready")
    assert ready["data"]["replay_url"].endswith(f"/{session_prefix(stream.pk, grant.session.pk)}/master.m3u8")
    assert set(Delivery.objects.values_list("status", flat=True)) <= {DeliveryStatus.SUCCEEDED, DeliveryStatus.PENDING}
