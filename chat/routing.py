"""WebSocket routes; ``livestream/asgi.py`` mounts them behind the origin check and the
session auth stack. Token auth wraps the consumers themselves."""

from django.urls import URLPattern, path

from chat.auth import TokenAuthMiddleware
from chat.consumers import ChatConsumer, OwnerConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/streams/<int:stream_id>/chat/", TokenAuthMiddleware(ChatConsumer.as_asgi()), name="chat-socket"),
    # The owner's analytics page: owner-only events (analytics.*), owner or staff only.
    path("ws/streams/<int:stream_id>/owner/", TokenAuthMiddleware(OwnerConsumer.as_asgi()), name="owner-socket"),
]
