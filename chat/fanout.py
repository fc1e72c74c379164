"""Per-process fan-out of stream events to the WebSockets of that process.

Why: the idiomatic Channels room (a channel per socket, ``group_send`` delivered to every
consumer, JSON encoded per recipient) spends its CPU on per-recipient Python work and
collapses at ~500-1000 viewers per process (docs/chat.md, bench/chat_fanout.py). Here each
web process holds one ``Hub`` (per event loop) that:

- subscribes ONCE per room to a channel-layer group, whatever the number of local sockets.
  A stream has two rooms: the public one (group ``stream.<id>``, every watch page) and the
  owner's (group ``stream.<id>.owner``, the owner's analytics sockets; no presence, never
  counted as viewers). Owner-only events (``livestream.events.is_owner_only``) reaching a
  public room are dropped, whoever sent them;
- turns each ``{"type": "stream.event", "event": name, "data": {...}}`` into the browser frame
  ``{"type": name, **data}`` and encodes it ONCE per room;
- sends chat at most once per tick per room, and never while the room's delivery task is
  still writing the previous frame: a message to a quiet room goes out at once, messages
  arriving sooner after the previous frame (or during its delivery) wait and go out together
  as one ``chat.batch`` frame (a single message as a plain ``chat.message``) as soon as both
  the tick has passed and the delivery is done (docs/adr/0015); any other event first flushes
  the pending batch so order is kept. So chat frames never line up in the outbox: a process
  short of CPU sends fuller batches instead of a growing backlog. The tick is
  ``CHAT_BATCH_TICK_MS``, stretched for big rooms so that one process writes at most
  ``CHAT_FANOUT_WRITES_PER_S`` chat frames per second per room (e.g. 1,000 local sockets and
  10,000/s give 100 ms): a bigger room gets fuller batches instead of a saturated process;
- queues each encoded frame in the room's bounded outbox (``CHAT_ROOM_OUTBOX`` frames; a
  frame that finds it full is dropped and counted, see docs/chat.md);
- writes from one delivery task per room, and NEVER waits for a socket (docs/adr/0010): a
  socket whose connection takes the frame without waiting gets it at once (the common case:
  the same ASGI message object for every socket); any other socket gets the frame appended to
  its own queue (an ``Outlet``: references to the shared frames, so a backlog costs pointers,
  not copies), which that socket's own writer task drains in order. A socket whose queue holds
  more than ``CHAT_SEND_QUEUE_BYTES`` (together with the server's transport buffer) or whose
  oldest queued frame has waited ``CHAT_SEND_TIMEOUT_S`` is closed with code 4008 ("too
  slow"): it leaves the room and presence at once, its close frame goes behind what it has not
  read, and its connection is dropped ``SLOW_CLOSE_GRACE_S`` later if it still has not read it.
  The kernel send buffer of each socket is capped at ``CHAT_SOCKET_SNDBUF`` so a peer that
  stops reading is noticed after ~100 kB instead of several MB;
- keeps presence: each public socket is a member of ``presence:<id>`` (chat.presence),
  refreshed in one pipeline per heartbeat (every 15 s, when each socket also gets a
  ``heartbeat`` frame), as is each socket's claim on its client address
  (``CHAT_MAX_SOCKETS_PER_IP``, ``admit``); counts of its rooms are re-read every
  ``CHAT_PRESENCE_POLL_S`` and a changed count is pushed as
  ``{"type": "viewers.count", "count": N}``.

Sockets register a ``send`` callable (the ASGI send of the connection). ``leave`` removes a
socket from the process's state before its first ``await``, so a consumer that calls it from a
``finally`` always leaves, whatever raised (chat/consumers.py).
"""

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from chat import presence
from chat.wire import Send, Wire, send_or_give_up, wire_for
from livestream import metrics
from livestream.events import is_owner_only, owner_group, stream_group
from livestream.redis import new_async_redis_client

logger = logging.getLogger(__name__)

_HEARTBEAT_EVERY = max(1, int(presence.PRESENCE_TTL_S / 3))
# Upper bound of the adaptive batching tick (Hub.room_tick).
MAX_TICK_S = 1.0
# Sockets written between two yields to the event loop during a fan-out.
_YIELD_EVERY = 100
# Close code for a socket that does not read what it is sent (docs/chat.md).
CLOSE_TOO_SLOW = 4008
CLOSE_SEND_FAILED = 1011
# After its close frame, a socket closed as too slow keeps its connection this long so a client
# that is merely slow still reads the close code; then the connection is dropped.
SLOW_CLOSE_GRACE_S = 30.0

Message = dict[str, Any]


@dataclass(eq=False)
class Outlet:
    """One socket of a room: its ASGI send, what its connection says about waiting, and the
    frames waiting for it (message, size in bytes, time queued)."""

    member: str
    send: Send
    wire: Wire
    room: "Room"
    backlog: deque[tuple[Message, int, float]] = field(default_factory=deque)
    backlog_bytes: int = 0
    writer: "asyncio.Task[None] | None" = None
    gone: bool = False


@dataclass(eq=False)
class Room:
    stream_id: int
    public: bool = True
    sockets: dict[str, Outlet] = field(default_factory=dict)
    channel: str = ""
    reader: "asyncio.Task[None] | None" = None
    deliverer: "asyncio.Task[None] | None" = None
    outbox: "asyncio.Queue[tuple[Message, int]]" = field(default_factory=asyncio.Queue)
    pending: list[dict[str, Any]] = field(default_factory=list)
    flush_handle: asyncio.TimerHandle | None = None
    last_count: int | None = None
    last_flush: float = float("-inf")
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped_frames: int = 0
    # True while the delivery task writes a frame: chat arriving meanwhile waits in
    # ``pending`` and leaves as one batch when the delivery ends (see Hub._schedule_flush).
    delivering: bool = False

    @property
    def busy(self) -> bool:
        """A frame is being written or waits in the outbox."""
        return self.delivering or not self.outbox.empty()

    @property
    def group(self) -> str:
        return stream_group(self.stream_id) if self.public else owner_group(self.stream_id)


def encode(frame: dict[str, Any]) -> Message:
    """The ASGI message carrying ``frame``; built once and shared by every recipient."""
    return {"type": "websocket.send", "text": json.dumps(frame, separators=(",", ":"), ensure_ascii=False)}


def size_of(message: Message) -> int:
    text = message.get("text")
    return len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(message.get("bytes") or b"")


# Sent to every socket each heartbeat so clients can tell a silently dead connection (no frame
# for a while) from a quiet room, and reconnect.
_HEARTBEAT_FRAME = encode({"type": "heartbeat"})
_HEARTBEAT_SIZE = size_of(_HEARTBEAT_FRAME)


class HubUnavailableError(Exception):
    """The process could not subscribe a room to the channel layer (Redis unreachable)."""


class Hub:
    """Rooms of one event loop. Use ``get_hub()``; never share a Hub across loops."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}  # by group name
        self.members: dict[str, Outlet] = {}
        self.addresses: dict[str, str] = {}  # member -> client address (per-address cap)
        self.layer = get_channel_layer()
        self.redis = new_async_redis_client()  # this loop's own (a single Redis or a Cluster)
        self.tick_s = settings.CHAT_BATCH_TICK_MS / 1000
        self.writes_per_s = settings.CHAT_FANOUT_WRITES_PER_S
        self.poll_s = settings.CHAT_PRESENCE_POLL_S
        self.queue_bytes = settings.CHAT_SEND_QUEUE_BYTES
        self.send_timeout_s = settings.CHAT_SEND_TIMEOUT_S
        self.outbox_size = settings.CHAT_ROOM_OUTBOX
        self.kernel_buffer = settings.CHAT_SOCKET_SNDBUF
        self.max_per_address = settings.CHAT_MAX_SOCKETS_PER_IP
        self.slow_close_grace_s = SLOW_CLOSE_GRACE_S
        self.heartbeat_s: float = _HEARTBEAT_EVERY
        self.slow_closed = 0
        self._maintenance_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # --- sockets -------------------------------------------------------------------------

    async def admit(self, member: str, address: str) -> bool:
        """Count a new socket against its client address; False when the address already has
        CHAT_MAX_SOCKETS_PER_IP open sockets (0: no cap). Without Redis the cap is not
        enforced (the join then reports the outage anyway)."""
        if self.max_per_address <= 0:
            return True
        try:
            admitted = await presence.claim_address(self.redis, address, member, self.max_per_address)
        except Exception:
            logger.warning("address cap unavailable (Redis)", exc_info=True)
            return True
        if admitted:
            self.addresses[member] = address
        return admitted

    async def join(self, stream_id: int, member: str, send: Send, *, public: bool = True) -> None:
        """Register a socket; it receives every frame of the room from now on. A public
        socket counts as a viewer and gets its room's count first. The first socket of a
        room subscribes the process to it."""
        group = stream_group(stream_id) if public else owner_group(stream_id)
        room = self.rooms.get(group)
        if room is None:
            room = self.rooms[group] = Room(stream_id, public=public, outbox=asyncio.Queue(self.outbox_size))
            try:
                await self._open(room)
            except BaseException:
                if self.rooms.get(group) is room:
                    del self.rooms[group]
                if room.deliverer is not None:
                    room.deliverer.cancel()
                room.ready.set()  # wake other joiners; they see the room is gone
                raise
        else:
            await room.ready.wait()
            if self.rooms.get(group) is not room:
                raise HubUnavailableError("the room could not subscribe to the channel layer")
        wire = wire_for(send)
        with contextlib.suppress(Exception):
            wire.limit_kernel_buffer(self.kernel_buffer)
        outlet = Outlet(member, send, wire, room)
        room.sockets[member] = outlet
        self.members[member] = outlet
        metrics.chat_socket_opened()
        if self._maintenance_task is None or self._maintenance_task.done():
            self._maintenance_task = asyncio.get_running_loop().create_task(self._maintenance_loop())
        if not public:
            return
        try:
            await presence.add_members(self.redis, stream_id, [member])
            count = (await presence.acounts(self.redis, [stream_id]))[stream_id]
        except Exception:  # chat works without presence; the count catches up on the next poll
            logger.warning("presence update failed", extra={"stream": stream_id})
        else:
            await self.send_to(member, encode({"type": "viewers.count", "count": count}))

    async def send_to(self, member: str, message: Message) -> bool:
        """One frame to one socket, behind what is already queued for it; never waits for the
        peer. False when the socket is not (or no longer) in the hub."""
        outlet = self.members.get(member)
        if outlet is None or outlet.gone:
            return False
        await self._write_or_queue(outlet, message, size_of(message))
        return not outlet.gone

    async def leave(self, member: str) -> None:
        """Forget a socket. Its local state goes before the first ``await`` (safe in a
        ``finally``, even when cancelled); presence and the address claim follow."""
        outlet = self.members.pop(member, None)
        address = self.addresses.pop(member, None)
        closing = self._detach(outlet) if outlet is not None else None
        try:
            if outlet is not None and outlet.room.public:
                await presence.remove_member(self.redis, outlet.room.stream_id, member)
            if address is not None:
                await presence.release_address(self.redis, address, member)
        except Exception:  # the entries age out after PRESENCE_TTL_S anyway
            logger.warning("presence removal failed", extra={"stream": outlet.room.stream_id if outlet else None})
        if closing is not None:
            await self._close(closing)

    def _detach(self, outlet: Outlet) -> Room | None:
        """Remove a socket from its room, synchronously. Returns the room if that emptied it
        (the caller closes it)."""
        outlet.gone = True
        if outlet.writer is not None and outlet.writer is not asyncio.current_task():
            outlet.writer.cancel()
        outlet.writer = None
        outlet.backlog.clear()
        outlet.backlog_bytes = 0
        room = outlet.room
        if room.sockets.get(outlet.member) is outlet:
            del room.sockets[outlet.member]
            metrics.chat_socket_closed()
        if not room.sockets and self.rooms.get(room.group) is room:
            del self.rooms[room.group]  # a new join opens a fresh room meanwhile
            return room
        return None

    def _drop(self, outlet: Outlet, code: int, reason: str) -> None:
        """Take a socket out now (it is too slow, or its connection failed) and close it
        without waiting for it; the consumer's own disconnect later finds it gone."""
        if outlet.gone:
            return
        room = outlet.room
        if self.members.get(outlet.member) is outlet:
            del self.members[outlet.member]
        pending = outlet.backlog_bytes + outlet.wire.buffered()
        closing = self._detach(outlet)
        if code == CLOSE_TOO_SLOW:
            self.slow_closed += 1
            logger.warning(
                "closing a socket that does not read what it is sent",
                extra={"stream": room.stream_id, "ctx": {"pending_bytes": pending, "server": outlet.wire.kind}},
            )
        if not outlet.wire.close_now(code, reason, self.slow_close_grace_s):
            self._spawn(
                send_or_give_up(
                    outlet.send, {"type": "websocket.close", "code": code, "reason": reason}, self.slow_close_grace_s
                )
            )
        self._spawn(self._forget(room, outlet.member, closing))

    async def _forget(self, room: Room, member: str, closing: Room | None) -> None:
        if room.public:
            try:
                await presence.remove_member(self.redis, room.stream_id, member)
            except Exception:
                logger.warning("presence removal failed", extra={"stream": room.stream_id})
        if closing is not None:
            await self._close(closing)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- room lifecycle ------------------------------------------------------------------

    async def _open(self, room: Room) -> None:
        loop = asyncio.get_running_loop()
        room.deliverer = loop.create_task(self._deliver(room))
        if self.layer is not None:
            room.channel = await self.layer.new_channel()
            await self.layer.group_add(room.group, room.channel)
            room.reader = loop.create_task(self._read(room))
        room.ready.set()
        logger.info("chat room opened in this process", extra={"stream": room.stream_id, "ctx": {"group": room.group}})

    async def _close(self, room: Room) -> None:
        if self.rooms.get(room.group) is room:
            del self.rooms[room.group]
        if room.flush_handle is not None:
            room.flush_handle.cancel()
        for task in (room.reader, room.deliverer):
            if task is not None:
                task.cancel()
        if self.layer is not None and room.channel:
            try:
                await self.layer.group_discard(room.group, room.channel)
            except Exception:
                logger.warning("group_discard failed", extra={"stream": room.stream_id})
        for task in (room.reader, room.deliverer):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if not self.rooms and self._maintenance_task is not None:
            self._maintenance_task.cancel()
            self._maintenance_task = None

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
        if room.public and is_owner_only(message["event"]):
            logger.error(
                "owner-only event reached the public group; not relayed",
                extra={"stream": room.stream_id, "ctx": {"event": message["event"]}},
            )
            return
        data = message.get("data")
        frame = {**(data if isinstance(data, dict) else {}), "type": message["event"]}
        if frame["type"] == "chat.message":
            room.pending.append(frame)
            self._schedule_flush(room)
            return
        self._flush(room)
        message_out = encode(frame)
        self._post(room, message_out, size_of(message_out))

    def room_tick(self, room: Room) -> float:
        """Shortest time between two chat frames of ``room``: CHAT_BATCH_TICK_MS, stretched so
        the room's socket writes in this process stay within CHAT_FANOUT_WRITES_PER_S (a big
        room batches more instead of saturating the process), at most MAX_TICK_S."""
        return min(MAX_TICK_S, max(self.tick_s, len(room.sockets) / self.writes_per_s))

    def _schedule_flush(self, room: Room) -> None:
        """Send the pending chat when both allow it: the tick since the previous chat frame
        has passed (leading edge: a quiet room sends at once) AND the room's delivery task is
        idle. While a frame is still being written, new messages wait and leave together as
        one batch the moment it is done (``_deliver`` calls back here): chat frames never
        queue behind each other, so a message waits for at most the delivery in progress,
        whatever the process's load; a process short of CPU sends fuller batches instead of
        a growing backlog."""
        if not room.pending or room.flush_handle is not None or room.busy:
            return
        loop = asyncio.get_running_loop()
        wait = room.last_flush + self.room_tick(room) - loop.time()
        if wait <= 0:
            self._flush(room)
        else:
            room.flush_handle = loop.call_later(wait, self._tick, room)

    def _tick(self, room: Room) -> None:
        room.flush_handle = None
        self._schedule_flush(room)

    def _flush(self, room: Room) -> None:
        if room.flush_handle is not None:
            room.flush_handle.cancel()
            room.flush_handle = None
        if not room.pending:
            return
        frames, room.pending = room.pending, []
        room.last_flush = asyncio.get_running_loop().time()
        frame = frames[0] if len(frames) == 1 else {"type": "chat.batch", "messages": frames}
        message = encode(frame)
        self._post(room, message, size_of(message))

    def _post(self, room: Room, message: Message, size: int) -> None:
        """Queue a frame for every socket of the room; the outbox is bounded."""
        try:
            room.outbox.put_nowait((message, size))
        except asyncio.QueueFull:
            room.dropped_frames += 1
            if room.dropped_frames == 1 or room.dropped_frames % 100 == 0:
                logger.warning(
                    "room outbox full: frame dropped (the process cannot keep up)",
                    extra={"stream": room.stream_id, "ctx": {"dropped": room.dropped_frames}},
                )

    # --- outgoing frames -----------------------------------------------------------------

    async def _deliver(self, room: Room) -> None:
        while True:
            message, size = await room.outbox.get()
            metrics.chat_delivered(len(room.sockets))
            room.delivering = True
            try:
                await self._write_all(room, message, size)
            finally:
                room.delivering = False
            if room.outbox.empty():
                self._schedule_flush(room)  # chat that arrived meanwhile, as one batch

    async def _write_or_queue(self, outlet: Outlet, message: Message, size: int) -> None:
        """Write now when that cannot wait (``ready()`` means the send will not suspend, so
        nothing runs in between), else queue the frame for this socket alone."""
        if outlet.writer is None and outlet.wire.ready():
            try:
                await outlet.send(message)
            except Exception:
                self._drop(outlet, CLOSE_SEND_FAILED, "send failed")
        else:
            self._enqueue(outlet, message, size)

    async def _write_all(self, room: Room, message: Message, size: int) -> None:
        """One frame to every socket of the room, never waiting for any of them."""
        for index, outlet in enumerate(list(room.sockets.values()), start=1):
            await self._write_or_queue(outlet, message, size)
            if index % _YIELD_EVERY == 0:
                # The writes above do not suspend: let posts, reads and other rooms run.
                await asyncio.sleep(0)

    def _enqueue(self, outlet: Outlet, message: Message, size: int) -> None:
        if outlet.gone:
            return
        now = asyncio.get_running_loop().time()
        outlet.backlog.append((message, size, now))
        outlet.backlog_bytes += size
        if self._too_slow(outlet, now):
            self._drop(outlet, CLOSE_TOO_SLOW, "too slow")
            return
        if outlet.writer is None:
            outlet.writer = asyncio.get_running_loop().create_task(self._write(outlet))

    def _too_slow(self, outlet: Outlet, now: float) -> bool:
        if not outlet.backlog:
            return False
        if now - outlet.backlog[0][2] > self.send_timeout_s:
            return True
        return outlet.backlog_bytes + outlet.wire.buffered() > self.queue_bytes

    async def _write(self, outlet: Outlet) -> None:
        """The socket's own writer: drains its queue in order, waiting only for itself."""
        try:
            while outlet.backlog and not outlet.gone:
                await outlet.wire.wait_ready()
                if not outlet.backlog or outlet.gone:
                    break
                message, size, _ = outlet.backlog.popleft()
                outlet.backlog_bytes -= size
                await outlet.send(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            outlet.writer = None
            self._drop(outlet, CLOSE_SEND_FAILED, "send failed")
        finally:
            if outlet.writer is asyncio.current_task():
                outlet.writer = None

    def _sweep(self) -> None:
        """Close sockets whose oldest queued frame waited too long (quiet rooms included)."""
        now = asyncio.get_running_loop().time()
        for room in list(self.rooms.values()):
            for outlet in list(room.sockets.values()):
                if outlet.backlog and self._too_slow(outlet, now):
                    self._drop(outlet, CLOSE_TOO_SLOW, "too slow")

    async def _maintenance_loop(self) -> None:
        polls = 0
        while self.rooms:
            await asyncio.sleep(self.poll_s)
            self._sweep()
            polls += 1
            heartbeat = polls * self.poll_s >= self.heartbeat_s
            if heartbeat:
                polls = 0
                for open_room in list(self.rooms.values()):
                    self._post(open_room, _HEARTBEAT_FRAME, _HEARTBEAT_SIZE)
            public = {room.stream_id: room for room in self.rooms.values() if room.public}
            try:
                if heartbeat:
                    by_address: dict[str, list[str]] = {}
                    for member, address in self.addresses.items():
                        by_address.setdefault(address, []).append(member)
                    await presence.refresh(self.redis, {sid: list(r.sockets) for sid, r in public.items()}, by_address)
                counts = await presence.acounts(self.redis, list(public))
            except Exception:
                logger.exception("presence update failed")
                continue
            for stream_id, count in counts.items():
                room = self.rooms.get(stream_group(stream_id))
                if room is not None and count != room.last_count:
                    room.last_count = count
                    message = encode({"type": "viewers.count", "count": count})
                    self._post(room, message, size_of(message))


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The Hub of the running event loop (one per web process in production)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
