"""nginx-rtmp's control interface (``rtmp_control``), the one module that asks the ingest
server to act on a live connection.

Every ingest node's supervisor registers where its nginx-rtmp answers ``/control``
(``local_control_url``: ``INGEST_NODE_CONTROL_URL``, else ``RTMP_CONTROL_URL``, else
``RTMP_STAT_BIND:RTMP_STAT_PORT`` next to the statistics page, never exposed) in Redis
(``state.register_node``). A caller that knows the node of a publish (the web dropping the
publisher of a deleted or re-keyed stream: ``node_of``) reaches that node's URL; the ingest's
own calls (``node=None``) use the local one. Where the web role runs on another host than
nginx-rtmp (compose, Kubernetes) nginx-rtmp serves only ``/control`` on
``RTMP_CONTROL_BIND``, to requests that carry the callback secret. An accepted publish is
renamed to its internal name (``s<session>c<connection>``,
``transcoding.services.internal_name``), so that name, not the secret key, identifies it here.
"""

from __future__ import annotations

import logging

import redis.exceptions
import requests
from django.conf import settings

from transcoding import state

logger = logging.getLogger(__name__)

APP = "live"
TIMEOUT_S = 3.0


def local_control_url() -> str:
    """Where this node's nginx-rtmp answers ``/control`` (what its supervisor registers)."""
    return (
        settings.INGEST_NODE_CONTROL_URL
        or settings.RTMP_CONTROL_URL
        or f"http://{settings.RTMP_STAT_BIND}:{settings.RTMP_STAT_PORT}/control"
    )


def node_of(session_id: int, connection: int) -> str | None:
    """The ingest node that holds connection ``connection`` of the session (None: unknown,
    or Redis unreachable)."""
    try:
        return state.ingest_node(session_id, connection)
    except redis.exceptions.RedisError:
        return None


def _base_url(node: str | None) -> str | None:
    if node is None:
        return local_control_url()
    try:
        return state.node_control_url(node)
    except redis.exceptions.RedisError:
        return None


def drop_publisher(name: str, *, node: str | None = None) -> bool:
    """Disconnect the publisher of the internal stream ``name`` on ingest node ``node`` (None:
    this node's nginx-rtmp). True when nginx-rtmp dropped a connection; False when none was
    publishing under that name, the node is not registered or the server did not answer (the
    caller's state change stands either way: the key is already refused)."""
    base = _base_url(node)
    if base is None:
        logger.warning("rtmp control: ingest node not registered", extra={"ctx": {"name": name, "node": node}})
        return False
    try:
        response = requests.get(
            f"{base}/drop/publisher",
            params={"app": APP, "name": name},
            headers={"X-Rtmp-Control-Secret": settings.RTMP_CALLBACK_SECRET},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        logger.warning(
            "rtmp control unreachable: %s", exc.__class__.__name__, extra={"ctx": {"name": name, "node": node}}
        )
        return False
    # nginx-rtmp answers 200 with the number of dropped connections, 404 when there were none.
    dropped = response.status_code == 200 and response.text.strip() not in ("", "0")
    logger.info("rtmp publisher drop", extra={"ctx": {"name": name, "node": node, "dropped": dropped}})
    return dropped
