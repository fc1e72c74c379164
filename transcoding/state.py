"""Live pipeline state in Redis: the one module that knows the pipeline's keys (the
segmenter, the supervisor, the tasks, the assembler and the origin view call functions here).

Keys (all under ``pipe:{<session>}:`` and expiring after ``PIPELINE_STATE_TTL_SECONDS``; the
braces are a Redis Cluster hash tag: every key of a session lives in the same slot, so each
transaction and Lua script below, which touches one session's keys only, runs on a Redis
Cluster as on a single Redis; ``tests/pipeline/test_redis_cluster.py`` checks both):

- ``seq``             INCR counter: next chunk number of the session (continues across reconnects)
- ``chunk:<seq>``     hash: start, end (source seconds), wall (ingest wall clock of the first
                      frame, epoch s), conn, disc ("1" on the first chunk of a reconnect), queued;
                      a chunk still being written (progressive transcoding) has no start/end yet
- ``data:<seq>``      raw chunk bytes (TTL ``CHUNK_TTL_SECONDS``); APPENDed while being written
- ``feed:<seq>``      list of wake-up tokens: one per append, completion or give-up (the
                      progressive task BLPOPs it instead of polling)
- ``out:<seq>``       hash rendition -> transcoded TS bytes awaiting the in-order commit
- ``done:<seq>``      JSON commit record (sizes, transcode ms, publish time) of the last
                      ``DONE_KEPT`` chunks
- ``gaps``            set of the chunks given up; ``gapwhy`` hash seq -> reason
- ``ccstate``         JSON continuity-counter state after the last committed chunk, per rendition
- ``ladder``          JSON renditions, decided once from the first chunk's probe
- ``source``          JSON probed SourceInfo of the session's first connection
- ``source:<conn>``   JSON probed SourceInfo of connection ``conn`` (each connection's first
                      chunk is probed by its segmenter; every chunk's transcode takes its
                      stream parameters from here, not from a probe of the chunk)
- ``codecs``          hash rendition -> RFC 6381 codecs string
- ``published``       list of JSON entries (``hls.Entry``) of every segment published so far
- ``win``             the last ``PLAYLIST_WINDOW`` entries (the live playlists render from it)
- ``target``          EXT-X-TARGETDURATION so far (never decreases)
- ``rates``           hash ``<rendition>:bits|ms|peak``: measured bitrates (masters)
- ``next``            the next seq the assembler waits for (every chunk below is published or
                      in ``gaps``); ``pending_disc`` "1" when the next entry follows a gap
- ``assembler``       the fencing token of the session's assembler (lease ``ASSEMBLER_LEASE_S``);
                      ``fence`` the INCR counter handing out tokens; ``advance_again`` a caller
                      that found it held asks the holder to go round again (``Assembly.step``)
- ``final``           the playlists carry ENDLIST; ``masters`` the masters were written once
- ``ingest``          hash conn -> "running" / "ended:<last seq>" of that connection's segmenter
- ``epoch``           numbering generation: "0" from accept_publish; a new one (ms timestamp)
                      whenever the session's state was found missing (Redis lost it), so
                      segment names of a new generation never collide with published ones
- ``hb:<conn>``       epoch seconds of the last heartbeat of that connection's segmenter
- ``clients``         set of the client-map keys of the session (``pipe:client:{<node>}:<id>``)
- ``nodes``           hash conn -> id of the ingest node that accepted that connection
- ``owner:<conn>``    the supervisor (``host:pid``) segmenting that connection (5 s TTL, refreshed)
- ``started:<seq>:<part>`` / ``lease:<seq>:<part>`` / ``requeued:<seq>:<part>``: a transcode was
                      taken by a worker / its lease while it runs / it was queued again once
- ``recovered``       the published log was reloaded from S3 after a state loss
- ``ckpt``            how many entries of the published log its S3 checkpoint holds
- ``stream``          the session's stream id (hot paths skip the database)
- ``finalizing``      one finalisation at a time
- ``shed``            overload: rungs shed now, chunks on time in a row, why, since (shedding.py)
- ``once:ready``      stream.ready was claimed (by the assembler's commit step, once per session)
- ``preview``         "1" while the session is a private preview (ADR 0034): the assembler
                      writes no stable master (``set_preview``, ``end_preview``; every step
                      refreshes its TTL, so a long preview does not turn public by expiry)
- ``ll``              low-latency session (CMAF, partial segments): its PART-TARGET in seconds
- ``pm:<seq>:<rendition>`` list: each partial segment's "<duration>|<independent>" in order,
                      then "end" once the chunk's last part is in (TTL ``LL_PART_TTL_SECONDS``)
- ``pd:<seq>:<rendition>`` list: the partial segments' bytes (moof + mdat), same order
- ``inits``           set of the init sections already written to S3 (``<rendition>/init_<hash>.mp4``)
- ``ll:ev`` (pub/sub channel, not a key) "<seq> <rendition> <index>" for every part and
                      "commit" for every assembler step that commits (published by the step's
                      script): what the origin's held requests wait on

Every per-chunk key is dropped by the atomic step that passes the chunk, so nothing here grows
with the broadcast except ``published`` (~150 bytes a segment) and ``gaps``.

Ingest nodes (docs/pipeline.md "Ingest nodes"): every key of a node shares the hash tag
``{<node>}``, so each operation stays within one node's keys (or one session's):

- ``pipe:node:{<node>}:queue``   list: accept_publish's commands for that node's supervisor
- ``pipe:node:{<node>}:hb``      hash ``<session>:<conn>`` -> last heartbeat of its segmenters
- ``pipe:node:{<node>}:alive``   epoch s of the supervisor's last registration; expires after
                                 ``INGEST_NODE_TTL_SECONDS``: a node without it is dead
- ``pipe:node:{<node>}:control`` the URL of the node's nginx-rtmp ``/control`` (rtmp_control)
- ``pipe:client:{<node>}:<id>``  nginx-rtmp client id -> (session, conn, key hash); client ids
                                 repeat across nodes, so they are only unique with the node
- ``pipe:nodes``                 sorted set node -> last registration (listing, no scan)

``pipe:reconcile:last`` feeds the compose health check of beat. These keys (no session tag)
are never in a transaction or script with a session's keys: a batch that writes both is a
non-transactional pipeline (``pipeline(transaction=False)``), which redis-py's cluster client
splits by slot.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from redis.exceptions import NoScriptError

from livestream import metrics
from livestream.redis import redis_client
from transcoding.hls import Entry, Rates, rounded
from transcoding.ladder import Rendition, SourceInfo, ladder_from_json, ladder_to_json

NODES = "pipe:nodes"
# An ingest node id: what Kubernetes allows in a pod name (a DNS label), and nothing that could
# break out of a key or a hash tag.
NODE_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Commands a node did not take within this long are dropped with its queue (a dead node).
INGEST_QUEUE_TTL_S = 60


class StateLost(RuntimeError):  # noqa: N818 - a condition, like PublishRefused
    """The session's Redis state is not the generation (epoch) the caller wrote for: Redis lost
    it (restart without persistence, eviction). The caller starts over with ``ensure_epoch``."""


def key(session_id: int, name: str) -> str:
    """``pipe:{<session>}:<name>``: the hash tag ``{<session>}`` puts every key of a session in
    one Redis Cluster slot (the session's state moves between shards as a whole)."""
    return f"pipe:{{{session_id}}}:{name}"


@functools.cache
def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _eval(script: str, numkeys: int, *keys_and_args: Any) -> Any:
    """``EVAL`` by the script's SHA1 (``EVALSHA``): the source (the commit's is 1.4 kB) crosses
    the network only when the node does not know it yet (first use, a restarted node, a new
    shard); then ``EVAL`` runs it and the node keeps it."""
    r = redis_client()
    try:
        return r.evalsha(_sha1(script), numkeys, *keys_and_args)
    except NoScriptError:
        return r.eval(script, numkeys, *keys_and_args)


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
_APPEND = _GUARD + (
    "redis.call('APPEND', KEYS[2], ARGV[2]) redis.call('EXPIRE', KEYS[2], ARGV[3]) "
    "redis.call('RPUSH', KEYS[3], '1') redis.call('EXPIRE', KEYS[3], ARGV[3]) return 1"
)


def _next_seq(session_id: int, epoch_: int) -> int:
    seq = int(_eval(_RESERVE, 2, key(session_id, "epoch"), key(session_id, "seq"), str(epoch_), _ttl()))
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
    """Append bytes to a chunk being written and wake its transcode (``wait_for_feed``)."""
    if epoch is None:
        pipe = redis_client().pipeline()
        pipe.append(key(session_id, f"data:{seq}"), data)
        pipe.expire(key(session_id, f"data:{seq}"), int(settings.CHUNK_TTL_SECONDS))
        pipe.rpush(key(session_id, f"feed:{seq}"), "1")
        pipe.expire(key(session_id, f"feed:{seq}"), int(settings.CHUNK_TTL_SECONDS))
        pipe.execute()
        return
    done = _eval(
        _APPEND,
        3,
        key(session_id, "epoch"),
        key(session_id, f"data:{seq}"),
        key(session_id, f"feed:{seq}"),
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
    pipe = redis_client().pipeline()
    pipe.hset(
        key(session_id, f"chunk:{seq}"),
        mapping={"start": repr(start), "end": repr(end), "wall": repr(wall), "completed": repr(time.time())},
    )
    pipe.rpush(key(session_id, f"feed:{seq}"), "1")
    pipe.expire(key(session_id, f"feed:{seq}"), int(settings.CHUNK_TTL_SECONDS))
    pipe.execute()


def chunk_data_from(session_id: int, seq: int, offset: int) -> bytes:
    """The chunk's bytes from ``offset`` on (what was appended since the last read)."""
    value = redis_client().getrange(key(session_id, f"data:{seq}"), offset, -1)
    return value if isinstance(value, bytes) else value.encode()


def chunk_meta(session_id: int, seq: int) -> ChunkMeta | None:
    return _meta(seq, redis_client().hgetall(key(session_id, f"chunk:{seq}")))


def _meta(seq: int, raw: dict[Any, Any]) -> ChunkMeta | None:
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
    r.set(key(session_id, "ladder"), ladder_to_json(renditions), ex=_ttl(), nx=True)
    raw = r.get(key(session_id, "ladder"))
    return ladder_from_json(raw) if raw else renditions


def ladder(session_id: int) -> list[Rendition] | None:
    raw = redis_client().get(key(session_id, "ladder"))
    return ladder_from_json(raw) if raw else None


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


def store_outputs(
    session_id: int,
    seq: int,
    outputs: dict[str, bytes],
    transcode_ms: int,
    *,
    part: int = 0,
    inits: dict[str, str] | None = None,
) -> None:
    """Transcoded segments (counters not yet continued) waiting for the in-order commit. Tasks
    that share a chunk (TRANSCODE_TASKS_PER_CHUNK) each add their renditions to the same hash.
    ``inits``: CMAF segments' init section names per rendition (fields ``_init:<rendition>``)."""
    r = redis_client()
    name = key(session_id, f"out:{seq}")
    pipe = r.pipeline()
    mapping: dict[str | bytes, bytes | str] = {f"_ms:{part}": str(transcode_ms)}
    mapping.update(outputs)
    mapping.update({f"_init:{name}": init for name, init in (inits or {}).items()})
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
    for name in [n for n in outputs if n.startswith("_init:")]:
        del outputs[name]
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


# --- chunk fates: published (committed) or a gap, never both --------------------------------
#
# A chunk below ``next`` has been passed by the assembler: it is published, or it is in the
# ``gaps`` set. Both are decided only by Lua scripts, each atomic in Redis: ``mark_gap``
# refuses a chunk below ``next`` (already passed) or already in ``gaps``; the assembler's step
# (below) passes chunks only at ``next`` and only while its fence token holds, and a commit of
# a chunk that was marked a gap meanwhile takes it out of ``gaps`` (its segments are in S3: the
# chunk is published, the give-up came too late).

_MARK_GAP = """
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < nxt then return 0 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('RPUSH', KEYS[4], 'gap')
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
"""

_CHUNK_KEY_NAMES = ("chunk", "data", "out", "feed")


def _chunk_keys(session_id: int, seq: int) -> list[str]:
    """Every per-chunk key, dropped when the assembler passes the chunk."""
    names = [f"{n}:{seq}" for n in _CHUNK_KEY_NAMES]
    for part in range(max(1, int(settings.TRANSCODE_TASKS_PER_CHUNK))):
        names += [f"started:{seq}:{part}", f"lease:{seq}:{part}", f"requeued:{seq}:{part}"]
    return [key(session_id, n) for n in names]


# Commit records (``done:<seq>``) kept for the last chunks only: each commit drops the one this
# many chunks back, so ``purge`` knows them all by name.
DONE_KEPT = 64

# --- the assembler's step ----------------------------------------------------------------------
#
# The assembler (``transcoding/assembler.py``) talks to Redis through one fenced Lua script per
# pass, ``Assembly.step``: it applies what the previous pass staged (the chunks published, with
# their segments already in S3, and the chunks given up), then reads what the next pass needs
# (the chunks from ``next`` on with their outputs, the log part to checkpoint, the masters'
# inputs when due), all atomically and in one round trip. The first step takes the lease (a
# fencing token); a step with nothing staged releases it, unless a caller that found it taken
# asked for one more pass (``advance_again``): no wake-up is lost and nobody waits.
#
# Every key the script touches is ``ARGV[1]`` (the session's key prefix, which carries its hash
# tag) plus a name: one session's keys only, so a Redis Cluster runs it on one shard.
# KEYS[1] is the session's ``assembler`` key (it routes the call).

_STEP = """
local P = ARGV[1]
local function k(name) return P .. name end
local lease, ttl, window = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local staged = cjson.decode(ARGV[6])
local token = ARGV[2]
local first = token == ''
local published_before = redis.call('LLEN', k('published'))
if token == '' then
  token = tostring(redis.call('INCR', k('fence')))
  redis.call('EXPIRE', k('fence'), ttl)
  if not redis.call('SET', k('assembler'), token, 'PX', lease, 'NX') then
    redis.call('SET', k('advance_again'), '1', 'EX', 60)
    return {'held', tostring(published_before)}
  end
elseif redis.call('GET', k('assembler')) ~= token then
  return {'lost', tostring(published_before)}
else
  redis.call('PEXPIRE', k('assembler'), lease)
end

local epoch = redis.call('GET', k('epoch'))
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', k('epoch'), epoch, 'EX', ttl)
end

if staged.restore then
  if redis.call('EXISTS', k('published')) == 0 and redis.call('EXISTS', k('recovered')) == 0 then
    local n = #staged.restore
    for i = 1, n do redis.call('RPUSH', k('published'), staged.restore[i]) end
    for i = math.max(1, n - window + 1), n do redis.call('RPUSH', k('win'), staged.restore[i]) end
    if n > 0 then
      redis.call('EXPIRE', k('published'), ttl) redis.call('EXPIRE', k('win'), ttl)
      redis.call('SET', k('pending_disc'), '1', 'EX', ttl)
    end
    redis.call('SET', k('ckpt'), n, 'EX', ttl)
    local target = tonumber(staged.target)
    for i = 1, n do
      local rounded = math.floor(cjson.decode(staged.restore[i]).dur + 0.5)
      if rounded > target then target = rounded end
    end
    if n > 0 then redis.call('SET', k('target'), target, 'EX', ttl) end
  end
  redis.call('SET', k('recovered'), '1', 'EX', ttl)
end

local committed, first_index = 0, nil
for _, d in ipairs(staged.decisions) do
  local seq = d.seq
  if tonumber(redis.call('GET', k('next')) or '0') ~= seq then return {'lost', tostring(published_before)} end
  if d.entry then
    if redis.call('LLEN', k('published')) ~= d.index then return {'lost', tostring(published_before)} end
    if redis.call('SREM', k('gaps'), seq) == 1 then redis.call('HDEL', k('gapwhy'), seq) end
    redis.call('RPUSH', k('published'), d.entry) redis.call('EXPIRE', k('published'), ttl)
    redis.call('RPUSH', k('win'), d.entry) redis.call('LTRIM', k('win'), -window, -1)
    redis.call('EXPIRE', k('win'), ttl)
    redis.call('SET', k('pending_disc'), '0', 'EX', ttl)
    redis.call('SET', k('ccstate'), d.cc, 'EX', ttl)
    if tonumber(redis.call('GET', k('target')) or '0') < d.target then
      redis.call('SET', k('target'), d.target, 'EX', ttl)
    end
    for name, v in pairs(d.rates) do
      redis.call('HINCRBY', k('rates'), name .. ':bits', v[1])
      redis.call('HINCRBY', k('rates'), name .. ':ms', v[2])
      local bps = 0
      if v[2] > 0 then bps = math.floor(v[1] * 1000 / v[2]) end
      if tonumber(redis.call('HGET', k('rates'), name .. ':peak') or '0') < bps then
        redis.call('HSET', k('rates'), name .. ':peak', bps)
      end
    end
    redis.call('EXPIRE', k('rates'), ttl)
    redis.call('SET', k('done:' .. seq), d.done, 'EX', ARGV[8])
    if not first_index then first_index = d.index end
    committed = committed + 1
  else
    if redis.call('SADD', k('gaps'), seq) == 1 then redis.call('HSET', k('gapwhy'), seq, d.reason) end
    redis.call('EXPIRE', k('gaps'), ttl) redis.call('EXPIRE', k('gapwhy'), ttl)
    redis.call('SET', k('pending_disc'), '1', 'EX', ttl)
  end
  redis.call('SET', k('next'), seq + 1, 'EX', ttl)
  local drop = {k('chunk:' .. seq), k('data:' .. seq), k('out:' .. seq), k('feed:' .. seq),
                k('done:' .. (seq - tonumber(ARGV[9])))}
  for part = 0, tonumber(ARGV[10]) - 1 do
    drop[#drop + 1] = k('started:' .. seq .. ':' .. part)
    drop[#drop + 1] = k('lease:' .. seq .. ':' .. part)
    drop[#drop + 1] = k('requeued:' .. seq .. ':' .. part)
  end
  redis.call('DEL', unpack(drop))
end
if staged.ckpt then redis.call('SET', k('ckpt'), staged.ckpt, 'EX', ttl) end

local count = redis.call('LLEN', k('published'))
local has_source = redis.call('EXISTS', k('source')) == 1
local ready_won = false
if committed > 0 and staged.claim_ready and has_source then
  ready_won = redis.call('SET', k('once:ready'), '1', 'EX', ttl, 'NX') ~= false
end
local masters_due = staged.finish
if committed > 0 and has_source then
  if redis.call('SET', k('masters'), '1', 'EX', ttl, 'NX') then masters_due = true end
  if math.floor(count / 10) > math.floor(published_before / 10) then masters_due = true end
end
if staged.finished then redis.call('SET', k('final'), '1', 'EX', ttl) end

if not first and #staged.decisions == 0 and not staged.restore and not staged.finish then
  if redis.call('DEL', k('advance_again')) == 0 then
    redis.call('DEL', k('assembler'))
    return {'released', tostring(count)}
  end
end

local head = {
  token = token, epoch = epoch, count = count,
  recover = epoch ~= '0' and count == 0 and redis.call('EXISTS', k('recovered')) == 0,
  pending_disc = redis.call('GET', k('pending_disc')) == '1',
  last = redis.call('LINDEX', k('win'), -1) or false,
  ccstate = redis.call('GET', k('ccstate')) or false,
  ladder = redis.call('GET', k('ladder')) or false,
  target = tonumber(redis.call('GET', k('target')) or '0'),
  ready_won = ready_won, chunks = {}, log = {}, log_from = 0, replay = false,
  final = redis.call('EXISTS', k('final')) == 1,
  preview = redis.call('EXPIRE', k('preview'), ttl) == 1,
}
local ckpt = tonumber(redis.call('GET', k('ckpt')) or '0')
if committed > 0 then redis.call('PUBLISH', k('ll:ev'), 'commit') end  -- the live origin's held requests
if committed > 0 then
  local part = tonumber(ARGV[11])
  head.log_from = math.floor(math.min(ckpt, first_index) / part) * part
  head.log = redis.call('LRANGE', k('published'), head.log_from, -1)
elseif staged.finish then
  head.log, head.replay = redis.call('LRANGE', k('published'), 0, -1), true
end
if masters_due and has_source then
  head.source = redis.call('GET', k('source'))
  head.codecs = redis.call('HGETALL', k('codecs'))
  head.rates = redis.call('HGETALL', k('rates'))
end

local names = {}
if head.ladder then for _, r in ipairs(cjson.decode(head.ladder)) do names[#names + 1] = r.name end end
local reply = {'ok', ''}
local s, total, ready = tonumber(redis.call('GET', k('next')) or '0'), tonumber(redis.call('GET', k('seq')) or '0'), 0
if head.recover then total = s end  -- recover the log first
while s < total and ready < tonumber(ARGV[12]) do
  local gap = redis.call('SISMEMBER', k('gaps'), s) == 1
  local complete = not gap and #names > 0
  if complete then
    for _, name in ipairs(names) do
      if redis.call('HEXISTS', k('out:' .. s), name) == 0 then complete = false break end
    end
  end
  local meta = redis.call('HGETALL', k('chunk:' .. s))
  head.chunks[#head.chunks + 1] = {seq = s, gap = gap, complete = complete, meta = meta}
  if complete then
    reply[#reply + 1] = redis.call('HGETALL', k('out:' .. s))
    ready = ready + 1
  elseif not gap then
    break
  end
  s = s + 1
end
reply[2] = cjson.encode(head)
return reply
"""


class FenceLost(RuntimeError):  # noqa: N818 - a condition
    """This assembler's lease lapsed and another one took over: it must stop at once (nothing it
    did since its last step counts; S3 PUTs of deterministic keys are harmless). ``published``:
    the session's published count when it found out."""

    def __init__(self, message: str, published: int) -> None:
        super().__init__(message)
        self.published = published


# How long an assembler holds a session without a step before another may take over. Longer
# than one pass's S3 PUTs (they retry inside TRANSCODE_PUBLISH_RETRIES); shorter than a chunk
# deadline. Lapsing is safe: the fence token is checked at every step.
ASSEMBLER_LEASE_S = 15.0
# Ready chunks handed to one pass at most (bounds a pass's bytes after a stall).
READ_AHEAD = 4
# Entries per object of the published log's checkpoint in S3 (``<session>/log/<part>.jsonl``).
LOG_PART_SEGMENTS = 60


@dataclass
class Staged:
    """What one pass of the assembler decided, applied atomically by the next ``step``:
    ``decisions`` in chunk order (a published entry, or a chunk given up), the checkpoint
    count, a published log recovered from S3, whether the session's end is written now."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    published: list[tuple[Entry, int]] = field(default_factory=list)  # (entry, transcode ms)
    checkpointed: int | None = None
    restore: list[str] | None = None
    restore_target: int = 0
    claim_ready: bool = False
    finish: bool = False  # read the whole log: the end's playlists are written next
    finished: bool = False  # they are written: the session's playlists are final (ENDLIST)

    def publish(self, entry: Entry, ccstate: dict[str, dict[str, int]], record: dict[str, Any], ms: int) -> None:
        """Chunk ``entry.seq`` is published (its segments are in S3)."""
        # A rung shed under overload (size 0) does not lower its measured bitrate.
        rates = {name: [size * 8, int(entry.duration * 1000)] for name, size in entry.sizes.items() if size}
        self.decisions.append(
            {
                "seq": entry.seq,
                "entry": entry.to_json(),
                "index": entry.index,
                "cc": json.dumps(ccstate),
                "target": rounded(entry.duration),
                "rates": rates,
                "done": json.dumps(record),
            }
        )
        self.published.append((entry, ms))

    def give_up(self, seq: int, reason: str) -> None:
        self.decisions.append({"seq": seq, "reason": reason})

    def to_json(self) -> str:
        out: dict[str, Any] = {
            "decisions": self.decisions,
            "claim_ready": self.claim_ready,
            "finish": self.finish,
            "finished": self.finished,
        }
        if self.checkpointed is not None:
            out["ckpt"] = self.checkpointed
        if self.restore is not None:
            out["restore"], out["target"] = self.restore, self.restore_target
        return json.dumps(out)


@dataclass(frozen=True)
class Pending:
    """A chunk the assembler has not passed: given up (``gap``), ready (every rendition's
    ``outputs``; ``transcode_ms`` its slowest part's) or not yet (``outputs`` None); ``meta``
    None when its keys expired."""

    seq: int
    meta: ChunkMeta | None
    gap: bool
    outputs: dict[str, bytes] | None
    transcode_ms: int
    inits: dict[str, str] = field(default_factory=dict)  # CMAF: rendition -> its init section's name


@dataclass(frozen=True)
class MasterInputs:
    renditions: list[Rendition]
    source: SourceInfo
    rates: dict[str, Rates]
    codecs: dict[str, str]


@dataclass(frozen=True)
class Step:
    """What the assembler knows after a step. ``holding`` False: it does not (or no longer)
    hold the session (another holds it and goes round again, or this one released it)."""

    holding: bool
    published: int  # entries in the published log
    epoch: int = 0
    recover: bool = False  # Redis lost the session: reload the published log from S3 first
    pending_disc: bool = False
    last: Entry | None = None
    ccstate: dict[str, dict[str, int]] = field(default_factory=dict)
    ladder: list[Rendition] = field(default_factory=list)
    target: int = 0
    chunks: list[Pending] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # entries' JSON from ``log_from`` on
    log_from: int = 0
    replay: bool = False  # ``log`` is the whole log, for the end's playlists
    final: bool = False  # the end's playlists are written
    masters: MasterInputs | None = None  # due now
    preview: bool = False  # a private preview: no stable master (ADR 0034)
    announce: bool = False  # this step made the session ready (stream.ready)
    committed: list[tuple[Entry, int]] = field(default_factory=list)  # by this step


class Assembly:
    """One assembler's hold on a session (``with Assembly(...) as a: a.step(...)``): the first
    step takes the lease, the last releases it; leaving the block on an error releases it too."""

    def __init__(self, session_id: int, *, wait_s: float = 0.0) -> None:
        self.session_id = session_id
        self.wait_s = wait_s
        self.token = ""
        self.released = False

    def __enter__(self) -> Assembly:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.token and not self.released:
            _eval(_RELEASE, 1, key(self.session_id, "assembler"), self.token)

    def step(self, staged: Staged) -> Step:
        """Apply ``staged`` and read the next pass (fenced, one round trip). The first call
        takes the lease (waiting up to ``wait_s`` for another holder, who is asked to go round
        again); raises FenceLost when the lease went to another assembler."""
        deadline = time.monotonic() + self.wait_s
        while True:
            reply = self._eval(staged)
            if reply[0] != "held" or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        status, head_raw, outputs = _text(reply[0]), _text(reply[1]), reply[2:]
        if status == "lost":
            raise FenceLost(f"session {self.session_id}: assembler {self.token} lost its lease", int(head_raw))
        if status != "ok":
            self.released = status == "released"
            return Step(holding=False, published=int(head_raw), committed=staged.published)
        head = json.loads(head_raw)
        self.token = str(head["token"])  # handed out by the first step
        return _parse_step(head, outputs, staged)

    def _eval(self, staged: Staged) -> list[Any]:
        argv: list[str | int] = [
            key(self.session_id, ""),
            self.token,
            int(ASSEMBLER_LEASE_S * 1000),
            _ttl(),
            max(1, int(settings.PLAYLIST_WINDOW)),
            staged.to_json(),
            str(int(time.time() * 1000)),  # a new numbering generation, if the state is gone
            int(settings.CHUNK_TTL_SECONDS),
            DONE_KEPT,
            max(1, int(settings.TRANSCODE_TASKS_PER_CHUNK)),
            LOG_PART_SEGMENTS,
            READ_AHEAD,
        ]
        return list(_eval(_STEP, 1, key(self.session_id, "assembler"), *argv))


def _parse_step(head: dict[str, Any], outputs: list[Any], staged: Staged) -> Step:
    chunks: list[Pending] = []
    it = iter(outputs)
    for c in head["chunks"]:
        raw = c["meta"] or []
        meta = _meta(c["seq"], dict(zip(raw[::2], raw[1::2], strict=True)))
        out: dict[str, bytes] | None = None
        ms, inits = 0, {}
        if c["complete"]:
            flat = next(it)
            out = {_text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
            ms = max((int(out.pop(n)) for n in [n for n in out if n.startswith("_ms")]), default=0)
            inits = {n[6:]: out.pop(n).decode() for n in [n for n in out if n.startswith("_init:")]}
        chunks.append(Pending(c["seq"], meta, bool(c["gap"]), out, ms, inits))
    rates, codecs = _rates(head.get("rates") or []), head.get("codecs") or []
    renditions = ladder_from_json(head["ladder"]) if head["ladder"] else []
    masters = None
    if head.get("source"):
        source_ = SourceInfo(**json.loads(head["source"]))
        masters = MasterInputs(renditions, source_, rates, dict(zip(codecs[::2], codecs[1::2], strict=True)))
    return Step(
        holding=True,
        published=int(head["count"]),
        epoch=int(head["epoch"]),
        recover=bool(head["recover"]),
        pending_disc=bool(head["pending_disc"]),
        last=Entry.from_json(head["last"]) if head["last"] else None,
        ccstate=json.loads(head["ccstate"]) if head["ccstate"] else {},
        ladder=renditions,
        target=int(head["target"]),
        chunks=chunks,
        log=[_text(x) for x in head["log"] or []],
        log_from=int(head["log_from"]),
        replay=bool(head["replay"]),
        final=bool(head["final"]),
        masters=masters,
        preview=bool(head["preview"]),
        announce=bool(head["ready_won"]),
        committed=staged.published,
    )


_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


# ``shed``: hash level (rungs shed), calm (chunks on time in a row), why, since (overload,
# transcoding/shedding.py). One step per chunk: late -> one more rung; calm long enough -> one less.
_SHED = """
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
local calm = tonumber(redis.call('HGET', KEYS[1], 'calm') or '0')
local before, most = level, tonumber(ARGV[2])
if ARGV[1] == '1' then
  if level < most then level = level + 1 end
  calm = 0
elseif ARGV[6] == '1' then
  calm = calm + 1
  if level > 0 and calm >= tonumber(ARGV[3]) then level = level - 1 calm = 0 end
end
if level > most then level = most end
redis.call('HSET', KEYS[1], 'level', level, 'calm', calm)
if level ~= before then redis.call('HSET', KEYS[1], 'why', ARGV[4], 'since', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {before, level}
"""


def shed_step(
    session_id: int, *, late: bool, count_calm: bool, max_level: int, restore_after: int, why: str
) -> tuple[int, int]:
    """One overload observation of the session: (rungs shed before, rungs shed now)."""
    argv = ["1" if late else "0", max_level, restore_after, why, repr(time.time()), "1" if count_calm else "0", _ttl()]
    before, level = _eval(_SHED, 1, key(session_id, "shed"), *argv)
    return int(before), int(level)


def shed(session_id: int) -> dict[str, str]:
    """The session's overload state (``level``, ``why``, ``since``); empty when never shed."""
    return {_text(k): _text(v) for k, v in redis_client().hgetall(key(session_id, "shed")).items()}


def mark_gap(session_id: int, seq: int, reason: str) -> bool:
    """Give up on a chunk (first call wins; False if it was already published or a gap)."""
    keys = [key(session_id, "next"), key(session_id, "gaps"), key(session_id, "gapwhy"), key(session_id, f"feed:{seq}")]
    marked = bool(_eval(_MARK_GAP, len(keys), *keys, str(seq), reason, _ttl()))
    if marked:
        metrics.count_gap(reason)
    return marked


def is_gap(session_id: int, seq: int) -> bool:
    return bool(redis_client().sismember(key(session_id, "gaps"), str(seq)))


def gap_count(session_id: int) -> int:
    return int(redis_client().scard(key(session_id, "gaps")))


def is_settled(session_id: int, seq: int) -> bool:
    """Published or given up: nothing more will happen to this chunk."""
    pipe = redis_client().pipeline()
    pipe.get(key(session_id, "next"))
    pipe.sismember(key(session_id, "gaps"), str(seq))
    nxt, gap = pipe.execute()
    return bool(gap) or seq < int(nxt or 0)


def next_to_publish(session_id: int) -> int:
    return int(redis_client().get(key(session_id, "next")) or 0)


def done(session_id: int, seq: int) -> dict[str, Any] | None:
    """The commit record of a recently published chunk (sizes, transcode ms, publish time):
    the last ``DONE_KEPT`` chunks' (and at most ``CHUNK_TTL_SECONDS``)."""
    return get_json(session_id, f"done:{seq}")


def published(session_id: int, start: int = 0) -> list[Entry]:
    """The published log from index ``start`` (the whole log: finalisation, DVR, summary)."""
    return [Entry.from_json(raw) for raw in redis_client().lrange(key(session_id, "published"), start, -1)]


def published_tail(session_id: int, count: int) -> list[Entry]:
    """The last ``count`` entries of the published log (one bounded LRANGE: the DVR window)."""
    if count <= 0:
        return []
    return [Entry.from_json(raw) for raw in redis_client().lrange(key(session_id, "published"), -count, -1)]


def published_count(session_id: int) -> int:
    return int(redis_client().llen(key(session_id, "published")))


@dataclass(frozen=True)
class Window:
    """What a live media playlist shows: the last ``PLAYLIST_WINDOW`` entries."""

    entries: list[Entry]
    target: int
    final: bool


def window(session_id: int) -> Window:
    pipe = redis_client().pipeline()
    pipe.lrange(key(session_id, "win"), 0, -1)
    pipe.get(key(session_id, "target"))
    pipe.exists(key(session_id, "final"))
    raw, target, final = pipe.execute()
    return Window([Entry.from_json(e) for e in raw], int(target or 0), bool(final))


def target(session_id: int) -> int:
    return int(redis_client().get(key(session_id, "target")) or 0)


def rates(session_id: int) -> dict[str, Rates]:
    """Measured bitrate per rendition (running sums kept by every commit)."""
    raw = redis_client().hgetall(key(session_id, "rates"))
    return _rates([v for item in raw.items() for v in item])


def _rates(flat: list[Any]) -> dict[str, Rates]:
    """``rates`` fields and values, flat (``<rendition>:bits|ms|peak``, value, ...)."""
    out: dict[str, Rates] = {}
    for field_, value in zip(flat[::2], flat[1::2], strict=True):
        name, what = _text(field_).rsplit(":", 1)
        rate = out.setdefault(name, Rates())
        if what == "peak":
            rate.peak = int(value)
        elif what == "bits":
            rate.bits = int(value)
        else:
            rate.seconds = int(value) / 1000
    return out


def stream_of(session_id: int) -> int | None:
    """The session's stream id, cached for hot paths (the origin view, the tasks)."""
    value = redis_client().get(key(session_id, "stream"))
    return int(value) if value is not None else None


def remember_stream(session_id: int, stream_id: int) -> None:
    redis_client().set(key(session_id, "stream"), str(stream_id), ex=_ttl())


def claim_finalizing(session_id: int, ttl_s: int) -> bool:
    """One finalisation at a time per session."""
    return bool(redis_client().set(key(session_id, "finalizing"), "1", ex=ttl_s, nx=True))


def wait_for_feed(session_id: int, seq: int, timeout_s: float) -> None:
    """Block until the segmenter appended to, completed or abandoned chunk ``seq`` (each of
    those pushes a wake-up on ``feed:<seq>``), or ``timeout_s`` passed."""
    redis_client().blpop([key(session_id, f"feed:{seq}")], timeout=timeout_s)


def set_ingest(session_id: int, conn: int, value: str) -> None:
    pipe = redis_client().pipeline()
    pipe.hset(key(session_id, "ingest"), str(conn), value)
    pipe.expire(key(session_id, "ingest"), _ttl())
    pipe.execute()


def ingest_status(session_id: int, conn: int) -> str | None:
    """ "running", "ended:<last seq>" or None (no segmenter seen) for connection ``conn``."""
    value = redis_client().hget(key(session_id, "ingest"), str(conn))
    return _text(value) if value is not None else None


def ingest_running(session_id: int) -> bool:
    """True while any segmenter of the session still runs."""
    return any(_text(v) == "running" for v in redis_client().hvals(key(session_id, "ingest")))


def heartbeat(session_id: int, conn: int, *, node: str | None = None, now: float | None = None) -> None:
    """The segmenter of (session, connection) is alive (the supervisor of ``node`` calls this
    every second): the session's ``hb:<conn>`` and the node's heartbeat hash. Two commands,
    not one transaction: each touches one key family only."""
    stamp = repr(now if now is not None else time.time())
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(key(session_id, f"hb:{conn}"), stamp, ex=_ttl())
    if node is not None:
        pipe.hset(node_heartbeats_key(node), f"{session_id}:{conn}", stamp)
        pipe.expire(node_heartbeats_key(node), _ttl())
    pipe.execute()


def drop_heartbeat(session_id: int, conn: int, *, node: str | None = None) -> None:
    pipe = redis_client().pipeline(transaction=False)
    pipe.delete(key(session_id, f"hb:{conn}"))
    if node is not None:
        pipe.hdel(node_heartbeats_key(node), f"{session_id}:{conn}")
    pipe.execute()


def node_heartbeats(node: str) -> dict[tuple[int, int], float]:
    """(session, conn) -> last heartbeat of every segmenter of ``node``."""
    out: dict[tuple[int, int], float] = {}
    for field_, value in redis_client().hgetall(node_heartbeats_key(node)).items():
        session_id, _, conn = _text(field_).partition(":")
        out[int(session_id), int(conn)] = float(value)
    return out


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


def remember_client(session_id: int, mapping_key: str) -> None:
    """A ``pipe:client:{<node>}:<id>`` mapping that belongs to the session (deleted with it)."""
    pipe = redis_client().pipeline()
    pipe.sadd(key(session_id, "clients"), mapping_key)
    pipe.expire(key(session_id, "clients"), _ttl())
    pipe.execute()


# Per-session keys that are not per chunk or per connection (``purge`` deletes them by name).
_SESSION_KEYS = (
    "seq", "epoch", "ladder", "source", "codecs", "ccstate", "next", "pending_disc", "published", "win",
    "target", "rates", "gaps", "gapwhy", "masters", "final", "recovered", "advance_again", "assembler",
    "fence", "ingest", "clients", "nodes", "stream", "finalizing", "ckpt", "once:ready", "shed", "ll", "inits",
    "preview",
)  # fmt: skip


def purge(session_id: int) -> None:
    """Delete every Redis key of the session (idempotent), its client mappings and heartbeats,
    by name: the fixed keys, the keys of the chunks not passed yet (those passed were dropped by
    the assembler), those of each connection. No scan of the keyspace."""
    r = redis_client()
    pipe = r.pipeline(transaction=False)  # the session's keys and the global heartbeats
    pipe.smembers(key(session_id, "clients"))
    pipe.hkeys(key(session_id, "ingest"))
    pipe.get(key(session_id, "next"))
    pipe.get(key(session_id, "seq"))
    pipe.hgetall(key(session_id, "nodes"))
    clients, conns, nxt, count, nodes = pipe.execute()
    on_node = {_text(c): _text(n) for c, n in nodes.items()}
    conn_ids = {_text(c) for c in conns} | set(on_node)
    keys = [key(session_id, n) for n in _SESSION_KEYS]
    for conn in conn_ids:
        keys += [key(session_id, f"{n}:{conn}") for n in ("source", "hb", "owner")]
    keys += [key(session_id, f"done:{seq}") for seq in range(max(0, int(nxt or 0) - DONE_KEPT), int(nxt or 0))]
    for seq in range(int(nxt or 0), int(count or 0)):
        keys += _chunk_keys(session_id, seq)
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])
    # The node's keys, one key (family) per command.
    for client_key in clients:
        r.delete(_text(client_key))
    for conn, node in on_node.items():
        r.hdel(node_heartbeats_key(node), f"{session_id}:{conn}")


def owner_key(session_id: int, conn: int) -> str:
    """The supervisor (``host:pid``) segmenting (session, connection): 5 s TTL, refreshed."""
    return key(session_id, f"owner:{conn}")


def valid_node(node: object) -> bool:
    """``node`` is a well-formed ingest node id (``NODE_ID``)."""
    return isinstance(node, str) and NODE_ID.fullmatch(node) is not None


def _node_key(node: str, name: str) -> str:
    if not valid_node(node):
        raise ValueError(f"malformed ingest node id {node!r}")
    return f"pipe:node:{{{node}}}:{name}"


def ingest_queue_key(node: str) -> str:
    return _node_key(node, "queue")


def node_heartbeats_key(node: str) -> str:
    return _node_key(node, "hb")


def node_alive_key(node: str) -> str:
    """Renewed every second by the supervisor of ``node``; expires after
    ``INGEST_NODE_TTL_SECONDS`` (liveness of the node, health check of the ingest role)."""
    return _node_key(node, "alive")


def register_node(node: str, *, control_url: str, ttl_s: float | None = None) -> None:
    """The supervisor of ``node`` is alive and its nginx-rtmp answers ``/control`` at
    ``control_url``. Every command touches one key."""
    ttl = max(1, int(ttl_s if ttl_s is not None else settings.INGEST_NODE_TTL_SECONDS))
    now = time.time()
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(node_alive_key(node), repr(now), ex=ttl)
    pipe.set(_node_key(node, "control"), control_url, ex=max(ttl, 86400))
    pipe.zadd(NODES, {node: now})
    pipe.execute()


def unregister_node(node: str) -> None:
    """The supervisor of ``node`` stops: its sessions can be taken over at once."""
    redis_client().delete(node_alive_key(node))


def node_is_alive(node: str) -> bool:
    return bool(redis_client().exists(node_alive_key(node)))


def node_control_url(node: str) -> str | None:
    value = redis_client().get(_node_key(node, "control"))
    return _text(value) if value is not None else None


def nodes(*, alive_only: bool = True) -> list[str]:
    """Ingest nodes registered (by default: those alive now), in order of registration."""
    names = [_text(n) for n in redis_client().zrange(NODES, 0, -1) if isinstance(n, bytes | str)]
    return [n for n in names if valid_node(n) and (not alive_only or node_is_alive(n))]


def set_ingest_node(session_id: int, conn: int, node: str) -> None:
    """Connection ``conn`` of the session is received by ingest node ``node``."""
    pipe = redis_client().pipeline()
    pipe.hset(key(session_id, "nodes"), str(conn), node)
    pipe.expire(key(session_id, "nodes"), _ttl())
    pipe.execute()


def connection_node_alive(session_id: int, conn: int) -> bool:
    """False when the ingest node of (session, connection) is known and its registration lapsed
    (the node died with the segmenter); True otherwise."""
    node = ingest_node(session_id, conn)
    return node is None or node_is_alive(node)


def ingest_node(session_id: int, conn: int) -> str | None:
    """The ingest node that receives connection ``conn`` of the session (None: not recorded)."""
    value = redis_client().hget(key(session_id, "nodes"), str(conn))
    return _text(value) if value is not None else None


def set_owner(session_id: int, conn: int, node: str, *, ttl_s: int, only_if_free: bool = False) -> bool:
    return bool(redis_client().set(owner_key(session_id, conn), node, ex=ttl_s, nx=only_if_free))


def owner(session_id: int, conn: int) -> str | None:
    value = redis_client().get(owner_key(session_id, conn))
    return _text(value) if value is not None else None


def drop_owners(idents: list[tuple[int, int]]) -> None:
    if idents:  # one DEL per key: the keys of several sessions are in several slots
        pipe = redis_client().pipeline(transaction=False)
        for s, c in idents:
            pipe.delete(owner_key(s, c))
        pipe.execute()


def next_ingest_command(node: str, timeout_s: float) -> bytes | None:
    """The next command of ``accept_publish`` for the supervisor of ``node`` (blocking pop)."""
    item = redis_client().blpop([ingest_queue_key(node)], timeout=timeout_s)
    if item is None:
        return None
    value = item[1]
    return value if isinstance(value, bytes) else str(value).encode()


def client_key(node: str, client_id: str) -> str:
    """nginx-rtmp numbers its clients per process: the id is unique only with its node."""
    if not valid_node(node):
        raise ValueError(f"malformed ingest node id {node!r}")
    return f"pipe:client:{{{node}}}:{client_id}"


def map_client(node: str, client_id: str, session_id: int, conn: int, key_hash: str) -> None:
    """nginx-rtmp client ``client_id`` of ``node`` -> (session, connection, key hash), for
    on_publish_done (which nginx sends with the original, secret name). No TTL: it lives as
    long as its session (``purge`` deletes it)."""
    mapping = {"session": session_id, "conn": conn, "key_hash": key_hash}
    redis_client().set(client_key(node, client_id), json.dumps(mapping))
    remember_client(session_id, client_key(node, client_id))


def client(node: str, client_id: str) -> dict[str, Any] | None:
    raw = redis_client().get(client_key(node, client_id))
    return json.loads(raw) if raw is not None else None


def forget_client(node: str, client_id: str) -> None:
    redis_client().delete(client_key(node, client_id))


def queue_ingest(node: str, command: dict[str, Any]) -> None:
    """A command for the supervisor of ``node`` (``next_ingest_command``); dropped with the
    queue when the node takes nothing for ``INGEST_QUEUE_TTL_S``."""
    pipe = redis_client().pipeline()  # one key: a transaction a cluster accepts
    pipe.rpush(ingest_queue_key(node), json.dumps(command))
    pipe.expire(ingest_queue_key(node), INGEST_QUEUE_TTL_S)
    pipe.execute()


def host_transcodes_key(host: str) -> str:
    """Sorted set of the transcodes running on ``host`` (token -> start), for ``cores.py``."""
    return f"pipe:host:{host}:running"


def join_host_transcodes(name: str, token: str, *, stale_s: float, ttl_s: int) -> int:
    """Register a running transcode (entries older than ``stale_s`` are a crashed worker's);
    returns how many run on the host now."""
    now = time.time()
    pipe = redis_client().pipeline()
    pipe.zremrangebyscore(name, "-inf", now - stale_s)
    pipe.zadd(name, {token: now})
    pipe.zcard(name)
    pipe.expire(name, ttl_s)
    return int(pipe.execute()[2])


def leave_host_transcodes(name: str, token: str) -> None:
    redis_client().zrem(name, token)


RECONCILED = "pipe:reconcile:last"  # the reconciler's last run (compose health check of beat)


def reconciled() -> None:
    redis_client().set(RECONCILED, repr(time.time()), ex=3600)


# --- Low-latency HLS: partial segments (ADR 0031) -----------------------------------------


def set_low_latency(session_id: int, part_target: float) -> None:
    """The session publishes CMAF with partial segments of at most ``part_target`` seconds
    (decided once, at its first publish: the stream's latency mode)."""
    redis_client().set(key(session_id, "ll"), f"{part_target:.3f}", ex=_ttl(), nx=True)


def low_latency(session_id: int) -> float | None:
    """The session's PART-TARGET, or None for a standard (TS) session."""
    value = redis_client().get(key(session_id, "ll"))
    return float(value) if value is not None else None


# --- Private preview (ADR 0034) ------------------------------------------------------------


def set_preview(session_id: int) -> None:
    """The session is a private preview: its stable master is not written (accept_publish of a
    preview's every connection, so a Redis that lost it learns it again on a reconnect)."""
    redis_client().set(key(session_id, "preview"), "1", ex=_ttl())


def end_preview(session_id: int) -> None:
    """The preview went public: the next committed chunk writes the masters, the stable one
    included (``masters`` is the once-flag that makes them due on a commit)."""
    pipe = redis_client().pipeline()  # both keys carry the session's hash tag
    pipe.delete(key(session_id, "preview"))
    pipe.delete(key(session_id, "masters"))
    pipe.execute()


def in_preview(session_id: int) -> bool:
    return bool(redis_client().exists(key(session_id, "preview")))


def events_channel(session_id: int) -> str:
    """The pub/sub channel the origin's held requests of a session wait on."""
    return key(session_id, "ll:ev")


_ADD_PART = """
local n = redis.call('LLEN', KEYS[1])
if n > tonumber(ARGV[6]) or redis.call('LINDEX', KEYS[1], -1) == 'end' then return n end
if ARGV[5] == '1' then redis.call('RPUSH', KEYS[1], 'end') else
  redis.call('RPUSH', KEYS[1], ARGV[1]) redis.call('RPUSH', KEYS[2], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3]) redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return n + 1
"""


def add_partial(
    session_id: int,
    seq: int,
    rendition: str,
    *,
    index: int,
    data: bytes,
    duration: float,
    independent: bool,
    init: str = "",
) -> None:
    """Append partial segment ``index`` of chunk ``seq`` in ``rendition`` and wake its waiters
    (one script: the part, its metadata and the event are one step); ``init``: the name of the
    init section the part needs (kept with part 0: the playlist's EXT-X-MAP of the segment in
    progress). Idempotent: a transcode
    taken over from a lost worker finds the parts that worker already listed and keeps them."""
    ttl = int(settings.LL_PART_TTL_SECONDS)
    keys = (key(session_id, f"pm:{seq}:{rendition}"), key(session_id, f"pd:{seq}:{rendition}"))
    meta = f"{duration:.3f}|{1 if independent else 0}|{init}"
    event = f"{seq} {rendition} {index}"
    _eval(_ADD_PART, 3, *keys, events_channel(session_id), meta, data, ttl, event, "0", index)


def end_partials(session_id: int, seq: int, rendition: str) -> None:
    """Chunk ``seq`` has no more parts in ``rendition`` (its last part is in)."""
    ttl = int(settings.LL_PART_TTL_SECONDS)
    keys = (key(session_id, f"pm:{seq}:{rendition}"), key(session_id, f"pd:{seq}:{rendition}"))
    _eval(_ADD_PART, 3, *keys, events_channel(session_id), "", b"", ttl, f"{seq} {rendition} end", "1", 1 << 30)


@dataclass(frozen=True)
class PartMeta:
    duration: float
    independent: bool
    init: str = ""


@dataclass(frozen=True)
class Partials:
    """The parts of one chunk in one rendition so far; ``ended`` once the last is in."""

    parts: list[PartMeta]
    ended: bool


def _partials(raw: list[Any]) -> Partials:
    parts, ended = [], False
    for item in raw:
        text = _text(item)
        if text == "end":
            ended = True
            break
        duration, independent, init = [*text.split("|", 2), ""][:3]
        parts.append(PartMeta(float(duration), independent == "1", init))
    return Partials(parts, ended)


@dataclass(frozen=True)
class LiveEdge:
    """What an LL media playlist is rendered from (``live_edge``: two pipelined reads): the
    live window, the parts of its last chunks and the next one in every rendition, the
    assembler's next chunk."""

    window: Window
    next_seq: int
    parts: dict[tuple[int, str], Partials]
    next_meta: ChunkMeta | None  # the chunk in progress (its wall clock, discontinuity)
    pending_disc: bool = False  # the next entry follows a gap


def live_edge(session_id: int, renditions: list[str], *, dvr: int = 0, recent: int = 6) -> LiveEdge:
    """What an LL playlist renders from, in two pipelined reads: the live window (or the last
    ``dvr`` entries of the log), the next chunk to publish; then the parts of the window's last
    ``recent`` chunks and of the next chunk, in every rendition."""
    pipe = redis_client().pipeline(transaction=False)
    if dvr:
        pipe.lrange(key(session_id, "published"), -dvr, -1)
    else:
        pipe.lrange(key(session_id, "win"), 0, -1)
    pipe.get(key(session_id, "target"))
    pipe.exists(key(session_id, "final"))
    pipe.get(key(session_id, "next"))
    pipe.get(key(session_id, "pending_disc"))
    raw, target_, final, nxt, pending_disc = pipe.execute()
    entries = [Entry.from_json(e) for e in raw]
    next_seq = int(nxt or 0)
    seqs = [e.seq for e in entries[-recent:]] + [next_seq]
    wanted = [(s, r) for s in seqs for r in renditions]
    pipe = redis_client().pipeline(transaction=False)
    for s, r in wanted:
        pipe.lrange(key(session_id, f"pm:{s}:{r}"), 0, -1)
    pipe.hgetall(key(session_id, f"chunk:{next_seq}"))
    *lists, meta = pipe.execute()
    win = Window(entries, int(target_ or 0), bool(final))
    parts = {w: _partials(r) for w, r in zip(wanted, lists, strict=True)}
    return LiveEdge(win, next_seq, parts, _meta(next_seq, meta), _text(pending_disc or b"") == "1")


@dataclass(frozen=True)
class PartLookup:
    """What the origin needs to answer a part request, read in one round trip."""

    stream: int | None
    epoch: int | None
    data: bytes | None  # the part's bytes, None while it does not exist (or expired)
    known: Partials  # the chunk's parts so far in that rendition
    next_seq: int  # the assembler's next chunk


def part_lookup(session_id: int, seq: int, rendition: str, index: int) -> PartLookup:
    pipe = redis_client().pipeline(transaction=False)
    pipe.get(key(session_id, "stream"))
    pipe.get(key(session_id, "epoch"))
    pipe.lindex(key(session_id, f"pd:{seq}:{rendition}"), index)
    pipe.lrange(key(session_id, f"pm:{seq}:{rendition}"), 0, -1)
    pipe.get(key(session_id, "next"))
    stream, epoch_, data, meta, nxt = pipe.execute()
    if isinstance(data, str):
        data = data.encode()
    return PartLookup(
        int(stream) if stream is not None else None,
        int(epoch_) if epoch_ is not None else None,
        data,
        _partials(meta),
        int(nxt or 0),
    )


def init_written(session_id: int, name: str) -> bool:
    return bool(redis_client().sismember(key(session_id, "inits"), name))


def mark_init_written(session_id: int, name: str) -> None:
    pipe = redis_client().pipeline()
    pipe.sadd(key(session_id, "inits"), name)
    pipe.expire(key(session_id, "inits"), _ttl())
    pipe.execute()
