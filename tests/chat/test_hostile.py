# ruff: noqa: ASYNC109 - test helpers take explicit timeouts
"""Hostile and broken clients against the real server: uvicorn (the Procfile's WebSocket
protocol and frame-size limit) serving livestream.asgi on the real Redis channel layer and
PostgreSQL. A never-reading client is a bare socket with a tiny receive buffer that really
reads nothing (bench/_rawws.py), so the server's kernel and transport buffers really fill."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from bench._rawws import HandshakeRefusedError, RawWebSocket
from chat import presence
from chat.fanout import CLOSE_TOO_SLOW
from livestream import events
from tests.chat.conftest import new_stream, new_user, token_for

pytestmark = pytest.mark.django_db(transaction=True)

SEND_TIMEOUT_S = 2.0
MAX_PER_IP = 6
PAD = 8_000  # bytes per padded event
FLOOD_GAP_S = 0.02  # ~400 kB/s: a healthy client keeps up even on a busy machine
FLOOD = 440


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.browser import harness

    log = tmp_path_factory.mktemp("chat-hostile") / "uvicorn.log"
    env = {
        "CHAT_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "CHAT_PRESENCE_POLL_S": "0.2",
        "CHAT_MAX_SOCKETS_PER_IP": str(MAX_PER_IP),
        # As the Procfile: uvicorn refuses messages over CHAT_MAX_FRAME_BYTES itself.
        "UVICORN_WS_MAX_SIZE": str(settings.CHAT_MAX_FRAME_BYTES),
        # uvicorn would otherwise believe X-Forwarded-For from loopback peers (its own
        # --forwarded-allow-ips default) before TRUSTED_PROXIES is even consulted.
        "UVICORN_PROXY_HEADERS": "false",
    }
    with harness.asgi_server(env, log) as base:
        yield base.replace("http://", "ws://")


class Viewer:
    """A healthy client: a websockets connection whose library reads every frame at once."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self.arrived.append(time.monotonic())

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    async def wait_for(self, predicate: Any, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching frame within {timeout}s; got {[f['type'] for f in self.frames]}")


@pytest.fixture
async def open_viewer(server: str) -> AsyncIterator[Any]:
    opened: list[Viewer] = []

    async def _open(path: str, headers: dict[str, str] | None = None) -> Viewer:
        ws = await websockets.connect(
            server + path, additional_headers=headers or {}, compression=None, max_size=None, open_timeout=10
        )
        viewer = Viewer(ws)
        opened.append(viewer)
        return viewer

    yield _open
    for viewer in opened:
        await viewer.ws.close()
        viewer.task.cancel()


@pytest.fixture
def raw_sockets() -> Iterator[list[RawWebSocket]]:
    opened: list[RawWebSocket] = []
    yield opened
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.sock.close()


async def _count(stream_id: int) -> int:
    return await database_sync_to_async(presence.viewer_count)(stream_id)


async def _wait_count(stream_id: int, expected: int, timeout: float = 8) -> None:
    deadline = time.monotonic() + timeout
    while (count := await _count(stream_id)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"viewer count {count}, expected {expected}")
        await asyncio.sleep(0.1)


@database_sync_to_async
def _publish(stream_id: int, event: str, data: dict[str, Any]) -> None:
    events.send_event_on_commit(stream_id, event, data)


async def _flood(stream_id: int, count: int) -> None:
    for i in range(count):
        await _publish(stream_id, "test.pad", {"n": i, "pad": "x" * PAD})
        await asyncio.sleep(FLOOD_GAP_S)


async def _slow_reader(server: str, stream_id: int, raw_sockets: list[RawWebSocket]) -> RawWebSocket:
    """A socket that completes the handshake and then reads nothing at all."""
    sock = await asyncio.to_thread(RawWebSocket.connect, f"{server}/ws/streams/{stream_id}/chat/", rcvbuf=4096)
    raw_sockets.append(sock)
    return sock


async def test_a_never_reading_socket_overflowing_its_queue_is_closed_and_the_room_keeps_flowing(
    server, open_viewer, raw_sockets
):
    stream = await new_stream()
    slow = await _slow_reader(server, stream.pk, raw_sockets)
    viewers = [await open_viewer(f"/ws/streams/{stream.pk}/chat/") for _ in range(3)]
    for viewer in viewers:
        await viewer.wait_for(lambda f: f["type"] == "chat.history")
    await _wait_count(stream.pk, 4)

    # 440 x 8 kB = 3.5 MB: far more than the slow socket's kernel buffers (~70 kB with
    # CHAT_SOCKET_SNDBUF and a 4 kB receive window), transport buffer (64 kB) and its queue
    # (CHAT_SEND_QUEUE_BYTES, 256 kB) hold together, and more than the ~2.9 MB loopback
    # autotuning lets one socket absorb: without a per-socket queue the room stalls within it
    # (measured: the healthy viewers stopped at ~360 frames).
    started = time.monotonic()
    await _flood(stream.pk, FLOOD)
    for viewer in viewers:
        await viewer.wait_for(lambda f: f["type"] == "test.pad" and f["n"] == FLOOD - 1, timeout=10)
        assert [f["n"] for f in viewer.of_type("test.pad")] == list(range(FLOOD))
    healthy_s = time.monotonic() - started

    # The slow one left the room (viewer count) long before its send timeout...
    await _wait_count(stream.pk, 3, timeout=SEND_TIMEOUT_S)
    # ...and the room still flows: a chat message reaches every healthy viewer at once.
    author = await new_user()
    sender = await open_viewer(f"/ws/streams/{stream.pk}/chat/", {"Authorization": f"Token {await token_for(author)}"})
    await sender.wait_for(lambda f: f["type"] == "chat.history")
    posted = time.monotonic()
    await sender.ws.send(json.dumps({"type": "chat.message", "text": "still flowing"}))
    for viewer in viewers:
        await viewer.wait_for(lambda f: f["type"] == "chat.message" and f["text"] == "still flowing", timeout=3)
    assert time.monotonic() - posted < 2
    assert healthy_s < FLOOD * FLOOD_GAP_S + 8

    # When the slow client finally reads, it finds the close code behind what it never read.
    closed, frames_before = await asyncio.to_thread(slow.read_until_close, 15)
    assert closed is not None, "the connection ended without a close frame"
    assert closed[0] == CLOSE_TOO_SLOW
    assert closed[1] == "too slow"
    assert frames_before < FLOOD  # it never got the whole flood


async def test_a_socket_that_does_not_drain_in_time_is_closed(server, open_viewer, raw_sockets):
    stream = await new_stream()
    slow = await _slow_reader(server, stream.pk, raw_sockets)
    viewer = await open_viewer(f"/ws/streams/{stream.pk}/chat/")
    await viewer.wait_for(lambda f: f["type"] == "chat.history")
    await _wait_count(stream.pk, 2)
    # ~190 kB: fills the kernel and transport buffers, leaves a small queue under the byte cap;
    # then the room goes quiet and only the send timeout can close the slow socket.
    await _flood(stream.pk, 24)
    await viewer.wait_for(lambda f: f["type"] == "test.pad" and f["n"] == 23)
    await _wait_count(stream.pk, 1, timeout=SEND_TIMEOUT_S + 4)
    closed, _ = await asyncio.to_thread(slow.read_until_close, 15)
    assert closed is not None
    assert closed[0] == CLOSE_TOO_SLOW
    await viewer.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 1)


async def test_healthy_viewers_do_not_wait_for_a_stuck_socket_to_be_closed(server, open_viewer, raw_sockets):
    """While a never-reading socket with really full buffers is still in the room (waiting out
    CHAT_SEND_TIMEOUT_S), every new frame reaches the healthy viewer at once: the viewer has
    them all BEFORE the stuck socket is closed (the viewer count drops only afterwards)."""
    stream = await new_stream()
    slow = await _slow_reader(server, stream.pk, raw_sockets)
    viewer = await open_viewer(f"/ws/streams/{stream.pk}/chat/")
    await viewer.wait_for(lambda f: f["type"] == "chat.history")
    await _wait_count(stream.pk, 2)
    # ~190 kB: the slow socket's kernel and transport buffers fill and frames queue for it
    # (under the byte cap, so only the send timeout will close it).
    await _flood(stream.pk, 24)
    await viewer.wait_for(lambda f: f["type"] == "test.pad" and f["n"] == 23)
    for k in range(5):
        await _publish(stream.pk, "test.tick", {"k": k})
        await viewer.wait_for(lambda f, k=k: f["type"] == "test.tick" and f["k"] == k, timeout=SEND_TIMEOUT_S)
    ticks_seen = len(viewer.frames)
    await viewer.wait_for(lambda f: f["type"] == "viewers.count" and f["count"] == 1, timeout=SEND_TIMEOUT_S + 4)
    dropped_at = next(i for i, f in enumerate(viewer.frames) if f["type"] == "viewers.count" and f["count"] == 1)
    assert dropped_at >= ticks_seen, "the stuck socket was closed before the healthy viewer got the frames"
    closed, frames_before = await asyncio.to_thread(slow.read_until_close, 15)
    assert closed is not None
    assert closed[0] == CLOSE_TOO_SLOW
    assert frames_before < 24 + 5  # its buffers were really full: it never got everything


async def test_lone_surrogate_gets_an_error_and_the_socket_stays_usable(server, open_viewer, raw_sockets):
    stream = await new_stream()
    author = await new_user()
    sock = await asyncio.to_thread(
        RawWebSocket.connect,
        f"{server}/ws/streams/{stream.pk}/chat/",
        headers={"Authorization": f"Token {await token_for(author)}"},
    )
    raw_sockets.append(sock)

    def frames_until(kind: str) -> dict[str, Any]:
        while True:
            opcode, payload = sock.read_frame(5)
            assert opcode == 1, (opcode, payload)
            frame = json.loads(payload)
            if frame["type"] == kind:
                return frame

    await asyncio.to_thread(frames_until, "chat.history")
    await _wait_count(stream.pk, 1)
    for text in ('"\\ud800"', '"a\\udfffb"', '"bell\\u0007"', '"nul\\u0000"'):
        sock.send_text('{"type": "chat.message", "text": ' + text + "}")
        error = await asyncio.to_thread(frames_until, "error")
        assert error["code"] == "invalid_text"
    sock.send_text(json.dumps({"type": "chat.message", "text": "tab\tand\nnewline are fine"}))
    message = await asyncio.to_thread(frames_until, "chat.message")
    assert message["text"] == "tab\tand\nnewline are fine"
    sock.close()
    await _wait_count(stream.pk, 0)


async def test_oversized_frames_are_refused_by_the_server(server, raw_sockets):
    stream = await new_stream()
    sock = await asyncio.to_thread(RawWebSocket.connect, f"{server}/ws/streams/{stream.pk}/chat/")
    raw_sockets.append(sock)
    await _wait_count(stream.pk, 1)
    sock.send_text(json.dumps({"type": "chat.message", "text": "x" * settings.CHAT_MAX_FRAME_BYTES}))
    closed, _ = await asyncio.to_thread(sock.read_until_close, 10)
    assert closed is not None
    assert closed[0] == 1009  # message too big
    await _wait_count(stream.pk, 0)


async def test_too_many_sockets_from_one_address_are_refused_whatever_x_forwarded_for_says(server, raw_sockets):
    stream = await new_stream()
    url = f"{server}/ws/streams/{stream.pk}/chat/"

    def open_one(i: int) -> RawWebSocket:
        # Every socket claims to be someone else; no proxy is trusted, so none of it counts.
        sock = RawWebSocket.connect(url, headers={"X-Forwarded-For": f"198.51.100.{i}"})
        raw_sockets.append(sock)
        return sock

    def first_frame_of(sock: RawWebSocket, kind: str) -> dict[str, Any]:
        while True:
            opcode, payload = sock.read_frame(5)
            if opcode == 1 and json.loads(payload)["type"] == kind:
                return json.loads(payload)

    accepted = [await asyncio.to_thread(open_one, i) for i in range(MAX_PER_IP)]
    for sock in accepted:
        await asyncio.to_thread(first_frame_of, sock, "chat.history")
    assert await database_sync_to_async(presence.sockets_from)("127.0.0.1") == MAX_PER_IP

    refused = await asyncio.to_thread(open_one, 99)
    error = await asyncio.to_thread(first_frame_of, refused, "error")
    assert error["code"] == "too_many_connections"
    closed, _ = await asyncio.to_thread(refused.read_until_close, 5)
    assert closed is not None
    assert closed[0] == 4429
    # The refused socket never counted as a viewer.
    await _wait_count(stream.pk, MAX_PER_IP)

    # One leaves: the address has room again.
    accepted[0].close()
    await _wait_count(stream.pk, MAX_PER_IP - 1)
    again = await asyncio.to_thread(open_one, 100)
    await asyncio.to_thread(first_frame_of, again, "chat.history")
    for sock in [*accepted[1:], again]:
        sock.close()
    await _wait_count(stream.pk, 0)
    assert await database_sync_to_async(presence.sockets_from)("127.0.0.1") == 0


async def test_handshake_from_a_foreign_origin_is_still_refused(server):
    stream = await new_stream()
    with pytest.raises(HandshakeRefusedError) as refused:
        await asyncio.to_thread(
            RawWebSocket.connect,
            f"{server}/ws/streams/{stream.pk}/chat/",
            headers={"Origin": "https://evil.example"},
        )
    assert " 403 " in refused.value.status_line + " "
