"""WebSocket routes (filled by the chat consumer)."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
