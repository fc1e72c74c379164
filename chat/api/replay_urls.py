"""Routes under /api/v1/streams/<stream_pk>/replays/<session_pk>/ (included by
livestream/api_router.py): the chat of a replay and its exports (ADR 0035)."""

from django.urls import path

from chat.api import views

urlpatterns = [
    path("chat/", views.ReplayChatMessagesView.as_view(), name="replay-chat"),
    path("chat.json", views.ReplayChatJSONView.as_view(), name="replay-chat-json"),
    path("chat.vtt", views.ReplayChatWebVTTView.as_view(), name="replay-chat-vtt"),
]
