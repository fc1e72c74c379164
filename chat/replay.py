"""The chat of a replay: the messages sent during a finished broadcast, placed on the replay's
timeline by their program date-time (``Message.pdt``, ADR 0035), and its exports.

A message belongs to a replay when its program date-time falls within the replay's first and
last segment (``streams.replays.ReplayTimeline``); its offset is where the replay shows that
moment. Deleted messages never appear. Exports: JSON (``export_json``) and WebVTT
(``export_webvtt``: one cue per message, from its offset for CHAT_REPLAY_CUE_S seconds, text
"name: message" escaped per WebVTT).
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from chat import selectors
from chat.models import Message
from streams.models import Stream, StreamSession
from streams.replays import ReplayTimeline, replay_timeline


@dataclass(frozen=True)
class ReplayChat:
    stream: Stream
    session: StreamSession
    timeline: ReplayTimeline

    def messages(self) -> QuerySet[Message]:
        """Visible messages of the replay, in the order they were sent (program date-time, id)."""
        return (
            Message.objects.filter(
                stream=self.stream,
                deleted_at__isnull=True,
                pdt__gte=self.timeline.start,
                pdt__lte=self.timeline.end,
            )
            .select_related("user")
            .order_by("pdt", "id")
        )

    def payloads(self, rows: Iterable[Message]) -> Iterator[dict[str, Any]]:
        """The ``chat.message`` objects of ``rows`` with ``offset_s`` (seconds into the replay)."""
        moderators = selectors.moderator_ids(self.stream)
        for m in rows:
            offset = self.timeline.offset_of(m.pdt)
            if offset is None:  # cannot happen for rows of messages(); never export a wrong time
                continue
            yield {**selectors.message_payload(m, self.stream, moderators), "offset_s": offset}


def replay_chat(stream: Stream, session: StreamSession) -> ReplayChat:
    return ReplayChat(stream, session, replay_timeline(session))


def export_json(chat: ReplayChat) -> dict[str, Any]:
    """The whole chat of the replay as one JSON document."""
    return {
        "stream": chat.stream.pk,
        "session": chat.session.pk,
        "start": chat.timeline.start.isoformat(),
        "duration_s": round(chat.timeline.duration_s, 3),
        "messages": list(chat.payloads(chat.messages().iterator(chunk_size=2000))),
    }


def vtt_time(seconds: float) -> str:
    """A WebVTT timestamp, ``HH:MM:SS.mmm``."""
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def vtt_text(text: str) -> str:
    """Cue text as WebVTT reads it back as ``text``: "&", "<" and ">" as character references
    (so no tag, and never "-->"), and no blank line (which would end the cue)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = [line.strip() for line in _LINE_BREAKS.split(escaped)]
    return "\n".join(line for line in lines if line)


def export_webvtt(chat: ReplayChat) -> Iterator[str]:
    """The chat as a WebVTT file (in pieces, for a streaming response). Cue identifiers are the
    message ids; each cue lasts CHAT_REPLAY_CUE_S seconds, cut at the replay's end."""
    end = chat.timeline.duration_s
    yield (
        "WEBVTT - chat of the replay\n\n"
        f"NOTE stream {chat.stream.pk}, session {chat.session.pk}, "
        f"starts at {chat.timeline.start.isoformat()}\n\n"
    )
    for m in chat.payloads(chat.messages().iterator(chunk_size=2000)):
        start = float(m["offset_s"])
        stop = max(min(start + settings.CHAT_REPLAY_CUE_S, end), start + 0.001)
        text = vtt_text(f"{m['display_name']}: {m['text']}")
        yield f"{m['id']}\n{vtt_time(start)} --> {vtt_time(stop)}\n{text}\n\n"
