"""nginx-rtmp's control interface (``rtmp_control``), the one module that asks the ingest
server to act on a live connection.

It answers on 127.0.0.1:``RTMP_STAT_PORT`` next to the statistics page (never exposed), or at
``RTMP_CONTROL_URL`` where the web role runs on another host than nginx-rtmp (the compose
stack: nginx-rtmp then serves only ``/control`` on ``RTMP_CONTROL_BIND``, to requests that
carry the callback secret). An
accepted publish is renamed to its internal name (``s<session>c<connection>``,
``transcoding.services.internal_name``), so that name, not the secret key, identifies it here.
"""

from __future__ import annotations

import logging

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

APP = "live"
TIMEOUT_S = 3.0


def _base_url() -> str:
    return settings.RTMP_CONTROL_URL or f"http://127.0.0.1:{settings.RTMP_STAT_PORT}/control"


def drop_publisher(name: str) -> bool:
    """Disconnect the publisher of the internal stream ``name``. True when nginx-rtmp dropped
    a connection; False when none was publishing under that name or the server did not answer
    (the caller's state change stands either way: the key is already refused)."""
    try:
        response = requests.get(
            f"{_base_url()}/drop/publisher",
            params={"app": APP, "name": name},
            headers={"X-Rtmp-Control-Secret": settings.RTMP_CALLBACK_SECRET},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        logger.warning("rtmp control unreachable: %s", exc.__class__.__name__, extra={"ctx": {"name": name}})
        return False
    # nginx-rtmp answers 200 with the number of dropped connections, 404 when there were none.
    dropped = response.status_code == 200 and response.text.strip() not in ("", "0")
    logger.info("rtmp publisher drop", extra={"ctx": {"name": name, "dropped": dropped}})
    return dropped
