"""Local development: `make run`. Debug stays off unless DJANGO_DEBUG=1."""

from livestream.settings.base import *  # noqa: F403
from livestream.settings.base import env

# Webhook receivers on this machine (127.0.0.1) are the normal case in development.
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=True)
# Restream targets on this machine (a second nginx-rtmp) are normal in development too.
SIMULCAST_ALLOW_PRIVATE = env.bool("SIMULCAST_ALLOW_PRIVATE", default=True)
