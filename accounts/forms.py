"""HTML forms for sign-up, login and profile; validation only, writes go through services."""

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest

from accounts import services
from accounts.models import User
from livestream.clientaddr import client_ip

LOGIN_THROTTLED_MESSAGE = "Too many failed attempts. Wait a few minutes and try again."
SIGNUP_THROTTLED_MESSAGE = "Too many sign-ups from your network. Try again later."


class SignUpForm(UserCreationForm[User]):
    email = forms.EmailField(required=True, help_text="Used for password resets; never shown publicly.")

    class Meta:
        model = User
        fields = ("username", "email", "display_name")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email

    def save(self, commit: bool = True) -> User:  # noqa: FBT001, FBT002 - Django's signature
        return services.register_user(
            username=self.cleaned_data["username"],
            email=self.cleaned_data["email"],
            password=self.cleaned_data["password1"],
            display_name=self.cleaned_data.get("display_name", ""),
        )


class LoginForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        self.request = request
        self.user: User | None = None
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "username" in data and "password" in data:
            try:
                self.user = services.authenticate_throttled(
                    self.request, data["username"], data["password"], client_ip(self.request)
                )
            except services.LoginThrottled:
                raise forms.ValidationError(LOGIN_THROTTLED_MESSAGE, code="throttled") from None
            if self.user is None:
                raise forms.ValidationError("Wrong username or password.", code="invalid_login")
        return data


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, counted and refused like the site's (``authenticate_throttled``):
    once the username's or the address's failures are spent, it refuses before any password
    check (``accounts.admin_site.AdminSite`` answers 429)."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            addr = client_ip(self.request) if self.request is not None else "unknown"
            try:
                user = services.authenticate_throttled(self.request, username, password, addr)
            except services.LoginThrottled:
                raise forms.ValidationError(LOGIN_THROTTLED_MESSAGE, code="throttled") from None
            if user is None:
                raise self.get_invalid_login_error()
            self.user_cache = user
            self.confirm_login_allowed(user)
        return self.cleaned_data


class ProfileForm(forms.ModelForm[User]):
    class Meta:
        model = User
        fields = ("display_name", "email", "avatar_url", "bio")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email
