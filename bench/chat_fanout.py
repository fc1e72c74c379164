"""Chat fan-out: N viewers in one room, 1 in 100 of them never reading, a steady 10 msg/s,
real WebSockets over TCP.

For each N (100, 1000, 2000; ``--quick``: 100, 500; or ``CHAT_BENCH_SIZES=2000``) two servers are measured in the same
run, each as ``uvicorn --workers 2`` (the Procfile's WebSocket flags) on the Redis channel
layer of the bench settings:

- ours: ``livestream.asgi:application`` (chat.fanout: one subscription per process and
  room, encode once, ``chat.batch`` on a short tick, messages stored in PostgreSQL);
- baseline: ``bench._chat_baseline`` (one consumer per socket, group_send per message,
  JSON per recipient, nothing stored).

Load: 20 signed-in senders (token auth) at 0.5 msg/s each, staggered, for DURATION seconds
(each message TEXT_CHARS long, the long messages of a busy chat, so that a socket that does
not read fills its buffers within the run), and N viewers:

- N - N/100 healthy viewers spread over two load-generator processes (asyncio + uvloop, no
  compression offered, every socket read continuously). Each message carries its send time; a
  spread sample of ~100 of them parses every frame for latency, all of them count deliveries.
  A delivery later than DRAIN_S after the last send counts as lost.
- N/100 never-reading viewers (20 of 2000): bare sockets (bench/_rawws.py) with a 4 kB
  SO_RCVBUF and no library read loop, connected just before the senders start, that read
  nothing until the end; the server's kernel and transport buffers for them really fill.
  Then each reads what it was sent and reports how its connection ended: the close code
  (4008 "too slow" is what ours sends, docs/chat.md), dropped without a close frame, or still
  open.

Prints per run: delivered/expected over the healthy viewers, p50 and p99 latency (also p99
from the server's ``sent_at`` stamp, which leaves out only the socket read, thread hop, rate
limit and checks before the row object is built: ``sent_at`` is stamped BEFORE the INSERT and
the COMMIT, so the database write, the broadcast, the batching tick and the delivery are all
inside it), server CPU per delivered message (user+sys of the uvicorn processes over the
window / deliveries), how the never-reading sockets ended, then a ratio line per N.
With ``CHAT_BENCH_CONTROL=1`` each N also measures ours with NO never-reading viewer in the
same run (a control: what the never-reading sockets cost, under the same machine load).
The per-address socket cap is off for the bench server (every viewer comes from 127.0.0.1).
"""

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._rawws import RawWebSocket

SENDERS = 20
SENDER_RATE = 0.5  # messages per second per sender -> 10 msg/s in the room
TEXT_CHARS = 480  # per message (CHAT_MAX_LENGTH is 500): ~7 kB/s to every viewer
SLOW_EVERY = 100  # one viewer in SLOW_EVERY never reads
SLOW_RCVBUF = 4096
TOO_SLOW = 4008  # chat.fanout.CLOSE_TOO_SLOW (not imported: the bench runs before django.setup)
DRAIN_S = 5.0
WORKERS = 2
LOAD_PROCESSES = 2
BASE_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    viewers: int
    sent: int
    delivered: int
    p50_ms: float
    p99_ms: float
    p99_stored_ms: float
    cpu_us: float
    connect_s: float
    server_cores: float
    load_cores: float
    slow: int = 0
    slow_endings: Counter[str] = field(default_factory=Counter)
    slow_closed_by_server: int = 0

    @property
    def healthy(self) -> int:
        return self.viewers - self.slow

    @property
    def expected(self) -> int:
        return self.sent * self.healthy

    @property
    def ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    @property
    def slow_too_slow(self) -> int:
        return self.slow_endings.get(f"close {TOO_SLOW}", 0)

    def line(self) -> str:
        endings = ", ".join(f"{count} {ending}" for ending, count in sorted(self.slow_endings.items()))
        return (
            f"chat fan-out {self.name:8s} N={self.viewers:5d}: healthy {self.healthy} delivered "
            f"{self.delivered}/{self.expected} ({self.ratio:.1%}), p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms "
            f"(p99 from the server's sent_at {self.p99_stored_ms:.0f} ms), "
            f"server CPU {self.cpu_us:.1f} us/delivered msg; cores used: server {self.server_cores:.2f}, "
            f"load generator {self.load_cores:.2f} (connect {self.connect_s:.1f} s); "
            f"never-reading {self.slow}: {endings or 'none'} "
            f"(server log: {self.slow_closed_by_server} closed as too slow)"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree_cpu(pid: int) -> float:
    """user+sys CPU seconds of ``pid`` and its children (uvicorn's worker processes)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(FileNotFoundError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _start_server(app: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "livestream.settings.bench", "PYTHONPATH": str(BASE_DIR)}
    cmd = [
        str(BASE_DIR / ".venv/bin/uvicorn"),
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        # As the Procfile's web line.
        "--ws-per-message-deflate",
        "false",
        "--ws-max-size",
        "8192",
    ]
    env["CHAT_MAX_SOCKETS_PER_IP"] = "0"  # every bench viewer comes from 127.0.0.1
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(1.0)  # let every worker finish importing
                return proc
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn {app} exited with {proc.returncode}; see {log}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"uvicorn {app} did not listen within 30 s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- load generator process ---------------------------------------------------------------


def _count_messages(raw: str) -> int:
    if raw.startswith(('{"type": "chat.history"', '{"type":"chat.history"')):
        return 0
    return raw.count('"text":"b') + raw.count('"text": "b')


def _latencies(raw: str, now: float, out: list[float], stored: list[float]) -> None:
    """Latency of each bench message in the frame: from the sender's clock (``out``) and from
    the server's ``sent_at`` stamp (``stored``: after the post checks, i.e. fan-out side)."""
    frame = json.loads(raw)
    kind = frame.get("type")
    messages = frame["messages"] if kind == "chat.batch" else [frame] if kind == "chat.message" else []
    for message in messages:
        text = message.get("text", "")
        if text.startswith("b"):
            out.append(now - float(text.split(":")[1]))
            with contextlib.suppress(KeyError, TypeError, ValueError):
                stored.append(now - datetime.fromisoformat(message["sent_at"]).timestamp())


async def _viewers(url: str, count: int, first_index: int, stride: int, conn: Any) -> None:
    import websockets

    counts = [0] * count
    samples: list[float] = []
    stored: list[float] = []
    ready = asyncio.Event()
    stop = asyncio.Event()
    connected = 0
    sem = asyncio.Semaphore(50)

    async def viewer(i: int) -> None:
        nonlocal connected
        sampled = (first_index + i) % stride == 0
        async with sem:
            ws = await websockets.connect(url, compression=None, max_queue=None, open_timeout=60, ping_interval=None)
        connected += 1
        if connected == count:
            ready.set()
        try:
            async for raw in ws:
                if stop.is_set():
                    break
                if isinstance(raw, bytes):
                    continue
                counts[i] += _count_messages(raw)
                if sampled:
                    _latencies(raw, time.time(), samples, stored)
        except websockets.ConnectionClosed:
            pass
        finally:
            await ws.close()

    tasks = [asyncio.create_task(viewer(i)) for i in range(count)]
    await ready.wait()
    conn.send("ready")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "stop"
    stop.set()
    conn.send({"delivered": sum(counts), "samples": samples, "stored": stored})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _viewer_process(url: str, count: int, first_index: int, stride: int, conn: Any) -> None:
    import uvloop

    uvloop.run(_viewers(url, count, first_index, stride, conn))


# --- senders and one run ----------------------------------------------------------------


async def _senders(url: str, tokens: list[str], duration: float) -> int:
    import websockets

    sockets = [
        await websockets.connect(
            url, compression=None, additional_headers={"Authorization": f"Token {t}"}, ping_interval=None
        )
        for t in tokens
    ]
    errors: list[str] = []

    async def drain(ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                if isinstance(raw, str) and raw.startswith('{"type":"error"'):
                    errors.append(raw)

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    interval = 1 / (SENDER_RATE * len(sockets))
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < duration:
        ws = sockets[sent % len(sockets)]
        text = f"b{sent}:{time.time():.6f}:"
        await ws.send(json.dumps({"type": "chat.message", "text": text + "x" * (TEXT_CHARS - len(text))}))
        sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval - time.monotonic()))
    await asyncio.sleep(DRAIN_S)
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    if errors:
        raise RuntimeError(f"server refused {len(errors)} bench messages, e.g. {errors[0]}")
    return sent


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _slow_ending(sock: RawWebSocket) -> str:
    """Read what a never-reading socket was sent, up to how its connection ended."""
    try:
        # Up to 20 s: on a loaded machine the ~130 kB in front of the close frame can take a
        # while; the server aborts the connection SLOW_CLOSE_GRACE_S (30 s) after the close.
        closed, _ = sock.read_until_close(timeout=20)
    except TimeoutError:
        return "still open"
    except OSError:
        return "dropped without a close frame"
    finally:
        sock.sock.close()
    return f"close {closed[0]}" if closed else "dropped without a close frame"


def _measure(
    name: str,
    app: str,
    stream_id: int,
    tokens: list[str],
    *,
    viewers: int,
    duration: float,
    log: Path,
    slow_every: int = SLOW_EVERY,
) -> Result:
    port = _free_port()
    log_start = log.stat().st_size if log.exists() else 0
    server = _start_server(app, port, log)
    url = f"ws://127.0.0.1:{port}/ws/streams/{stream_id}/chat/"
    slow_count = viewers // slow_every if slow_every else 0
    healthy = viewers - slow_count
    stride = max(1, healthy // 100)
    procs, pipes = [], []
    slow: list[RawWebSocket] = []
    try:
        t0 = time.monotonic()
        per = [healthy // LOAD_PROCESSES + (1 if i < healthy % LOAD_PROCESSES else 0) for i in range(LOAD_PROCESSES)]
        first = 0
        for count in per:
            parent, child = mp.Pipe()
            proc = mp.get_context("spawn").Process(target=_viewer_process, args=(url, count, first, stride, child))
            proc.start()
            procs.append(proc)
            pipes.append(parent)
            first += count
        for pipe in pipes:
            if not pipe.poll(180):
                raise RuntimeError(f"{name}: viewers did not connect within 180 s")
            pipe.recv()
        # The never-reading ones join last, just before the chat starts: uvicorn's own keepalive
        # (a ping every 20 s, 20 s to answer, which they never do) must not be what ends them.
        slow = [RawWebSocket.connect(url, rcvbuf=SLOW_RCVBUF, timeout=30) for _ in range(slow_count)]
        connect_s = time.monotonic() - t0
        time.sleep(1.0)
        cpu0 = _tree_cpu(server.pid)
        load0 = sum(_tree_cpu(p.pid) for p in procs if p.pid)
        wall0 = time.monotonic()
        sent = asyncio.run(_senders(url, tokens, duration))
        cpu = _tree_cpu(server.pid) - cpu0
        load_cores = (sum(_tree_cpu(p.pid) for p in procs if p.pid) - load0) / (time.monotonic() - wall0)
        server_cores = cpu / (time.monotonic() - wall0)
        delivered, samples, stored = 0, [], []
        for pipe in pipes:
            pipe.send("stop")
        for pipe in pipes:
            report = pipe.recv()
            delivered += report["delivered"]
            samples += report["samples"]
            stored += report["stored"]
        endings: Counter[str] = Counter()
        if slow:
            with ThreadPoolExecutor(max_workers=len(slow)) as pool:
                endings = Counter(pool.map(_slow_ending, slow))
    finally:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.sock.close()
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()
        _stop(server)
    with log.open("rb") as out:
        out.seek(log_start)
        slow_closed = out.read().count(b"closing a socket that does not read")
    return Result(
        name=name,
        viewers=viewers,
        sent=sent,
        delivered=delivered,
        p50_ms=_percentile(samples, 0.50) * 1000,
        p99_ms=_percentile(samples, 0.99) * 1000,
        p99_stored_ms=_percentile(stored, 0.99) * 1000,
        cpu_us=cpu / delivered * 1e6 if delivered else float("inf"),
        connect_s=connect_s,
        server_cores=server_cores,
        load_cores=load_cores,
        slow=slow_count,
        slow_endings=endings,
        slow_closed_by_server=slow_closed,
    )


def _fixtures() -> tuple[Any, list[str]]:
    """A fresh stream (empty history) and tokens of the senders, in the bench database."""
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from accounts.models import User
    from streams import services

    call_command("migrate", verbosity=0)
    owner, _ = User.objects.get_or_create(username="bench-chat-owner", defaults={"email": "bench-owner@example.com"})
    stream = services.create_stream(owner, title=f"chat bench {time.time():.0f}").stream
    tokens = []
    for i in range(SENDERS):
        user, _ = User.objects.get_or_create(
            username=f"bench-chat-{i}", defaults={"email": f"bench-chat-{i}@example.com"}
        )
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    return stream, tokens


def run(args: Any) -> list[str]:
    from django.conf import settings

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    quick = bool(getattr(args, "quick", False))
    sizes = [100, 500] if quick else [100, 1000, 2000]
    if os.environ.get("CHAT_BENCH_SIZES"):  # e.g. CHAT_BENCH_SIZES=2000: one level only
        sizes = [int(n) for n in os.environ["CHAT_BENCH_SIZES"].split(",")]
    # Long enough for a never-reading socket to fill its buffers (~17 s at ~7 kB/s) and wait
    # out CHAT_SEND_TIMEOUT_S (10 s) within the run.
    duration = 35.0 if quick else 40.0
    log = Path(settings.VAR_DIR) / "bench" / "chat_fanout.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"chat fan-out: {SENDERS} senders x {SENDER_RATE} msg/s of {TEXT_CHARS} characters for {duration:.0f} s, "
        f"1 viewer in {SLOW_EVERY} never reads; uvicorn --workers {WORKERS}, "
        f"batch tick {settings.CHAT_BATCH_TICK_MS} ms, send timeout {settings.CHAT_SEND_TIMEOUT_S:g} s, "
        f"send queue {settings.CHAT_SEND_QUEUE_BYTES // 1024} kB, cores {os.cpu_count()}, "
        f"load average before {os.getloadavg()[0]:.1f}"
    ]
    _progress(lines[0])
    control = os.environ.get("CHAT_BENCH_CONTROL") == "1"
    runs = [("ours", "livestream.asgi:application", SLOW_EVERY)]
    if control:
        runs.append(("ours-0", "livestream.asgi:application", 0))
    runs.append(("baseline", "bench._chat_baseline:application", SLOW_EVERY))
    for n in sizes:
        pair = []
        for name, app, slow_every in runs:
            stream, tokens = _fixtures()
            try:
                result = _measure(
                    name, app, stream.pk, tokens, viewers=n, duration=duration, log=log, slow_every=slow_every
                )
            finally:
                stream.delete()
            pair.append(result)
            lines.append(f"{result.line()}, load avg {os.getloadavg()[0]:.1f}")
            _progress(lines[-1])
        if control:
            ours, alone = pair[0], pair[1]
            lines.append(
                f"chat fan-out N={n}: ours with {ours.slow} never-reading vs none, same run: p50 {ours.p50_ms:.0f} vs "
                f"{alone.p50_ms:.0f} ms, p99 {ours.p99_ms:.0f} vs {alone.p99_ms:.0f} ms, delivered {ours.ratio:.1%} vs "
                f"{alone.ratio:.1%}, server CPU {ours.cpu_us:.1f} vs {alone.cpu_us:.1f} us/delivered msg"
            )
            _progress(lines[-1])
            pair = [pair[0], pair[2]]
        ours, base = pair
        speed = (ours.ratio / base.ratio) if base.ratio else float("inf")
        cpu = base.cpu_us / ours.cpu_us if ours.cpu_us else float("inf")
        met = ours.p99_ms < 250 and ours.delivered == ours.expected and ours.slow_too_slow == ours.slow
        lines.append(
            f"chat fan-out N={n} ({ours.slow} never read): ours/baseline delivered {speed:.2f}x, "
            f"p99 {ours.p99_ms:.0f} vs {base.p99_ms:.0f} ms, CPU per delivery {cpu:.1f}x less; never-reading "
            f"sockets closed with {TOO_SLOW}: ours {ours.slow_too_slow}/{ours.slow}, "
            f"baseline {base.slow_too_slow}/{base.slow}; ours healthy viewers 100% delivered with p99 < 250 ms "
            f"and every never-reading socket closed with {TOO_SLOW}: {'yes' if met else 'NO'}"
        )
        _progress(lines[-1])
    return lines


def _progress(line: str) -> None:
    """Progress while the benchmark runs (minutes); the runner prints the returned lines."""
    print(f"  ... {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit("run with: python -m bench chat_fanout")
