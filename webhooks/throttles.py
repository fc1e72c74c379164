"""The "send test event" limit, shared by the API action and the dashboard button.

Each test event is an outgoing HTTP request to a URL the user chose, so both entry points draw
from one per-user budget (``WEBHOOK_TEST_RATE``, DRF rate syntax, cache key of scope
``webhook_test``): clicking in the dashboard and calling the API do not add up to twice the rate.
"""

from django.conf import settings
from django.http import HttpRequest

from livestream.throttles import UserRateThrottle


class WebhookTestThrottle(UserRateThrottle):
    scope = "webhook_test"

    def get_rate(self) -> str:
        return str(settings.WEBHOOK_TEST_RATE)


def allow_test_event(request: HttpRequest) -> float | None:
    """Count one test event of the signed-in ``request.user`` (dashboard): None when allowed,
    else the seconds to wait."""
    throttle = WebhookTestThrottle()
    if throttle.allow_request(request, None):  # type: ignore[arg-type]  # reads only .user (and META)
        return None
    return throttle.wait() or 1.0
