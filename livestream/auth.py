"""Request helpers shared by views and API views."""

from typing import Any

from django.core.exceptions import PermissionDenied

from accounts.models import User


def request_user(request: Any) -> User:
    """The signed-in ``User`` of a request; PermissionDenied for anonymous requests.

    Views call it after their login check, so it also narrows the type for mypy.
    """
    user = getattr(request, "user", None)
    if not isinstance(user, User):
        raise PermissionDenied
    return user
