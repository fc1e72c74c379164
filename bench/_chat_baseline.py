"""The baseline of bench/chat_fanout.py: a minimal idiomatic Channels chat room.

One consumer per socket, each with its own channel in the group; every message is one
``group_send`` and each consumer JSON-encodes it for its own socket. No database, no auth:
it does strictly less work per message than the real chat, so the comparison flatters it.
Served by uvicorn as ``bench._chat_baseline:application``.
"""

import itertools
import os
from datetime import UTC, datetime
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.bench")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

_ids = itertools.count(1)


class RoomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = f"baseline.{self.scope['url_route']['kwargs']['stream_id']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "chat.message":
            await self.channel_layer.group_send(
                self.group,
                {
                    "type": "chat.message",
                    "id": next(_ids),
                    "user": "bench",
                    "text": str(content.get("text", "")),
                    "sent_at": datetime.now(UTC).isoformat(),
                },
            )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({k: event[k] for k in ("type", "id", "user", "text", "sent_at")})


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/streams/<int:stream_id>/chat/", RoomConsumer.as_asgi())]),
    }
)
