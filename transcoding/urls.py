"""Internal endpoints called by nginx-rtmp (on_publish, on_publish_done)."""

from django.urls import URLPattern

app_name = "transcoding"
urlpatterns: list[URLPattern] = []
