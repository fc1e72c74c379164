"""ASGI entry point: HTTP through Django, WebSockets through Channels.

``get_asgi_application()`` runs first so that the app registry is ready before consumers
(and their models) are imported.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.local")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.auth import BrowserOriginValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from livestream import metrics  # noqa: E402

# GET /metrics is answered before Django (livestream/metrics.py, ADR 0020).
application = metrics.asgi(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Origin must be an allowed host when present (browsers); see chat/auth.py.
            "websocket": BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
