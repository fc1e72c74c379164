"""Per-process fan-out of stream events to the WebSockets of that process.

Why: the idiomatic Channels room (a channel per socket, ``group_send`` delivered to every
consumer, JSON encoded per recipient) spends its CPU on per-recipient Python work and
collapses at ~500-1000 viewers per process (docs/chat.md, bench/chat_fanout.py). Here each
web process holds one ``Hub`` (per event loop) that:

- subscribes ONCE per room (stream) to the channel-layer group ``stream.<id>``
  (``livestream.events.stream_group``), whatever the number of local sockets;
- turns each ``{"type": "stream.event", "event": name, "data": {...}}`` into the browser frame
  ``{"type": name, **data}`` and encodes it ONCE per room;
- sends chat at most once per tick per room: a message to a quiet room goes out at once,
  messages arriving sooner after the previous frame wait for the end of the tick and go out
  together as one ``chat.batch`` frame (a single message as a plain ``chat.message``); any
  other event first flushes the pending batch so order is kept. The tick is
  ``CHAT_BATCH_TICK_MS``, stretched for big rooms so that one process writes at most
  ``CHAT_FANOUT_WRITES_PER_S`` chat frames per second per room (e.g. 1,000 local sockets and
  5,000/s give 200 ms): a bigger room gets fuller batches instead of a saturated process;
- writes the same encoded text to every local socket from one delivery task per room (frames
  reach each socket in order);
- keeps presence: each socket is a member of ``presence:<id>`` (chat.presence), refreshed in
  one pipeline per heartbeat (every 15 s, when each socket also gets a ``heartbeat`` frame);
  counts of its rooms are re-read every ``CHAT_PRESENCE_POLL_S`` and a changed count is pushed
  as ``{"type": "viewers.count", "count": N}``.

Sockets register a ``send`` callable (the ASGI send of the connection). A send that raises
(closed socket) is ignored; the consumer's disconnect removes it.
"""

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from chat import presence
from livestream.events import stream_group

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
_HEARTBEAT_EVERY = max(1, int(presence.PRESENCE_TTL_S / 3))
# Upper bound of the adaptive batching tick (Hub.room_tick).
MAX_TICK_S = 1.0
# Sockets written between two yields to the event loop during a fan-out.
_YIELD_EVERY = 100


@dataclass(eq=False)
class Room:
    stream_id: int
    sockets: dict[str, Send] = field(default_factory=dict)
    channel: str = ""
    reader: "asyncio.Task[None] | None" = None
    deliverer: "asyncio.Task[None] | None" = None
    outbox: "asyncio.Queue[dict[str, Any]]" = field(default_factory=asyncio.Queue)
    pending: list[dict[str, Any]] = field(default_factory=list)
    flush_handle: asyncio.TimerHandle | None = None
    last_count: int | None = None
    last_flush: float = float("-inf")
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def encode(frame: dict[str, Any]) -> dict[str, Any]:
    """The ASGI message carrying ``frame``; built once and shared by every recipient."""
    return {"type": "websocket.send", "text": json.dumps(frame, separators=(",", ":"), ensure_ascii=False)}


# Sent to every socket each heartbeat so clients can tell a silently dead connection (no frame
# for a while) from a quiet room, and reconnect.
_HEARTBEAT_FRAME = encode({"type": "heartbeat"})


class HubUnavailableError(Exception):
    """The process could not subscribe a room to the channel layer (Redis unreachable)."""


class Hub:
    """Rooms of one event loop. Use ``get_hub()``; never share a Hub across loops."""

    def __init__(self) -> None:
        self.rooms: dict[int, Room] = {}
        self.layer = get_channel_layer()
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, health_check_interval=30)
        self.tick_s = settings.CHAT_BATCH_TICK_MS / 1000
        self.writes_per_s = settings.CHAT_FANOUT_WRITES_PER_S
        self.poll_s = settings.CHAT_PRESENCE_POLL_S
        self.heartbeat_s: float = _HEARTBEAT_EVERY
        self._presence_task: asyncio.Task[None] | None = None

    # --- sockets -------------------------------------------------------------------------

    async def join(self, stream_id: int, member: str, send: Send) -> None:
        """Register a socket; it receives every frame of the room from now on, then its
        current viewer count. The first socket of a room subscribes the process to it."""
        room = self.rooms.get(stream_id)
        if room is None:
            room = self.rooms[stream_id] = Room(stream_id)
            try:
                await self._open(room)
            except BaseException:
                self.rooms.pop(stream_id, None)
                if room.deliverer is not None:
                    room.deliverer.cancel()
                room.ready.set()  # wake other joiners; they see the room is gone
                raise
        else:
            await room.ready.wait()
            if self.rooms.get(stream_id) is not room:
                raise HubUnavailableError("the room could not subscribe to the channel layer")
        room.sockets[member] = send
        try:
            await presence.add_members(self.redis, stream_id, [member])
            count = (await presence.acounts(self.redis, [stream_id]))[stream_id]
        except Exception:  # chat works without presence; the count catches up on the next poll
            logger.warning("presence update failed", extra={"stream": stream_id})
        else:
            await self._safe_send(send, encode({"type": "viewers.count", "count": count}))
        if self._presence_task is None or self._presence_task.done():
            self._presence_task = asyncio.get_running_loop().create_task(self._presence_loop())

    async def leave(self, stream_id: int, member: str) -> None:
        room = self.rooms.get(stream_id)
        if room is None or room.sockets.pop(member, None) is None:
            return
        try:
            await presence.remove_member(self.redis, stream_id, member)
        except Exception:  # the entry ages out after PRESENCE_TTL_S anyway
            logger.warning("presence removal failed", extra={"stream": stream_id})
        if not room.sockets:
            await self._close(room)

    # --- room lifecycle ------------------------------------------------------------------

    async def _open(self, room: Room) -> None:
        loop = asyncio.get_running_loop()
        room.deliverer = loop.create_task(self._deliver(room))
        if self.layer is not None:
            room.channel = await self.layer.new_channel()
            await self.layer.group_add(stream_group(room.stream_id), room.channel)
            room.reader = loop.create_task(self._read(room))
        room.ready.set()
        logger.info("chat room opened in this process", extra={"stream": room.stream_id})

    async def _close(self, room: Room) -> None:
        self.rooms.pop(room.stream_id, None)
        if room.flush_handle is not None:
            room.flush_handle.cancel()
        for task in (room.reader, room.deliverer):
            if task is not None:
                task.cancel()
        if self.layer is not None and room.channel:
            try:
                await self.layer.group_discard(stream_group(room.stream_id), room.channel)
            except Exception:
                logger.warning("group_discard failed", extra={"stream": room.stream_id})
        for task in (room.reader, room.deliverer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if not self.rooms and self._presence_task is not None:
            self._presence_task.cancel()
            self._presence_task = None

    # --- incoming events -----------------------------------------------------------------

    async def _read(self, room: Room) -> None:
        layer = self.layer
        if layer is None:
            return
        while True:
            try:
                message = await layer.receive(room.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("channel layer receive failed", extra={"stream": room.stream_id})
                await asyncio.sleep(0.5)
                continue
            self.dispatch(room, message)

    def dispatch(self, room: Room, message: dict[str, Any]) -> None:
        """Turn one channel-layer message into a browser frame and queue it for the room."""
        if message.get("type") != "stream.event" or not isinstance(message.get("event"), str):
            return
        data = message.get("data")
        frame = {**(data if isinstance(data, dict) else {}), "type": message["event"]}
        if frame["type"] == "chat.message":
            room.pending.append(frame)
            if room.flush_handle is None:
                # Leading edge: a quiet room sends at once; a busy one at most once per tick.
                loop = asyncio.get_running_loop()
                wait = room.last_flush + self.room_tick(room) - loop.time()
                if wait <= 0:
                    self._flush(room)
                else:
                    room.flush_handle = loop.call_later(wait, self._flush, room)
            return
        self._flush(room)
        room.outbox.put_nowait(encode(frame))

    def room_tick(self, room: Room) -> float:
        """Shortest time between two chat frames of ``room``: CHAT_BATCH_TICK_MS, stretched so
        the room's socket writes in this process stay within CHAT_FANOUT_WRITES_PER_S (a big
        room batches more instead of saturating the process), at most MAX_TICK_S."""
        return min(MAX_TICK_S, max(self.tick_s, len(room.sockets) / self.writes_per_s))

    def _flush(self, room: Room) -> None:
        if room.flush_handle is not None:
            room.flush_handle.cancel()
            room.flush_handle = None
        if not room.pending:
            return
        frames, room.pending = room.pending, []
        room.last_flush = asyncio.get_running_loop().time()
        frame = frames[0] if len(frames) == 1 else {"type": "chat.batch", "messages": frames}
        room.outbox.put_nowait(encode(frame))

    # --- outgoing frames -----------------------------------------------------------------

    async def _deliver(self, room: Room) -> None:
        while True:
            message = await room.outbox.get()
            for index, send in enumerate(list(room.sockets.values()), start=1):
                try:
                    await send(message)
                except Exception:  # noqa: S112 - closed socket; its disconnect removes it
                    continue
                if index % _YIELD_EVERY == 0:
                    # uvicorn's send does not suspend: let posts, reads and other rooms run.
                    await asyncio.sleep(0)

    @staticmethod
    async def _safe_send(send: Send, message: dict[str, Any]) -> None:
        try:
            await send(message)
        except Exception:
            logger.debug("send to a closing socket failed")

    async def _presence_loop(self) -> None:
        polls = 0
        while self.rooms:
            await asyncio.sleep(self.poll_s)
            polls += 1
            heartbeat = polls * self.poll_s >= self.heartbeat_s
            if heartbeat:
                polls = 0
                for open_room in self.rooms.values():
                    open_room.outbox.put_nowait(_HEARTBEAT_FRAME)
            try:
                if heartbeat:
                    await presence.refresh(self.redis, {sid: list(r.sockets) for sid, r in self.rooms.items()})
                counts = await presence.acounts(self.redis, list(self.rooms))
            except Exception:
                logger.exception("presence update failed")
                continue
            for stream_id, count in counts.items():
                room = self.rooms.get(stream_id)
                if room is not None and count != room.last_count:
                    room.last_count = count
                    room.outbox.put_nowait(encode({"type": "viewers.count", "count": count}))


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The Hub of the running event loop (one per web process in production)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
