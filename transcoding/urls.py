"""Internal endpoints called by nginx-rtmp (on_publish, on_publish_done)."""

from django.urls import URLPattern, path

from transcoding import views

app_name = "transcoding"
urlpatterns: list[URLPattern] = [
    path("rtmp/on_publish", views.on_publish, name="rtmp-on-publish"),
    path("rtmp/on_publish_done", views.on_publish_done, name="rtmp-on-publish-done"),
]
