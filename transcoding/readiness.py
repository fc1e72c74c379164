"""``stream.ready``: the moment a session becomes playable, told to its waiting viewers once.

``stream.live`` fires when nginx-rtmp accepts the publish; the first segment is published a
chunk (plus transcoding) later, and a player that starts on ``stream.live`` only finds a 404 at
the edge. The assembler calls ``segments_published`` right after it has written the playlists
for newly published segments (``assembler._round``, after the masters are written). Once
every rendition of the session's ladder has a published segment (the master and every media
playlist then list it), the public event ``stream.ready`` goes out
(``livestream.events.send_event_on_commit``) with ``stream``, ``session``, ``playback_url`` and
``renditions``; the watch page starts its player on it (static/js/player.js, docs/viewer.md).

Once per session, across workers: the first caller that finds every rendition published wins
``state.claim_once(session, "ready")`` (Redis SET NX); others send nothing. A gap-only advance
publishes nothing and sends nothing. A process remembers the sessions it has seen ready, so
the steady state costs no Redis command per chunk (first look per process: a GET of the ladder,
one of the source and the SET NX). If Redis loses the session's state (a new numbering
generation, state.py) the claim is lost with it and the event may be sent once more: players
ignore ``stream.ready`` while they already play. Never raises: viewers fall back to polling
(docs/viewer.md) if the event is lost.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from livestream.events import send_event_on_commit
from transcoding import state

if TYPE_CHECKING:
    from transcoding.assembler import Layout
    from transcoding.hls import Entry

logger = logging.getLogger(__name__)

EVENT = "stream.ready"
_CLAIM = "ready"
# Sessions this process has seen ready (their claim is taken): skipped without Redis.
_KNOWN_READY: OrderedDict[int, None] = OrderedDict()
_KNOWN_MAX = 4096


def _remember(session_id: int) -> None:
    _KNOWN_READY[session_id] = None
    _KNOWN_READY.move_to_end(session_id)
    while len(_KNOWN_READY) > _KNOWN_MAX:
        _KNOWN_READY.popitem(last=False)


def forget_process_memory() -> None:
    """Tests: behave like a fresh worker process."""
    _KNOWN_READY.clear()


def stream_id_of(layout: Layout) -> int:
    """``live/<stream>`` -> stream id (streams.playback.stream_prefix)."""
    return int(layout.stream_prefix.rstrip("/").rsplit("/", 1)[1])


def event_data(layout: Layout, renditions: Iterable[str]) -> dict[str, Any]:
    stream_id = stream_id_of(layout)
    return {
        "stream": stream_id,
        "session": layout.session_id,
        "playback_url": f"{settings.HLS_EDGE_URL}/{layout.stream_prefix}/master.m3u8",
        "renditions": list(renditions),
    }


def segments_published(layout: Layout, new: list[Entry]) -> bool:
    """Called by the assembler after the playlists listing ``new`` were written. Sends
    ``stream.ready`` if this is the first time every rendition has a published segment.
    Returns whether this call sent it."""
    session_id = layout.session_id
    if not new or session_id in _KNOWN_READY:
        return False
    try:
        ladder = state.ladder(session_id)
        if not ladder or state.source(session_id) is None:  # playlists were not written
            return False
        covered = {name for entry in new for name, size in entry.sizes.items() if size > 0}
        names = [r.name for r in ladder]
        if not all(name in covered for name in names):
            return False
        won = state.claim_once(session_id, _CLAIM)
        _remember(session_id)
        if not won:
            return False
        send_event_on_commit(stream_id_of(layout), EVENT, event_data(layout, names))
    except Exception:  # the assembler's work is done; viewers fall back to polling
        logger.exception("stream.ready not sent", extra={"session": session_id})
        return False
    logger.info("stream ready", extra={"session": session_id, "ctx": {"renditions": names}})
    return True
