from django.urls import path

from clips import views

app_name = "clips"
urlpatterns = [
    path("clips/<slug:slug>/", views.page, name="page"),
    path("clips/<slug:slug>/delete/", views.delete, name="delete"),
    path("s/<slug:slug>/clip/", views.create_live, name="create_live"),
    path("s/<slug:slug>/replays/<int:session_id>/clip/", views.create_range, name="create_range"),
]
