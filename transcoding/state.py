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
                      that could not become the assembler asks the holder to go round again
- ``final``           the playlists carry ENDLIST; ``masters`` the masters were written once
- ``ingest``          hash conn -> "running" / "ended:<last seq>" of that connection's segmenter
- ``epoch``           numbering generation: "0" from accept_publish; a new one (ms timestamp)
                      whenever the session's state was found missing (Redis lost it), so
                      segment names of a new generation never collide with published ones
- ``hb:<conn>``       epoch seconds of the last heartbeat of that connection's segmenter
- ``clients``         set of the client mapping keys of the session (``pipe:client:<id>``)
- ``owner:<conn>``    the supervisor (``host:pid``) segmenting that connection (5 s TTL, refreshed)
- ``started:<seq>:<part>`` / ``lease:<seq>:<part>`` / ``requeued:<seq>:<part>``: a transcode was
                      taken by a worker / its lease while it runs / it was queued again once
- ``recovered``       the published log was reloaded from S3 after a state loss
- ``ckpt``            how many entries of the published log its S3 checkpoint holds
- ``stream``          the session's stream id (hot paths skip the database)
- ``finalizing``      one finalisation at a time
- ``once:<name>``     set once by ``claim_once`` (e.g. ``once:ready``: stream.ready was sent)

Every per-chunk key is dropped by the atomic step that passes the chunk, so nothing here grows
with the broadcast except ``published`` (~150 bytes a segment) and ``gaps``.

``pipe:ingest:hb`` (hash ``<session>:<conn>`` -> last heartbeat) lets the reconciler find
every segmenter without scanning keys; ``pipe:ingest:queue`` carries accept_publish's commands
to the supervisors; ``pipe:ingest:alive:<host>`` and ``pipe:reconcile:last`` feed the compose
health checks. These global keys (no hash tag) are never in a transaction or script with a
session's keys: a batch that writes both is a non-transactional pipeline
(``pipeline(transaction=False)``), which redis-py's cluster client splits by slot.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import NoScriptError

from livestream import metrics
from livestream.redis import redis_client
from transcoding.hls import Entry, Rates, rounded
from transcoding.ladder import Rendition, SourceInfo, dumps, loads

INGEST_QUEUE = "pipe:ingest:queue"
HEARTBEATS = "pipe:ingest:hb"


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
# ``gaps`` set. Both are decided only by the Lua scripts below, each atomic in Redis: a commit
# refuses a chunk in ``gaps``; ``mark_gap`` refuses a chunk below ``next`` (already passed) or
# already in ``gaps``. The assembler's own steps (commit, skip) also check its fence token.

FENCE_LOST, MOVED, IS_GAP = -1, -2, -3

# KEYS: chunk:<seq>, data:<seq>, out:<seq>, feed:<seq>, then started/lease/requeued of each part
_DROP_CHUNK = "for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end "

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

# The assembler's fenced steps. KEYS[1] assembler (token), [2] next, [3] gaps, [4] gap reasons,
# [5] pending_disc, [6] published, [7] win, [8] ccstate, [9] target, [10] rates, [11] done:<seq>;
# KEYS[12..]: the chunk's own keys, dropped once it is passed.
_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local seq = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= seq then return -2 end
local ttl = ARGV[4]
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""
_FENCED_TAIL = """
redis.call('SET', KEYS[2], seq + 1, 'EX', ttl)
redis.call('DEL', unpack(KEYS, 12))
"""
_SKIP = (
    _FENCED
    + """
local marked = redis.call('SADD', KEYS[3], ARGV[2])
if marked == 1 then redis.call('HSET', KEYS[4], ARGV[2], ARGV[5]) end
redis.call('EXPIRE', KEYS[3], ttl) redis.call('EXPIRE', KEYS[4], ttl)
redis.call('SET', KEYS[5], '1', 'EX', ttl)
"""
    + _FENCED_TAIL
    + "return marked"
)
# ARGV[5] entry JSON, [6] its index, [7] ccstate JSON, [8] rounded duration, [9] window,
# [10] rates JSON {rendition: [bits, ms]}, [11] done JSON, [12] done TTL
_COMMIT = (
    _FENCED
    + """
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return -3 end
if redis.call('LLEN', KEYS[6]) ~= tonumber(ARGV[6]) then return -2 end
redis.call('RPUSH', KEYS[6], ARGV[5]) redis.call('EXPIRE', KEYS[6], ttl)
redis.call('RPUSH', KEYS[7], ARGV[5]) redis.call('LTRIM', KEYS[7], -tonumber(ARGV[9]), -1)
redis.call('EXPIRE', KEYS[7], ttl)
redis.call('SET', KEYS[5], '0', 'EX', ttl)
redis.call('SET', KEYS[8], ARGV[7], 'EX', ttl)
if tonumber(redis.call('GET', KEYS[9]) or '0') < tonumber(ARGV[8]) then
  redis.call('SET', KEYS[9], ARGV[8], 'EX', ttl)
end
for name, v in pairs(cjson.decode(ARGV[10])) do
  redis.call('HINCRBY', KEYS[10], name .. ':bits', v[1])
  redis.call('HINCRBY', KEYS[10], name .. ':ms', v[2])
  local bps = 0
  if v[2] > 0 then bps = math.floor(v[1] * 1000 / v[2]) end
  if tonumber(redis.call('HGET', KEYS[10], name .. ':peak') or '0') < bps then
    redis.call('HSET', KEYS[10], name .. ':peak', bps)
  end
end
redis.call('EXPIRE', KEYS[10], ttl)
redis.call('SET', KEYS[11], ARGV[11], 'EX', ARGV[12])
"""
    + _FENCED_TAIL
    + "return seq + 1"
)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS[1] assembler, [2] published, [3] win, [4] pending_disc, [5] target, [6] recovered;
# ARGV[1] token, [2] ttl, [3] window, [4] target, [5] count, then the entries' JSON.
_RESTORE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
local ttl = ARGV[2]
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local w = tonumber(ARGV[3])
for i = math.max(6, #ARGV - w + 1), #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
if #ARGV >= 6 then
  redis.call('EXPIRE', KEYS[2], ttl) redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('SET', KEYS[4], '1', 'EX', ttl)
  redis.call('SET', KEYS[5], ARGV[4], 'EX', ttl)
end
redis.call('SET', KEYS[6], ARGV[5], 'EX', ttl)
return 1
"""


class FenceLost(RuntimeError):  # noqa: N818 - a condition
    """This assembler's lease lapsed and another one took over: it must stop at once (nothing it
    did since its last fenced step counts; S3 PUTs of deterministic keys are harmless)."""


def _chunk_keys(session_id: int, seq: int) -> list[str]:
    """Every per-chunk key, dropped when the assembler passes the chunk."""
    names = [f"chunk:{seq}", f"data:{seq}", f"out:{seq}", f"feed:{seq}"]
    for part in range(max(1, int(settings.TRANSCODE_TASKS_PER_CHUNK))):
        names += [f"started:{seq}:{part}", f"lease:{seq}:{part}", f"requeued:{seq}:{part}"]
    return [key(session_id, n) for n in names]


# Commit records (``done:<seq>``) kept for the last chunks only: each commit drops the one this
# many chunks back, so ``purge`` knows them all by name.
DONE_KEPT = 64


def _assembly_keys(session_id: int, seq: int) -> list[str]:
    names = ["assembler", "next", "gaps", "gapwhy", "pending_disc", "published", "win", "ccstate", "target", "rates"]
    dropped = [*_chunk_keys(session_id, seq), key(session_id, f"done:{seq - DONE_KEPT}")]
    return [key(session_id, n) for n in names] + [key(session_id, f"done:{seq}")] + dropped


def _lease_ms() -> int:
    return int(ASSEMBLER_LEASE_S * 1000)


# How long an assembler holds a session without a fenced step before another may take over.
# Longer than one round's S3 PUTs (they retry inside TRANSCODE_PUBLISH_RETRIES); shorter than a
# chunk deadline. Lapsing is safe: the fence token is checked at every step.
ASSEMBLER_LEASE_S = 15.0


def acquire_assembler(session_id: int, *, wait_s: float) -> int | None:
    """Become the session's single assembler: a fencing token (increasing), or None when another
    holds it for ``wait_s``."""
    r = redis_client()
    deadline = time.monotonic() + wait_s
    while True:
        token = int(r.incr(key(session_id, "fence")))
        r.expire(key(session_id, "fence"), _ttl())
        if r.set(key(session_id, "assembler"), str(token), px=_lease_ms(), nx=True):
            return token
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def release_assembler(session_id: int, token: int) -> None:
    _eval(_RELEASE, 1, key(session_id, "assembler"), str(token))


def ask_assembler_again(session_id: int) -> None:
    """A caller could not become the assembler: the holder goes round once more."""
    redis_client().set(key(session_id, "advance_again"), "1", ex=60)


def take_again(session_id: int) -> bool:
    return bool(redis_client().delete(key(session_id, "advance_again")))


@dataclass(frozen=True)
class Assembly:
    """Where the assembler stands: the numbering generation, whether the published log must be
    recovered from S3 first, the next chunk it waits for, how many chunks exist, the last
    published entry (media sequence, discontinuity sequence), the continuity counters."""

    epoch: int
    recover: bool
    next: int
    count: int
    published: int
    pending_disc: bool
    last: Entry | None
    ccstate: dict[str, dict[str, int]]


def begin_round(session_id: int) -> Assembly:
    """The assembler's view at the start of a round. A missing generation means Redis lost the
    session's state: a new one starts here (``ensure_epoch``)."""
    epoch_ = ensure_epoch(session_id)
    pipe = redis_client().pipeline()
    pipe.exists(key(session_id, "recovered"))
    pipe.get(key(session_id, "next"))
    pipe.get(key(session_id, "seq"))
    pipe.llen(key(session_id, "published"))
    pipe.get(key(session_id, "pending_disc"))
    pipe.lindex(key(session_id, "win"), -1)
    pipe.get(key(session_id, "ccstate"))
    recovered, nxt, count, published_, pending, last, cc = pipe.execute()
    return Assembly(
        epoch=epoch_,
        recover=bool(epoch_) and not recovered and not published_,
        next=int(nxt or 0),
        count=int(count or 0),
        published=int(published_),
        pending_disc=pending == b"1",
        last=Entry.from_json(last) if last else None,
        ccstate=json.loads(cc) if cc else {},
    )


@dataclass(frozen=True)
class Ready:
    """A chunk the assembler has not passed yet: 'gap' (given up), 'ready' (every rendition
    transcoded: ``outputs``) or 'wait'; its meta (None: expired)."""

    outcome: str
    meta: ChunkMeta | None
    outputs: dict[str, bytes]
    transcode_ms: int


def take_ready(session_id: int, seq: int) -> Ready:
    pipe = redis_client().pipeline()
    pipe.sismember(key(session_id, "gaps"), str(seq))
    pipe.hgetall(key(session_id, f"out:{seq}"))
    pipe.get(key(session_id, "ladder"))
    pipe.hgetall(key(session_id, f"chunk:{seq}"))
    gap, raw_out, ladder_raw, raw = pipe.execute()
    meta = _meta(seq, raw)
    outputs = {_text(k): bytes(v) for k, v in raw_out.items()}
    # The chunk's transcode time is its slowest part's.
    ms = max((int(outputs.pop(n)) for n in [n for n in outputs if n.startswith("_ms")]), default=0)
    if gap:
        return Ready("gap", meta, {}, 0)
    if ladder_raw and all(r.name in outputs for r in loads(ladder_raw)):
        return Ready("ready", meta, outputs, ms)
    return Ready("wait", meta, {}, 0)


def _fenced(script: str, session_id: int, token: int, seq: int, *argv: Any) -> int:
    keys = _assembly_keys(session_id, seq)
    result = int(_eval(script, len(keys), *keys, str(token), str(seq), _lease_ms(), _ttl(), *argv))
    if result in {FENCE_LOST, MOVED}:
        raise FenceLost(f"session {session_id}: assembler {token} lost its lease (or another moved on)")
    return result


def skip(session_id: int, token: int, seq: int, reason: str) -> bool:
    """The assembler passes chunk ``seq`` as a gap (fenced). True if this call gave it up (False:
    it already was a gap)."""
    return _fenced(_SKIP, session_id, token, seq, reason) == 1


def commit(
    session_id: int, token: int, entry: Entry, ccstate: dict[str, dict[str, int]], result: dict[str, Any]
) -> int:
    """Publish ``entry`` (fenced, atomic): the log, the live window, continuity counters, target
    duration, measured rates; drop the chunk's keys. Returns IS_GAP when the chunk was given up
    meanwhile (it stays a gap), else > 0; raises FenceLost when this assembler is no longer
    the session's (another one committed it)."""
    rates = {name: [size * 8, int(entry.duration * 1000)] for name, size in entry.sizes.items()}
    return _fenced(
        _COMMIT,
        session_id,
        token,
        entry.seq,
        entry.to_json(),
        entry.index,
        json.dumps(ccstate),
        rounded(entry.duration),
        max(1, int(settings.PLAYLIST_WINDOW)),
        json.dumps(rates) if rates else "{}",
        json.dumps(result),
        int(settings.CHUNK_TTL_SECONDS),
    )


def restore_log(session_id: int, token: int, entries: list[Entry], target: int) -> bool:
    """After a state loss: the published log recovered from S3 (fenced; once)."""
    names = ["assembler", "published", "win", "pending_disc", "target", "recovered"]
    keys = [key(session_id, n) for n in names]
    argv: list[str | int] = [str(token), _ttl(), max(1, int(settings.PLAYLIST_WINDOW)), target, len(entries)]
    result = int(_eval(_RESTORE, len(keys), *keys, *argv, *(e.to_json() for e in entries)))
    if result == FENCE_LOST:
        raise FenceLost(f"session {session_id}: assembler {token} lost its lease")
    return result == 1


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


def checkpointed(session_id: int) -> int:
    """How many entries of the published log are in its S3 checkpoint."""
    return int(redis_client().get(key(session_id, "ckpt")) or 0)


def set_checkpointed(session_id: int, count: int) -> None:
    redis_client().set(key(session_id, "ckpt"), str(count), ex=_ttl())


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
    out: dict[str, Rates] = {}
    for field_, value in redis_client().hgetall(key(session_id, "rates")).items():
        name, what = _text(field_).rsplit(":", 1)
        rate = out.setdefault(name, Rates())
        if what == "peak":
            rate.peak = int(value)
        elif what == "bits":
            rate.bits = int(value)
        else:
            rate.seconds = int(value) / 1000
    return out


def mark_final(session_id: int) -> None:
    """The session's playlists are final (ENDLIST)."""
    redis_client().set(key(session_id, "final"), "1", ex=_ttl())


@dataclass(frozen=True)
class MasterInputs:
    renditions: list[Rendition]
    source: SourceInfo
    rates: dict[str, Rates]
    codecs: dict[str, str]


def master_inputs(session_id: int, count: int, *, final: bool) -> MasterInputs | None:
    """What the masters are rendered from, when they are due (first publish, every 10
    segments, at the end); else None."""
    first = bool(redis_client().set(key(session_id, "masters"), "1", ex=_ttl(), nx=True))
    if not (first or final or count % 10 == 0):
        return None
    renditions, source_ = ladder(session_id), source(session_id)
    if not renditions or source_ is None:
        return None
    return MasterInputs(renditions, source_, rates(session_id), codecs(session_id))


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


def heartbeat(session_id: int, conn: int, *, now: float | None = None) -> None:
    """The segmenter of (session, connection) is alive (the supervisor calls this every second)."""
    stamp = repr(now if now is not None else time.time())
    pipe = redis_client().pipeline(transaction=False)  # a session key and a global one
    pipe.set(key(session_id, f"hb:{conn}"), stamp, ex=_ttl())
    pipe.hset(HEARTBEATS, f"{session_id}:{conn}", stamp)
    pipe.execute()


def drop_heartbeat(session_id: int, conn: int) -> None:
    pipe = redis_client().pipeline(transaction=False)  # a session key and a global one
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


# Per-session keys that are not per chunk or per connection (``purge`` deletes them by name).
_SESSION_KEYS = (
    "seq", "epoch", "ladder", "source", "codecs", "ccstate", "next", "pending_disc", "published", "win",
    "target", "rates", "gaps", "gapwhy", "masters", "final", "recovered", "advance_again", "assembler",
    "fence", "ingest", "clients", "stream", "finalizing", "ckpt", "once:ready",
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
    pipe.hkeys(HEARTBEATS)
    clients, conns, nxt, count, beats = pipe.execute()
    mine = [f for f in (_text(f) for f in beats) if f.startswith(f"{session_id}:")]
    conn_ids = {_text(c) for c in conns} | {f.split(":", 1)[1] for f in mine}
    keys = [key(session_id, n) for n in _SESSION_KEYS]
    for conn in conn_ids:
        keys += [key(session_id, f"{n}:{conn}") for n in ("source", "hb", "owner")]
    keys += [key(session_id, f"done:{seq}") for seq in range(max(0, int(nxt or 0) - DONE_KEPT), int(nxt or 0))]
    for seq in range(int(nxt or 0), int(count or 0)):
        keys += _chunk_keys(session_id, seq)
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])
    if clients:  # global keys: a command of their own, never with the session's
        r.delete(*(_text(c) for c in clients))
    if mine:
        r.hdel(HEARTBEATS, *mine)


def owner_key(session_id: int, conn: int) -> str:
    """The supervisor (``host:pid``) segmenting (session, connection): 5 s TTL, refreshed."""
    return key(session_id, f"owner:{conn}")


def node_alive_key(host: str) -> str:
    """Written by the ingest supervisor of ``host`` (compose health check)."""
    return f"pipe:ingest:alive:{host}"


def node_alive(host: str) -> None:
    redis_client().set(node_alive_key(host), repr(time.time()), ex=60)


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


def next_ingest_command(timeout_s: float) -> bytes | None:
    """The next command of ``accept_publish`` for the supervisors (blocking pop)."""
    item = redis_client().blpop([INGEST_QUEUE], timeout=timeout_s)
    if item is None:
        return None
    value = item[1]
    return value if isinstance(value, bytes) else str(value).encode()


def _client_key(client_id: str) -> str:
    return f"pipe:client:{client_id}"


def map_client(client_id: str, session_id: int, conn: int, key_hash: str) -> None:
    """nginx-rtmp's client id -> (session, connection, key hash), for on_publish_done (which
    nginx sends with the original, secret name). No TTL: it lives as long as its session
    (``purge`` deletes it)."""
    mapping = {"session": session_id, "conn": conn, "key_hash": key_hash}
    redis_client().set(_client_key(client_id), json.dumps(mapping))
    remember_client(session_id, _client_key(client_id))


def client(client_id: str) -> dict[str, Any] | None:
    raw = redis_client().get(_client_key(client_id))
    return json.loads(raw) if raw is not None else None


def forget_client(client_id: str) -> None:
    redis_client().delete(_client_key(client_id))


def queue_ingest(command: dict[str, Any]) -> None:
    """A command for the ingest supervisors (``next_ingest_command``)."""
    redis_client().rpush(INGEST_QUEUE, json.dumps(command))


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


def claim_once(session_id: int, name: str) -> bool:
    """True for exactly one caller per session and ``name`` across every worker (SET NX of
    ``once:<name>``; e.g. transcoding.readiness sends stream.ready only when this is True)."""
    return bool(redis_client().set(key(session_id, f"once:{name}"), "1", ex=_ttl(), nx=True))
