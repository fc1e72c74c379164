"""The one place that announces domain events to the outside world.

Services call ``send_event_on_commit``; nothing else broadcasts. After the surrounding
transaction commits, an event goes to:

- the channel layer group of its audience, as
  ``{"type": "stream.event", "event": <name>, "data": {...}}``:
  - public events go to ``stream.<id>`` (``stream_group``), which the chat hub relays to every
    socket of the stream's watch pages, anonymous ones included;
  - owner-only events (``analytics.*``: ingest health, viewer samples, session metadata) go to
    ``stream.<id>.owner`` (``owner_group``), which reaches only the owner's sockets
    (``/ws/streams/<id>/owner/``, owner or staff, checked on connect). The hub also refuses to
    relay an owner-only event that reaches a public group by mistake;
- webhooks registered for the stream's owner (``webhooks.services.enqueue_deliveries``),
  when the webhooks app is installed.

Event names: public ``stream.live``, ``stream.ready``, ``stream.offline``, ``replay.ready``,
``viewers.count``, ``chat.*`` (chat uses its own group fan-out but the same group name);
owner-only ``analytics.ingest``, ``analytics.viewers``, ``analytics.session`` (any ``analytics.*``),
``simulcast.status`` (a restream target's status), ``ingest.findings`` (the ingest doctor's advice)
and ``clip.suggested`` (a highlight offered to the streamer). ``clip.created`` and
``clip.deleted`` are public.

``stream.live`` says a publish was accepted; ``stream.ready`` says the session is playable (the
first segment of every rendition is listed at the edge; sent once per session by
``transcoding.readiness``, data ``stream``, ``session``, ``playback_url``, ``renditions``). Waiting
watch pages start their player on it. It is not a webhook event (ADR 0018): it is for players,
and a server-side receiver already gets ``stream.live`` with the playback URL.
"""

import logging
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

# stream.ready is socket-only (players); see the module doc.
WEBHOOK_EVENTS = frozenset(
    {
        "stream.live",
        "stream.offline",
        "replay.ready",
        "clip.created",
        "clip.deleted",
        "clip.suggested",
        "simulcast.status",
        "ingest.findings",
    }
)
# Events only the stream's owner (and staff) may see: the analytics API answers 404 to anybody
# else for the same data.
OWNER_ONLY_PREFIXES = ("analytics.", "simulcast.", "ingest.", "clip.suggested")

Audience = Literal["public", "owner"]


def stream_group(stream_id: int) -> str:
    """The public group: every watch page of the stream."""
    return f"stream.{stream_id}"


def owner_group(stream_id: int) -> str:
    """The owner's group: the stream owner's (or staff's) analytics sockets only."""
    return f"stream.{stream_id}.owner"


def is_owner_only(event: str) -> bool:
    return event.startswith(OWNER_ONLY_PREFIXES)


def audience_of(event: str) -> Audience:
    return "owner" if is_owner_only(event) else "public"


def _broadcast(stream_id: int, event: str, data: dict[str, Any], audience: Audience) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    group = owner_group(stream_id) if audience == "owner" else stream_group(stream_id)
    try:
        async_to_sync(layer.group_send)(group, {"type": "stream.event", "event": event, "data": data})
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


def send_event_on_commit(stream_id: int, event: str, data: dict[str, Any], *, audience: Audience | None = None) -> None:
    """Announce ``event`` for ``stream_id`` once the current transaction commits.

    ``audience`` defaults to the event's own (``audience_of``); an owner-only event can never
    be sent to the public group (asking for it raises ValueError)."""
    resolved = audience or audience_of(event)
    if resolved == "public" and is_owner_only(event):
        raise ValueError(f"{event} is owner-only; it cannot go to the public group")

    def send() -> None:
        _broadcast(stream_id, event, data, resolved)
        _webhooks(stream_id, event, data)

    transaction.on_commit(send)
