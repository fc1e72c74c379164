"""Capacity of this machine: how many concurrent 720p30 streams the workers keep in real time,
and what one stream costs per second in CPU, Redis and S3 (docs/capacity.md turns these into a
plan for 1,000 streams).

Setup: the 720p30 noisy test source of ``bench/pipeline.py`` (``CAPACITY_SECONDS`` long, cut
into 2 s GOP chunks by the segmenter's command), a real prefork Celery worker with
``CAPACITY_WORKERS`` processes (default: the host's cores, as deployed), a Redis of the bench's
own for the pipeline state (``REDIS_URL``) and another for the Celery broker (so ``INFO`` sees
nothing else), SeaweedFS. N streams = N sessions; the source is probed once and every session
gets its ladder the way the segmenter gives it (``state.store_source`` + ``state.decide_ladder``):

- passthrough: the ``source`` rendition only (stream copy);
- full ladder: ``ladder_for`` the source with the configured ``TRANSCODE_LADDER`` (for 720p:
  source + 480p + 360p; a ladder never upscales). Overload shedding is off in the bench's
  workers (and the live deadline far away), so every probe transcodes every rung: with shedding
  on, the first N past the capacity found here is where rungs start to be shed.

A batch = chunk k of every one of the N streams handed over as the segmenter does
(``state.add_chunk``: the whole chunk's bytes into Redis, then one ``transcode_chunk`` task each
on the broker), timed until the assembler has published chunk k of every stream. The first
batch of a probe warms the sessions up and is not counted; then ``CAPACITY_BATCHES`` batches.
Load = median batch wall time / chunk duration: <= 1 means the N streams run in real time (each
2 s of media is transcoded and published within 2 s). The search grows N (ladder +1,
passthrough x2, then bisects) until the load passes 1: "real time up to N, behind at N+1".

Measured over the counted batches of every probe of a mode (per stream-second = per N x
batches x chunk seconds):
- CPU seconds of the worker tree (``/proc``: the pool processes and the ones Celery replaced),
  of both Redis servers (``INFO cpu``) and of SeaweedFS (when this bench started it);
- pipeline Redis commands and bytes (``INFO commandstats`` / ``INFO stats`` deltas, less the
  bench's own completion polls, counted and subtracted exactly); Redis memory per stream (``MEMORY USAGE`` of its
  keys after the batches, plus the chunks in flight);
- broker commands;
- S3 PUTs and bytes, counted in each worker process at the boto3 event level
  (``bench/_capacity_hook.py``, loaded with ``celery worker --include``).
Then the full ladder at one N with 1 worker process against ``CAPACITY_WORKERS``, interleaved
(2 rounds; quick 1), best round of each.

Knobs (environment): ``CAPACITY_SECONDS`` (source length, default 12; ``--quick`` 10),
``CAPACITY_BATCHES`` (counted batches per probe, default 3; quick 2), ``CAPACITY_MAX_LADDER``
(default 8), ``CAPACITY_MAX_PASSTHROUGH`` (default 256), ``CAPACITY_WORKERS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings

from bench import _capacity_plan as planning
from bench.pipeline import ROOT, _chunk, _make_source, _workers
from livestream import devstack

if TYPE_CHECKING:
    from transcoding.ladder import Rendition, SourceInfo

CHUNK_S = 2.0
SESSION_BASE, STREAM_BASE = 960_000_000, 960_000
BATCH_TIMEOUT_S = 120.0
SETTLE_S = 0.3  # after the last batch: the tasks' last S3/Redis calls after the commit
logger = logging.getLogger(__name__)


def _knob(value: str | None, default: int) -> int:
    return int(value or default)


# --- what each process spent ----------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children, and its live children (the pool)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(pid)
    total = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            child = _stat(int(entry))
            if int(child[1]) == pid:
                total += sum(int(v) for v in child[11:15])
    return total / tick


def _pid_of(needle: str) -> int | None:
    """The process whose command line contains ``needle`` (a path of this run's own)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    return int(entry)
    return None


@dataclass
class Counters:
    """Cumulative counters of one moment; ``-`` gives what happened in between."""

    values: dict[str, float] = field(default_factory=dict)

    def __sub__(self, other: Counters) -> Counters:
        return Counters({k: v - other.values.get(k, 0.0) for k, v in self.values.items()})

    def __add__(self, other: Counters) -> Counters:
        keys = self.values.keys() | other.values.keys()
        return Counters({k: self.values.get(k, 0.0) + other.values.get(k, 0.0) for k in keys})

    def __getitem__(self, name: str) -> float:
        return self.values.get(name, 0.0)


def _redis_counters(client: redis.Redis, prefix: str) -> dict[str, float]:
    commands = client.info("commandstats")
    stats = client.info("stats")
    cpu = client.info("cpu")
    return {
        f"{prefix}_commands": sum(int(v["calls"]) for k, v in commands.items() if k != "cmdstat_info"),
        f"{prefix}_in": int(stats["total_net_input_bytes"]),
        f"{prefix}_out": int(stats["total_net_output_bytes"]),
        f"{prefix}_cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
    }


class Rig:
    """The processes of the run and the counters over them."""

    def __init__(self, work: Path, media: redis.Redis, broker: redis.Redis) -> None:
        self.media = media
        self.broker = broker
        self.counts_dir = work / "counts"
        self.counts_dir.mkdir()
        self.worker_pid = 0
        self.weed_pid = _pid_of(str(work / "s3" / "data"))
        self.polls = {"commands": 0, "in": 0, "out": 0}
        self.next_session = SESSION_BASE

    def snapshot(self) -> Counters:
        values: dict[str, float] = {**_redis_counters(self.media, "redis"), **_redis_counters(self.broker, "broker")}
        values["workers_cpu"] = _tree_cpu(self.worker_pid)
        values["s3_cpu"] = _tree_cpu(self.weed_pid) if self.weed_pid else 0.0
        for path in self.counts_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                for k, v in json.loads(path.read_text()).items():
                    values[k] = values.get(k, 0.0) + v
        # The bench's own completion polls are not the pipeline's: subtracted exactly.
        values["redis_commands"] -= self.polls["commands"]
        values["redis_in"] -= self.polls["in"]
        values["redis_out"] -= self.polls["out"]
        return Counters(values)

    def published(self, session_id: int) -> int:
        """``state.published_count``, with its request and reply bytes counted (RESP)."""
        from transcoding import state

        name = state.key(session_id, "published").encode()
        count = state.published_count(session_id)
        self.polls["commands"] += 1
        self.polls["in"] += len(b"*2\r\n$4\r\nLLEN\r\n$%d\r\n%s\r\n" % (len(name), name))
        self.polls["out"] += len(b":%d\r\n" % count)
        return count


@dataclass
class Chunk:
    data: bytes
    start: float
    end: float


@dataclass
class Probe:
    streams: int
    walls: list[float]
    used: Counters
    memory_per_stream: float

    @property
    def load(self) -> float:
        return statistics.median(self.walls) / CHUNK_S

    @property
    def stream_seconds(self) -> float:
        return self.streams * len(self.walls) * CHUNK_S

    @property
    def rate(self) -> float:
        """Stream-seconds done per second of wall time: with the workers saturated, the number
        of streams they sustain (below saturation they idle part of the batch: less)."""
        return self.stream_seconds / sum(self.walls)


def _setup_sessions(rig: Rig, n: int, source: SourceInfo, ladder: list[Rendition]) -> dict[int, int]:
    """N sessions as the segmenter leaves them after probing: session id -> numbering epoch."""
    from transcoding import state

    sessions: dict[int, int] = {}
    for _ in range(n):
        session_id = rig.next_session
        rig.next_session += 1
        state.start_epoch(session_id)
        state.set_json(session_id, "stream", STREAM_BASE + session_id % 100_000)
        state.store_source(session_id, source, conn=1)
        state.decide_ladder(session_id, ladder)
        state.set_ingest(session_id, 1, "running")  # as the segmenter (and purge finds conn 1's keys)
        sessions[session_id] = state.ensure_epoch(session_id)
    return sessions


def _state_bytes(client: redis.Redis, session_id: int) -> int:
    """Bytes Redis holds for the session's keys (``MEMORY USAGE``, key overhead included)."""
    from transcoding import state

    return sum(client.memory_usage(name) or 0 for name in client.scan_iter(match=state.key(session_id, "*")))


def _batch(rig: Rig, sessions: dict[int, int], k: int, chunk: Chunk, send: Callable[[int, int, int], None]) -> float:
    """Chunk ``k`` of every session: handed over with the segmenter's calls (its epoch known, as
    the segmenter knows it), then waited for until all are published."""
    from transcoding import state

    start = time.monotonic()
    for session_id, epoch in sessions.items():
        seq = state.add_chunk(
            session_id,
            data=chunk.data,
            start=chunk.start,
            end=chunk.end,
            wall=time.time(),
            conn=1,
            disc=False,
            epoch=epoch,
        )
        send(session_id, seq, epoch)
    deadline = start + BATCH_TIMEOUT_S
    # The queue is FIFO: sessions complete about in the order they were handed over, so one
    # poll per wait (the first session not published yet) follows the whole batch.
    order = list(sessions)
    waiting = 0
    while waiting < len(order):
        if rig.published(order[waiting]) > k:
            waiting += 1
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch of {len(sessions)}: {waiting} published after {BATCH_TIMEOUT_S:.0f} s")
        time.sleep(0.01)
    return time.monotonic() - start


def _probe(
    rig: Rig,
    n: int,
    *,
    source: SourceInfo,
    ladder: list[Rendition],
    chunks: list[Chunk],
    batches: int,
    send: Callable[[int, int, int], None],
) -> Probe:
    from transcoding import state, storage

    sessions = _setup_sessions(rig, n, source, ladder)
    _batch(rig, sessions, 0, chunks[0], send)  # warm-up (first segment, playlists, master)
    before = rig.snapshot()
    walls: list[float] = []
    for k in range(1, batches + 1):
        walls.append(_batch(rig, sessions, k, chunks[k % len(chunks)], send))
        if walls[-1] > 3 * CHUNK_S:
            break  # far behind: more batches only cost time
    time.sleep(SETTLE_S)
    used = rig.snapshot() - before
    # After the snapshot: these reads are not the pipeline's.
    memory = sum(_state_bytes(rig.media, session_id) for session_id in sessions) / n
    for session_id in sessions:
        state.purge(session_id)
    for stream_id in {STREAM_BASE + s % 100_000 for s in sessions}:
        storage.delete_prefix(f"live/{stream_id}/")
    return Probe(n, walls, used, memory)


def _search(
    run: Callable[[int], Probe], start: int, grow: Callable[[int], int], limit: int, busy_from: int
) -> list[Probe]:
    """Probes from ``start``, growing until the load passes 1 (or ``limit``), then bisecting the
    last gap to within an eighth. Below ``busy_from`` streams (the pool's size) some worker
    processes idle and a batch times one chunk's latency, not the pool's throughput: the search
    goes on to ``busy_from`` whatever the load."""
    probes: list[Probe] = []
    n = min(start, limit)
    while n <= limit:
        probe = run(n)
        probes.append(probe)
        logger.info("probe N=%d load %.2f", n, probe.load)
        if probe.load > 1 and n >= busy_from:
            break
        n = grow(n)
    good = max((p.streams for p in probes if p.load <= 1), default=0)
    bad = min((p.streams for p in probes if p.load > 1 and p.streams > good), default=0)
    while bad and bad - good > max(1, good // 8):
        n = (good + bad) // 2
        probe = run(n)
        probes.append(probe)
        if probe.load <= 1:
            good = n
        else:
            bad = n
    return probes


@dataclass
class Mode:
    name: str
    probes: list[Probe]

    @property
    def real_time(self) -> int:
        return max((p.streams for p in self.probes if p.load <= 1), default=0)

    @property
    def sustained(self) -> float:
        return max(p.rate for p in self.probes)

    @property
    def behind(self) -> Probe | None:
        over = [p for p in self.probes if p.load > 1 and p.streams > self.real_time]
        return min(over, key=lambda p: p.streams) if over else None

    @property
    def used(self) -> Counters:
        total = Counters()
        for probe in self.probes:
            total = total + probe.used
        return total

    @property
    def stream_seconds(self) -> float:
        return sum(p.stream_seconds for p in self.probes)

    def per_stream_s(self, name: str) -> float:
        return self.used[name] / self.stream_seconds

    @property
    def cpu(self) -> float:
        return sum(self.per_stream_s(k) for k in ("workers_cpu", "redis_cpu", "broker_cpu", "s3_cpu"))

    @property
    def memory(self) -> float:
        return statistics.median(p.memory_per_stream for p in self.probes)

    def summary(self) -> str:
        behind = self.behind
        found = (
            f"falls behind at N={behind.streams} (load {behind.load:.2f})"
            if behind
            else "did not fall behind within the limit"
        )
        loads = ", ".join(f"{p.streams}:{p.load:.2f}" for p in sorted(self.probes, key=lambda p: p.streams))
        return (
            f"  {self.name}: real time up to N={self.real_time}, {found}; sustained at most "
            f"{self.sustained:.1f} streams (stream-s per s); load by N: {loads}"
        )


def _source(work: Path, seconds: int) -> tuple[list[Chunk], SourceInfo]:
    from transcoding import ffmpeg

    path = work / "source.flv"
    _make_source(path, seconds)
    rows = _chunk(path, work / "chunks", CHUNK_S)
    source = ffmpeg.probe(rows[0][0], context={"bench": "capacity"})
    return [Chunk(p.read_bytes(), start, end) for p, start, end in rows[:-1]], source  # last may be short


def _measure(args: Any, work: Path, env: dict[str, str]) -> Iterator[str]:
    from livestream.celery import app
    from livestream.redis import redis_client
    from transcoding import cores
    from transcoding.ladder import ladder_for
    from transcoding.tasks import transcode_chunk

    quick = bool(getattr(args, "quick", False))
    seconds = _knob(os.environ.get("CAPACITY_SECONDS"), 10 if quick else 12)
    batches = _knob(os.environ.get("CAPACITY_BATCHES"), 2 if quick else 3)
    workers = _knob(os.environ.get("CAPACITY_WORKERS"), cores.available_cores())
    chunks, source = _source(work, seconds)
    if len(chunks) < 2:
        raise RuntimeError("CAPACITY_SECONDS too short for one counted batch")
    full = ladder_for(source)
    passthrough = [r for r in full if r.copy]
    media = redis_client()
    broker_url = env["TEST_CELERY_BROKER_URL"]
    broker = redis.Redis.from_url(broker_url)
    rig = Rig(work, media, broker)
    extra = ["--include", "bench._capacity_hook"]
    env = {**env, "CAPACITY_COUNTS_DIR": str(rig.counts_dir)}
    log = work / "worker.log"
    with app.connection_for_write(broker_url) as conn:

        def send(session_id: int, seq: int, epoch: int) -> None:
            # The bench's own broker (the stubs omit send_task's ``connection`` option).
            transcode_chunk.apply_async((session_id, seq, 0, 1, epoch), connection=conn)  # type: ignore[call-arg]

        def prober(ladder: list[Rendition]) -> Callable[[int], Probe]:
            return lambda n: _probe(rig, n, source=source, ladder=ladder, chunks=chunks, batches=batches, send=send)

        with _workers(workers, env, log, extra) as proc:
            rig.worker_pid = proc.pid
            ladder = Mode(
                "full ladder (" + "+".join(r.name for r in full) + ")",
                _search(prober(full), 1, lambda n: n + 1, _knob(os.environ.get("CAPACITY_MAX_LADDER"), 8), workers),
            )
            copy = Mode(
                "passthrough (source only)",
                _search(
                    prober(passthrough),
                    8,
                    lambda n: n * 2,
                    _knob(os.environ.get("CAPACITY_MAX_PASSTHROUGH"), 256),
                    workers,
                ),
            )
            # Workers compared at a load that keeps every process busy, interleaved for ``rounds``
            # rounds (this machine's speed drifts between minutes); each side's best counts.
            n_cmp = max(workers, ladder.real_time)
            many = [prober(full)(n_cmp)]
        rounds = 1 if quick else 2
        one: list[Probe] = []
        for round_no in range(rounds):
            if round_no:
                with _workers(workers, env, log, extra) as proc:
                    rig.worker_pid = proc.pid
                    many.append(prober(full)(n_cmp))
            with _workers(1, env, log, extra) as proc:
                rig.worker_pid = proc.pid
                one.append(prober(full)(n_cmp))
    yield from _report(source, workers, ladder=ladder, copy=copy, many=many, one=one)


def _report(
    source: SourceInfo, workers: int, *, ladder: Mode, copy: Mode, many: list[Probe], one: list[Probe]
) -> Iterator[str]:
    from transcoding.cores import available_cores

    cores = available_cores()
    yield (
        f"setup: {source.width}x{source.height}@{source.fps:g} source, {CHUNK_S:g} s chunks, {workers} worker "
        f"processes on {cores} cores; this machine is shared (other runs' load makes every figure noisy: "
        f"rerun on an idle machine for planning)"
    )
    yield ladder.summary()
    yield copy.summary()
    ratio = ladder.real_time / copy.real_time if copy.real_time else float("nan")
    yield (
        f"concurrent 720p30 streams in real time: full ladder {ladder.real_time} vs baseline passthrough "
        f"{copy.real_time} (ratio {ratio:.3f}); sustained {ladder.sustained:.1f} vs {copy.sustained:.1f}; "
        f"CPU-bound estimate on {cores} cores (cores / CPU s per stream-second): "
        f"{cores / ladder.cpu:.1f} vs {cores / copy.cpu:.1f}"
    )

    def cpu_parts(mode: Mode) -> str:
        parts = ("workers_cpu", "redis_cpu", "broker_cpu", "s3_cpu")
        return ", ".join(f"{k.split('_')[0]} {mode.per_stream_s(k):.4f}" for k in parts)

    yield (
        f"CPU s per stream-second: full ladder {ladder.cpu:.4f} ({cpu_parts(ladder)}) vs baseline passthrough "
        f"{copy.cpu:.4f} ({cpu_parts(copy)}): ratio {ladder.cpu / copy.cpu:.1f}x"
    )
    for label, prefix in (("pipeline Redis", "redis"), ("broker Redis", "broker")):
        cmds = (ladder.per_stream_s(f"{prefix}_commands"), copy.per_stream_s(f"{prefix}_commands"))
        b_in = (ladder.per_stream_s(f"{prefix}_in"), copy.per_stream_s(f"{prefix}_in"))
        b_out = (ladder.per_stream_s(f"{prefix}_out"), copy.per_stream_s(f"{prefix}_out"))
        yield (
            f"{label} per stream-second: full ladder {cmds[0]:.1f} commands, {b_in[0] / 1e3:.1f} kB in, "
            f"{b_out[0] / 1e3:.1f} kB out vs baseline passthrough {cmds[1]:.1f} commands, "
            f"{b_in[1] / 1e3:.1f} kB in, {b_out[1] / 1e3:.1f} kB out: commands ratio {cmds[0] / cmds[1]:.2f}"
        )
    # In flight per stream: the chunk being written and the one being transcoded with its outputs,
    # at most two hand-overs' worth of what goes into Redis per chunk (conservative).
    in_flight = 2 * ladder.per_stream_s("redis_in") * CHUNK_S
    yield (
        f"pipeline Redis memory per live stream: state between chunks (MEMORY USAGE of its keys) full ladder "
        f"{ladder.memory / 1e3:.1f} kB vs baseline passthrough {copy.memory / 1e3:.1f} kB; in flight up to "
        f"{in_flight / 1e6:.2f} MB (2 chunks' hand-over: chunk + outputs)"
    )
    puts = (ladder.per_stream_s("s3_puts"), copy.per_stream_s("s3_puts"))
    put_bytes = (ladder.per_stream_s("s3_put_bytes"), copy.per_stream_s("s3_put_bytes"))
    other = (ladder.per_stream_s("s3_other"), copy.per_stream_s("s3_other"))
    yield (
        f"S3 per stream-second: full ladder {puts[0]:.2f} PUTs, {put_bytes[0] / 1e3:.1f} kB ({other[0]:.2f} other) "
        f"vs baseline passthrough {puts[1]:.2f} PUTs, {put_bytes[1] / 1e3:.1f} kB ({other[1]:.2f} other): "
        f"bytes ratio {put_bytes[0] / put_bytes[1]:.2f}"
    )
    best_many, best_one = max(many, key=lambda p: p.rate), max(one, key=lambda p: p.rate)

    def rounds(probes: list[Probe]) -> str:
        return ", ".join(f"{p.rate:.2f}" for p in probes)

    yield (
        f"throughput, full ladder, N={best_many.streams} (best round): {workers} worker processes "
        f"{best_many.rate:.2f} stream-s/s vs baseline 1 worker process {best_one.rate:.2f} stream-s/s: ratio "
        f"{best_many.rate / best_one.rate:.2f}x (rounds: {rounds(many)} vs {rounds(one)})"
    )
    per = planning.PerStream(
        cpu_s=ladder.per_stream_s("workers_cpu"),
        redis_commands=ladder.per_stream_s("redis_commands"),
        redis_bytes=ladder.per_stream_s("redis_in") + ladder.per_stream_s("redis_out"),
        redis_memory=ladder.memory + in_flight,
        broker_commands=ladder.per_stream_s("broker_commands"),
        s3_puts=puts[0],
        s3_put_bytes=put_bytes[0],
    )
    yield f"planning for 1,000 full-ladder streams from these figures ({planning.Assumptions()}):"
    yield from (f"  {line}" for line in planning.table(per))


def run(args: Any) -> Iterator[str]:
    from django.db import connection

    from livestream.redis import reset_redis_client

    # The workers reach PostgreSQL once per session (the stream.ready event on commit): without
    # a database every session would wait out the connection pool's timeout.
    connection.ensure_connection()
    work = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    work.chmod(0o755)
    saved = settings.REDIS_URL
    try:
        with (
            devstack.s3_gateway(work / "s3"),
            devstack.temporary_redis(work / "redis-media") as media_port,
            devstack.temporary_redis(work / "redis-broker") as broker_port,
        ):
            media_url = f"redis://127.0.0.1:{media_port}/0"
            broker_url = f"redis://127.0.0.1:{broker_port}/0"
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "livestream.settings.bench",
                "PYTHONPATH": str(ROOT),
                "TEST_REDIS_URL": media_url,
                "TEST_CELERY_BROKER_URL": broker_url,
                "CELERY_BROKER_URL": broker_url,  # Celery prefers this variable to its settings
                "LIVE_DEADLINE_SECONDS": "3600",  # an overloaded probe must not turn into gaps
                # ... nor shed rungs (ADR 0028): the full ladder is measured past its capacity too
                "OVERLOAD_SHEDDING": "false",
            }
            settings.REDIS_URL = media_url
            reset_redis_client()
            yield from _measure(args, work, env)
    except Exception:
        log = work / "worker.log"
        if log.exists():
            logger.error("worker log tail:\n%s", log.read_text(errors="replace")[-3000:])
        raise
    finally:
        settings.REDIS_URL = saved
        reset_redis_client()
        shutil.rmtree(work, ignore_errors=True)
