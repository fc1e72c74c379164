"""The one DRF router for /api/v1/ (as cookiecutter's config/api_router.py)."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from accounts.api.views import Me, ObtainToken, Register
from streams.api.views import StreamSessionViewSet, StreamViewSet

router = DefaultRouter()
router.register("streams", StreamViewSet, basename="stream")

app_name = "api"
urlpatterns = [
    path("auth/token/", ObtainToken.as_view(), name="token"),
    path("auth/register/", Register.as_view(), name="register"),
    path("me/", Me.as_view(), name="me"),
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
    *router.urls,
]
