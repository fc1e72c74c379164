"""The chat socket ``/ws/streams/<id>/chat/``: chat plus the watch page's live channel.

Thin: it authenticates, validates the frame, calls ``chat.services.post_message`` in a thread
(``database_sync_to_async``; not thread-sensitive, so joins and posts of different sockets run
in parallel in the executor's threads while each socket's frames stay sequential), and
registers itself with the process's ``chat.fanout.Hub``, which delivers every broadcast
(chat, moderation, ``stream.live``, ``viewers.count``...).
The consumer has no channel-layer channel of its own (``channel_layer_alias`` names no layer):
the hub's one subscription per room replaces thousands of per-socket ones.

Frames the server sends: see docs/chat.md. On join: ``viewers.count`` and ``chat.history``
(the last CHAT_HISTORY_SIZE messages, slow mode, and what this user may do).
"""

import json
import logging
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from chat import selectors, services
from chat.fanout import get_hub

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_UNAVAILABLE = 1011
# Posts slower than this are logged (database or Redis trouble shows up here first).
SLOW_POST_MS = 250


def _frame_send(send: Any) -> Any:
    """The server's own ``send`` for broadcast frames. Channels' SessionMiddleware wraps
    ``send`` to save sessions on HTTP responses, which WebSocket frames never need; skipping it
    saves ~3.6 us of the ~20 us each delivery costs (bench/chat_fanout.py)."""
    owner = getattr(send, "__self__", None)
    if isinstance(owner, InstanceSessionWrapper):
        return owner.real_send
    return send


class ChatConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = "chat-hub-delivers"  # no such layer: no per-socket channel (see module doc)

    stream_id: int
    member: str | None = None

    async def connect(self) -> None:
        self.stream_id = int(self.scope["url_route"]["kwargs"]["stream_id"])
        self.user = self.scope.get("user") or AnonymousUser()
        await self.accept()
        if self.scope.get("auth_error"):
            await self.send_error("invalid_token", "The token in the Authorization header is not valid.")
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        # Join the room BEFORE reading the history: a message committed in between then arrives
        # both live and in the history (clients dedupe by id) instead of in neither.
        self.member = uuid.uuid4().hex
        try:
            await get_hub().join(self.stream_id, self.member, _frame_send(self.base_send))
        except Exception:
            logger.exception("chat join failed", extra={"stream": self.stream_id})
            await self.send_error("unavailable", "Live chat is unavailable right now; retrying helps.")
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        state = await database_sync_to_async(selectors.join_state, thread_sensitive=False)(
            self.stream_id, self.user, settings.CHAT_HISTORY_SIZE
        )
        if state is None:
            await self.disconnect(CLOSE_NOT_FOUND)
            await self.send_error("not_found", "No such stream.")
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send(text_data=json.dumps(state, ensure_ascii=False))

    async def disconnect(self, code: int) -> None:
        if self.member is not None:
            member, self.member = self.member, None
            await get_hub().leave(self.stream_id, member)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None or len(text_data) > settings.CHAT_MAX_LENGTH * 8 + 256:
            await self.send_error("bad_frame", "Send JSON text frames, at most a few kilobytes.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self.send_error("bad_frame", "Frames must be JSON objects.")
            return
        if not isinstance(frame, dict) or frame.get("type") != "chat.message":
            await self.send_error("unknown_type", 'Clients send {"type": "chat.message", "text": "..."}.')
            return
        if not self.user.is_authenticated:
            await self.send_error("auth_required", "Sign in to chat.")
            return
        if self.member is None:
            return
        started = time.monotonic()
        try:
            await database_sync_to_async(services.post_message, thread_sensitive=False)(
                stream_id=self.stream_id, user=self.user, text=frame.get("text")
            )
        except services.ChatError as exc:
            await self.send_error(exc.code, exc.message)
        elapsed_ms = (time.monotonic() - started) * 1000
        if elapsed_ms > SLOW_POST_MS:
            logger.warning("slow chat post", extra={"stream": self.stream_id, "ctx": {"ms": round(elapsed_ms)}})

    async def send_error(self, code: str, message: str) -> None:
        """An error frame to this socket only."""
        await self.send(text_data=json.dumps({"type": "error", "code": code, "message": message}))
