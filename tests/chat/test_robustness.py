"""The chat socket against broken input and failing dependencies, through the real ASGI
application (Channels' communicator). Real-server cases (full buffers, uvicorn's frame limit,
the address cap over TCP) are in test_hostile.py."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from chat import presence, selectors, services
from chat.consumers import ChatConsumer
from chat.fanout import CLOSE_TOO_SLOW, Hub, get_hub
from chat.models import Message
from tests.chat.conftest import new_stream, new_user, token_headers

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def _texts(stream):
    return list(Message.objects.filter(stream=stream).order_by("id").values_list("text", flat=True))


async def _count(stream) -> int:
    return await database_sync_to_async(presence.viewer_count)(stream.pk)


async def test_text_that_is_not_valid_gets_an_error_frame(connect):
    stream = await new_stream()
    alice = await new_user()
    socket = await connect(stream, headers=await token_headers(alice))
    for raw in ('"\\ud800"', '"ok \\udc00 ok"', '"\\u0000"', '"a\\u001bb"', '"\\u0085"', '"x\\ry"'):
        socket.frames.clear()
        await socket.comm.send_to(text_data='{"type": "chat.message", "text": ' + raw + "}")
        assert (await socket.wait_type("error"))["code"] == "invalid_text", raw
    # The socket is still fine, and valid text (emoji, tab, newline) goes through.
    await socket.send("fine 🎉\tand\nmore")
    (message,) = await socket.chat_messages(1)
    assert message["text"] == "fine 🎉\tand\nmore"
    assert await _texts(stream) == ["fine 🎉\tand\nmore"]
    assert await _count(stream) == 1
    await socket.close()
    assert await _count(stream) == 0


async def test_the_api_refuses_invalid_text_too(connect):
    from rest_framework.test import APIClient

    stream = await new_stream()
    bob = await new_user()

    @database_sync_to_async
    def post(body: str):
        client = APIClient()
        client.force_authenticate(bob)
        return client.post(f"/api/v1/streams/{stream.pk}/chat/messages/", body, content_type="application/json")

    # The serializer already refuses surrogates and NUL (DRF's validators); the service
    # refuses every other control character.
    for body, code in (
        ('{"text": "\\ud800"}', "invalid"),
        ('{"text": "\\u0000"}', "invalid"),
        ('{"text": "ring \\u0007"}', "invalid_text"),
    ):
        response = await post(body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code, body
    assert await _texts(stream) == []


async def test_oversized_binary_and_nested_frames_get_errors(connect, settings):
    settings.CHAT_MAX_FRAME_BYTES = 200
    stream = await new_stream()
    carol = await new_user()
    socket = await connect(stream, headers=await token_headers(carol))
    await socket.comm.send_to(text_data=json.dumps({"type": "chat.message", "text": "x" * 300}))
    assert (await socket.wait_type("error"))["code"] == "frame_too_large"
    socket.frames.clear()
    # 100 characters but more than 200 bytes:
    await socket.comm.send_to(text_data=json.dumps({"type": "chat.message", "text": "é" * 100}, ensure_ascii=False))
    assert (await socket.wait_type("error"))["code"] == "frame_too_large"
    socket.frames.clear()
    await socket.comm.send_to(bytes_data=b"\x00\x01")
    assert (await socket.wait_type("error"))["code"] == "bad_frame"
    socket.frames.clear()
    settings.CHAT_MAX_FRAME_BYTES = 100_000
    await socket.comm.send_to(text_data="[" * 50_000 + "]" * 50_000)
    assert (await socket.wait_type("error"))["code"] == "bad_frame"
    socket.frames.clear()
    await socket.send("still here")
    assert (await socket.chat_messages(1))[0]["text"] == "still here"


async def test_the_rate_limit_comes_before_the_database(connect, settings, monkeypatch):
    settings.CHAT_RATE_LIMIT = 2
    stream = await new_stream()
    dave = await new_user()
    socket = await connect(stream, headers=await token_headers(dave))
    reads = []
    original = selectors.stream_for_poster

    def counting(*args, **kwargs):
        reads.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(selectors, "stream_for_poster", counting)
    for i in range(5):
        await socket.send(f"message {i}")
    errors = []
    while len(errors) < 3:
        frame = await socket.next()
        if frame["type"] == "error":
            errors.append(frame["code"])
    assert errors == ["rate_limited"] * 3
    assert len(reads) == 2  # the refused three never reached the database
    assert await _texts(stream) == ["message 0", "message 1"]

    # The per-user counter (Redis) also refuses before any query, e.g. from a second socket.
    @database_sync_to_async
    def post_directly():
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries, pytest.raises(services.ChatError) as refused:
            services.post_message(stream_id=stream.pk, user=dave, text="third")
        return refused.value.code, len(queries)

    assert await post_directly() == ("rate_limited", 0)


async def test_a_database_error_while_posting_answers_unavailable_and_keeps_the_socket(connect, monkeypatch):
    stream = await new_stream()
    erin = await new_user()
    socket = await connect(stream, headers=await token_headers(erin))

    def broken(**kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(services, "post_message", broken)
    await socket.send("into the void")
    assert (await socket.wait_type("error"))["code"] == "unavailable"
    monkeypatch.undo()
    await socket.send("back again")
    assert (await socket.chat_messages(1))[0]["text"] == "back again"
    assert await _count(stream) == 1


async def test_a_consumer_that_crashes_still_leaves_the_hub(connect, monkeypatch):
    stream = await new_stream()
    stays = await connect(stream)
    crashes = await connect(stream)
    assert await _count(stream) == 2
    hub = get_hub()
    assert len(hub.members) == 2

    async def explode(self, text_data=None, bytes_data=None):
        raise RuntimeError("a bug nobody caught")

    monkeypatch.setattr(ChatConsumer, "receive", explode)
    await crashes.comm.send_to(text_data="{}")
    with pytest.raises(RuntimeError, match="a bug nobody caught"):
        await crashes.comm.receive_output(timeout=3)
    assert len(hub.members) == 1
    assert await _count(stream) == 1
    assert await stays.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 1, timeout=5)


async def test_a_database_error_on_join_closes_cleanly_and_leaves_the_hub(connect, monkeypatch):
    stream = await new_stream()

    def broken(*args, **kwargs):
        raise OperationalError("too many clients already")

    monkeypatch.setattr(selectors, "join_state", broken)
    socket = await connect(stream, join=False)
    assert (await socket.wait_type("error"))["code"] == "unavailable"
    assert await socket.comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 1011}
    assert await _count(stream) == 0
    assert not get_hub().members
    assert await database_sync_to_async(presence.sockets_from)("unknown") == 0


async def test_sockets_per_address_are_capped_and_x_forwarded_for_is_only_believed_from_proxies(connect, settings):
    settings.CHAT_MAX_SOCKETS_PER_IP = 2
    stream = await new_stream()

    async def attempt(peer: str, forwarded: str | None = None):
        headers = ((b"x-forwarded-for", forwarded.encode()),) if forwarded else ()
        socket = await connect(stream, headers=headers, client=(peer, 40000), join=False)
        frame = await socket.next()
        while frame["type"] not in {"chat.history", "error"}:
            frame = await socket.next()
        return socket, frame

    # An untrusted peer: its X-Forwarded-For changes nothing.
    for i in range(2):
        _, frame = await attempt("203.0.113.9", f"198.51.100.{i}")
        assert frame["type"] == "chat.history"
    refused, frame = await attempt("203.0.113.9", "198.51.100.77")
    assert frame["code"] == "too_many_connections"
    assert await refused.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4429}
    assert await _count(stream) == 2

    # Behind a trusted proxy each forwarded client has its own allowance.
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    for _ in range(2):
        _, frame = await attempt("10.1.2.3", "198.51.100.1")
        assert frame["type"] == "chat.history"
    _, frame = await attempt("10.1.2.3", "198.51.100.1")
    assert frame["code"] == "too_many_connections"
    _, frame = await attempt("10.1.2.3", "198.51.100.2")
    assert frame["type"] == "chat.history"
    # IPv6 clients count per /64.
    for suffix in ("1", "2"):
        _, frame = await attempt(f"2001:db8:1:2::{suffix}")
        assert frame["type"] == "chat.history"
    _, frame = await attempt("2001:db8:1:2:ffff::9")
    assert frame["code"] == "too_many_connections"
    assert await database_sync_to_async(presence.sockets_from)("2001:db8:1:2::abc") == 2


class _Stuck:
    """A connection that never takes a frame (an unknown server whose send waits forever)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.release = asyncio.Event()

    async def __call__(self, message: dict) -> None:
        if message["type"] == "websocket.close":
            self.sent.append(message)
            return
        await self.release.wait()


class _Reader:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.sent.append(message)


async def test_on_any_server_a_stuck_socket_waits_alone_and_is_closed(settings):
    settings.CHAT_SEND_TIMEOUT_S = 0.5
    settings.CHAT_PRESENCE_POLL_S = 0.1
    hub = Hub()
    stream = await new_stream()
    stuck, reader = _Stuck(), _Reader()
    await hub.join(stream.pk, "stuck", stuck)
    await hub.join(stream.pk, "reader", reader)
    room = hub.members["reader"].room
    for i in range(20):
        hub.dispatch(room, {"type": "stream.event", "event": "test.tick", "data": {"n": i}})
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert [json.loads(m["text"])["n"] for m in reader.sent if "test.tick" in m["text"]] == list(range(20))
    # The stuck one is closed with 4008 once its oldest frame waited CHAT_SEND_TIMEOUT_S.
    for _ in range(30):
        if stuck.sent:
            break
        await asyncio.sleep(0.1)
    assert stuck.sent == [{"type": "websocket.close", "code": CLOSE_TOO_SLOW, "reason": "too slow"}]
    assert "stuck" not in hub.members
    assert hub.slow_closed == 1
    assert await _count(stream) == 1
    await hub.leave("reader")
    assert not hub.rooms
    await hub.redis.aclose()


async def test_the_room_outbox_is_bounded(settings):
    settings.CHAT_ROOM_OUTBOX = 5
    hub = Hub()
    stream = await new_stream()
    reader = _Reader()
    await hub.join(stream.pk, "reader", reader)
    room = hub.members["reader"].room
    for i in range(50):  # no await in between: the deliverer cannot run
        hub.dispatch(room, {"type": "stream.event", "event": "test.tick", "data": {"n": i}})
    assert room.outbox.qsize() == 5
    assert room.dropped_frames == 45
    await asyncio.sleep(0.05)
    assert [json.loads(m["text"])["n"] for m in reader.sent if "test.tick" in m["text"]] == list(range(5))
    await hub.leave("reader")
    await hub.redis.aclose()


def _chat(i: int) -> dict:
    return {"type": "stream.event", "event": "chat.message", "data": {"id": i, "text": f"m{i}"}}


def _chat_ids(sent: list[dict]) -> list[int]:
    ids: list[int] = []
    for message in sent:
        frame = json.loads(message["text"]) if "text" in message else {}
        if frame.get("type") == "chat.message":
            ids.append(frame["id"])
        elif frame.get("type") == "chat.batch":
            ids += [m["id"] for m in frame["messages"]]
    return ids


async def test_chat_never_queues_behind_a_delivery_in_progress(settings):
    """Chat that arrives while the room's delivery task is still writing waits in the pending
    batch and leaves as ONE frame when that delivery ends: chat frames never line up in the
    outbox, so a process short of CPU sends fuller batches instead of building a backlog
    (docs/adr/0015). The tick is ~0 here, so only the delivery in progress holds chat back."""
    settings.CHAT_BATCH_TICK_MS = 0
    settings.CHAT_FANOUT_WRITES_PER_S = 10**9
    hub = Hub()
    stream = await new_stream()
    readers = [_Reader() for _ in range(300)]  # a delivery spans several loop iterations
    for index, reader in enumerate(readers):
        await hub.join(stream.pk, f"r{index}", reader)
    room = hub.members["r0"].room
    depths = []
    for i in range(60):
        hub.dispatch(room, _chat(i))
        depths.append(room.outbox.qsize())
        await asyncio.sleep(0)
    for _ in range(200):
        if all(len(_chat_ids(r.sent)) == 60 for r in readers):
            break
        await asyncio.sleep(0.01)
    # Nothing lost, nothing twice, in order, for everyone...
    assert all(_chat_ids(r.sent) == list(range(60)) for r in readers)
    # ...never more than one chat frame waiting for the deliverer, and far fewer frames than
    # messages: what arrived during a delivery went out together.
    assert max(depths) == 1
    frames = [m for m in readers[0].sent if '"chat.' in m.get("text", "")]
    assert len(frames) < 30
    for index in range(len(readers)):
        await hub.leave(f"r{index}")
    await hub.redis.aclose()
