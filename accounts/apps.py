from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"


class AdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with ``accounts.admin_site.AdminSite`` (throttled login) as
    ``admin.site``; listed in INSTALLED_APPS instead of ``django.contrib.admin``."""

    default = False  # "accounts" itself still means AccountsConfig
    default_site = "accounts.admin_site.AdminSite"
