"""The one DRF router for /api/v1/ (one module, as in the cookiecutter-django layout).

One section per app. Top-level resources register on ``router``; resources nested under
another (``streams/<id>/sessions/``) are explicit ``path()`` entries in the app's section.
Apps add their section with a small edit here; keep ``*router.urls`` last.
"""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import DefaultRouter

from accounts.api.views import Me, ObtainToken, Register
from analytics.api import views as analytics_views
from clips.api.views import ClipDetailView, StreamClipsView
from highlights.api import views as highlights_views
from simulcast.api.views import TargetViewSet
from streams.api.views import StreamReplayViewSet, StreamSessionViewSet, StreamViewSet
from webhooks.api.views import DeliveryViewSet, EndpointViewSet

app_name = "api"
router = DefaultRouter()
urlpatterns: list[URLPattern | URLResolver] = []

# --- Accounts ---
urlpatterns += [
    path("auth/token/", ObtainToken.as_view(), name="token"),
    path("auth/register/", Register.as_view(), name="register"),
    path("me/", Me.as_view(), name="me"),
]

# --- Streams, sessions, replays ---
router.register("streams", StreamViewSet, basename="stream")
urlpatterns += [
    path(
        "streams/<int:stream_pk>/sessions/",
        StreamSessionViewSet.as_view({"get": "list"}),
        name="stream-sessions",
    ),
    path(
        "streams/<int:stream_pk>/sessions/<int:pk>/",
        StreamSessionViewSet.as_view({"get": "retrieve"}),
        name="stream-session-detail",
    ),
    path(
        "streams/<int:stream_pk>/replays/",
        StreamReplayViewSet.as_view({"get": "list"}),
        name="stream-replays",
    ),
    path(
        "streams/<int:stream_pk>/replays/<int:pk>/",
        StreamReplayViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="stream-replay-detail",
    ),
]

# --- Highlight suggestions ---
urlpatterns += [
    path("streams/<int:stream_id>/highlights/", highlights_views.HighlightListView.as_view(), name="stream-highlights"),
    path(
        "streams/<int:stream_id>/highlights/<int:suggestion_id>/dismiss/",
        highlights_views.HighlightDismissView.as_view(),
        name="stream-highlight-dismiss",
    ),
    path(
        "streams/<int:stream_id>/highlights/<int:suggestion_id>/clipped/",
        highlights_views.HighlightClippedView.as_view(),
        name="stream-highlight-clipped",
    ),
]

# --- Webhooks ---
router.register("webhooks", EndpointViewSet, basename="webhook")
urlpatterns += [
    path(
        "webhooks/<int:endpoint_pk>/deliveries/",
        DeliveryViewSet.as_view({"get": "list"}),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<int:endpoint_pk>/deliveries/<int:pk>/",
        DeliveryViewSet.as_view({"get": "retrieve"}),
        name="webhook-delivery-detail",
    ),
]

# --- Chat (chat/api) ---
urlpatterns += [path("streams/<int:stream_pk>/chat/", include("chat.api.urls"))]
urlpatterns += [path("streams/<int:stream_pk>/replays/<int:session_pk>/", include("chat.api.replay_urls"))]

# --- Analytics (analytics/api) ---
urlpatterns += [
    path("analytics/playback/", analytics_views.PlaybackReportView.as_view(), name="analytics-playback"),
    path("analytics/platform/", analytics_views.PlatformAnalyticsView.as_view(), name="analytics-platform"),
    path("streams/<int:stream_id>/analytics/", analytics_views.StreamAnalyticsView.as_view(), name="stream-analytics"),
    path(
        "streams/<int:stream_id>/analytics/live/",
        analytics_views.LiveHealthView.as_view(),
        name="stream-analytics-live",
    ),
    path(
        "streams/<int:stream_id>/sessions/<int:session_id>/analytics/",
        analytics_views.SessionAnalyticsView.as_view(),
        name="stream-session-analytics",
    ),
]

# --- Clips (clips/api) ---
urlpatterns += [
    path("streams/<int:stream_pk>/clips/", StreamClipsView.as_view(), name="stream-clips"),
    path("clips/<slug:slug>/", ClipDetailView.as_view(), name="clip-detail"),
]

# --- Simulcast (simulcast/api) ---
urlpatterns += [
    path(
        "streams/<int:stream_pk>/simulcast/targets/",
        TargetViewSet.as_view({"get": "list", "post": "create"}),
        name="stream-simulcast-targets",
    ),
    path(
        "streams/<int:stream_pk>/simulcast/targets/<int:pk>/",
        TargetViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="stream-simulcast-target-detail",
    ),
]

urlpatterns += router.urls
