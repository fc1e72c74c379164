from django.urls import path

from webhooks import views

app_name = "webhooks"
urlpatterns = [
    path("", views.endpoints, name="endpoints"),
    path("<int:endpoint_id>/", views.detail, name="detail"),
    path("<int:endpoint_id>/test/", views.send_test, name="send_test"),
    path("<int:endpoint_id>/rotate-secret/", views.rotate_secret, name="rotate_secret"),
    path("<int:endpoint_id>/delete/", views.delete, name="delete"),
]
