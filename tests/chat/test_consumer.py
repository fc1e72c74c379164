"""The chat socket end to end: real ASGI app, real Redis channel layer, real PostgreSQL."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from chat import presence, services
from chat.models import Message
from livestream import events
from tests.chat.conftest import new_stream, new_user, token_headers

pytestmark = pytest.mark.django_db(transaction=True)


async def test_broadcast_reaches_every_member_once(connect):
    stream = await new_stream()
    alice = await new_user()
    sender = await connect(stream, headers=await token_headers(alice))
    viewers = [await connect(stream) for _ in range(3)]
    await sender.send("hello everyone")
    for socket in [sender, *viewers]:
        (message,) = await socket.chat_messages(1)
        assert message["text"] == "hello everyone"
        assert message["user"] == alice.username
        assert {"id", "user", "text", "sent_at"} <= set(message)
    stored = await database_sync_to_async(lambda: list(Message.objects.values_list("text", flat=True)))()
    assert stored == ["hello everyone"]
    # Exactly one copy each: nothing else arrives.
    for socket in viewers:
        assert await socket.chat_count(0.4) == 1


@database_sync_to_async
def _post(stream, user, text):
    return services.post_message(stream_id=stream.pk, user=user, text=text)


@database_sync_to_async
def _texts(stream):
    return list(Message.objects.filter(stream=stream).order_by("id").values_list("text", flat=True))


async def test_history_on_join_is_last_50_visible_oldest_first(connect):
    stream = await new_stream()
    alice = await new_user()

    @database_sync_to_async
    def seed():
        Message.objects.bulk_create(Message(stream=stream, user=alice, text=f"m{i}") for i in range(55))
        Message.objects.filter(stream=stream, text="m54").update(deleted_at=timezone.now())

    await seed()
    socket = await connect(stream)
    history = await socket.wait_type("chat.history")
    texts = [m["text"] for m in history["messages"]]
    assert texts == [f"m{i}" for i in range(4, 54)]
    assert all(m["type"] == "chat.message" and m["user"] == alice.username for m in history["messages"])
    assert history["me"]["user"] is None
    assert history["slow_mode_s"] == 0


async def test_anonymous_can_read_but_not_write(connect):
    stream = await new_stream()
    anon = await connect(stream)
    await anon.send("let me in")
    error = await anon.wait_type("error")
    assert error["code"] == "auth_required"
    assert await _texts(stream) == []
    assert await anon.chat_count(0.3) == 0


async def test_message_limits_reply_with_errors_to_sender_only(connect, settings):
    settings.CHAT_MAX_LENGTH = 20
    settings.CHAT_RATE_LIMIT = 3
    stream = await new_stream()
    bob = await new_user()
    sender = await connect(stream, headers=await token_headers(bob))
    viewer = await connect(stream)

    await sender.send("x" * 21)
    assert (await sender.wait_type("error"))["code"] == "too_long"
    sender.frames.clear()
    await sender.send("   ")
    assert (await sender.wait_type("error"))["code"] == "empty"
    sender.frames.clear()
    await sender.comm.send_to(text_data="{not json")
    assert (await sender.wait_type("error"))["code"] == "bad_frame"
    sender.frames.clear()
    await sender.comm.send_json_to({"type": "chat.shout", "text": "hi"})
    assert (await sender.wait_type("error"))["code"] == "unknown_type"
    sender.frames.clear()

    # Every well-formed attempt counts toward the rate limit, refused ones too (the limit is
    # checked before the database): "same words", its duplicate, "second" -> the 4th is refused.
    await sender.send("same words")
    await sender.send("SAME WORDS")
    assert (await sender.wait_type("error"))["code"] == "duplicate"
    sender.frames.clear()
    await sender.send("second")
    await sender.send("third")
    assert (await sender.wait_type("error"))["code"] == "rate_limited"
    assert await _texts(stream) == ["same words", "second"]
    assert await viewer.chat_count(0.3) == 2
    assert not [f for f in viewer.frames if f["type"] == "error"]


async def test_slow_mode_applies_to_viewers_not_moderators(connect):
    owner = await new_user()
    stream = await new_stream(owner)
    carol = await new_user()
    chatter = await connect(stream, headers=await token_headers(carol))
    streamer = await connect(stream, headers=await token_headers(owner))
    await database_sync_to_async(services.set_slow_mode)(actor=owner, stream=stream, seconds=30)
    assert (await chatter.wait_type("chat.settings"))["slow_mode_s"] == 30
    await chatter.send("one")
    await chatter.send("two")
    error = await chatter.wait_type("error")
    assert error["code"] == "slow_mode"
    assert "30 s" in error["message"]
    await streamer.send("mods are exempt 1")
    await streamer.send("mods are exempt 2")
    assert await streamer.chat_count(0.5) == 3
    assert not [f for f in streamer.frames if f["type"] == "error"]
    await database_sync_to_async(services.set_slow_mode)(actor=owner, stream=stream, seconds=0)
    assert await chatter.wait_for(lambda f: f["type"] == "chat.settings" and f["slow_mode_s"] == 0)
    # A new socket learns the current setting in its history frame.
    fresh = await connect(stream)
    assert (await fresh.wait_type("chat.history"))["slow_mode_s"] == 0


async def test_banned_and_timed_out_users_cannot_write_and_are_told(connect):
    owner = await new_user()
    stream = await new_stream(owner)
    dave = await new_user()
    socket = await connect(stream, headers=await token_headers(dave))
    viewer = await connect(stream)
    await database_sync_to_async(services.ban_user)(actor=owner, stream=stream, target=dave, reason="spam")
    ban = await viewer.wait_type("chat.ban")
    assert ban["user"] == dave.username
    assert ban["until"] is None
    await socket.send("am I banned?")
    assert (await socket.wait_type("error"))["code"] == "banned"
    rejoin = await connect(stream, headers=await token_headers(dave))
    assert (await rejoin.wait_type("chat.history"))["me"]["banned"] is True

    await database_sync_to_async(services.ban_user)(actor=owner, stream=stream, target=dave, duration_s=600)
    socket.frames.clear()
    await socket.send("timed out?")
    assert (await socket.wait_type("error"))["code"] == "timed_out"

    @database_sync_to_async
    def expire():
        from chat.models import Ban

        Ban.objects.filter(user=dave).update(expires_at=timezone.now() - timedelta(seconds=1))

    await expire()
    await socket.send("back again")
    (message,) = await viewer.chat_messages(1)
    assert message["text"] == "back again"
    assert await _texts(stream) == ["back again"]


async def test_delete_and_clear_reach_everyone_and_history(connect):
    owner = await new_user()
    stream = await new_stream(owner)
    erin = await new_user()
    first = await _post(stream, erin, "keep me")
    second = await _post(stream, erin, "delete me")
    viewer = await connect(stream)
    await database_sync_to_async(services.delete_message)(actor=owner, stream=stream, message_id=second.pk)
    assert (await viewer.wait_type("chat.delete"))["id"] == second.pk
    late = await connect(stream)
    assert [m["id"] for m in (await late.wait_type("chat.history"))["messages"]] == [first.pk]
    await database_sync_to_async(services.clear_chat)(actor=owner, stream=stream)
    for socket in (viewer, late):
        assert (await socket.wait_type("chat.clear"))["by"] == owner.username
    latest = await connect(stream)
    assert (await latest.wait_type("chat.history"))["messages"] == []


async def test_html_is_delivered_as_inert_text(connect):
    stream = await new_stream()
    mallory = await new_user(display_name="<b>Mallory</b>")
    payload = '<img src=x onerror="alert(1)"><script>alert(2)</script> &amp; done'
    sender = await connect(stream, headers=await token_headers(mallory))
    viewer = await connect(stream)
    await sender.send(payload)
    (message,) = await viewer.chat_messages(1)
    # Text stays text: exactly what was typed, for clients to render with textContent
    # (static/js/chat.js; test_panel.py checks it never parses HTML).
    assert message["text"] == payload
    assert message["display_name"] == "<b>Mallory</b>"
    assert await _texts(stream) == [payload]


async def test_token_auth_rejects_a_bad_token(connect):
    stream = await new_stream()
    socket = await connect(stream, headers=((b"authorization", b"Token not-a-real-token"),), join=False)
    error = await socket.wait_type("error")
    assert error["code"] == "invalid_token"
    closed = await socket.comm.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_session_cookie_auth_lets_a_browser_write(connect):
    stream = await new_stream()
    frank = await new_user()

    @database_sync_to_async
    def session_cookie():
        from django.test import Client

        client = Client()
        client.force_login(frank)
        return client.cookies["sessionid"].value

    cookie = await session_cookie()
    socket = await connect(stream, headers=((b"cookie", f"sessionid={cookie}".encode()),))
    assert (await socket.wait_type("chat.history"))["me"]["user"] == frank.username
    await socket.send("from the browser")
    (message,) = await socket.chat_messages(1)
    assert message["user"] == frank.username


async def test_foreign_origin_is_refused_and_missing_origin_allowed(connect):
    from channels.testing import WebsocketCommunicator

    from livestream.asgi import application

    stream = await new_stream()
    evil = WebsocketCommunicator(
        application, f"/ws/streams/{stream.pk}/chat/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await evil.connect(timeout=3)
    assert not connected
    await evil.disconnect()
    plain = await connect(stream, origin=False)
    assert (await plain.wait_type("chat.history"))["messages"] == []


async def test_unknown_stream_is_refused(connect):
    stream = await new_stream()
    stream.pk = stream.pk + 10_000
    socket = await connect(stream, join=False)
    assert (await socket.wait_type("error"))["code"] == "not_found"
    assert await socket.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}


async def test_presence_counts_each_socket_and_pushes_changes(connect, settings):
    settings.CHAT_PRESENCE_POLL_S = 0.2
    stream = await new_stream()
    first = await connect(stream)
    assert (await first.wait_type("viewers.count"))["count"] == 1
    second = await connect(stream)
    assert (await second.wait_type("viewers.count"))["count"] == 2
    assert await first.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 2)
    assert await database_sync_to_async(presence.viewer_count)(stream.pk) == 2
    await second.close()
    assert await first.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 1)
    assert await database_sync_to_async(presence.viewer_count)(stream.pk) == 1


async def test_stream_events_are_relayed_with_their_data(connect):
    stream = await new_stream()
    socket = await connect(stream)

    @database_sync_to_async
    def go_live():
        events.send_event_on_commit(stream.pk, "stream.live", {"stream": stream.pk, "title": "On air"})

    await go_live()
    frame = await socket.wait_type("stream.live")
    assert frame == {"type": "stream.live", "stream": stream.pk, "title": "On air"}


async def test_messages_within_one_tick_arrive_as_one_batch_in_order(connect, settings):
    settings.CHAT_BATCH_TICK_MS = 300
    stream = await new_stream()
    grace = await new_user()
    viewer = await connect(stream)

    @database_sync_to_async
    def burst():
        return [services.post_message(stream_id=stream.pk, user=grace, text=f"burst {i}").pk for i in range(5)]

    ids = await burst()
    # The first message finds a quiet room and goes out at once; the rest wait for the tick.
    first = await viewer.wait_type("chat.message")
    batch = await viewer.wait_type("chat.batch")
    assert [first["id"]] + [m["id"] for m in batch["messages"]] == ids
    assert all(m["type"] == "chat.message" for m in batch["messages"])
    assert await viewer.chat_count(0.5) == 5


async def test_unreachable_channel_layer_gives_a_clear_error(connect, settings):
    stream = await new_stream()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_timeout": 1}]},
        }
    }
    socket = await connect(stream, join=False)
    error = await socket.wait_type("error", timeout=10)
    assert error["code"] == "unavailable"
    assert await socket.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1011}


async def test_open_watch_pages_show_in_the_stream_api(connect):
    stream = await new_stream()

    @database_sync_to_async
    def api_count():
        from rest_framework.test import APIClient

        from streams.models import Stream, StreamStatus

        Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
        return APIClient().get(f"/api/v1/streams/{stream.pk}/").json()["viewer_count"]

    first = await connect(stream)
    await connect(stream)
    assert await api_count() == 2
    await first.close()
    assert await api_count() == 1


async def test_other_events_flush_pending_chat_first_so_order_holds(connect, settings):
    settings.CHAT_BATCH_TICK_MS = 500
    owner = await new_user()
    stream = await new_stream(owner)
    viewer = await connect(stream)

    @database_sync_to_async
    def burst_then_delete():
        ids = [services.post_message(stream_id=stream.pk, user=owner, text=f"x{i}").pk for i in range(3)]
        services.delete_message(actor=owner, stream=stream, message_id=ids[-1])
        return ids

    ids = await burst_then_delete()
    deleted = await viewer.wait_type("chat.delete", timeout=2)
    assert deleted["id"] == ids[-1]
    kinds = [f["type"] for f in viewer.frames if f["type"] in {"chat.message", "chat.batch", "chat.delete"}]
    # The delete did not wait for the tick, and the batch holding the message went out before it.
    assert kinds == ["chat.message", "chat.batch", "chat.delete"]
    batch = next(f for f in viewer.frames if f["type"] == "chat.batch")
    assert [m["id"] for m in batch["messages"]] == ids[1:]


async def test_heartbeat_frames_reach_quiet_rooms(connect, settings):
    from chat.fanout import get_hub

    settings.CHAT_PRESENCE_POLL_S = 0.1
    get_hub().heartbeat_s = 0.3
    stream = await new_stream()
    socket = await connect(stream)
    assert await socket.wait_type("heartbeat", timeout=3) == {"type": "heartbeat"}


async def test_big_rooms_stretch_the_tick_to_the_write_budget(settings):
    from chat.fanout import MAX_TICK_S, Hub, Room

    settings.CHAT_BATCH_TICK_MS = 100
    settings.CHAT_FANOUT_WRITES_PER_S = 5000
    hub = Hub()

    def room_with(n: int) -> Room:
        room = Room(1)
        room.sockets = {str(i): None for i in range(n)}  # type: ignore[misc]
        return room

    assert hub.room_tick(room_with(10)) == 0.1
    assert hub.room_tick(room_with(1000)) == 0.2
    assert hub.room_tick(room_with(10**6)) == MAX_TICK_S
    await hub.redis.aclose()
