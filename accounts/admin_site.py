"""The Django admin's site, with the login throttled like the site's own.

``accounts.apps.AdminConfig`` (in INSTALLED_APPS instead of ``django.contrib.admin``) makes this
the default ``admin.site``. Its login form counts failures per username and per client address
in the same counters as the login page and the API token endpoint, and refuses before checking
the password once they are spent; the page then answers 429 instead of 200.
"""

from typing import Any

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from accounts.forms import AdminLoginForm


class AdminSite(admin.AdminSite):
    login_form = AdminLoginForm

    @method_decorator(never_cache)
    @login_not_required
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if isinstance(form, AdminLoginForm) and form.has_error(NON_FIELD_ERRORS, "throttled"):
            response.status_code = 429
        return response
