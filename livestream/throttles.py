"""API throttles keyed on the project's one notion of the client's address.

DRF's own ``get_ident`` believes the left-most X-Forwarded-For entry (or REMOTE_ADDR, which
may be a proxy): either lets one client pose as many, or many share one budget. These use
``livestream.clientaddr`` instead (TRUSTED_PROXIES). Settings name them in
DEFAULT_THROTTLE_CLASSES; views needing a scope or a rate of their own subclass them.

A module of its own, importing nothing of DRF's views: DRF resolves DEFAULT_THROTTLE_CLASSES
while ``rest_framework.views`` is being imported, so these classes must not live in a module
that imports it (``livestream.api`` does).
"""

from rest_framework import throttling
from rest_framework.request import Request

from livestream import clientaddr


class _ClientAddressIdent:
    def get_ident(self, request: Request) -> str:
        return clientaddr.client_ip(request)


class AnonRateThrottle(_ClientAddressIdent, throttling.AnonRateThrottle):
    """Anonymous requests, per client address (rate ``anon``)."""


class UserRateThrottle(_ClientAddressIdent, throttling.UserRateThrottle):
    """Per signed-in user; anonymous requests per client address (rate ``user``)."""


class ScopedRateThrottle(_ClientAddressIdent, throttling.ScopedRateThrottle):
    """Per user or client address, at the rate of the view's ``throttle_scope``."""
