"""Writes to accounts: registration, profile updates, login and sign-up throttling.

Every limit here counts per client address as ``livestream.clientaddr`` gives it (callers pass
``client_ip(request)``): behind a trusted proxy the real client, never a header a client made up.
"""

import logging

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.http import HttpRequest

from accounts.models import User
from livestream import ratelimit

logger = logging.getLogger(__name__)


class LoginThrottled(Exception):  # noqa: N818 - reads as a state, like Django's PermissionDenied
    """Too many failed logins for this username or address; try again later."""


def _login_limits() -> tuple[ratelimit.Limit, ratelimit.Limit]:
    window = settings.LOGIN_RATE_WINDOW_S
    per_user = ratelimit.Limit("login-user", settings.LOGIN_RATE_LIMIT, window)
    # One address may try a few accounts (shared NAT), not an unbounded number.
    per_addr = ratelimit.Limit("login-addr", settings.LOGIN_RATE_LIMIT * 4, window)
    return per_user, per_addr


def authenticate_throttled(request: HttpRequest | None, username: str, password: str, addr: str) -> User | None:
    """Check credentials, counting failures per username and per address (``addr``).

    Raises ``LoginThrottled`` before checking the password once either limit is spent, so a
    guesser learns nothing more. A success clears the username's counter. The site's login
    form, the admin's and the API token endpoint share these counters.
    """
    per_user, per_addr = _login_limits()
    user_ident = username.strip().lower()
    if not ratelimit.peek(per_user, user_ident) or not ratelimit.peek(per_addr, addr):
        logger.warning("login throttled", extra={"user": user_ident, "addr": addr})
        raise LoginThrottled
    user = authenticate(request, username=username, password=password)
    if user is None:
        ratelimit.hit(per_user, user_ident)
        ratelimit.hit(per_addr, addr)
        logger.info("login failed", extra={"user": user_ident, "addr": addr})
        return None
    ratelimit.reset(per_user, user_ident)
    return user if isinstance(user, User) else None


class SignUpThrottled(Exception):  # noqa: N818 - reads as a state, like LoginThrottled
    """Too many sign-ups from this address; try again later."""


def _signup_limit() -> ratelimit.Limit:
    return ratelimit.Limit("signup-addr", settings.SIGNUP_RATE_LIMIT, settings.SIGNUP_RATE_WINDOW_S)


def count_signup_attempt(addr: str) -> None:
    """Count one sign-up attempt (form or API) from ``addr``; raise ``SignUpThrottled`` beyond
    ``SIGNUP_RATE_LIMIT`` per ``SIGNUP_RATE_WINDOW_S``. Call it before validating anything."""
    if not ratelimit.hit(_signup_limit(), addr):
        logger.warning("sign-up throttled", extra={"addr": addr})
        raise SignUpThrottled


@transaction.atomic
def register_user(*, username: str, email: str, password: str, display_name: str = "") -> User:
    """Create an active user. Callers validate uniqueness and password strength first."""
    user = User.objects.create_user(
        username=username, email=email.strip().lower(), password=password, display_name=display_name
    )
    logger.info("user registered", extra={"user": user.pk})
    return user


def update_profile(user: User, *, display_name: str, avatar_url: str, bio: str, email: str) -> User:
    user.display_name = display_name
    user.avatar_url = avatar_url
    user.bio = bio
    user.email = email.strip().lower()
    user.save(update_fields=["display_name", "avatar_url", "bio", "email", "updated_at"])
    return user
