"""Events with an audience: owner-only analytics never reach the public room; the owner's
analytics page gets them on its own owner-checked socket, which is not a viewer."""

import re
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client

from analytics import changes
from chat import presence
from livestream import events
from tests.chat.conftest import new_stream, new_user, token_headers

pytestmark = pytest.mark.django_db(transaction=True)

OWNER_ONLY = ("analytics.ingest", "analytics.viewers", "analytics.session")


async def _count(stream) -> int:
    return await database_sync_to_async(presence.viewer_count)(stream.pk)


@database_sync_to_async
def _publish_analytics(stream_id: int) -> None:
    # Exactly what `manage.py follow_changes` does for each new document.
    for name in OWNER_ONLY:
        changes.publish(stream_id, name, {"session_id": 1, "marker": name})


@database_sync_to_async
def _publish_public(stream_id: int, event: str) -> None:
    events.send_event_on_commit(stream_id, event, {"stream": stream_id})


async def test_owner_only_events_reach_the_owner_socket_and_never_the_watch_page(connect, settings):
    settings.CHAT_PRESENCE_POLL_S = 0.1
    owner = await new_user()
    stream = await new_stream(owner)
    anonymous = await connect(stream)
    signed_in = await connect(stream, headers=await token_headers(await new_user()))
    analytics = await connect(stream, headers=await token_headers(owner), path="owner", ready="owner.ready")
    # The analytics socket is not a viewer.
    assert await _count(stream) == 2
    await anonymous.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 2)

    await _publish_analytics(stream.pk)
    for name in OWNER_ONLY:
        frame = await analytics.wait_type(name)
        assert frame["marker"] == name
    # A public event sent afterwards reaches the watch pages; the analytics never did.
    await _publish_public(stream.pk, "stream.live")
    for socket in (anonymous, signed_in):
        await socket.wait_type("stream.live")
        await socket.drain(0.3)
        assert not [f for f in socket.frames if f["type"].startswith("analytics.")]
    # And the owner socket gets no public traffic.
    await analytics.drain(0.3)
    assert {f["type"] for f in analytics.frames} <= {"owner.ready", *OWNER_ONLY}
    assert await _count(stream) == 2
    for socket in (anonymous, signed_in):
        counts = [f["count"] for f in socket.frames if f["type"] == "viewers.count"]
        assert counts[-1] == 2
        assert max(counts) == 2


async def test_an_owner_only_event_sent_to_the_public_group_is_not_relayed(connect):
    stream = await new_stream()
    viewer = await connect(stream)
    layer = get_channel_layer()
    # A future bug that bypasses send_event_on_commit's routing still leaks nothing.
    await layer.group_send(
        events.stream_group(stream.pk), {"type": "stream.event", "event": "analytics.ingest", "data": {"bitrate": 1}}
    )
    await _publish_public(stream.pk, "stream.offline")
    await viewer.wait_type("stream.offline")
    assert not [f for f in viewer.frames if f["type"].startswith("analytics.")]


def test_send_event_on_commit_refuses_to_make_owner_only_events_public() -> None:
    with pytest.raises(ValueError, match="owner-only"):
        events.send_event_on_commit(1, "analytics.ingest", {}, audience="public")
    assert events.audience_of("analytics.session") == "owner"
    assert events.audience_of("stream.live") == "public"


async def test_the_owner_socket_is_refused_to_everyone_else(connect):
    owner = await new_user()
    stream = await new_stream(owner)
    intruder = await connect(stream, headers=await token_headers(await new_user()), path="owner", join=False)
    assert (await intruder.wait_type("error"))["code"] == "not_found"
    assert await intruder.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}

    anonymous = await connect(stream, path="owner", join=False)
    assert (await anonymous.wait_type("error"))["code"] == "auth_required"
    assert await anonymous.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}

    # The owner of one stream is nobody on another's.
    other = await new_stream()
    wrong = await connect(other, headers=await token_headers(owner), path="owner", join=False)
    assert (await wrong.wait_type("error"))["code"] == "not_found"

    staff = await new_user(is_staff=True)
    admin = await connect(stream, headers=await token_headers(staff), path="owner", ready="owner.ready")
    await _publish_analytics(stream.pk)
    await admin.wait_type("analytics.ingest")
    # None of them is a viewer, and none received anything meant for the owner.
    assert await _count(stream) == 0
    for socket in (intruder, anonymous, wrong):
        assert not [f for f in socket.frames if f["type"].startswith("analytics.")]


async def test_the_analytics_page_opens_the_owner_socket_not_the_watch_socket():
    owner = await new_user()
    stream = await new_stream(owner)

    @database_sync_to_async
    def page() -> str:
        from streams.models import Stream, StreamStatus

        Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
        client = Client()
        client.force_login(owner)
        response = client.get(f"/analytics/streams/{stream.pk}/")
        assert response.status_code == 200
        return response.content.decode()

    html = await page()
    assert f'data-socket="/ws/streams/{stream.pk}/owner/"' in html
    script = (Path(settings.BASE_DIR) / "static" / "js" / "analytics.js").read_text()
    code = re.sub(r"//.*", "", script)
    assert "/chat/" not in code
    assert "dataset.socket" in code
