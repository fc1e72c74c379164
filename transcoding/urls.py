"""Internal endpoints: called by nginx-rtmp (on_publish, on_publish_done) and by the edge
(origin of live media playlists). The origin's paths are the sessions' object paths
(``live/<stream>/<session>-<tag>/...``, streams.playback.session_prefix); the view answers 404
when the tag is not the session's, and a path without a tag matches no route (404)."""

from django.urls import URLPattern, path

from transcoding import live_origin, views

app_name = "transcoding"
urlpatterns: list[URLPattern] = [
    path("rtmp/on_publish", views.on_publish, name="rtmp-on-publish"),
    path("rtmp/on_publish_done", views.on_publish_done, name="rtmp-on-publish-done"),
    path(
        "origin/live/<int:stream_id>/<int:session_id>-<str:tag>/<str:rendition>/<str:kind>.m3u8",
        live_origin.playlist,
        name="origin-playlist",
    ),
    path(
        "origin/live/<int:stream_id>/<int:session_id>-<str:tag>/<str:rendition>/<str:name>.m4s",
        live_origin.part,
        name="origin-part",
    ),
]
