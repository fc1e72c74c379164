"""503 + Retry-After, never 500, while PostgreSQL is unavailable (docs/adr/0009).

PostgreSQL restarting or down, a connection lost mid-query, or this process's pool busy for
longer than ``DATABASE_POOL_TIMEOUT_S``: Django raises ``OperationalError`` (or
``InterfaceError`` for a connection that is already closed). Those are conditions a client can
retry, not bugs, so:

- API views (DRF): ``livestream.api.exception_handler`` answers the shared error body with code
  ``unavailable``;
- pages and any other view: ``DatabaseUnavailableMiddleware`` answers a small HTML page (JSON
  under /api/);
- errors raised outside a view (a middleware saving the session): ``handler500``
  (``livestream.api.server_error``) sees the exception being handled and answers the same.

Each carries ``Retry-After: DATABASE_RETRY_AFTER_S``. The broken connection goes back to the
pool, which discards it; the next request gets a checked one, so service resumes by itself.
"""

import logging
import sys
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
CODE = "unavailable"
MESSAGE = "The service is temporarily unavailable (database); retry after the Retry-After header."

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{retry}">
<title>Temporarily unavailable</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#222}}</style>
</head>
<body>
<h1>Temporarily unavailable</h1>
<p>Livestream cannot reach its database right now. This page tries again in {retry} seconds.</p>
<p><a href="{path}">Try again now</a></p>
</body>
</html>
"""


def is_unavailable(exc: BaseException | None) -> bool:
    """True for database errors a retry can cure: connection refused or lost, server
    restarting, no free connection in the pool in time."""
    return isinstance(exc, OperationalError | InterfaceError)


def retry_after() -> int:
    return max(1, int(settings.DATABASE_RETRY_AFTER_S))


class _LogThrottle:
    """One warning per second and process at most: an outage must not flood the log."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.last = 0.0
        self.suppressed = 0
        self.lock = threading.Lock()

    def warn(self, request: HttpRequest, exc: BaseException) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < self.every_s:
                self.suppressed += 1
                return
            suppressed, self.suppressed, self.last = self.suppressed, 0, now
        logger.warning(
            "database unavailable, answering 503: %s: %s",
            type(exc).__name__,
            str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
            extra={"ctx": {"path": request.path, "similar_since_last": suppressed}},
        )


_log = _LogThrottle()


def note(request: HttpRequest, exc: BaseException) -> None:
    _log.warn(request, exc)


def api_body() -> dict[str, dict[str, str]]:
    return {"error": {"code": CODE, "message": MESSAGE}}


def response_for(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 for ``request``: the JSON error body under /api/, the HTML page elsewhere."""
    note(request, exc)
    response: HttpResponse
    if request.path.startswith(API_PREFIX):
        response = JsonResponse(api_body(), status=503)
    else:
        page = PAGE.format(retry=retry_after(), path=escape(request.get_full_path()))
        response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(retry_after())
    response["Cache-Control"] = "no-store"
    return response


def current_exception() -> BaseException | None:
    """The exception being handled (``handler500`` runs inside Django's ``except`` block)."""
    return sys.exc_info()[1]


class DatabaseUnavailableMiddleware:
    """Answers 503 + Retry-After instead of 500 when a view fails because PostgreSQL is
    unavailable. First in MIDDLEWARE, so its ``process_exception`` runs last (other
    middleware may still turn the exception into a response of their own)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_unavailable(exception):
            return response_for(request, exception)
        return None
