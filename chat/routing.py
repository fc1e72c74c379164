"""WebSocket routes; ``livestream/asgi.py`` mounts them behind the origin check and the
session auth stack. Token auth wraps the chat consumer itself."""

from django.urls import URLPattern, path

from chat.auth import TokenAuthMiddleware
from chat.consumers import ChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/streams/<int:stream_id>/chat/", TokenAuthMiddleware(ChatConsumer.as_asgi()), name="chat-socket"),
]
