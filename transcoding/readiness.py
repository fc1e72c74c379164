"""``stream.ready``: the moment a session becomes playable, told to its waiting viewers once.

``stream.live`` fires when nginx-rtmp accepts the publish; the first segment is published a
chunk (plus transcoding) later, and a player that starts on ``stream.live`` only finds a 404 at
the edge. The session is playable once a published segment lists every rendition of its ladder
and the masters are written: the assembler asks for the claim when it stages such a segment
(``state.Staged.claim_ready``), the step that commits it takes the claim (``once:ready``, SET
NX in the same atomic step, so across workers exactly one step wins it) and makes the masters
due, and the pass after it writes the masters and then calls ``announce``.

``announce`` sends the public event ``stream.ready``
(``livestream.events.send_event_on_commit``) with ``stream``, ``session``, ``playback_url`` and
``renditions``; the watch page starts its player on it (static/js/player.js, docs/viewer.md).
If Redis loses the session's state the claim is lost with it and the event may be sent once
more: players ignore ``stream.ready`` while they already play. Never raises: viewers fall back
to polling (docs/viewer.md) if the event is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from livestream.events import send_event_on_commit

if TYPE_CHECKING:
    from transcoding.assembler import Layout

logger = logging.getLogger(__name__)

EVENT = "stream.ready"


def stream_id_of(layout: Layout) -> int:
    """``live/<stream>`` -> stream id (streams.playback.stream_prefix)."""
    return int(layout.stream_prefix.rstrip("/").rsplit("/", 1)[1])


def event_data(layout: Layout, renditions: Iterable[str], *, preview: bool = False) -> dict[str, Any]:
    """A private preview (ADR 0034) has no stable master: its own master is the playback URL
    (the event reaches only those who may see the preview)."""
    prefix = layout.session_prefix if preview else layout.stream_prefix
    return {
        "stream": stream_id_of(layout),
        "session": layout.session_id,
        "playback_url": f"{settings.HLS_EDGE_URL}/{prefix}/master.m3u8",
        "renditions": list(renditions),
    }


def announce(layout: Layout, renditions: list[str], *, preview: bool = False) -> None:
    """Tell the session's viewers it is playable (called once per session, after the masters
    listing every rendition were written)."""
    data = event_data(layout, renditions, preview=preview)
    try:
        send_event_on_commit(data["stream"], EVENT, data)
    except Exception:  # the assembler's work is done; viewers fall back to polling
        logger.exception("stream.ready not sent", extra={"session": layout.session_id})
        return
    logger.info("stream ready", extra={"session": layout.session_id, "ctx": {"renditions": renditions}})
