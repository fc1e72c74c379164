from django.urls import path

from simulcast import views

app_name = "simulcast"
urlpatterns = [
    path("add/", views.add, name="add"),
    path("<int:target_id>/toggle/", views.toggle, name="toggle"),
    path("<int:target_id>/delete/", views.delete, name="delete"),
]
