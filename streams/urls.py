from django.urls import path

from streams import views

app_name = "streams"
urlpatterns = [
    path("", views.directory, name="directory"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/streams/<int:stream_id>/", views.manage, name="manage"),
    path("dashboard/streams/<int:stream_id>/regenerate-key/", views.regenerate_key, name="regenerate_key"),
    path("dashboard/streams/<int:stream_id>/delete/", views.delete, name="delete"),
    path("dashboard/streams/<int:stream_id>/go-public/", views.go_public, name="go_public"),
    path("s/<slug:slug>/", views.watch, name="watch"),
    path("s/<slug:slug>/status/", views.status, name="status"),
    path("s/<slug:slug>/replays/<int:session_id>/", views.replay, name="replay"),
    path("embed/<slug:slug>/", views.embed, name="embed"),
]
