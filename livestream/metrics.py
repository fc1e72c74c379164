"""Prometheus metrics of every role (docs/operations.md, docs/adr/0020-metrics.md).

Two kinds of numbers:

- **Events** counted where they happen (a transcode's time, an S3 request, a chat frame, a
  gap, a Celery task): one call of a function below per place. Every role runs in
  prometheus-client's multiprocess mode: each process writes its values into memory-mapped
  files of its role's directory (``METRICS_DIR/<role>``, or ``PROMETHEUS_MULTIPROC_DIR`` when
  the deployment sets it), and whoever serves a scrape sums them. The files of processes that
  have died (a Celery child replaced after ``CELERY_WORKER_MAX_TASKS_PER_CHILD`` tasks, a
  restarted uvicorn worker) are folded into one archive file per type when a scrape finds
  them, so counters stay monotonic and the directory stays small; their ``live`` gauges go.
- **State** read when Prometheus scrapes the web role (``ClusterCollector``): live sessions
  (PostgreSQL), seconds since each live session's last segment, queue depth per Celery queue
  (broker list lengths), Redis memory of each Redis. Nothing in the pipeline has to keep them.

Serving: the web role answers ``GET /metrics`` itself (``asgi``: before Django, so neither
``ALLOWED_HOSTS`` nor the HTTPS redirect gets in a scraper's way), only to loopback and
``METRICS_ALLOWED_NETWORKS`` (the client address of ``livestream.clientaddr``, so a spoofed
``X-Forwarded-For`` does not help) or with ``Authorization: Bearer <METRICS_TOKEN>``; anyone
else gets 404. Every other role (Celery workers, beat, ingest, change follower) serves its
directory on ``METRICS_BIND:METRICS_PORT`` (0: off) from its main process (``serve``).

Until ``configure`` runs, a process keeps its values in memory (tests, ``manage.py`` shells).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

# Redis hash: session id -> JSON {"t": wall time of its last published segment, "lag": s}.
SEGMENTS_KEY = "metrics:segments"
# Redis hash: session id -> JSON {"rungs": [shed rung names], "why": ...} while it sheds.
SHED_KEY = "metrics:shed"
LIVE_STATUSES = ("live", "reconnecting", "ending")
ARCHIVE = "archive"

_role: str | None = None
_lock = threading.Lock()


# --- process setup ------------------------------------------------------------------------
def role() -> str | None:
    return _role


def metrics_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def configure(role_name: str) -> str:
    """Put this process (and the processes it forks) in ``role_name``'s multiprocess directory.
    Call before any metric is touched; returns the directory ("" when ``METRICS_DIR`` is empty
    and ``PROMETHEUS_MULTIPROC_DIR`` unset: the process keeps its values in memory)."""
    global _role  # noqa: PLW0603 - per-process
    from django.conf import settings
    from prometheus_client import values

    with _lock:
        path = metrics_dir()
        if path is None and not settings.METRICS_DIR:  # in-process values only (test settings)
            _role = role_name
            return ""
        if path is None:
            path = str(Path(settings.METRICS_DIR) / role_name)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        Path(path).mkdir(parents=True, exist_ok=True)
        if _role is None:
            # Another process that had this pid before us left its live gauges behind.
            _forget_pid(path, os.getpid())
        values.ValueClass = values.MultiProcessValue()
        _role = role_name
        os.environ["LIVESTREAM_METRICS_ROLE"] = role_name
    _m().process_up.labels(role_name).set(1)
    return path


def child_started() -> None:
    """In a forked child (Celery prefork): drop live gauges a dead process with our pid left."""
    path = metrics_dir()
    if path:
        _forget_pid(path, os.getpid())
    if _role:
        _m().process_up.labels(_role).set(1)


def _forget_pid(path: str, pid: int) -> None:
    for f in glob.glob(os.path.join(path, f"gauge_*_{pid}.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _dir_lock(path: str, *, exclusive: bool) -> Iterator[None]:
    with open(os.path.join(path, ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compact(path: str) -> int:
    """Fold the counters and histograms of dead processes into ``<type>_archive.db`` and delete
    their files (their gauges go). Returns the number of files folded."""
    from prometheus_client.mmap_dict import MmapedDict

    folded = 0
    with _dir_lock(path, exclusive=True):
        for f in glob.glob(os.path.join(path, "*.db")):
            name = os.path.basename(f)[:-3]
            typ, _, rest = name.partition("_")
            pid_text = rest.rsplit("_", 1)[-1]
            if not pid_text.isdigit() or _alive(int(pid_text)):
                continue
            if typ in ("counter", "histogram", "summary"):
                archive = MmapedDict(os.path.join(path, f"{typ}_{ARCHIVE}.db"))
                try:
                    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(f):
                        old, _ts = archive.read_value(key)
                        archive.write_value(key, old + value, timestamp)
                finally:
                    archive.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)
            folded += 1
    return folded


class _DirectoryCollector:
    """Every process's values of one role directory (dead ones folded first)."""

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = path
        self.inner = MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Any]:
        compact(self.path)
        with _dir_lock(self.path, exclusive=False):
            return list(self.inner.collect())


def registry(*, cluster: bool = False) -> CollectorRegistry:
    """The registry a scrape renders: this role's directory (or this process's own values when
    it is not in multiprocess mode), plus the cluster state for the web role."""
    from prometheus_client import REGISTRY, CollectorRegistry

    path = metrics_dir()
    if path is None:
        reg = REGISTRY
        if cluster:
            reg = CollectorRegistry()
            reg.register(_ProcessRegistry())
            reg.register(ClusterCollector())
        return reg
    reg = CollectorRegistry()
    reg.register(_DirectoryCollector(path))
    if cluster:
        reg.register(ClusterCollector())
    return reg


class _ProcessRegistry:
    def collect(self) -> Iterable[Any]:
        from prometheus_client import REGISTRY

        return list(REGISTRY.collect())


def render(*, cluster: bool = False) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry(cluster=cluster)), CONTENT_TYPE_LATEST


def _render_in_thread() -> tuple[bytes, str]:
    """A web scrape, in a worker thread: its database connection goes back when it is done."""
    from django.db import close_old_connections, connections

    close_old_connections()
    try:
        return render(cluster=True)
    finally:
        connections.close_all()


_server_started = False


def serve(role_name: str, port: int | None = None) -> int:
    """Configure this process for ``role_name`` and serve its directory on ``METRICS_BIND``:
    ``METRICS_PORT`` (0: no listener). Returns the port (0 when off). Once per process."""
    global _server_started  # noqa: PLW0603 - per-process
    from django.conf import settings
    from prometheus_client import start_http_server

    path = configure(role_name)
    port = int(settings.METRICS_PORT if port is None else port)
    if not port or _server_started:
        return 0
    try:
        start_http_server(port, addr=settings.METRICS_BIND, registry=registry())
    except OSError as exc:  # the role keeps working without its metrics listener
        logger.error("metrics listener on %s:%d failed: %s", settings.METRICS_BIND, port, exc)
        return 0
    _server_started = True
    logger.info("metrics of %s on %s:%d (%s)", role_name, settings.METRICS_BIND, port, path)
    return port


# --- the metrics --------------------------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.process_up: Gauge = Gauge(
            "livestream_processes", "Live processes of the role", ["role"], multiprocess_mode="livesum"
        )
        self.transcode: Histogram = Histogram(
            "livestream_transcode_seconds",
            "Time to transcode one chunk (after its last byte arrived), per rendition",
            ["rendition"],
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20),
        )
        self.chunk_lag: Histogram = Histogram(
            "livestream_chunk_lag_seconds",
            "Ingest (end of a chunk's last frame) to published, per segment",
            buckets=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 20, 30, 60),
        )
        self.segments: Counter = Counter("livestream_segments_published", "Segments published (all renditions)")
        self.gaps: Counter = Counter("livestream_gaps", "Chunks given up (a gap in the playlists)", ["reason"])
        self.sheds: Counter = Counter(
            "livestream_rung_sheds", "Rungs shed because transcoding fell behind (overload)", ["rendition"]
        )
        self.s3_seconds: Histogram = Histogram(
            "livestream_s3_request_seconds",
            "S3 request time (retries included), per operation",
            ["operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.s3_errors: Counter = Counter(
            "livestream_s3_errors", "S3 requests that failed, per operation and kind", ["operation", "kind"]
        )
        self.chat_sockets: Gauge = Gauge(
            "livestream_chat_sockets", "Open chat/live WebSockets in the hub", multiprocess_mode="livesum"
        )
        self.chat_frames: Counter = Counter("livestream_chat_frames", "Frames fanned out to a room")
        self.chat_deliveries: Counter = Counter(
            "livestream_chat_deliveries", "Frames handed to sockets (frame x socket)"
        )
        self.slots: Gauge = Gauge(
            "livestream_worker_slots",
            "Celery worker processes (pool size), per worker role",
            ["role"],
            multiprocess_mode="livesum",
        )
        self.busy: Gauge = Gauge(
            "livestream_worker_busy_slots",
            "Celery worker processes running a task, per worker role",
            ["role"],
            multiprocess_mode="livesum",
        )
        self.task_seconds: Histogram = Histogram(
            "livestream_task_seconds",
            "Celery task run time",
            ["queue", "task"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
        )
        self.sent: Counter = Counter("livestream_tasks_sent", "Celery tasks sent (any role), per task", ["task"])
        self.tasks: Counter = Counter(
            "livestream_tasks", "Celery tasks finished, per state", ["queue", "task", "state"]
        )
        self.segmenters: Gauge = Gauge(
            "livestream_ingest_segmenters", "Segmenters running in ingest supervisors", multiprocess_mode="livesum"
        )
        self.changes: Counter = Counter(
            "livestream_changes_emitted", "Analytics changes pushed to live dashboards", ["collection"]
        )
        self.ll_held: Gauge = Gauge(
            "livestream_ll_held_requests",
            "LL-HLS requests the live origin holds now (blocking playlist reloads, hinted parts)",
            ["kind"],
            multiprocess_mode="livesum",
        )
        self.ll_hold_seconds: Histogram = Histogram(
            "livestream_ll_hold_seconds",
            "How long the live origin held an LL-HLS request, per kind and outcome",
            ["kind", "outcome"],
            buckets=(0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 6),
        )
        self.simulcast: Gauge = Gauge(
            "livestream_simulcast_targets",
            "Restream relays run by ingest supervisors, per status (simulcast/relay.py)",
            ["status"],
            multiprocess_mode="livesum",
        )
        self.simulcast_failures: Counter = Counter(
            "livestream_simulcast_relay_failures", "Restream relay attempts that failed (each retry counts)"
        )


@cache
def _m() -> _Metrics:
    return _Metrics()


def _safe(fn: Callable[..., None]) -> Callable[..., None]:
    """A metric must never break what it measures."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # pragma: no cover - logged, never raised
            logger.debug("metric %s failed", fn.__name__, exc_info=True)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# --- hooks (one call per place in the pipeline, chat and storage) -------------------------
@_safe
def observe_transcode(seconds: float, renditions: Iterable[str]) -> None:
    """One chunk transcoded in ``seconds`` into ``renditions`` (transcoding/tasks.py)."""
    for rendition in renditions:
        _m().transcode.labels(rendition).observe(seconds)


@_safe
def segments_published(session_id: int, ingest_ends: Sequence[float]) -> None:
    """Segments of a session just published; ``ingest_ends`` = ingest wall clock (epoch s) of
    each one's last frame (start + duration). Feeds the lag histogram and the session's
    "last segment" time read by the scrape (transcoding assembler)."""
    if not ingest_ends:
        return
    from livestream.redis import redis_client

    now = time.time()
    metrics = _m()
    for end in ingest_ends:
        metrics.chunk_lag.observe(max(0.0, now - end))
    metrics.segments.inc(len(ingest_ends))
    lag = round(max(0.0, now - ingest_ends[-1]), 3)
    redis_client().hset(SEGMENTS_KEY, str(session_id), json.dumps({"t": round(now, 3), "lag": lag}))


@_safe
def rungs_shed(session_id: int, rungs: Sequence[str], why: str) -> None:
    """The session now sheds ``rungs`` (none: all restored) because ``why`` (transcoding
    shedding); the scrape reports them per live session."""
    from livestream.redis import redis_client

    if rungs:
        _m().sheds.labels(rungs[-1]).inc()
        redis_client().hset(SHED_KEY, str(session_id), json.dumps({"rungs": list(rungs), "why": why}))
    else:
        redis_client().hdel(SHED_KEY, str(session_id))


@_safe
def count_gap(reason: str) -> None:
    """A chunk given up (transcoding state ``mark_gap`` when it marks one)."""
    _m().gaps.labels(reason.split(":", 1)[0].strip()[:60] or "unknown").inc()


@_safe
def chat_socket_opened() -> None:
    _m().chat_sockets.inc()


@_safe
def chat_socket_closed() -> None:
    _m().chat_sockets.dec()


@_safe
def chat_delivered(sockets: int) -> None:
    """One frame fanned out to ``sockets`` sockets of a room (chat/fanout.py)."""
    metrics = _m()
    metrics.chat_frames.inc()
    if sockets:
        metrics.chat_deliveries.inc(sockets)


@_safe
def ll_hold_started(kind: str) -> None:
    """The live origin starts holding a ``playlist`` or ``part`` request (transcoding/live_origin.py)."""
    _m().ll_held.labels(kind).inc()


@_safe
def ll_hold_ended(kind: str, outcome: str, seconds: float) -> None:
    """... and answered it (``outcome``: ``ok``, ``timeout`` (503 / 404), ``gone``) after ``seconds``."""
    metrics = _m()
    metrics.ll_held.labels(kind).dec()
    metrics.ll_hold_seconds.labels(kind, outcome).observe(seconds)


@_safe
def ingest_segmenters(running: int) -> None:
    """Segmenters this ingest supervisor runs now (its loop)."""
    _m().segmenters.set(running)


@_safe
def simulcast_relays(by_status: dict[str, int]) -> None:
    """Restream relays this ingest supervisor runs now, per status (connecting, live, failed)."""
    gauge = _m().simulcast
    for status in ("connecting", "live", "failed"):
        gauge.labels(status).set(by_status.get(status, 0))


@_safe
def simulcast_relay_failed() -> None:
    _m().simulcast_failures.inc()


@_safe
def change_emitted(collection: str) -> None:
    _m().changes.labels(collection).inc()


def instrument_s3(client: Any) -> Any:
    """Time and count every request of a boto3 S3 client (its event hooks); returns it."""
    events = client.meta.events

    def before(context: dict[str, Any], **_: Any) -> None:
        context["metrics_started"] = time.monotonic()

    def after(http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        _s3_done(model.name, context, None if http_response.status_code < 400 else str(http_response.status_code))

    def failed(exception: BaseException, model: Any, context: dict[str, Any], **_: Any) -> None:
        _s3_done(model.name, context, type(exception).__name__)

    events.register("before-call.s3", before, unique_id="livestream-metrics-before")
    events.register("after-call.s3", after, unique_id="livestream-metrics-after")
    events.register("after-call-error.s3", failed, unique_id="livestream-metrics-error")
    return client


@_safe
def _s3_done(operation: str, context: dict[str, Any], error: str | None) -> None:
    started = context.get("metrics_started")
    metrics = _m()
    if started is not None:
        metrics.s3_seconds.labels(operation).observe(time.monotonic() - started)
    if error is not None:
        kind = error if not error.isdigit() else ("4xx" if error.startswith("4") else "5xx")
        if kind == "4xx" and operation in ("HeadObject", "GetObject", "HeadBucket"):
            return  # a missing object is an answer, not an error
        metrics.s3_errors.labels(operation, kind).inc()


# --- Celery -------------------------------------------------------------------------------
def connect_celery() -> None:
    """Per-worker and per-task metrics through Celery's signals (livestream/celery.py)."""
    from celery import signals

    signals.celeryd_init.connect(_celery_init, weak=False)
    signals.worker_init.connect(_worker_init, weak=False)
    signals.worker_ready.connect(_worker_ready, weak=False)
    signals.worker_process_init.connect(_worker_child, weak=False)
    signals.task_prerun.connect(_task_prerun, weak=False)
    signals.task_postrun.connect(_task_postrun, weak=False)
    signals.beat_init.connect(_beat_init, weak=False)
    signals.before_task_publish.connect(_task_sent, weak=False)


def _worker_role(hostname: str | None) -> str:
    return (hostname or "worker@").split("@", 1)[0] or "worker"


def _celery_init(sender: str | None = None, **_: Any) -> None:
    configure(_worker_role(sender))  # before the pool forks: children inherit the directory


_concurrency: list[int] = []


def _worker_init(sender: Any = None, **_: Any) -> None:
    _concurrency[:] = [int(getattr(sender, "concurrency", 0) or 0)]


def _worker_ready(**_: Any) -> None:
    if _role is not None:
        if _concurrency:
            _m().slots.labels(_role).set(_concurrency[0])
        serve(_role)


def _worker_child(**_: Any) -> None:
    child_started()


_task_started: dict[str, float] = {}


def _task_queue(task: Any) -> str:
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(info.get("routing_key") or _role or "unknown")


@_safe
def _task_prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    _task_started[task_id] = time.monotonic()
    _m().busy.labels(_role or "unknown").inc()


@_safe
def _task_postrun(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    queue, name = _task_queue(task), str(getattr(task, "name", "unknown"))
    metrics = _m()
    metrics.busy.labels(_role or "unknown").dec()
    started = _task_started.pop(task_id, None)
    if started is not None:
        metrics.task_seconds.labels(queue, name).observe(time.monotonic() - started)
    metrics.tasks.labels(queue, name, state or "UNKNOWN").inc()


@_safe
def _task_sent(sender: str | None = None, **_: Any) -> None:
    if _role is not None:  # processes without a role (tests, shells) keep nothing
        _m().sent.labels(str(sender or "unknown")).inc()


def _beat_init(**_: Any) -> None:
    serve("beat")


# --- state read at scrape time (web role) -------------------------------------------------
class ClusterCollector:
    """Live sessions, segment freshness, queue depths and Redis memory, read when scraped."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("livestream_metrics_source_up", "Could the scrape read this source", labels=["source"])
        for name, part in (("postgres", self._sessions), ("broker", self._queues), ("redis", self._redis)):
            try:
                yield from part()
            except Exception:
                logger.warning("metrics: %s unreadable", name, exc_info=True)
                up.add_metric([name], 0)
            else:
                up.add_metric([name], 1)
        yield up

    def _sessions(self) -> Iterator[Any]:
        from django.conf import settings
        from prometheus_client.core import GaugeMetricFamily

        from livestream.redis import redis_client
        from streams.models import StreamSession

        rows = list(
            StreamSession.objects.filter(status__in=LIVE_STATUSES).values_list(
                "pk", "stream_id", "status", "started_at"
            )
        )
        counts = GaugeMetricFamily("livestream_sessions", "Sessions on air, per status", labels=["status"])
        for status in LIVE_STATUSES:
            counts.add_metric([status], sum(1 for row in rows if row[2] == status))
        yield counts
        r = redis_client()
        raw = r.hgetall(SEGMENTS_KEY)
        last = {int(k): json.loads(v) for k, v in raw.items()}
        now = time.time()
        since = GaugeMetricFamily(
            "livestream_live_seconds_since_segment",
            "Seconds since a live session's last published segment (since it started if none yet)",
            labels=["session", "stream"],
        )
        lag = GaugeMetricFamily(
            "livestream_live_chunk_lag_seconds",
            "Ingest-to-published lag of a live session's last segment",
            labels=["session", "stream"],
        )
        shed_raw = r.hgetall(SHED_KEY)
        shedding = {int(k): json.loads(v) for k, v in shed_raw.items()}
        shed = GaugeMetricFamily(
            "livestream_live_rungs_shed",
            "Rungs a live session sheds because transcoding fell behind (0: full ladder)",
            labels=["session", "stream"],
        )
        stalled = 0
        live_ids = set()
        for pk, stream_id, status, started_at in rows:
            if status != "live":
                continue
            live_ids.add(pk)
            entry = last.get(pk)
            seconds = now - float(entry["t"]) if entry else now - started_at.timestamp()
            since.add_metric([str(pk), str(stream_id)], round(max(0.0, seconds), 3))
            if entry:
                lag.add_metric([str(pk), str(stream_id)], float(entry["lag"]))
            if seconds > settings.METRICS_STALL_SECONDS:
                stalled += 1
            shed.add_metric([str(pk), str(stream_id)], len(shedding.get(pk, {}).get("rungs", [])))
        yield since
        yield lag
        yield shed
        yield GaugeMetricFamily(
            "livestream_live_stalled_sessions",
            "Live sessions without a new segment for more than METRICS_STALL_SECONDS",
            value=stalled,
        )
        yield GaugeMetricFamily(
            "livestream_live_stall_threshold_seconds", "METRICS_STALL_SECONDS", value=settings.METRICS_STALL_SECONDS
        )
        # Sessions no longer on air: forget them (the hash holds live ones only).
        on_air = {row[0] for row in rows}
        gone = [str(k) for k, v in last.items() if k not in on_air and now - float(v["t"]) > 60]
        if gone:
            r.hdel(SEGMENTS_KEY, *gone)
        ended = [str(k) for k in shedding if k not in on_air]
        if ended:
            r.hdel(SHED_KEY, *ended)

    def _queues(self) -> Iterator[Any]:
        from django.conf import settings
        from prometheus_client.core import GaugeMetricFamily

        queues = sorted(
            {settings.CELERY_TASK_DEFAULT_QUEUE, "transcode", "webhooks"}
            | {str(route.get("queue")) for route in settings.CELERY_TASK_ROUTES.values() if route.get("queue")}
        )
        broker = _broker(settings.CELERY_BROKER_URL)
        pipe = broker.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            for priority in range(1, 10):  # kombu's priority sub-queues, if ever used
                pipe.llen(f"{queue}\x06\x16{priority}")
        pipe.hlen("unacked")
        values = pipe.execute()
        depth = GaugeMetricFamily("livestream_queue_depth", "Tasks waiting in the broker, per queue", labels=["queue"])
        for index, queue in enumerate(queues):
            depth.add_metric([queue], sum(int(v) for v in values[index * 10 : index * 10 + 10]))
        yield depth
        yield GaugeMetricFamily(
            "livestream_queue_unacked", "Tasks taken by workers and not acknowledged yet", value=int(values[-1])
        )

    def _redis(self) -> Iterator[Any]:
        from django.conf import settings
        from prometheus_client.core import GaugeMetricFamily

        used = GaugeMetricFamily("livestream_redis_memory_used_bytes", "Redis used_memory", labels=["redis"])
        limit = GaugeMetricFamily("livestream_redis_maxmemory_bytes", "Redis maxmemory (0: none)", labels=["redis"])
        up = GaugeMetricFamily("livestream_redis_up", "Redis answered INFO", labels=["redis"])
        seen: set[tuple[str, int]] = set()
        if settings.REDIS_CLUSTER:  # the live state's shards, summed
            from livestream.redis import memory

            try:
                state_used, state_max = memory()
            except Exception:
                up.add_metric(["state"], 0)
            else:
                up.add_metric(["state"], 1)
                used.add_metric(["state"], float(state_used))
                limit.add_metric(["state"], float(state_max))
        for name, setting in (
            ("state", "REDIS_URL"),
            ("broker", "CELERY_BROKER_URL"),
            ("channels", "CHANNEL_REDIS_URL"),
            ("cache", "CACHE_REDIS_URL"),
            ("media", "MEDIA_REDIS_URL"),
        ):
            url = getattr(settings, setting, "") or ""
            if not url.startswith(("redis://", "rediss://")) or (name == "state" and settings.REDIS_CLUSTER):
                continue
            client = _broker(url)
            where = client.connection_pool.connection_kwargs
            ident = (str(where.get("host")), int(where.get("port") or 6379))
            if ident in seen:
                continue
            seen.add(ident)
            try:
                info = client.info("memory")
            except Exception:
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            used.add_metric([name], float(info.get("used_memory", 0)))
            limit.add_metric([name], float(info.get("maxmemory", 0)))
        yield used
        yield limit
        yield up


@cache
def _broker(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


# --- the web role's endpoint --------------------------------------------------------------
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(spec: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def allowed(client: str, authorization: str | None) -> bool:
    """May this client read /metrics: an allowed network, or the bearer token."""
    from django.conf import settings

    token = str(settings.METRICS_TOKEN or "")
    bearer = authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else ""
    if token and bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    networks = _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    return any(address.version == net.version and address in net for net in networks)


def asgi(app: Any) -> Any:
    """Wrap the ASGI application: ``GET /metrics`` is answered here, everything else by ``app``."""
    import asyncio

    from livestream.clientaddr import client_ip_from_scope

    configure("web")

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/metrics":
            await app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                authorization = value.decode("latin-1")
        if scope.get("method") not in ("GET", "HEAD") or not allowed(client_ip_from_scope(scope), authorization):
            await _respond(send, 404, b"Not Found\n", "text/plain; charset=utf-8")
            return
        try:
            body, content_type = await asyncio.to_thread(_render_in_thread)
        except Exception:
            logger.exception("metrics scrape failed")
            await _respond(send, 500, b"metrics unavailable\n", "text/plain; charset=utf-8")
            return
        await _respond(send, 200, b"" if scope.get("method") == "HEAD" else body, content_type)

    return application


async def _respond(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})
