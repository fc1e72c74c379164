from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from livestream import health

urlpatterns = [
    path("", include("streams.urls")),
    path("", include("clips.urls")),
    path("accounts/", include("accounts.urls")),
    path("analytics/", include("analytics.urls")),
    path("admin/", admin.site.urls),
    path("dashboard/webhooks/", include("webhooks.urls")),
    path("dashboard/streams/<int:stream_id>/simulcast/", include("simulcast.urls")),
    path("api/v1/", include("livestream.api_router")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("internal/", include("transcoding.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("health/", health.health_page, name="health"),
]

admin.site.site_header = "Livestream operations"
admin.site.site_title = "Livestream admin"

# JSON error bodies for /api/ URLs that match no route (HTML pages elsewhere).
handler404 = "livestream.api.not_found"
handler500 = "livestream.api.server_error"
