"""Account pages: thin wrappers over forms and services."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts import services
from accounts.forms import SIGNUP_THROTTLED_MESSAGE, LoginForm, ProfileForm, SignUpForm
from livestream.auth import request_user
from livestream.clientaddr import client_ip


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("streams:dashboard")
    if request.method == "POST":
        try:
            services.count_signup_attempt(client_ip(request))
        except services.SignUpThrottled:
            messages.error(request, SIGNUP_THROTTLED_MESSAGE)
            retry = SignUpForm(initial={k: request.POST.get(k, "") for k in ("username", "email", "display_name")})
            response = render(request, "accounts/signup.html", {"form": retry}, status=429)
            response["Retry-After"] = str(settings.SIGNUP_RATE_WINDOW_S)
            return response
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome! Create your first stream below.")
        return redirect("streams:dashboard")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


def login_view(request: HttpRequest) -> HttpResponse:
    form = LoginForm(request, request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.user)
        target = request.GET.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
            target = str(reverse_lazy("streams:dashboard"))
        return redirect(target)
    status = 429 if form.has_error("__all__", "throttled") else 400 if form.errors else 200
    return render(request, "accounts/login.html", {"form": form}, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("streams:directory")


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    form = ProfileForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        services.update_profile(
            user,
            display_name=form.cleaned_data["display_name"],
            avatar_url=form.cleaned_data["avatar_url"],
            bio=form.cleaned_data["bio"],
            email=form.cleaned_data["email"],
        )
        messages.success(request, "Profile saved.")
        return redirect("accounts:profile")
    return render(request, "accounts/profile.html", {"form": form}, status=400 if form.errors else 200)


class PasswordChange(PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:profile")

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        messages.success(self.request, "Password changed.")
        return super().form_valid(form)
