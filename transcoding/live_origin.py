"""The live origin of low-latency sessions (ADR 0031): LL-HLS media playlists and partial
segments, served from Redis behind the edge cache.

A low-latency session's media playlists list, after the published window, the partial segments
of the chunk being transcoded (``state.add_partial`` puts them in Redis as the encoder cuts
them) and a preload hint for the next one. Requests that ask for what does not exist yet are
held, not refused (RFC 8216bis 6.2.5.2, "Blocking Playlist Reload", and preload hints):

- a playlist request with ``_HLS_msn=M`` (and ``_HLS_part=P``) is answered once the playlist
  contains segment M (part P of segment M);
- a part request for the next part of the chunk being transcoded is answered once it exists.

A playlist request with ``_HLS_skip=YES`` (or ``v2``) gets the Playlist Delta Update of the
playlist it would otherwise get (RFC 8216bis 6.2.5.1, ``hls.render_low_latency``): hls.js asks
for one on every reload once the playlist advertises CAN-SKIP-UNTIL, which every low-latency
playlist does, and the DVR window's ~900 segments shrink to the last few.

Each held request waits on the session's pub/sub channel (``state.events_channel``: one
message per part and per assembler commit), not on a timer; a wake-up re-reads Redis (one
pipelined read) and answers or waits again, for at most ``LL_HOLD_SECONDS``. One subscriber
connection per process serves every held request of that process (``_Wakeups``); a re-check
every second covers a message published between a read and the subscription.

The edge (nginx) collapses identical requests (the same playlist with the same ``_HLS_msn`` and
``_HLS_part``, the same part): N viewers waiting for the next part cost one held request here.

Sessions in the normal latency mode (MPEG-TS) keep the plain live playlists of ``assembler``.

Both views answer 404 unless the path's tag is the session's (``streams.playback.valid_tag``,
a constant-time comparison): a session's playlists and parts are reachable only by those who
were given its path, as its objects in the bucket are (ADR 0034, "Privacy of the preview").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from livestream import metrics
from streams import playback
from transcoding import assembler, hls, state, storage
from transcoding.hls import Entry

logger = logging.getLogger(__name__)

PART_RE = re.compile(r"^seg_(?:(\d+)_)?(\d+)\.p(\d+)\.m4s$")
# Parts never change once listed; a part answer may be cached as long as any segment.
PART_CACHE = storage.SEGMENT_CACHE
RECHECK_S = 1.0


@dataclass(frozen=True)
class Rendered:
    text: str
    edge: hls.Edge | None  # None: a standard (TS) playlist, no blocking
    target: int
    ended: bool


def render(stream_id: int, session_id: int, rendition: str, kind: str, skip: hls.Skip | None = None) -> Rendered | None:
    """The media playlist ``kind`` (``live`` | ``index``) of ``rendition``, LL-HLS for a
    low-latency session (its Playlist Delta Update with ``skip``, ``hls.skip_directive``); None
    when the session has no live state (S3 has the playlists). Normal-latency (TS) playlists
    advertise no CAN-SKIP-UNTIL, so ``skip`` does not apply to them (6.2.5.1: ignored)."""
    part_target = state.low_latency(session_id)
    if part_target is None:
        text = assembler.live_playlist(stream_id, session_id, rendition, kind)
        return Rendered(text, None, target=0, ended=False) if text is not None else None
    if state.stream_of(session_id) != stream_id:
        return None
    names = [r.name for r in state.ladder(session_id) or []]
    if rendition not in names:
        return None
    dvr = assembler.dvr_entries() if kind == "index" and settings.DVR_WINDOW_SECONDS > 0 else 0
    live = state.live_edge(session_id, names, dvr=dvr, recent=_RECENT)
    entries = live.window.entries
    if kind == "index" and dvr:
        entries = assembler.dvr_window(entries, settings.DVR_WINDOW_SECONDS)
    if not entries:
        return None
    target = max(assembler.floor_target(), live.window.target)
    epoch = entries[-1].epoch
    ll = _low_latency(entries, live, rendition=rendition, names=names, part_target=part_target, epoch=epoch)
    ended = live.window.final
    text = hls.render_low_latency(entries, ll, target=target, ended=ended, rendition=rendition, skip=skip)
    return Rendered(text, hls.edge_of(entries, ll, ended=ended), target, ended)


# Segments (counted from the newest) whose parts a playlist may list: parts older than three
# target durations are not listed (RFC 8216bis 6.2.2); 1 s chunks make it at most 6 segments.
_RECENT = 6


def _low_latency(
    entries: list[Entry],
    live: state.LiveEdge,
    *,
    rendition: str,
    names: list[str],
    part_target: float,
    epoch: int,
) -> hls.LowLatency:
    """The parts part of an LL playlist: recent segments' parts, the next chunk's parts so far,
    the preload hint and the other renditions' reports."""

    def parts_of(seq: int, name: str) -> list[hls.Part]:
        got = live.parts.get((seq, name))
        if got is None:
            return []
        return [hls.Part(hls.part_name(seq, epoch, i), p.duration, p.independent) for i, p in enumerate(got.parts)]

    # The recent segments' parts (hls.listed_parts keeps those within three target durations).
    listed = {e.index: parts for e in entries[-_RECENT:] if (parts := parts_of(e.seq, rendition))}
    nxt = live.next_seq
    pending = parts_of(nxt, rendition)
    meta, last = live.next_meta, entries[-1]
    disc = bool(meta is not None and meta.disc) or live.pending_disc
    # The segment in progress is dated before its first part (it continues the last one; after a
    # discontinuity its own date is known once the chunk is complete: its parts wait till then).
    wall = (meta.wall or None if meta is not None else None) if disc else round(last.wall + last.duration, 3)
    if wall is None:
        pending = []
    ended = live.window.final
    current = live.parts.get((nxt, rendition))
    if ended:
        hint = None
    elif current is not None and current.ended:
        hint = hls.part_name(nxt + 1, epoch, 0)
    else:
        hint = hls.part_name(nxt, epoch, len(pending))
    reports = []
    for other in names:
        if other == rendition:
            continue
        theirs = live.parts.get((nxt, other))
        if theirs is not None and theirs.parts:
            reports.append(hls.RenditionReport(f"../{other}/live.m3u8", last.index + 1, len(theirs.parts) - 1))
        else:
            previous = live.parts.get((entries[-1].seq, other))
            count = len(previous.parts) if previous is not None else 0
            reports.append(hls.RenditionReport(f"../{other}/live.m3u8", last.index, count - 1))
    first = current.parts[0] if current is not None and current.parts else None
    return hls.LowLatency(
        part_target,
        listed,
        pending,
        hint,
        reports,
        pending_wall=wall,
        pending_disc=disc,
        pending_init=first.init if first is not None else "",
    )


# --- Held requests ---------------------------------------------------------------------------


class _Wakeups:
    """One pub/sub connection per process (event loop): ``wait(channel)`` returns when a message
    arrives on ``channel`` or ``timeout`` passes. Channels are subscribed while someone waits."""

    def __init__(self) -> None:
        self.client: aioredis.Redis | None = None
        self.pubsub: aioredis.client.PubSub | None = None
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def _ensure(self) -> aioredis.client.PubSub:
        if self.pubsub is None:
            # A plain connection even with REDIS_CLUSTER: PUBLISH reaches every node of a cluster.
            self.client = aioredis.Redis.from_url(settings.REDIS_URL)
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        return self.pubsub

    async def _read(self) -> None:
        while self.waiters and self.pubsub is not None:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except (redis.exceptions.RedisError, OSError):
                await asyncio.sleep(0.5)  # waiters fall back on their re-check
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            for event in self.waiters.get(channel, ()):
                event.set()

    def register(self, channel: str) -> asyncio.Event:
        event = asyncio.Event()
        self.waiters.setdefault(channel, set()).add(event)
        return event

    async def subscribe(self, channel: str) -> None:
        pubsub = await self._ensure()
        await pubsub.subscribe(channel)
        if self.reader is None or self.reader.done():  # reads once something is subscribed
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def unregister(self, channel: str, event: asyncio.Event) -> None:
        waiting = self.waiters.get(channel)
        if waiting is None:
            return
        waiting.discard(event)
        if waiting:
            return
        del self.waiters[channel]
        if self.waiters:
            if self.pubsub is not None:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await self.pubsub.unsubscribe(channel)
            return
        await self.close()  # nobody waits: the connection goes (a sync server's loop ends with the request)

    async def close(self) -> None:
        reader, pubsub, client = self.reader, self.pubsub, self.client
        self.reader = self.pubsub = self.client = None
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for closing in (pubsub, client):
            if closing is not None:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await closing.aclose()


_wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups] = weakref.WeakKeyDictionary()


def _hub() -> _Wakeups:
    """The running event loop's wake-ups (uvicorn: one loop per process; a sync server runs
    each async request in a loop of its own)."""
    loop = asyncio.get_running_loop()
    hub = _wakeups.get(loop)
    if hub is None:
        hub = _wakeups[loop] = _Wakeups()
    return hub


async def _hold(session_id: int, ready: object, deadline: float, *, kind: str) -> object:
    """Call ``ready()`` (sync, in a thread) until it returns something true or ``deadline``;
    between calls wait for the session's next event (or ``RECHECK_S``). Returns the last result.
    ``kind`` (``playlist`` | ``part``) labels the metrics (held now, hold time per outcome)."""
    check = sync_to_async(ready, thread_sensitive=False)  # type: ignore[call-overload]
    hub = _hub()
    channel = state.events_channel(session_id)
    event = hub.register(channel)
    started, result = time.monotonic(), None
    metrics.ll_hold_started(kind)
    try:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await hub.subscribe(channel)
        while True:
            event.clear()
            result = await check()
            remaining = deadline - time.monotonic()
            if result or remaining <= 0:
                return result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, RECHECK_S))
    finally:
        metrics.ll_hold_ended(kind, "ok" if result else "timeout", time.monotonic() - started)
        await hub.unregister(channel, event)


# --- Views -------------------------------------------------------------------------------------


def _text_response(text: str, status: int, cache: str) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    response["Cache-Control"] = cache
    return response


async def playlist(  # noqa: PLR0911 - each refusal is one early return
    request: HttpRequest, *, stream_id: int, session_id: int, tag: str, rendition: str, kind: str
) -> HttpResponse:
    """A live media playlist; with ``_HLS_msn``/``_HLS_part`` (RFC 8216bis 6.2.5.2) held until
    it contains that segment or part; with ``_HLS_skip`` its Playlist Delta Update (6.2.5.1)."""
    if not playback.valid_tag(stream_id, session_id, tag):
        return _text_response("not found\n", 404, storage.PLAYLIST_CACHE)
    try:
        msn, part = hls.directive(request.GET.get("_HLS_msn")), hls.directive(request.GET.get("_HLS_part"))
    except ValueError:
        return _text_response("_HLS_msn and _HLS_part must be decimal integers (RFC 8216bis 4.2)\n", 400, "no-store")
    skip = hls.skip_directive(request.GET.get("_HLS_skip"))

    def current() -> Rendered | None:
        try:
            return render(stream_id, session_id, rendition, kind, skip) if kind in {"live", "index"} else None
        except redis.exceptions.RedisError:
            return None

    rendered = await sync_to_async(current, thread_sensitive=False)()
    if rendered is None:
        return _text_response("not live\n", 404, storage.PLAYLIST_CACHE)
    if rendered.edge is None or (msn is None and part is None):
        return _playlist_response(rendered, blocking=False)
    error = hls.blocking_error(rendered.edge, msn, part, request.GET.get("_HLS_skip"))
    if error is not None or msn is None:
        return _text_response(f"{error}\n", 400, "no-store")
    wanted = msn

    def answers(now: Rendered | None) -> bool:
        return now is None or now.edge is None or hls.blocking_satisfied(now.edge, wanted, part)

    def decided() -> tuple[Rendered | None] | None:
        now = current()
        return (now,) if answers(now) else None

    if not answers(rendered):
        deadline = time.monotonic() + min(settings.LL_HOLD_SECONDS, 3 * rendered.target)
        held = await _hold(session_id, decided, deadline, kind="playlist")
        if not isinstance(held, tuple) or held[0] is None:
            # Not there within three target durations: the stream stalled (RFC 8216bis 6.2.5.2).
            return _text_response("the requested segment or part is not available yet\n", 503, "no-store")
        rendered = held[0]
    return _playlist_response(rendered, blocking=True)


def _playlist_response(rendered: Rendered, *, blocking: bool) -> HttpResponse:
    response = HttpResponse(rendered.text, content_type=storage.PLAYLIST_TYPE)
    if blocking and rendered.edge is not None:
        # A blocking answer names one moment of the stream: the edge may keep it (RFC 8216bis
        # 6.2.5.2 suggests six target durations); N viewers asking the same cost one request.
        response["Cache-Control"] = f"public, max-age={6 * rendered.target}"
    else:
        response["Cache-Control"] = storage.PLAYLIST_CACHE
    return response


async def part(
    request: HttpRequest, *, stream_id: int, session_id: int, tag: str, rendition: str, name: str
) -> HttpResponse:
    """A partial segment from Redis; the next part of the chunk being transcoded (what a
    preload hint names) is held until it exists."""
    match = PART_RE.match(f"{name}.m4s")
    if match is None or not playback.valid_tag(stream_id, session_id, tag):
        return _text_response("not found\n", 404, "no-store")
    epoch, seq, index = int(match[1] or 0), int(match[2]), int(match[3])

    def lookup() -> bytes | bool | None:
        """The part's bytes; False when it will never exist (the chunk ended before it, another
        session or generation); None while it may still come."""
        try:
            got = state.part_lookup(session_id, seq, rendition, index)  # one round trip
        except redis.exceptions.RedisError:
            return False
        if got.stream != stream_id or (got.epoch or 0) != epoch:
            return False
        if got.data is not None:
            return got.data
        if got.known.ended or index > len(got.known.parts) or seq < got.next_seq - _RECENT:
            return False
        return None

    def decided() -> tuple[bytes | bool] | None:
        found = lookup()
        return None if found is None else (found,)

    found = await sync_to_async(lookup, thread_sensitive=False)()
    if found is None:  # the next part (a preload hint): held until it exists
        outcome = await _hold(session_id, decided, time.monotonic() + settings.LL_HOLD_SECONDS, kind="part")
        found = outcome[0] if isinstance(outcome, tuple) else None
    if not isinstance(found, bytes):
        return _text_response("no such part\n", 404, "no-store")
    response = HttpResponse(found, content_type=storage.CMAF_SEGMENT_TYPE)
    response["Cache-Control"] = PART_CACHE
    return response
