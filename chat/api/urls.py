"""Routes under /api/v1/streams/<stream_pk>/chat/ (included by livestream/api_router.py)."""

from django.urls import path

from chat.api import views

urlpatterns = [
    path("messages/", views.MessagesView.as_view(), name="chat-messages"),
    path("messages/<int:pk>/", views.MessageDetailView.as_view(), name="chat-message-detail"),
    path("clear/", views.ClearView.as_view(), name="chat-clear"),
    path("settings/", views.SettingsView.as_view(), name="chat-settings"),
    path("bans/", views.BansView.as_view(), name="chat-bans"),
    path("bans/<str:username>/", views.BanDetailView.as_view(), name="chat-ban-detail"),
    path("moderators/", views.ModeratorsView.as_view(), name="chat-moderators"),
    path("moderators/<str:username>/", views.ModeratorDetailView.as_view(), name="chat-moderator-detail"),
    path("log/", views.ModerationLogView.as_view(), name="chat-log"),
]
