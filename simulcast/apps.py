from django.apps import AppConfig


class SimulcastConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "simulcast"
    verbose_name = "Simulcast"
