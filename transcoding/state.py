"""Live pipeline state in Redis (the only state shared by ingest, workers and the assembler).

Keys (all under ``pipe:<session>:`` and expiring after ``PIPELINE_STATE_TTL_SECONDS``):

- ``seq``             INCR counter: next chunk number of the session (continues across reconnects)
- ``chunk:<seq>``     hash: start, end (source seconds), wall (ingest wall clock of the first
                      frame, epoch s), conn, disc ("1" on the first chunk of a reconnect), queued;
                      a chunk still being written (progressive transcoding) has no start/end yet
- ``data:<seq>``      raw chunk bytes (TTL ``CHUNK_TTL_SECONDS``); APPENDed while being written
- ``done:<seq>``      JSON result of the transcode: per rendition bytes and duration
- ``gap:<seq>``       "1" when the chunk missed its deadline or failed for good
- ``out:<seq>``       hash rendition -> transcoded TS bytes awaiting the in-order commit
- ``ccstate``         JSON continuity-counter state after the last committed chunk, per rendition
- ``ladder``          JSON renditions, decided once from the first chunk's probe
- ``source``          JSON probed SourceInfo of the session's first connection
- ``source:<conn>``   JSON probed SourceInfo of connection ``conn`` (each connection's first
                      chunk is probed by its segmenter; every chunk's transcode takes its
                      stream parameters from here, not from a probe of the chunk)
- ``codecs``          hash rendition -> RFC 6381 codecs string
- ``published``       list of JSON entries of segments published so far (the assembler's log)
- ``next``            the next seq the assembler waits for
- ``ingest:<conn>``   "running" / last seq when the segmenter of that connection finished
- ``ended``           "1" once the session's publisher is gone for good (finalising)
- ``epoch``           numbering generation: "0" from accept_publish; a new one (ms timestamp)
                      whenever the session's state was found missing (Redis lost it), so
                      segment names of a new generation never collide with published ones
- ``hb:<conn>``       epoch seconds of the last heartbeat of that connection's segmenter
- ``clients``         set of nginx-rtmp client ids mapped to the session (``pipe:client:<id>``)
- ``owner:<conn>``    the supervisor (``host:pid``) segmenting that connection (5 s TTL, refreshed)
- ``started:<seq>:<part>`` / ``lease:<seq>:<part>`` / ``requeued:<seq>:<part>``: a transcode was
                      taken by a worker / its lease while it runs / it was queued again once
- ``recovered``       the published log was reloaded from S3 after a state loss
- ``advance_again``   a publisher could not take the assembler lock: the holder goes round again
- ``once:<name>``     set once by ``claim_once`` (e.g. ``once:ready``: stream.ready was sent)

``pipe:ingest:hb`` (hash ``<session>:<conn>`` -> last heartbeat) lets the reconciler find
every segmenter without scanning keys.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from livestream.redis import redis_client
from transcoding.ladder import Rendition, SourceInfo, dumps, loads

INGEST_QUEUE = "pipe:ingest:queue"
HEARTBEATS = "pipe:ingest:hb"


class StateLost(RuntimeError):  # noqa: N818 - a condition, like PublishRefused
    """The session's Redis state is not the generation (epoch) the caller wrote for: Redis lost
    it (restart without persistence, eviction). The caller starts over with ``ensure_epoch``."""


def key(session_id: int, name: str) -> str:
    return f"pipe:{session_id}:{name}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ttl() -> int:
    return int(settings.PIPELINE_STATE_TTL_SECONDS)


def start_epoch(session_id: int) -> None:
    """A session's first numbering generation is 0 (accept_publish; kept if already set)."""
    redis_client().set(key(session_id, "epoch"), "0", ex=_ttl(), nx=True)


def ensure_epoch(session_id: int) -> int:
    """The session's numbering generation. When its state is gone (Redis restarted or lost it)
    a new generation starts: the current time in ms, so it differs from every earlier one and
    the segments it names never overwrite published objects."""
    r = redis_client()
    value = r.get(key(session_id, "epoch"))
    if value is None:
        r.set(key(session_id, "epoch"), str(int(time.time() * 1000)), ex=_ttl(), nx=True)
        value = r.get(key(session_id, "epoch"))
    return int(value or 0)


def _epoch_or_first(session_id: int) -> int:
    """Callers that do not track generations (unit tests, tools) write into the current one."""
    start_epoch(session_id)
    return epoch(session_id) or 0


def epoch(session_id: int) -> int | None:
    value = redis_client().get(key(session_id, "epoch"))
    return int(value) if value is not None else None


# Run KEYS[2..] writes only while KEYS[1] (the session's epoch) still holds ARGV[1].
_GUARD = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end "
_RESERVE = _GUARD + ("local seq = redis.call('INCR', KEYS[2]) - 1 redis.call('EXPIRE', KEYS[2], ARGV[2]) return seq")
_APPEND = _GUARD + "redis.call('APPEND', KEYS[2], ARGV[2]) redis.call('EXPIRE', KEYS[2], ARGV[3]) return 1"


def _next_seq(session_id: int, epoch_: int) -> int:
    seq = int(redis_client().eval(_RESERVE, 2, key(session_id, "epoch"), key(session_id, "seq"), str(epoch_), _ttl()))
    if seq < 0:
        raise StateLost(f"session {session_id}: epoch {epoch_} is gone")
    return seq


def _check_epoch(session_id: int, epoch_: int | None) -> None:
    if epoch_ is not None and epoch(session_id) != epoch_:
        raise StateLost(f"session {session_id}: epoch {epoch_} is gone")


@dataclass(frozen=True)
class ChunkMeta:
    seq: int
    start: float
    end: float
    wall: float
    conn: int
    disc: bool
    queued: float  # when its task was queued (progressive: when the chunk started)
    complete: bool = True  # False while the segmenter is still writing it (start/end unknown)
    completed: float = 0.0  # when the segmenter finished it (epoch s)
    expect: float = 0.0  # while being written: its expected duration (the connection's last chunk)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def deadline(self) -> float:
        """When the chunk is given up if not transcoded: ``LIVE_DEADLINE_SECONDS`` after the
        ingest finished it (a chunk still being written: after its expected end). A chunk lasts
        one keyframe interval, which may be much longer than ``CHUNK_SECONDS``."""
        if self.complete:
            done = self.completed or self.queued
        else:
            done = self.queued + (self.expect or float(settings.CHUNK_SECONDS))
        return done + float(settings.LIVE_DEADLINE_SECONDS)


def add_chunk(
    session_id: int,
    *,
    data: bytes,
    start: float,
    end: float,
    wall: float,
    conn: int,
    disc: bool,
    epoch: int | None = None,
) -> int:
    """Store a finished chunk and return its session-wide sequence number. With ``epoch``,
    raises ``StateLost`` instead when the session's state is of another generation."""
    r = redis_client()
    now = time.time()
    seq = _next_seq(session_id, epoch if epoch is not None else _epoch_or_first(session_id))
    pipe = r.pipeline()
    pipe.set(key(session_id, f"data:{seq}"), data, ex=int(settings.CHUNK_TTL_SECONDS))
    pipe.hset(
        key(session_id, f"chunk:{seq}"),
        mapping={
            "start": repr(start),
            "end": repr(end),
            "wall": repr(wall),
            "conn": conn,
            "disc": "1" if disc else "0",
            "queued": repr(now),
            "completed": repr(now),
        },
    )
    pipe.expire(key(session_id, f"chunk:{seq}"), _ttl())
    pipe.execute()
    return seq


def reserve_chunk(session_id: int, *, conn: int, disc: bool, epoch: int | None = None, expect: float = 0.0) -> int:
    """Number a chunk the segmenter has started writing (progressive transcoding): its bytes
    follow with ``append_chunk_data``, its timing with ``complete_chunk``. ``expect``: its
    expected duration in seconds (0: ``CHUNK_SECONDS``)."""
    r = redis_client()
    seq = _next_seq(session_id, epoch if epoch is not None else _epoch_or_first(session_id))
    pipe = r.pipeline()
    pipe.hset(
        key(session_id, f"chunk:{seq}"),
        mapping={
            "conn": conn,
            "disc": "1" if disc else "0",
            "queued": repr(time.time()),
            **({"expect": repr(expect)} if expect else {}),
        },
    )
    pipe.expire(key(session_id, f"chunk:{seq}"), _ttl())
    pipe.execute()
    return seq


def append_chunk_data(session_id: int, seq: int, data: bytes, *, epoch: int | None = None) -> None:
    if epoch is None:
        pipe = redis_client().pipeline()
        pipe.append(key(session_id, f"data:{seq}"), data)
        pipe.expire(key(session_id, f"data:{seq}"), int(settings.CHUNK_TTL_SECONDS))
        pipe.execute()
        return
    done = redis_client().eval(
        _APPEND,
        2,
        key(session_id, "epoch"),
        key(session_id, f"data:{seq}"),
        str(epoch),
        data,
        int(settings.CHUNK_TTL_SECONDS),
    )
    if int(done) < 0:
        raise StateLost(f"session {session_id}: epoch {epoch} is gone")


def complete_chunk(
    session_id: int, seq: int, *, start: float, end: float, wall: float, epoch: int | None = None
) -> None:
    """The reserved chunk ``seq`` is fully written (every byte appended)."""
    _check_epoch(session_id, epoch)
    redis_client().hset(
        key(session_id, f"chunk:{seq}"),
        mapping={"start": repr(start), "end": repr(end), "wall": repr(wall), "completed": repr(time.time())},
    )


def chunk_data_from(session_id: int, seq: int, offset: int) -> bytes:
    """The chunk's bytes from ``offset`` on (what was appended since the last read)."""
    value = redis_client().getrange(key(session_id, f"data:{seq}"), offset, -1)
    return value if isinstance(value, bytes) else value.encode()


def chunk_meta(session_id: int, seq: int) -> ChunkMeta | None:
    raw = redis_client().hgetall(key(session_id, f"chunk:{seq}"))
    if not raw:
        return None
    d = {_text(k): _text(v) for k, v in raw.items()}
    complete = "end" in d
    return ChunkMeta(
        seq=seq,
        start=float(d.get("start", 0)),
        end=float(d.get("end", 0)),
        wall=float(d.get("wall", 0)),
        conn=int(d["conn"]),
        disc=d["disc"] == "1",
        queued=float(d["queued"]),
        complete=complete,
        completed=float(d.get("completed", 0)),
        expect=float(d.get("expect", 0)),
    )


def chunk_data(session_id: int, seq: int) -> bytes | None:
    value = redis_client().get(key(session_id, f"data:{seq}"))
    if value is None:
        return None
    return value if isinstance(value, bytes) else value.encode()


def chunk_count(session_id: int) -> int:
    value = redis_client().get(key(session_id, "seq"))
    return int(value) if value else 0


def set_json(session_id: int, name: str, value: Any, *, only_if_new: bool = False) -> bool:
    """Store JSON; with ``only_if_new`` the first writer wins (returns whether this call wrote)."""
    return bool(redis_client().set(key(session_id, name), json.dumps(value), ex=_ttl(), nx=only_if_new))


def get_json(session_id: int, name: str) -> Any:
    value = redis_client().get(key(session_id, name))
    return json.loads(value) if value is not None else None


def decide_ladder(session_id: int, renditions: list[Rendition]) -> list[Rendition]:
    """The session's ladder: the first decision wins so every chunk uses the same renditions."""
    r = redis_client()
    r.set(key(session_id, "ladder"), dumps(renditions), ex=_ttl(), nx=True)
    raw = r.get(key(session_id, "ladder"))
    return loads(raw) if raw else renditions


def ladder(session_id: int) -> list[Rendition] | None:
    raw = redis_client().get(key(session_id, "ladder"))
    return loads(raw) if raw else None


def store_source(session_id: int, source: SourceInfo, *, conn: int | None = None) -> None:
    """The probed source: the session's (first writer wins) and, with ``conn``, that
    connection's (a reconnect may send other parameters)."""
    set_json(session_id, "source", source.__dict__, only_if_new=True)
    if conn is not None:
        set_json(session_id, f"source:{conn}", source.__dict__)


def source(session_id: int, conn: int | None = None) -> SourceInfo | None:
    """Connection ``conn``'s probed source, else the session's."""
    data = get_json(session_id, f"source:{conn}") if conn is not None else None
    data = data or get_json(session_id, "source")
    return SourceInfo(**data) if data else None


def set_codecs(session_id: int, codecs: dict[str, str]) -> None:
    r = redis_client()
    for name, value in codecs.items():
        r.hsetnx(key(session_id, "codecs"), name, value)
    r.expire(key(session_id, "codecs"), _ttl())


def codecs(session_id: int) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in redis_client().hgetall(key(session_id, "codecs")).items()}


def store_outputs(session_id: int, seq: int, outputs: dict[str, bytes], transcode_ms: int, *, part: int = 0) -> None:
    """Transcoded segments (counters not yet continued) waiting for the in-order commit. Tasks
    that share a chunk (TRANSCODE_TASKS_PER_CHUNK) each add their renditions to the same hash."""
    r = redis_client()
    name = key(session_id, f"out:{seq}")
    pipe = r.pipeline()
    mapping: dict[str | bytes, bytes | str] = {f"_ms:{part}": str(transcode_ms)}
    mapping.update(outputs)
    pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
    pipe.expire(name, int(settings.CHUNK_TTL_SECONDS))
    pipe.execute()


def take_outputs(session_id: int, seq: int) -> tuple[dict[str, bytes], int] | None:
    raw = redis_client().hgetall(key(session_id, f"out:{seq}"))
    if not raw:
        return None
    outputs = {_text(k): bytes(v) if isinstance(v, bytes) else v.encode() for k, v in raw.items()}
    # The chunk's transcode time is its slowest part's.
    ms = max((int(outputs.pop(name)) for name in [n for n in outputs if n.startswith("_ms")]), default=0)
    return outputs, ms


def drop_outputs(session_id: int, seq: int) -> None:
    redis_client().delete(key(session_id, f"out:{seq}"))


def has_outputs(session_id: int, seq: int) -> bool:
    """Every rendition of the session's ladder is transcoded for chunk ``seq``."""
    renditions = ladder(session_id)
    if not renditions:
        return False
    fields = {_text(f) for f in redis_client().hkeys(key(session_id, f"out:{seq}"))}
    return all(r.name in fields for r in renditions)


def has_part_outputs(session_id: int, seq: int, part: int, parts: int) -> bool:
    """The renditions task ``part`` of ``parts`` encodes for chunk ``seq`` are all stored."""
    renditions = ladder(session_id)
    if not renditions:
        return False
    fields = {_text(f) for f in redis_client().hkeys(key(session_id, f"out:{seq}"))}
    return f"_ms:{part}" in fields and all(r.name in fields for r in renditions[part::parts])


def next_to_publish(session_id: int) -> int:
    return int(redis_client().get(key(session_id, "next")) or 0)


class Lease:
    """A transcode task's claim on chunk ``seq`` (part ``part``), refreshed by a thread while the
    task runs: when its worker dies the lease lapses within ``TRANSCODE_LEASE_SECONDS`` and the
    reconciler queues the chunk again (well inside the live deadline; Celery's broker would
    only redeliver after its visibility timeout)."""

    def __init__(self, session_id: int, seq: int, part: int) -> None:
        self.name = key(session_id, f"lease:{seq}:{part}")
        self.ttl = max(1, int(settings.TRANSCODE_LEASE_SECONDS))
        self._stop = threading.Event()
        with contextlib.suppress(Exception):  # a worker took it: only then can a worker lose it
            redis_client().set(key(session_id, f"started:{seq}:{part}"), "1", ex=_ttl())
        self._refresh()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        with contextlib.suppress(Exception):  # a lapsed lease only means a duplicate transcode
            redis_client().set(self.name, "1", ex=self.ttl)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self._refresh()

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):  # expires by itself
            redis_client().delete(self.name)

    @staticmethod
    def lapsed(session_id: int, seq: int, part: int) -> bool:
        """A worker started this chunk part and its lease is gone (the worker died). A task
        still waiting in the queue has no lease yet and is not lapsed."""
        r = redis_client()
        started = r.exists(key(session_id, f"started:{seq}:{part}"))
        return bool(started) and not r.exists(key(session_id, f"lease:{seq}:{part}"))

    @staticmethod
    def claim_requeue(session_id: int, seq: int, part: int) -> bool:
        """At most one re-queue per chunk part."""
        name = key(session_id, f"requeued:{seq}:{part}")
        return bool(redis_client().set(name, "1", ex=int(settings.LIVE_DEADLINE_SECONDS) + 5, nx=True))


def claim_once(session_id: int, name: str) -> bool:
    """True for exactly one caller per session and ``name`` across every worker (SET NX of
    ``once:<name>``; e.g. transcoding.readiness sends stream.ready only when this is True)."""
    return bool(redis_client().set(key(session_id, f"once:{name}"), "1", ex=_ttl(), nx=True))


def is_settled(session_id: int, seq: int) -> bool:
    """Done or given up: nothing more will happen to this chunk."""
    r = redis_client()
    return bool(r.exists(key(session_id, f"done:{seq}")) or r.exists(key(session_id, f"gap:{seq}")))


def mark_done(session_id: int, seq: int, result: dict[str, Any]) -> None:
    redis_client().set(key(session_id, f"done:{seq}"), json.dumps(result), ex=_ttl())


def done(session_id: int, seq: int) -> dict[str, Any] | None:
    return get_json(session_id, f"done:{seq}")


def mark_gap(session_id: int, seq: int, reason: str) -> bool:
    """Give up on a chunk (first call wins; False if it was already done or a gap)."""
    r = redis_client()
    if r.exists(key(session_id, f"done:{seq}")):
        return False
    return bool(r.set(key(session_id, f"gap:{seq}"), reason, ex=_ttl(), nx=True))


def is_gap(session_id: int, seq: int) -> bool:
    return bool(redis_client().exists(key(session_id, f"gap:{seq}")))


def set_ingest(session_id: int, conn: int, value: str) -> None:
    redis_client().set(key(session_id, f"ingest:{conn}"), value, ex=_ttl())


def ingest_status(session_id: int, conn: int) -> str | None:
    """ "running", "ended:<last seq>" or None (no segmenter seen) for connection ``conn``."""
    value = redis_client().get(key(session_id, f"ingest:{conn}"))
    return _text(value) if value is not None else None


def ingest_running(session_id: int) -> bool:
    """True while any segmenter of the session still runs."""
    r = redis_client()
    return any(r.get(k) == b"running" for k in r.scan_iter(key(session_id, "ingest:*")))


def heartbeat(session_id: int, conn: int, *, now: float | None = None) -> None:
    """The segmenter of (session, connection) is alive (the supervisor calls this every second)."""
    stamp = repr(now if now is not None else time.time())
    pipe = redis_client().pipeline()
    pipe.set(key(session_id, f"hb:{conn}"), stamp, ex=_ttl())
    pipe.hset(HEARTBEATS, f"{session_id}:{conn}", stamp)
    pipe.execute()


def drop_heartbeat(session_id: int, conn: int) -> None:
    pipe = redis_client().pipeline()
    pipe.delete(key(session_id, f"hb:{conn}"))
    pipe.hdel(HEARTBEATS, f"{session_id}:{conn}")
    pipe.execute()


def last_heartbeat(session_id: int, conn: int) -> float | None:
    value = redis_client().get(key(session_id, f"hb:{conn}"))
    return float(value) if value is not None else None


def observed_since() -> float:
    """When this Redis's pipeline state began (epoch s; set on first call): after a restart
    that lost it, heartbeats need a moment to come back, and nothing counts as silent before."""
    r = redis_client()
    r.set("pipe:state:since", repr(time.time()), nx=True)
    value = r.get("pipe:state:since")
    return float(value) if value is not None else time.time()


def remember_client(session_id: int, client_key: str) -> None:
    """A ``pipe:client:<id>`` mapping that belongs to the session (deleted with it)."""
    pipe = redis_client().pipeline()
    pipe.sadd(key(session_id, "clients"), client_key)
    pipe.expire(key(session_id, "clients"), _ttl())
    pipe.execute()


def purge(session_id: int) -> None:
    """Delete every Redis key of the session (idempotent), its client mappings and heartbeats."""
    r = redis_client()
    clients = [_text(c) for c in r.smembers(key(session_id, "clients"))]
    keys = list(r.scan_iter(key(session_id, "*"), count=500)) + clients
    if keys:
        r.delete(*keys)
    stale = [f for f in (_text(f) for f in r.hkeys(HEARTBEATS)) if f.startswith(f"{session_id}:")]
    if stale:
        r.hdel(HEARTBEATS, *stale)
