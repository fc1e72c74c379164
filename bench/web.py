"""Web tier under load: the ASGI server as ``make run`` starts it, many authenticated clients.

The server is the Procfile's ``web:`` line run as honcho runs it (uvicorn with its workers, the
web database pool of the Procfile), on a free port, against a PostgreSQL cluster of its own
(``initdb`` + ``postgres`` in a temporary directory, ``max_connections`` left at 100) and a
Redis of its own, with the bench settings (mongomock for the QoE events) and the API
throttles of a deployment (``API_THROTTLE_*``; 429s are counted apart). The QoE per-address
limit is lifted: every bench client comes from 127.0.0.1.

Seeded first (ORM, ``manage.py shell``): 200 users with a token and a stream each, half of the
streams live with an open session, 40 with a chat history. Then 50, 100 and 200 concurrent
clients (asyncio + aiohttp, one process), each a user with its own token, loop without think
time for DURATION_S seconds (after a 2 s warm-up) over a mix of reads and writes: stream list
30%, stream detail 25%, chat history 15%, QoE beacon 15%, update own stream 8%, create a
stream 4%, directory page 3%. A client that gets 429/503 waits as Retry-After says, at most
1 s (so that the figures show the server's recovery, not the clients' patience).

Per level: requests, req/s, p50/p99 latency, 5xx (must be 0), 429s, other 4xx, transport
errors, and the peak of the server's PostgreSQL connections (``pg_stat_activity``, sampled
every 50 ms) next to the configured ceiling (workers x WEB_DATABASE_POOL_MAX).

Second pass, 100 clients: PostgreSQL is stopped in the middle of the load (``pg_ctl stop -m
fast``), left down 3 s and started again. Required: no 500 (nor other 5xx than 503), 503s
(each with Retry-After) only for requests made while it was down, full service (no error, at
least 80% of the rate before) within 5 s of its return. Prints those figures and a per-second
timeline. ``--quick``: 5 s per level, a shorter restart pass; ``BENCH_WEB_LEVELS=100,200``
picks the levels; ``WEB_WORKERS`` / ``WEB_DATABASE_POOL_MAX`` change the server as they change
``make run``. The run fails (after printing) when a requirement is not met.
"""

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEVELS = tuple(int(n) for n in os.environ.get("BENCH_WEB_LEVELS", "50,100,200").split(","))
DURATION_S = 20.0
QUICK_DURATION_S = 5.0
WARMUP_S = 2.0
RESTART_CLIENTS = 100
DOWN_S = 3.0
APP_NAME = "bench-web"
DB_NAME = "livestream_bench_web"
USERS = max(*LEVELS, RESTART_CLIENTS)
MIX = {"list": 30, "detail": 25, "chat": 15, "qoe": 15, "update": 8, "create": 4, "page": 3}
MAX_CLIENT_WAIT_S = 1.0
RECOVERY_LIMIT_S = 5.0
ROOT = Path(__file__).resolve().parents[1]


# --- seeding (runs inside `manage.py shell` against the bench database) -----------------------


def seed(users: int) -> dict[str, list[Any]]:
    """Users with tokens and a stream each; half live with an open session; some chat."""
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from accounts.models import User
    from chat.models import Message
    from streams import services
    from streams.models import SessionStatus, Stream, StreamSession, StreamStatus

    now = timezone.now()
    out: dict[str, list[Any]] = {"users": [], "live": [], "chat": []}
    for i in range(users):
        user = User.objects.create(username=f"bench-web-{i}", email=f"bench-web-{i}@example.com")
        token = Token.objects.create(user=user)
        stream = services.create_stream(user, title=f"Bench stream {i}").stream
        out["users"].append({"token": token.key, "stream": stream.pk})
        if i % 2 == 0:
            Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE, last_live_at=now)
            session = StreamSession.objects.create(stream=stream, status=SessionStatus.LIVE, started_at=now)
            out["live"].append([stream.pk, session.pk])
        if i < 40:
            Message.objects.bulk_create(Message(stream=stream, user=user, text=f"hello {j}") for j in range(30))
            out["chat"].append(stream.pk)
    return out


def print_seed(users: int) -> None:
    """``seed`` for ``manage.py shell -c``: the result as one JSON line."""
    print(json.dumps(seed(users)))


# --- the load ------------------------------------------------------------------------------


@dataclass
class Seeded:
    users: list[dict[str, Any]]
    live: list[list[int]]
    chat: list[int]

    @property
    def streams(self) -> list[int]:
        return [u["stream"] for u in self.users]


@dataclass
class Sample:
    start: float
    end: float
    status: int  # 0: transport error or timeout
    op: str
    retry_after: bool


def _request(op: str, client: int, n: int, data: Seeded, rng: random.Random) -> tuple[str, str, Any]:
    """(method, path, JSON body) of operation ``op`` for bench client ``client``."""
    own = data.users[client]["stream"]
    stream = rng.choice(data.streams)
    live, session = rng.choice(data.live)
    # A watch page sends a QoE batch every few seconds, with a random viewer id per page load.
    beacon = {
        "stream": live,
        "session": session,
        "viewer": f"bench{client}x{n // 10}",
        "events": [{"kind": "heartbeat", "value": 10.0, "rendition": "720p"}, {"kind": "latency", "value": 3.5}],
    }
    requests: dict[str, tuple[str, str, Any]] = {
        "list": ("GET", f"/api/v1/streams/?limit=20&offset={rng.randrange(0, 5) * 20}", None),
        "detail": ("GET", f"/api/v1/streams/{stream}/", None),
        "chat": ("GET", f"/api/v1/streams/{rng.choice(data.chat)}/chat/messages/", None),
        "qoe": ("POST", "/api/v1/analytics/playback/", beacon),
        "update": ("PATCH", f"/api/v1/streams/{own}/", {"description": f"update {n}"}),
        "create": ("POST", "/api/v1/streams/", {"title": f"bench {client}-{n}"}),
        "page": ("GET", "/", None),
    }
    return requests[op]


async def _client(
    index: int, base: str, session: Any, data: Seeded, *, stop_at: float, out: list[Sample], mix: dict[str, int]
) -> None:
    import aiohttp

    headers = {"Authorization": f"Token {data.users[index]['token']}"}
    rng = random.Random(index)
    ops, weights = list(mix), list(mix.values())
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        op = rng.choices(ops, weights)[0]
        method, path, body = _request(op, index, n, data, rng)
        start = time.monotonic()
        retry: str | None = None
        try:
            async with session.request(method, base + path, json=body, headers=headers) as response:
                await response.read()
                status, retry = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        out.append(Sample(start, time.monotonic(), status, op, retry is not None))
        if status in (429, 503):
            await asyncio.sleep(min(float(retry or 1), MAX_CLIENT_WAIT_S))
        elif status == 0:
            await asyncio.sleep(0.2)


async def _load(base: str, clients: int, data: Seeded, seconds: float, mix: dict[str, int]) -> list[Sample]:
    import aiohttp

    samples: list[Sample] = []
    stop_at = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        clients_ = (_client(i, base, session, data, stop_at=stop_at, out=samples, mix=mix) for i in range(clients))
        await asyncio.gather(*clients_)
    return samples


def run_load(base: str, clients: int, data: Seeded, seconds: float, mix: dict[str, int] | None = None) -> list[Sample]:
    """``clients`` concurrent clients for ``seconds`` (uvloop); every request's figures."""
    import uvloop

    return uvloop.run(_load(base, clients, data, seconds, mix or MIX))


# --- PostgreSQL connections, sampled --------------------------------------------------------


class ConnectionSampler(threading.Thread):
    """Counts the server's connections (its ``application_name``) in ``pg_stat_activity``
    every ``period`` seconds, reconnecting across PostgreSQL restarts."""

    def __init__(self, dsn: str, application_name: str, period: float = 0.05) -> None:
        super().__init__(name="pg-sampler", daemon=True)
        self.dsn, self.application_name, self.period = dsn, application_name, period
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        conn = None
        query = b"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = %s"
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                row = conn.execute(query, (self.application_name,)).fetchone()
                self.samples.append((time.monotonic(), int(row[0]) if row else 0))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                self.stopping.wait(0.2)
            self.stopping.wait(self.period)
        if conn is not None:
            conn.close()

    def peak(self, start: float, end: float) -> int:
        return max((n for t, n in self.samples if start <= t <= end), default=0)


# --- figures ------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class LevelResult:
    clients: int
    seconds: float
    samples: list[Sample]
    peak_connections: int
    ceiling: int
    by_status: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for s in self.samples:
            self.by_status[s.status] = self.by_status.get(s.status, 0) + 1

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status >= 500)

    def line(self) -> str:
        latencies = [(s.end - s.start) * 1000 for s in self.samples]
        other_4xx = sum(n for status, n in self.by_status.items() if 400 <= status < 500 and status != 429)
        return (
            f"{self.clients:4d} clients: {len(self.samples)} requests in {self.seconds:.0f} s,"
            f" {len(self.samples) / self.seconds:.0f} req/s, p50 {_percentile(latencies, 0.5):.0f} ms,"
            f" p99 {_percentile(latencies, 0.99):.0f} ms; 5xx {self.server_errors}, 429 {self.by_status.get(429, 0)},"
            f" other 4xx {other_4xx}, transport errors {self.by_status.get(0, 0)};"
            f" PostgreSQL connections peak {self.peak_connections} (ceiling {self.ceiling})"
        )

    def ops_line(self) -> str:
        """p50 latency per operation."""
        parts = []
        for op in MIX:
            latencies = [(s.end - s.start) * 1000 for s in self.samples if s.op == op]
            parts.append(f"{op} {_percentile(latencies, 0.5):.0f}")
        return "      p50 ms by operation: " + ", ".join(parts)


def _measure(
    base: str, clients: int, data: Seeded, *, seconds: float, sampler: ConnectionSampler, ceiling: int
) -> "LevelResult":
    begin = time.monotonic()
    samples = run_load(base, clients, data, WARMUP_S + seconds)
    window_start = begin + WARMUP_S
    measured = [s for s in samples if s.start >= window_start]
    end = max((s.end for s in measured), default=window_start + seconds)
    return LevelResult(clients, end - window_start, measured, sampler.peak(window_start, end), ceiling)


def _recovery(samples: list[Sample], up: float, end: float, pre_rate: float) -> tuple[float, float, float]:
    """Seconds from PostgreSQL's return to the first 2xx, to the last error, and to full
    service: the first whole second, after the last error, that completes at least 80% of the
    requests per second made before the stop."""
    first_ok = min((s.end for s in samples if 200 <= s.status < 300 and s.end >= up), default=float("inf")) - up
    errors_after = [s.end for s in samples if (s.status >= 500 or s.status == 0) and s.end >= up]
    last_error = max(errors_after, default=up) - up
    full = float("inf")
    window = up + last_error
    while window + 1 <= end:
        if sum(1 for s in samples if window <= s.end < window + 1) >= 0.8 * pre_rate:
            full = window - up
            break
        window += 0.25
    return first_ok, last_error, full


def _restart_pass(base: str, data: Seeded, pg: Any, *, quick: bool) -> tuple[list[str], list[str]]:
    """Load with PostgreSQL stopped (fast) in the middle and started again; figures and the
    list of unmet requirements. The load runs in a thread: PostgreSQL is restarted from this
    one, which outlives it (its parent-death signal is bound to the starting thread)."""
    before_s, after_s = (4.0, 6.0) if quick else (8.0, 10.0)
    samples: list[Sample] = []
    total = WARMUP_S + before_s + DOWN_S + after_s + 2.0  # + the time stop and start take
    load = threading.Thread(target=lambda: samples.extend(run_load(base, RESTART_CLIENTS, data, total)))
    begin = time.monotonic()
    load.start()
    time.sleep(WARMUP_S + before_s)
    stop = time.monotonic()
    pg.stop("fast")
    down = time.monotonic()
    time.sleep(DOWN_S)
    start = time.monotonic()
    pg.start()
    up = time.monotonic()
    load.join()
    end = max((s.end for s in samples), default=up)
    by_status: dict[int, int] = {}
    for s in samples:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    n500 = by_status.get(500, 0)
    other_5xx = sum(n for status, n in by_status.items() if status > 500 and status != 503)
    unavailable = [s for s in samples if s.status == 503]
    after_return = [s for s in unavailable if s.start >= up]
    before_stop = [s for s in unavailable if s.end < stop]
    without_retry_after = sum(1 for s in unavailable if not s.retry_after)
    pre_rate = sum(1 for s in samples if stop - before_s <= s.end < stop) / before_s
    first_ok, last_error, full = _recovery(samples, up, end, pre_rate)
    timeline = []
    for second in range(int(begin + WARMUP_S - stop), int(end - stop)):
        done = [s for s in samples if stop + second <= s.end < stop + second + 1]
        errors = sum(1 for s in done if s.status >= 500 or s.status == 0)
        timeline.append(f"{second:+d}:{len(done)}" + (f"/{errors}" if errors else ""))
    lines = [
        f"PostgreSQL restart under {RESTART_CLIENTS} clients (pg_ctl stop -m fast, {DOWN_S:.0f} s, start):"
        f" stop took {down - stop:.2f} s, start {up - start:.2f} s: down {up - stop:.1f} s; {len(samples)} requests",
        f"  500: {n500}, other 5xx than 503: {other_5xx}, transport errors: {by_status.get(0, 0)};"
        f" 503: {len(unavailable)} (without Retry-After: {without_retry_after}), of them issued after"
        f" PostgreSQL was back: {len(after_return)}, answered before the stop: {len(before_stop)}",
        f"  after PostgreSQL was back: first 2xx +{first_ok:.2f} s, last error +{last_error:.2f} s,"
        f" full service (no error, >= 80% of the {pre_rate:.0f} req/s before) from +{full:.0f} s",
        "  requests completed per second from the stop (/errors): " + " ".join(timeline),
    ]
    unmet = []
    if n500 or other_5xx:
        unmet.append(f"restart: {n500} x 500 and {other_5xx} other 5xx (want none)")
    if after_return or before_stop:
        unmet.append(f"restart: {len(after_return) + len(before_stop)} 503s outside the outage")
    if without_retry_after:
        unmet.append(f"restart: {without_retry_after} 503s without Retry-After")
    if max(first_ok, last_error, full) > RECOVERY_LIMIT_S:
        unmet.append(f"restart: full service later than {RECOVERY_LIMIT_S:.0f} s after PostgreSQL's return")
    return lines, unmet


# --- the stack ----------------------------------------------------------------------------


def _manage(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


def _wait_served(base: str, token: str, timeout: float = 60) -> None:
    """Until both workers answer (a few API calls in a row succeed)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    good = 0
    while good < 10:
        if time.monotonic() > deadline:
            raise TimeoutError("the web server did not answer in time")
        request = urllib.request.Request(base + "/api/v1/me/", headers={"Authorization": f"Token {token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our own server)
                good = good + 1 if response.status == 200 else 0
        except (urllib.error.URLError, OSError):
            good = 0
            time.sleep(0.3)


def run(args: Any) -> Iterator[str]:
    from livestream import devstack

    seconds = QUICK_DURATION_S if args.quick else DURATION_S
    workers = int(os.environ.get("WEB_WORKERS") or devstack.procfile_default("web", "WEB_WORKERS"))
    pool_max = int(os.environ.get("WEB_DATABASE_POOL_MAX") or devstack.procfile_default("web", "WEB_DATABASE_POOL_MAX"))
    ceiling = workers * pool_max
    unmet: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        work.chmod(0o755)  # PostgreSQL runs as its own user when we are root
        pg = stack.enter_context(devstack.temporary_postgres(work / "pg"))
        pg.execute(f'CREATE DATABASE "{DB_NAME}"')
        max_connections = pg.execute("SHOW max_connections")[0][0]
        redis_port = stack.enter_context(devstack.temporary_redis(work / "redis"))
        web_port = devstack.free_port()
        redis = f"redis://127.0.0.1:{redis_port}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "livestream.settings.bench",
            "DATABASE_URL": pg.url(DB_NAME),
            "DATABASE_APPLICATION_NAME": APP_NAME,
            # the bench settings (test's) read the TEST_* URLs
            **{f"{prefix}{name}": f"{redis}/{db}" for prefix in ("", "TEST_")
               for name, db in (("REDIS_URL", 0), ("CELERY_BROKER_URL", 1), ("CHANNEL_REDIS_URL", 2))},
            "WEB_PORT": str(web_port),
            "WEB_BIND": "127.0.0.1",
            # every bench client comes from 127.0.0.1: the per-address QoE limit would be the
            # whole platform's
            "ANALYTICS_QOE_BATCHES_PER_IP_MIN": "1000000",
            "PUBLIC_WEB_URL": f"http://127.0.0.1:{web_port}",
        }  # fmt: skip
        _manage(["migrate", "--noinput", "-v", "0"], env)
        seeded = _manage(["shell", "-c", f"from bench.web import print_seed; print_seed({USERS})"], env)
        data = Seeded(**json.loads(seeded.strip().splitlines()[-1]))
        stack.enter_context(devstack.procfile_process("web", work / "web.log", env=env))
        base = f"http://127.0.0.1:{web_port}"
        _wait_served(base, data.users[0]["token"])
        sampler = ConnectionSampler(pg.dsn(DB_NAME), APP_NAME)
        sampler.start()
        stack.callback(sampler.stopping.set)
        yield (
            f"server: the Procfile's web line (uvicorn, {workers} workers, database pool of at most {pool_max}"
            f" connections per worker: ceiling {ceiling}); own PostgreSQL (max_connections {max_connections})"
            f" and Redis; {USERS} users; mix: " + ", ".join(f"{op} {w}%" for op, w in MIX.items())
        )
        for clients in LEVELS:
            result = _measure(base, clients, data, seconds=seconds, sampler=sampler, ceiling=ceiling)
            yield result.line()
            yield result.ops_line()
            if result.server_errors:
                unmet.append(f"{clients} clients: {result.server_errors} 5xx")
            if result.peak_connections > ceiling:
                unmet.append(f"{clients} clients: {result.peak_connections} connections > ceiling {ceiling}")
        lines, restart_unmet = _restart_pass(base, data, pg, quick=args.quick)
        unmet += restart_unmet
        yield from lines
        peak_all = sampler.peak(0, time.monotonic())
        yield f"peak PostgreSQL connections of the server over the whole run: {peak_all} (ceiling {ceiling})"
        if peak_all > ceiling:
            unmet.append(f"whole run: {peak_all} connections > ceiling {ceiling}")
    if unmet:
        raise RuntimeError("; ".join(unmet))
    yield "requirements met: no 5xx under load, connections within the ceiling, restart recovered in time"
