from django.urls import path

from analytics import views

app_name = "analytics"
urlpatterns = [
    path("streams/<int:stream_id>/", views.stream_page, name="stream"),
    path("streams/<int:stream_id>/sessions/<int:session_id>/", views.session_page, name="session"),
    path("platform/", views.platform_page, name="platform"),
]
