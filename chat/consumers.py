"""The stream sockets.

- ``/ws/streams/<id>/chat/`` (``ChatConsumer``): chat plus the watch page's live channel.
  Anyone reads; signed-in users write. Counts as a viewer.
- ``/ws/streams/<id>/owner/`` (``OwnerConsumer``): the owner's analytics page. Owner of the
  stream or staff only (checked on connect); receives the owner-only events
  (``analytics.ingest``, ``analytics.viewers``, ``analytics.session``) that never reach the
  public room. Not a viewer.

Thin: they authenticate, validate frames, call ``chat.services.post_message`` in a thread
(``database_sync_to_async``; not thread-sensitive, so posts of different sockets run in
parallel in the executor's threads while each socket's frames stay sequential), and register
with the process's ``chat.fanout.Hub``, which delivers every broadcast (chat, moderation,
``stream.live``, ``viewers.count``...) and every frame of their own, through each socket's
bounded queue (a socket that does not read is closed with 4008; nobody waits for it).
The consumers have no channel-layer channel of their own (``channel_layer_alias`` names no
layer): the hub's one subscription per room replaces thousands of per-socket ones.

Hostile input (docs/chat.md): frames over CHAT_MAX_FRAME_BYTES, binary or non-JSON frames,
text that is not valid text (lone surrogates, control characters) get an ``error`` frame; the
per-socket rate limit is checked before any thread, database or Redis work; more than
CHAT_MAX_SOCKETS_PER_IP sockets from one client address (``livestream.clientaddr``, which
honours TRUSTED_PROXIES) are refused with 4429. Whatever raises, a consumer leaves the hub
(``__call__``'s ``finally``); an error while handling a frame answers ``unavailable`` and keeps
the socket.

Frames the server sends: see docs/chat.md. On join: ``viewers.count`` and ``chat.history``
(the last CHAT_HISTORY_SIZE messages, slow mode, and what this user may do).
"""

import json
import logging
import time
import uuid
from collections import deque
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from chat import selectors, services
from chat.fanout import encode, get_hub
from livestream.clientaddr import client_ip_from_scope

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
CLOSE_UNAVAILABLE = 1011
# Posts slower than this are logged (database or Redis trouble shows up here first).
SLOW_POST_MS = 250


def _frame_send(send: Any) -> Any:
    """The server's own ``send`` for broadcast frames. Channels' SessionMiddleware wraps
    ``send`` to save sessions on HTTP responses, which WebSocket frames never need; skipping it
    saves ~3.6 us of the ~20 us each delivery costs (bench/chat_fanout.py), and lets the hub see
    the server's connection (chat/wire.py)."""
    owner = getattr(send, "__self__", None)
    if isinstance(owner, InstanceSessionWrapper):
        return owner.real_send
    return send


class RateWindow:
    """Sliding window of one socket's attempts: ``allow()`` is False once ``limit`` attempts
    fell within ``window_s``. In memory, no I/O: the first, cheapest check of a post."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class StreamSocketConsumer(AsyncWebsocketConsumer):
    """What both stream sockets share: the address cap, the hub membership that always ends,
    frames through the hub, and no per-frame database housekeeping."""

    channel_layer_alias = "chat-hub-delivers"  # no such layer: no per-socket channel (see module doc)
    public = True

    stream_id: int
    member: str | None = None
    joined: bool = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Whatever ended the consumer (disconnect, an exception, cancellation), the socket
            # leaves the hub: no ghost viewer, no frames written to a dead connection.
            await self._leave()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes stale database connections (a thread hop through the one
        # thread-sensitive executor) before EVERY frame. These consumers only use the database
        # through database_sync_to_async, which does that itself: skip it.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _leave(self) -> None:
        member, self.member = self.member, None
        self.joined = False
        if member is not None:
            await get_hub().leave(member)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def admit(self) -> bool:
        """After ``accept``: claim a slot for the client address (one Redis round trip, before
        any database work). False (with an error frame and a close) when the address has too
        many sockets open."""
        self.member = uuid.uuid4().hex
        if await get_hub().admit(self.member, client_ip_from_scope(self.scope)):
            return True
        await self.refuse(
            "too_many_connections",
            f"Too many open live sockets from your address (at most {settings.CHAT_MAX_SOCKETS_PER_IP}).",
            CLOSE_TOO_MANY,
        )
        return False

    async def join(self) -> bool:
        """Join the hub's room (public, or the owner's); False (error frame, close) when the
        channel layer is unreachable."""
        if self.member is None:
            return False
        try:
            await get_hub().join(self.stream_id, self.member, _frame_send(self.base_send), public=self.public)
        except Exception:
            logger.exception("chat join failed", extra={"stream": self.stream_id})
            await self.refuse("unavailable", "Live chat is unavailable right now; retrying helps.", CLOSE_UNAVAILABLE)
            return False
        self.joined = True
        return True

    async def refuse(self, code: str, message: str, close_code: int) -> None:
        """An error frame, then close (after leaving the hub)."""
        if self.member is not None:
            await self._leave()
        await self.send_frame({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """A frame to this socket only: through the hub's queue once joined (in order with the
        broadcasts, never waiting for the peer), directly before that."""
        if self.joined and self.member is not None:
            await get_hub().send_to(self.member, encode(frame))
        else:
            await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, code: str, message: str) -> None:
        """An error frame to this socket only."""
        await self.send_frame({"type": "error", "code": code, "message": message})


class ChatConsumer(StreamSocketConsumer):
    async def connect(self) -> None:
        self.stream_id = int(self.scope["url_route"]["kwargs"]["stream_id"])
        self.user = self.scope.get("user") or AnonymousUser()
        self.limiter = RateWindow(settings.CHAT_RATE_LIMIT, settings.CHAT_RATE_WINDOW_S)
        await self.accept()
        if self.scope.get("auth_error"):
            await self.refuse(
                "invalid_token", "The token in the Authorization header is not valid.", CLOSE_UNAUTHORIZED
            )
            return
        # Join the room BEFORE reading the history: a message committed in between then arrives
        # both live and in the history (clients dedupe by id) instead of in neither.
        if not await self.admit() or not await self.join():
            return
        try:
            state = await database_sync_to_async(selectors.join_state, thread_sensitive=False)(
                self.stream_id, self.user, settings.CHAT_HISTORY_SIZE
            )
        except Exception:
            logger.exception("chat history failed", extra={"stream": self.stream_id})
            await self.refuse("unavailable", "Live chat is unavailable right now; retrying helps.", CLOSE_UNAVAILABLE)
            return
        if state is None:
            await self.refuse("not_found", "No such stream.", CLOSE_NOT_FOUND)
            return
        await self.send_frame(state)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await self.handle_frame(text_data, bytes_data)
        except Exception:
            logger.exception("chat frame failed", extra={"stream": self.stream_id})
            await self.send_error("unavailable", "That did not work (server trouble); try again.")

    def parse_frame(self, text_data: str | None) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
        """(the chat.message frame, None) or (None, (error code, message)). No I/O."""
        if text_data is None:
            return None, ("bad_frame", "Send JSON text frames.")
        limit = settings.CHAT_MAX_FRAME_BYTES
        if len(text_data) > limit or (
            not text_data.isascii() and len(text_data.encode("utf-8", "surrogatepass")) > limit
        ):
            return None, ("frame_too_large", f"Frames are at most {limit} bytes.")
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            return None, ("bad_frame", "Frames must be JSON objects.")
        if not isinstance(frame, dict) or frame.get("type") != "chat.message":
            return None, ("unknown_type", 'Clients send {"type": "chat.message", "text": "..."}.')
        return frame, None

    async def handle_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        frame, error = self.parse_frame(text_data)
        if frame is None:
            await self.send_error(*(error or ("bad_frame", "Send JSON text frames.")))
            return
        if not self.user.is_authenticated:
            await self.send_error("auth_required", "Sign in to chat.")
            return
        if not self.joined:
            return
        try:
            text = services.clean_text(frame.get("text"))
        except services.ChatError as exc:
            await self.send_error(exc.code, exc.message)
            return
        # The per-socket window first (memory only), then post_message's per-user counter
        # (Redis) before it reads or writes the database.
        if not self.limiter.allow(time.monotonic()):
            await self.send_error("rate_limited", "You are sending messages too fast; wait a moment.")
            return
        started = time.monotonic()
        try:
            await database_sync_to_async(services.post_message, thread_sensitive=False)(
                stream_id=self.stream_id, user=self.user, text=text
            )
        except services.ChatError as exc:
            await self.send_error(exc.code, exc.message)
        elapsed_ms = (time.monotonic() - started) * 1000
        if elapsed_ms > SLOW_POST_MS:
            logger.warning("slow chat post", extra={"stream": self.stream_id, "ctx": {"ms": round(elapsed_ms)}})


def _owns(user: Any, stream_id: int) -> bool:
    from streams.selectors import get_stream_for_owner

    try:
        get_stream_for_owner(user, stream_id)
    except Http404:
        return False
    return True


class OwnerConsumer(StreamSocketConsumer):
    """The owner's analytics socket: owner-only events of one stream, nothing else but
    heartbeats. Clients send nothing."""

    public = False

    async def connect(self) -> None:
        self.stream_id = int(self.scope["url_route"]["kwargs"]["stream_id"])
        self.user = self.scope.get("user") or AnonymousUser()
        await self.accept()
        if self.scope.get("auth_error"):
            await self.refuse(
                "invalid_token", "The token in the Authorization header is not valid.", CLOSE_UNAUTHORIZED
            )
            return
        if not self.user.is_authenticated:
            await self.refuse("auth_required", "Sign in as the stream's owner.", CLOSE_UNAUTHORIZED)
            return
        # The address cap before the database: a refused client costs one Redis round trip.
        if not await self.admit():
            return
        try:
            allowed = await database_sync_to_async(_owns, thread_sensitive=False)(self.user, self.stream_id)
        except Exception:
            logger.exception("owner check failed", extra={"stream": self.stream_id})
            await self.refuse(
                "unavailable", "Live analytics are unavailable right now; retrying helps.", CLOSE_UNAVAILABLE
            )
            return
        if not allowed:
            # Like the analytics API: another user's stream is indistinguishable from none.
            await self.refuse("not_found", "No such stream.", CLOSE_NOT_FOUND)
            return
        if await self.join():
            await self.send_frame({"type": "owner.ready", "stream": self.stream_id})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send_error("unknown_type", "This socket only sends; it takes no frames.")
