"""The one place that announces domain events to the outside world.

Services call ``send_event_on_commit``; nothing else broadcasts. After the surrounding
transaction commits, an event goes to:

- the channel layer group ``stream.<id>`` (watch pages and chat sockets of that stream
  relay it to browsers), as ``{"type": "stream.event", "event": <name>, "data": {...}}``;
- webhooks registered for the stream's owner (``webhooks.services.enqueue_deliveries``),
  when the webhooks app is installed.

Event names: ``stream.live``, ``stream.offline``, ``replay.ready``, ``viewers.count``,
``chat.*`` (chat uses its own group fan-out but the same group name).
"""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

WEBHOOK_EVENTS = frozenset({"stream.live", "stream.offline", "replay.ready"})


def stream_group(stream_id: int) -> str:
    return f"stream.{stream_id}"


def _broadcast(stream_id: int, event: str, data: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(stream_group(stream_id), {"type": "stream.event", "event": event, "data": data})
    except Exception:  # viewers miss one push; never fail the caller's committed work
        logger.exception("broadcast failed", extra={"stream": stream_id, "ctx": {"event": event}})


def _webhooks(stream_id: int, event: str, data: dict[str, Any]) -> None:
    if event not in WEBHOOK_EVENTS:
        return
    try:
        from webhooks.services import enqueue_deliveries
    except ImportError:
        return
    enqueue_deliveries(stream_id=stream_id, event=event, data=data)


def send_event_on_commit(stream_id: int, event: str, data: dict[str, Any]) -> None:
    """Announce ``event`` for ``stream_id`` once the current transaction commits."""

    def send() -> None:
        _broadcast(stream_id, event, data)
        _webhooks(stream_id, event, data)

    transaction.on_commit(send)
