"""Local development: `make run`. Debug stays off unless DJANGO_DEBUG=1."""

from livestream.settings.base import *  # noqa: F403
