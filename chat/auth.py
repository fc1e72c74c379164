"""WebSocket authentication and origin checks for the chat socket.

- Browsers authenticate with their session cookie (Channels' ``AuthMiddlewareStack``).
- Other clients send ``Authorization: Token <key>`` (DRF authtoken): ``TokenAuthMiddleware``
  puts that user in ``scope["user"]``; a wrong key sets ``scope["auth_error"]`` and the consumer
  answers with an ``invalid_token`` error frame and closes (code 4401).
- ``BrowserOriginValidator``: a request carrying an ``Origin`` header (every browser sends one
  on WebSockets) must come from ``ALLOWED_HOSTS``, which stops cross-site WebSocket hijacking
  with the session cookie. Requests without ``Origin`` are not from a browser, carry no
  ambient cookie authority, and are let through (token clients, bots, the benchmark).
"""

from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.authtoken.models import Token

from accounts.models import User


@database_sync_to_async
def _token_user(key: str) -> User | None:
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    """Authenticates ``Authorization: Token <key>``; leaves cookie auth alone otherwise."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        header = next((value for name, value in scope.get("headers", []) if name == b"authorization"), None)
        if header is not None:
            scheme, _, key = header.decode("latin-1").partition(" ")
            user = await _token_user(key.strip()) if scheme.lower() == "token" and key.strip() else None
            scope = dict(scope, user=user or AnonymousUser(), auth_error=None if user else "invalid_token")
        return await super().__call__(scope, receive, send)


class _OriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(super().valid_origin(parsed_origin))


def BrowserOriginValidator(application: Any) -> Any:  # noqa: N802 - mirrors Channels' AllowedHostsOriginValidator
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return _OriginValidator(application, allowed_hosts)
